"""Named label sets (ScanNet-20, NYU40, ...) and the ScanNet raw-id -> NYU40 table.

A label set maps NYU40 class ids (1..40, 0 = unannotated) to contiguous class ids ``0..K-1``;
every NYU40 id it does not list maps to ``ignore_index`` (255, the wire value for unknown).
Label sets are YAML files in ``config/label_sets/`` (keys ``name``, ``class_names``, ``colors``,
``nyu40_ids``, ``ignore_index``); the model checkpoint stores :meth:`LabelSet.to_dict`.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml

IGNORE_INDEX = 255

NYU40_NAMES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refrigerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop",
)  # index i holds NYU40 id i + 1

SCANNET20_NYU40_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)

_REPO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "label_sets"


@dataclass
class LabelSet:
    """A named set of K semantic classes fed from NYU40 ids.

    Attributes:
        name: label-set name (``scannet20``, ``nyu40``).
        class_names: K class names; class id ``k`` is ``class_names[k]``.
        colors: ``[K, 3]`` uint8 display colours (RGB).
        nyu40_ids: K NYU40 ids, ``nyu40_ids[k]`` is the NYU40 source of class ``k`` (0 = none).
        ignore_index: value for pixels of no class (255).
    """

    name: str
    class_names: list[str]
    colors: np.ndarray
    nyu40_ids: list[int] = field(default_factory=list)
    ignore_index: int = IGNORE_INDEX

    def __post_init__(self) -> None:
        self.class_names = [str(n) for n in self.class_names]
        self.colors = np.asarray(self.colors, dtype=np.uint8).reshape(-1, 3)
        self.nyu40_ids = [int(i) for i in self.nyu40_ids]
        k = len(self.class_names)
        if self.colors.shape[0] != k:
            raise ValueError(f"label set {self.name!r}: {k} class names but {self.colors.shape[0]} colours")
        if self.nyu40_ids and len(self.nyu40_ids) != k:
            raise ValueError(f"label set {self.name!r}: {k} class names but {len(self.nyu40_ids)} nyu40_ids")
        if not 0 < k <= 255 or self.ignore_index < k or self.ignore_index > 255:
            raise ValueError(f"label set {self.name!r}: need 1..255 classes and ignore_index in [K, 255]")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def nyu40_to_class(self) -> np.ndarray:
        """``[256]`` uint8 lookup: NYU40 id -> class id (``ignore_index`` where unmapped)."""
        lut = np.full(256, self.ignore_index, dtype=np.uint8)
        for cls, nyu in enumerate(self.nyu40_ids):
            if nyu > 0:
                lut[nyu] = cls
        return lut

    def map_nyu40(self, nyu40: np.ndarray) -> np.ndarray:
        """Class ids (uint8, ``ignore_index`` where unmapped) of an array of NYU40 ids."""
        nyu40 = np.asarray(nyu40)
        out = np.full(nyu40.shape, self.ignore_index, dtype=np.uint8)
        ok = (nyu40 >= 0) & (nyu40 < 256)
        out[ok] = self.nyu40_to_class[nyu40[ok].astype(np.int64)]
        return out

    def colorize(self, labels: np.ndarray, ignore_color=(0, 0, 0)) -> np.ndarray:
        """RGB uint8 ``[..., 3]`` display image of class ids (ignore and out-of-range -> ``ignore_color``)."""
        return colorize_ids(labels, self.colors, ignore_color)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "class_names": list(self.class_names),
            "colors": [[int(c) for c in rgb] for rgb in self.colors],
            "ignore_index": int(self.ignore_index),
            "nyu40_ids": list(self.nyu40_ids),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "LabelSet":
        missing = [k for k in ("name", "class_names", "colors") if k not in d]
        if missing:
            raise ValueError(f"label-set dict lacks keys {missing}; expected name, class_names, colors, ignore_index")
        return cls(
            name=d["name"],
            class_names=list(d["class_names"]),
            colors=np.asarray(d["colors"], dtype=np.uint8),
            nyu40_ids=list(d.get("nyu40_ids", [])),
            ignore_index=int(d.get("ignore_index", IGNORE_INDEX)),
        )


def as_label_set(value: "LabelSet | dict") -> LabelSet:
    """The :class:`LabelSet` of a label set or of its dict form (as checkpoints store it); ValueError otherwise."""
    if isinstance(value, LabelSet):
        return value
    if isinstance(value, dict):
        return LabelSet.from_dict(value)
    raise ValueError(f"expected a LabelSet or its dict, got {type(value).__name__}")


def label_set_dirs() -> list[Path]:
    """Folders searched for ``<name>.yaml``: ``$SRAY_LABEL_SETS`` (os.pathsep list), the repo's config,
    and the installed ROS share folder when ament_index_python is importable."""
    dirs = [Path(p) for p in os.environ.get("SRAY_LABEL_SETS", "").split(os.pathsep) if p]
    dirs.append(_REPO_CONFIG)
    try:  # installed package (colcon/ament): share/sray_ros/config/label_sets
        from ament_index_python.packages import get_package_share_directory

        dirs.append(Path(get_package_share_directory("sray_ros")) / "config" / "label_sets")
    except Exception:  # noqa: BLE001 - not a ROS install, or package not installed
        pass
    return dirs


def load_label_set(name_or_path: str | os.PathLike) -> LabelSet:
    """Load a label set by name (``scannet20``, ``nyu40``) or from a YAML file path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise FileNotFoundError(f"label-set file {p} does not exist")
        return _load_yaml(str(p.resolve()))
    dirs = label_set_dirs()
    for d in dirs:
        f = d / f"{name_or_path}.yaml"
        if f.is_file():
            return _load_yaml(str(f))
    raise FileNotFoundError(f"no label set {str(name_or_path)!r}: looked for <name>.yaml in {[str(d) for d in dirs]}")


