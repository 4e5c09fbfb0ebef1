"""Label maps: a 2D segmenter's class ids (another label space) -> the node's label set, applied at intake.

A label map is a YAML file (``config/label_maps/*.yaml``; shipped: ADE20K-150, COCO-panoptic-133 and NYU40 to
ScanNet-20) with

* ``source_classes``: ``{segmenter id: name}``, every id the segmenter publishes;
* ``map``: ``{source name or id: target class name}``; source classes not listed become 255 (unknown);
* ``target_label_set`` (optional): the label set the targets are names of (checked against the node's).

:meth:`LabelMap.apply` converts a label image through a lookup table. Ids the map does not know (not in
``source_classes``, e.g. a segmenter with more classes than the map) become 255 too and are *counted*
(``MappedLabels.unknown_ids``; 255, unknown already, is not), so a frame is never dropped for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from sray_ros.data.label_sets import IGNORE_INDEX
MAPS_DIR = Path(__file__).resolve().parents[2] / "config" / "label_maps"


@dataclass
class MappedLabels:
    """labels ``uint8 [H, W]`` in the node's label set (255 unknown); unknown_ids: pixels whose id the map
    does not know (not in its ``source_classes``); unknown_values: up to 5 such ids."""

    labels: np.ndarray
    unknown_ids: int
    unknown_values: list[int]


@dataclass
class LabelMap:
    """A lookup from segmenter ids to node class ids. ``lut`` ``uint8 [65536]`` (255 = unknown), ``known``
    ``bool [65536]`` (id listed in ``source_classes``), name of the map."""

    name: str
    lut: np.ndarray
    known: np.ndarray

    def apply(self, ids: np.ndarray) -> MappedLabels:
        """``[H, W]`` integer ids (uint8 / uint16, the mono8 / mono16 image) -> :class:`MappedLabels`. 255 is
        unknown on the wire already (the labels topic's convention): it stays 255 and is not counted, unless the
        map lists 255 as a source class. Raises ``ValueError`` for negative ids or ids above 65535."""
        ids = np.asarray(ids)
        if ids.size and (ids.min() < 0 or ids.max() > 65535):
            raise ValueError(f"label ids must be in [0, 65535], got [{ids.min()}, {ids.max()}]")
        flat = ids.astype(np.int64, copy=False)
        unknown = ~self.known[flat] & (flat != IGNORE_INDEX)
        values = sorted(set(np.unique(flat[unknown]).tolist()))[:5] if unknown.any() else []
        return MappedLabels(self.lut[flat].astype(np.uint8), int(unknown.sum()), values)


    def source_ids(self, num_classes: int) -> np.ndarray:
        """``int64 [256]``: node class ``k`` -> the smallest segmenter id the map sends to ``k`` (255 -> 255; classes
        no segmenter id maps to -> 255), to write labels of the node's set as this segmenter would publish them
        (e.g. a test bag in ADE20K ids). ``apply`` of the result gives back each class that has a source."""
        out = np.full(256, IGNORE_INDEX, np.int64)
        for k in range(num_classes):
            sources = np.flatnonzero(self.known & (self.lut == k))
            if sources.size:
                out[k] = int(sources[0])
        return out


def label_map_dirs() -> list[Path]:
    """Folders searched for a shipped map ``<name>.yaml``: the installed ROS share folder
    (``share/sray_ros/config/label_maps``, when ament_index_python finds the package) and the source tree's."""
    dirs = []
    try:
        from ament_index_python.packages import get_package_share_directory

        dirs.append(Path(get_package_share_directory("sray_ros")) / "config" / "label_maps")
    except Exception:  # noqa: BLE001 - not a ROS install, or package not installed
        pass
    dirs.append(MAPS_DIR)
    return dirs


def resolve_label_map_path(name_or_path: str) -> Path:
    """A YAML path or a shipped map by name (``ade20k150_to_scannet20``, see :func:`label_map_dirs`). Raises
    ``FileNotFoundError``: a path (``.yaml`` / ``.yml`` or containing a folder) that is no file, or a name that
    is no shipped map (the message lists the shipped ones)."""
    p = Path(name_or_path)
    looks_like_path = p.suffix in (".yaml", ".yml") or len(p.parts) > 1
    if looks_like_path:
        if p.is_file():
            return p
        raise FileNotFoundError(f"label map file {str(p)!r} does not exist")
    dirs = label_map_dirs()
    for d in dirs:
        shipped = d / f"{name_or_path}.yaml"
        if shipped.is_file():
            return shipped
    names = sorted({q.stem for d in dirs for q in d.glob("*.yaml")})
    raise FileNotFoundError(f"label map {name_or_path!r} is neither a YAML file nor one of the shipped maps {names}")


def load_label_map(name_or_path: str, class_names: list[str], label_set_name: str | None = None) -> LabelMap:
    """Load a label map for a label set with ``class_names`` (class id = index).

    Raises ``FileNotFoundError`` (see :func:`resolve_label_map_path`) or ``ValueError`` naming the problem:
    not a mapping, ``source_classes`` missing / ids outside [0, 65535], a ``map`` key that is no source class,
    a target that is no class of the label set, or a ``target_label_set`` other than ``label_set_name``.
    """
    path = resolve_label_map_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot be read as a YAML text file ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("source_classes"), dict) or not isinstance(
            data.get("map"), dict):
        raise ValueError(f"{path}: needs mappings 'source_classes' (id: name) and 'map' (source: target class)")
    target_set = data.get("target_label_set")
    if target_set is not None and label_set_name is not None and str(target_set) != str(label_set_name):
        raise ValueError(f"{path}: maps to label set {target_set!r}, the model's is {label_set_name!r}")
    sources: dict[int, str] = {}
    for i, n in data["source_classes"].items():
        if not isinstance(i, int) or not 0 <= i <= 65535:
            raise ValueError(f"{path}: source class id {i!r} is not an integer in [0, 65535]")
        sources[i] = str(n)
    by_name = {n: i for i, n in sources.items()}
    targets = {str(n): k for k, n in enumerate(class_names)}
    lut = np.full(65536, IGNORE_INDEX, np.uint8)
    known = np.zeros(65536, bool)
    known[list(sources)] = True
    for src, dst in data["map"].items():
        sid = src if isinstance(src, int) else by_name.get(str(src))
        if sid is None or sid not in sources:
            raise ValueError(f"{path}: map key {src!r} is not one of its source_classes")
        if str(dst) not in targets:
            raise ValueError(f"{path}: target {dst!r} of {src!r} is not a class of the label set {sorted(targets)}")
        lut[sid] = targets[str(dst)]
    return LabelMap(str(data.get("name", path.stem)), lut, known)
