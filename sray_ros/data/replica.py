"""Reader for Replica scenes in the Semantic-NeRF export layout.

    <scene>/rgb/rgb_<i>.png                     colour, 640x480
    <scene>/depth/depth_<i>.png                 uint16 depth in millimetres (Semantic-NeRF divides by 1000)
    <scene>/semantic_class/semantic_class_<i>.png   Replica class ids (0 = void)          optional
    <scene>/traj_w_c.txt                        one row-major 4x4 camera-to-world per line; line i = frame i

Intrinsics are not stored: the export renders 640x480 with a 90 deg horizontal field of view, so
``fx = fy = 320, cx = 319.5, cy = 239.5`` (integer-centre pixels), scaled to the working resolution.

Class ids map to NYU40 through ``config/label_sets/replica_to_nyu40.yaml`` (class *names* -> NYU40;
id -> name from ``info_semantic.json`` beside the scene or the YAML's ``class_ids``), then to the
label set. Unknown ids -> ignore.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import yaml

from sray_ros.data.label_sets import LabelSet, load_label_set
from sray_ros.data.scene import Scene, SceneFormatError, drop_invalid_poses, image_size

REPLICA_WIDTH, REPLICA_HEIGHT, REPLICA_HFOV_DEG = 640, 480, 90.0
REPLICA_DEPTH_SCALE = 1000.0  # uint16 millimetres
DEFAULT_MAPPING = Path(__file__).resolve().parents[2] / "config" / "label_sets" / "replica_to_nyu40.yaml"


def replica_intrinsics(width: int = REPLICA_WIDTH, height: int = REPLICA_HEIGHT,
                       hfov_deg: float = REPLICA_HFOV_DEG) -> np.ndarray:
    f = 0.5 * width / np.tan(np.radians(hfov_deg) * 0.5)
    return np.array([[f, 0.0, (width - 1) * 0.5], [0.0, f, (height - 1) * 0.5], [0.0, 0.0, 1.0]])


def _indexed(folder: Path, prefix: str) -> dict[int, Path]:
    pat = re.compile(rf"^{re.escape(prefix)}(\d+)\.png$")
    return {int(m.group(1)): p for p in folder.iterdir() if (m := pat.match(p.name))}


def replica_id_to_nyu40(scene_root: Path, mapping_path: str | os.PathLike | None = None) -> np.ndarray:
    """``[65536]`` uint8 lookup from Replica class ids to NYU40 ids (0 where unknown)."""
    mapping_path = Path(mapping_path) if mapping_path is not None else DEFAULT_MAPPING
    if not mapping_path.is_file():
        raise SceneFormatError(f"Replica class mapping {mapping_path} does not exist")
    mapping = yaml.safe_load(mapping_path.read_text()) or {}
    names = {str(k).lower(): int(v) for k, v in (mapping.get("names") or {}).items()}
    id_to_name: dict[int, str] = {int(k): str(v) for k, v in (mapping.get("class_ids") or {}).items()}
    for cand in (scene_root / "info_semantic.json", scene_root.parent / "info_semantic.json",
                 scene_root / "habitat" / "info_semantic.json"):
        if cand.is_file():
            info = json.loads(cand.read_text())
            id_to_name = {int(c["id"]): str(c["name"]) for c in info.get("classes", [])}
            break
    lut = np.zeros(1 << 16, np.uint8)
    for cid, name in id_to_name.items():
        if 0 < cid < lut.size:
            lut[cid] = names.get(name.strip().lower().replace(" ", "-"), 0)
    return lut


def load_replica_scene(root: str | os.PathLike, width: int | None = 320, height: int | None = 240,
                       label_set: LabelSet | str = "scannet20", class_mapping: str | os.PathLike | None = None
                       ) -> Scene:
    r = Path(root)
    if not r.is_dir():
        raise SceneFormatError(f"Replica scene folder {r} does not exist")
    traj = r / "traj_w_c.txt"
    if not traj.is_file():
        raise SceneFormatError(f"missing {traj} (Semantic-NeRF Replica layout: one row-major 4x4 c2w per line)")
    if not (r / "rgb").is_dir():
        raise SceneFormatError(f"{r}: missing folder rgb/ (rgb/rgb_<i>.png)")
    try:
        rows = np.loadtxt(traj, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise SceneFormatError(f"{traj}: cannot parse poses ({exc})") from None
    if rows.shape[1] != 16:
        raise SceneFormatError(f"{traj}: expected 16 numbers per line (row-major 4x4), got {rows.shape[1]}")
    rgbs = _indexed(r / "rgb", "rgb_")
    ids = [i for i in sorted(rgbs) if i < rows.shape[0]]
    if not ids:
        raise SceneFormatError(f"{r}: no rgb/rgb_<i>.png with a matching line in traj_w_c.txt")
    ids, poses = drop_invalid_poses(r.name, ids, [rows[i].reshape(4, 4) for i in ids])
    color_paths = [rgbs[i] for i in ids]
    color_size = image_size(color_paths[0])
    K = replica_intrinsics(*color_size)
    depth_paths = depth_size = None
    if (r / "depth").is_dir():
        d = _indexed(r / "depth", "depth_")
        if d:
            depth_paths = [d.get(i) for i in ids]
            depth_size = image_size(next(p for p in depth_paths if p is not None))
    ls = load_label_set(label_set) if isinstance(label_set, (str, os.PathLike)) else label_set
    label_paths = label_size = lut = None
    if (r / "semantic_class").is_dir():
        s = _indexed(r / "semantic_class", "semantic_class_")
        if s:
            label_paths = [s.get(i) for i in ids]
            label_size = image_size(next(p for p in label_paths if p is not None))
            lut = ls.nyu40_to_class[replica_id_to_nyu40(r, class_mapping)]
    w = width if width is not None else color_size[0]
    h = height if height is not None else color_size[1]
    return Scene(name=r.name, root=r, frame_ids=ids, poses=poses, width=w, height=h, color_paths=color_paths,
                 color_intrinsics=K, color_size=color_size, depth_paths=depth_paths,
                 depth_intrinsics=replica_intrinsics(*depth_size) if depth_size else None, depth_size=depth_size,
                 depth_scale=REPLICA_DEPTH_SCALE, label_paths=label_paths, label_size=label_size, label_lut=lut,
                 label_set=ls)