@lru_cache(maxsize=32)
def _load_yaml_cached(path: str) -> dict:
    with open(path, "r", encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _load_yaml(path: str) -> LabelSet:
    d = _load_yaml_cached(path)
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a YAML mapping with name, class_names, colors, nyu40_ids")
    return LabelSet.from_dict(d)


def colorize_ids(labels: np.ndarray, colors, ignore_color=(0, 0, 0)) -> np.ndarray:
    """RGB uint8 ``[..., 3]`` display image of uint8 class ids ``[...]`` with per-class ``colors`` ``[K, 3]``
    (0-255): the one label colouring (node topics, demo, panels). ``IGNORE_INDEX`` (255) and any id
    >= K are shown in ``ignore_color``."""
    colors = np.asarray(colors, dtype=np.float64).reshape(-1, 3).round().clip(0, 255).astype(np.uint8)
    palette = np.empty((256, 3), dtype=np.uint8)
    palette[:] = np.asarray(ignore_color, dtype=np.uint8)
    palette[: min(len(colors), IGNORE_INDEX)] = colors[:IGNORE_INDEX]
    ids = np.asarray(labels)
    if ids.dtype != np.uint8:
        ids = np.where((ids >= 0) & (ids < 256), ids, IGNORE_INDEX).astype(np.uint8)
    return palette[ids]


def colorize(labels: np.ndarray, label_set: LabelSet | str = "scannet20") -> np.ndarray:
    """Display colours of a class-id image in a label set (ignore -> black)."""
    ls = load_label_set(label_set) if isinstance(label_set, (str, os.PathLike)) else label_set
    return ls.colorize(labels)


# --------------------------------------------------------------------------------------------------
# ScanNet raw label table
# --------------------------------------------------------------------------------------------------
@lru_cache(maxsize=8)
def _read_label_table(path: str) -> tuple[np.ndarray, dict[str, int]]:
    raw_to_nyu = np.zeros(1 << 16, dtype=np.uint8)
    name_to_nyu: dict[str, int] = {}
    with open(path, "r", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        need = {"id", "raw_category", "nyu40id"}
        if reader.fieldnames is None or not need.issubset(reader.fieldnames):
            raise ValueError(f"{path}: expected a ScanNet label table with columns {sorted(need)}, "
                             f"got {reader.fieldnames}")
        for row in reader:
            try:
                raw, nyu = int(row["id"]), int(row["nyu40id"] or 0)
            except ValueError:
                continue
            if 0 <= raw < raw_to_nyu.size and 0 <= nyu <= 40 and raw_to_nyu[raw] == 0:
                raw_to_nyu[raw] = nyu
            name_to_nyu.setdefault(row["raw_category"].strip().lower(), nyu)
    raw_to_nyu.setflags(write=False)
    return raw_to_nyu, name_to_nyu


def scannet_raw_to_nyu40(table_path: str | os.PathLike) -> np.ndarray:
    """``[65536]`` uint8 lookup from ScanNet raw label ids (``label-filt`` values) to NYU40 ids (0 = none)."""
    return _read_label_table(str(Path(table_path).resolve()))[0]


def scannet_category_to_nyu40(table_path: str | os.PathLike, raw_category: str) -> int:
    """NYU40 id of a ScanNet raw category name (0 when the table does not list it)."""
    return _read_label_table(str(Path(table_path).resolve()))[1].get(raw_category.strip().lower(), 0)


def raw_to_class_lut(table_path: str | os.PathLike, label_set: LabelSet) -> np.ndarray:
    """``[65536]`` uint8 lookup: ScanNet raw id -> class id of ``label_set`` (ignore where unmapped)."""
    return label_set.nyu40_to_class[scannet_raw_to_nyu40(table_path)]


def write_nyu40_label_table(path: str | os.PathLike) -> None:
    """Write a ``scannetv2-labels.combined.tsv``-compatible table whose raw id == NYU40 id.

    Used by the synthetic generator: its ``label-filt`` images hold NYU40 ids directly.
    """
    cols = ["id", "raw_category", "category", "count", "nyu40id", "eigen13id", "nyuClass",
            "nyu40class", "eigen13class"]
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(cols)
        for i, name in enumerate(NYU40_NAMES, start=1):
            w.writerow([i, name, name, 0, i, "", name, name, ""])
    os.replace(tmp, path)
