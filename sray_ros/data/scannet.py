"""Reader for the ScanNet export layout; also reads our synthetic scenes.

    <scene>/color/<id>.jpg          colour (ScanNet: 1296x968)
    <scene>/depth/<id>.png          uint16 millimetres (ScanNet: 640x480)             optional
    <scene>/label-filt/<id>.png     raw ScanNet label ids                              optional
    <scene>/pose/<id>.txt           4x4 camera-to-world (rows); may hold -inf: frame dropped
    <scene>/intrinsic/intrinsic_color.txt, intrinsic_depth.txt   4x4 (or 3x3); they differ in ScanNet

Raw label ids map to NYU40 through ``scannetv2-labels.combined.tsv`` and then to the label set;
everything else becomes 255 (ignore). The table is found, in this order, at the ``label_table``
argument, ``<scene>/``, ``<scene>/..``, ``$SCANNET_LABEL_TABLE``, or ``<repo>/../shared/data/scannet/``.

Per-scene metadata (ids, poses, intrinsics, image sizes, file lists) is read once per process and
cached by folder (:func:`read_scannet_meta`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from sray_ros.data.label_sets import LabelSet, load_label_set, raw_to_class_lut
from sray_ros.data.scene import Scene, SceneFormatError, drop_invalid_poses, image_size

LABEL_TABLE_NAME = "scannetv2-labels.combined.tsv"
_REPO = Path(__file__).resolve().parents[2]
COLOR_EXTS = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class ScanNetMeta:
    name: str
    root: Path
    frame_ids: tuple[int, ...]
    poses: np.ndarray  # [N, 4, 4]
    color_paths: tuple[Path, ...]
    color_size: tuple[int, int]
    color_intrinsics: np.ndarray  # [3, 3] at color_size
    depth_paths: tuple[Path | None, ...] | None
    depth_size: tuple[int, int] | None
    depth_intrinsics: np.ndarray | None
    label_paths: tuple[Path | None, ...] | None
    label_size: tuple[int, int] | None


def _read_matrix(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise SceneFormatError(f"missing {path} ({what})")
    try:
        m = np.loadtxt(path, dtype=np.float64)
    except ValueError as exc:
        raise SceneFormatError(f"{path}: cannot parse {what} as numbers ({exc})") from None
    if m.shape not in ((4, 4), (3, 3)):
        raise SceneFormatError(f"{path}: expected a 4x4 or 3x3 matrix ({what}), got shape {m.shape}")
    return m


def _read_pose(path: Path) -> np.ndarray:
    try:
        m = np.loadtxt(path, dtype=np.float64)
    except ValueError:
        return np.full((4, 4), np.nan)
    return m if m.shape == (4, 4) else np.full((4, 4), np.nan)


def _int_stems(folder: Path, exts: tuple[str, ...]) -> dict[int, Path]:
    out: dict[int, Path] = {}
    for p in folder.iterdir():
        if p.suffix.lower() in exts and p.stem.lstrip("-").isdigit():
            out.setdefault(int(p.stem), p)
    return out


@lru_cache(maxsize=256)
def read_scannet_meta(root: str) -> ScanNetMeta:
    """Parse a ScanNet-layout scene folder (no image pixels are read except one header per stream)."""
    r = Path(root)
    if not r.is_dir():
        raise SceneFormatError(f"scene folder {r} does not exist")
    for sub in ("color", "pose", "intrinsic"):
        if not (r / sub).is_dir():
            raise SceneFormatError(f"{r}: missing folder {sub}/ (ScanNet layout: color/<id>.jpg, pose/<id>.txt, "
                                   "intrinsic/intrinsic_color.txt; optional depth/, label-filt/)")
    colors = _int_stems(r / "color", COLOR_EXTS)
    poses_f = _int_stems(r / "pose", (".txt",))
    if not colors:
        raise SceneFormatError(f"{r / 'color'}: no <id>.jpg colour images")
    if not poses_f:
        raise SceneFormatError(f"{r / 'pose'}: no <id>.txt pose files")
    k_color = _read_matrix(r / "intrinsic" / "intrinsic_color.txt", "colour intrinsics")[:3, :3]
    ids = sorted(set(colors) & set(poses_f))
    if not ids:
        raise SceneFormatError(f"{r}: no frame id has both color/<id>.jpg and pose/<id>.txt")
    ids, poses = drop_invalid_poses(r.name, ids, [_read_pose(poses_f[i]) for i in ids])
    color_paths = tuple(colors[i] for i in ids)
    color_size = image_size(color_paths[0])

    depth_paths = depth_size = k_depth = None
    if (r / "depth").is_dir():
        depths = _int_stems(r / "depth", (".png",))
        if depths:
            k_depth = _read_matrix(r / "intrinsic" / "intrinsic_depth.txt", "depth intrinsics")[:3, :3]
            depth_paths = tuple(depths.get(i) for i in ids)
            first = next(p for p in depth_paths if p is not None) if any(depth_paths) else None
            depth_size = image_size(first) if first is not None else None
            if first is None:
                depth_paths = None
    label_paths = label_size = None
    if (r / "label-filt").is_dir():
        labels = _int_stems(r / "label-filt", (".png",))
        if labels:
            label_paths = tuple(labels.get(i) for i in ids)
            first = next((p for p in label_paths if p is not None), None)
            label_size = image_size(first) if first is not None else None
            if first is None:
                label_paths = None
    return ScanNetMeta(name=r.name, root=r, frame_ids=tuple(ids), poses=poses, color_paths=color_paths,
                       color_size=color_size, color_intrinsics=k_color, depth_paths=depth_paths,
                       depth_size=depth_size, depth_intrinsics=k_depth, label_paths=label_paths,
                       label_size=label_size)


def find_label_table(scene_root: Path, label_table: str | os.PathLike | None = None) -> Path | None:
    if label_table is not None:
        p = Path(label_table)
        if not p.is_file():
            raise SceneFormatError(f"label table {p} does not exist (expected a {LABEL_TABLE_NAME})")
        return p
    cands = [scene_root / LABEL_TABLE_NAME, scene_root.parent / LABEL_TABLE_NAME]
    if os.environ.get("SCANNET_LABEL_TABLE"):
        cands.append(Path(os.environ["SCANNET_LABEL_TABLE"]))
    cands.append(_REPO.parent / "shared" / "data" / "scannet" / LABEL_TABLE_NAME)
    return next((c for c in cands if c.is_file()), None)


def load_scannet_scene(root: str | os.PathLike, width: int | None = 320, height: int | None = 240,
                       label_set: LabelSet | str = "scannet20", label_table: str | os.PathLike | None = None,
                       depth_scale: float = 1000.0) -> Scene:
    """A :class:`Scene` from a ScanNet-layout folder at ``width x height`` (None: the colour image size).

    Frames need colour and a finite pose; depth and labels are optional (the scene is then usable
    without them: ``has_depth`` / ``has_labels`` are False). A frame missing only its depth or label
    file reads as all-invalid (0 m / ignore).
    """
    meta = read_scannet_meta(str(Path(root).resolve()))
    ls = load_label_set(label_set) if isinstance(label_set, (str, os.PathLike)) else label_set
    lut = None
    if meta.label_paths is not None:
        table = find_label_table(meta.root, label_table)
        if table is None:
            raise SceneFormatError(
                f"{meta.root}: has label-filt/ but no {LABEL_TABLE_NAME} was found (looked in the scene folder, "
                "its parent, $SCANNET_LABEL_TABLE, ../shared/data/scannet/); pass label_table=")
        lut = raw_to_class_lut(table, ls)
    w = width if width is not None else meta.color_size[0]
    h = height if height is not None else meta.color_size[1]
    return Scene(name=meta.name, root=meta.root, frame_ids=list(meta.frame_ids), poses=meta.poses, width=w, height=h,
                 color_paths=list(meta.color_paths), color_intrinsics=meta.color_intrinsics, color_size=meta.color_size,
                 depth_paths=list(meta.depth_paths) if meta.depth_paths is not None else None,
                 depth_intrinsics=meta.depth_intrinsics, depth_size=meta.depth_size, depth_scale=depth_scale,
                 label_paths=list(meta.label_paths) if meta.label_paths is not None else None,
                 label_size=meta.label_size, label_lut=lut, label_set=ls)


def list_scannet_scenes(root: str | os.PathLike) -> list[Path]:
    """Scene folders (those with a pose/ folder) directly under ``root``, sorted; skips ``*.partial``."""
    r = Path(root)
    return sorted(p for p in r.iterdir() if p.is_dir() and (p / "pose").is_dir() and not p.name.endswith(".partial"))


def scene_folders(data: str | os.PathLike) -> list[Path]:
    """``data`` itself when it is a ScanNet-layout scene (it has a pose/ folder), else the scenes directly under it.

    Raises FileNotFoundError when it is neither."""
    root = Path(data)
    if (root / "pose").is_dir():
        return [root]
    folders = list_scannet_scenes(root) if root.is_dir() else []
    if not folders:
        raise FileNotFoundError(f"{data}: neither a ScanNet-layout scene (no pose/) nor a folder of scenes")
    return folders
