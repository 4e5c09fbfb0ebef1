"""Replica (Semantic-NeRF export) reader on a small hand-made scene."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from sray_ros.data.checks import reprojection_stats
from sray_ros.data.label_sets import load_label_set
from sray_ros.data.replica import load_replica_scene, replica_intrinsics
from sray_ros.data.scene import SceneFormatError


def write_replica(root: Path, n=4, with_info=True, bad_line=None) -> Path:
    for sub in ("rgb", "depth", "semantic_class"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        cv2.imwrite(str(root / "rgb" / f"rgb_{i}.png"), rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
        cv2.imwrite(str(root / "depth" / f"depth_{i}.png"), np.full((480, 640), 2500, np.uint16))  # 2.5 m
        sem = np.zeros((480, 640), np.uint8)
        sem[:, :200], sem[:, 200:400], sem[:, 400:] = 93, 31, 7  # wall, chair, an unmapped class
        cv2.imwrite(str(root / "semantic_class" / f"semantic_class_{i}.png"), sem)
        pose = np.eye(4)
        pose[0, 3] = 0.05 * i
        if i == bad_line:
            pose[:] = np.nan
        lines.append(" ".join(f"{v:.6f}" for v in pose.reshape(-1)))
    (root / "traj_w_c.txt").write_text("\n".join(lines) + "\n")
    if with_info:
        info = {"classes": [{"id": 93, "name": "wall"}, {"id": 31, "name": "chair"}, {"id": 7, "name": "beam"}]}
        (root / "info_semantic.json").write_text(json.dumps(info))
    return root


def test_replica_intrinsics_and_depth_scale(tmp_path):
    s = load_replica_scene(write_replica(tmp_path / "room0"), 320, 240)
    assert np.allclose(replica_intrinsics(), [[320, 0, 319.5], [0, 320, 239.5], [0, 0, 1]])
    assert np.allclose(s.intrinsics, [[160, 0, 159.5], [0, 160, 119.5], [0, 0, 1]])
    d = s.load_depth(0)
    assert d.shape == (240, 320) and np.allclose(d, 2.5)  # uint16 millimetres
    st = reprojection_stats(s, 0, 2)
    assert st.median_depth_error < 1e-3


def test_replica_class_mapping(tmp_path):
    s = load_replica_scene(write_replica(tmp_path / "room0"), 320, 240)
    ls = load_label_set("scannet20")
    lab = s.load_labels(0)
    assert lab[0, 0] == ls.class_names.index("wall")
    assert lab[0, 150] == ls.class_names.index("chair")
    assert lab[0, 300] == 255  # beam -> NYU40 otherstructure -> not in ScanNet-20
    nyu = load_replica_scene(tmp_path / "room0", 320, 240, label_set="nyu40")
    assert nyu.load_labels(0)[0, 300] == 37  # otherstructure (NYU40 id 38)


def test_replica_without_class_names_ignores_labels(tmp_path):
    s = load_replica_scene(write_replica(tmp_path / "room1", with_info=False), 64, 48)
    assert np.all(s.load_labels(0) == 255)


def test_replica_bad_pose_and_missing_traj(tmp_path):
    root = write_replica(tmp_path / "room2", bad_line=1)
    with pytest.warns(UserWarning, match="dropped 1 frame"):
        s = load_replica_scene(root, 64, 48)
    assert s.frame_ids == [0, 2, 3]
    (root / "traj_w_c.txt").unlink()
    with pytest.raises(SceneFormatError, match="traj_w_c.txt"):
        load_replica_scene(root, 64, 48)


def test_replica_8bit_depth_png_is_an_error_naming_the_file(tmp_path):
    root = write_replica(tmp_path / "room", n=2)
    cv2.imwrite(str(root / "depth" / "depth_1.png"), np.full((480, 640), 250, np.uint8))  # 2.5 m in 8 bits?
    scene = load_replica_scene(root, 64, 48)
    assert np.all(scene.load_depth(0) == 2.5)
    with pytest.raises(SceneFormatError, match=r"depth_1\.png: depth must be a single-channel 16-bit PNG of "
                                               r"millimetres, found 1-channel uint8 640x480"):
        scene.load_depth(1)
