"""ScanNet-layout reader: real HoloLens sequence, and small hand-made scenes for the edge cases."""

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from sray_ros.data.checks import reprojection_stats
from sray_ros.data.label_sets import load_label_set, write_nyu40_label_table
from sray_ros.data.scannet import load_scannet_scene, read_scannet_meta
from sray_ros.data.scene import SceneFormatError, resize_nearest
from sray_ros.geometry import scale_intrinsics

REPO = Path(__file__).resolve().parents[1]
HOLOLENS = REPO.parent / "shared" / "data" / "hololens_000"
TSV = REPO.parent / "shared" / "data" / "scannet" / "scannetv2-labels.combined.tsv"
needs_shared_label_table = pytest.mark.skipif(
    not TSV.is_file(), reason=f"needs the real ScanNet label table at {TSV} (shared/ beside the repository); absent here")
needs_shared_sequence = pytest.mark.skipif(
    not HOLOLENS.is_dir(), reason=f"needs the real sequence at {HOLOLENS} (shared/ beside the repository); absent here")


def _k4(fx, fy, cx, cy):
    k = np.eye(4)
    k[0, 0], k[1, 1], k[0, 2], k[1, 2] = fx, fy, cx, cy
    return k


def write_scene(root: Path, ids=(0, 1, 2), color_size=(96, 72), depth_size=(64, 48), with_depth=True,
                with_labels=True, bad_pose_ids=(), label_ids=(1, 3, 5, 7), write_table=None) -> Path:
    """A tiny ScanNet-layout scene: fronto-parallel plane at 2 m, labels in vertical stripes of raw ids.
    ``write_table`` (default: when the real table beside the repository is absent) writes an NYU40 label table
    into the scene folder, so tests about other files need nothing from shared/."""
    for sub in ("color", "pose", "intrinsic") + (("depth",) if with_depth else ()) + (("label-filt",) if with_labels else ()):
        (root / sub).mkdir(parents=True, exist_ok=True)
    if with_labels and (not TSV.is_file() if write_table is None else write_table):
        write_nyu40_label_table(root / "scannetv2-labels.combined.tsv")
    wc, hc = color_size
    wd, hd = depth_size
    np.savetxt(root / "intrinsic" / "intrinsic_color.txt", _k4(1.1 * wc, 1.1 * wc, (wc - 1) / 2 + 1.0, (hc - 1) / 2))
    np.savetxt(root / "intrinsic" / "intrinsic_depth.txt", _k4(0.9 * wd, 0.9 * wd, (wd - 1) / 2, (hd - 1) / 2 - 1.0))
    rng = np.random.default_rng(0)
    for n, i in enumerate(ids):
        cv2.imwrite(str(root / "color" / f"{i}.jpg"), rng.integers(0, 255, (hc, wc, 3), dtype=np.uint8))
        pose = np.eye(4)
        pose[0, 3] = 0.05 * n
        if i in bad_pose_ids:
            pose[:] = -np.inf
        np.savetxt(root / "pose" / f"{i}.txt", pose)
        if with_depth:
            cv2.imwrite(str(root / "depth" / f"{i}.png"), np.full((hd, wd), 2000, np.uint16))
        if with_labels:
            stripes = np.array(label_ids, np.uint16)[(np.arange(wc) * len(label_ids)) // wc]
            cv2.imwrite(str(root / "label-filt" / f"{i}.png"), np.tile(stripes, (hc, 1)))
    return root


@pytest.fixture(scope="module")
def hololens():
    if not HOLOLENS.is_dir():
        pytest.skip(f"needs the real sequence at {HOLOLENS} (shared/ beside the repository); absent here")
    return load_scannet_scene(HOLOLENS)


def test_hololens_loads(hololens):
    s = hololens
    assert len(s) == 187 and not s.has_labels and s.has_depth
    c, d = s.load_color(0), s.load_depth(0)
    assert c.shape == (240, 320, 3) and c.dtype == np.uint8
    assert d.shape == (240, 320) and d.dtype == np.float32
    valid = d[d > 0]
    assert 0.3 < valid.min() and valid.max() < 8.0  # metres (uint16 mm scaled by 1000)
    with pytest.raises(SceneFormatError, match="no labels"):
        s.load_labels(0)


def test_hololens_reprojection_0_3(hololens):
    st = reprojection_stats(hololens, hololens.index_of(0), hololens.index_of(3))
    assert st.projected > 0.5 * 320 * 240
    assert st.median_depth_error < 0.02, st


@needs_shared_sequence
def test_hololens_native_resolution():
    s = load_scannet_scene(HOLOLENS, width=None, height=None)
    assert (s.width, s.height) == (540, 360)
    assert np.allclose(s.intrinsics, np.loadtxt(HOLOLENS / "intrinsic" / "intrinsic_color.txt")[:3, :3])


@needs_shared_label_table
def test_color_and_depth_intrinsics_kept_apart(tmp_path):
    root = write_scene(tmp_path / "scene0000_00")
    s = load_scannet_scene(root, 32, 24, label_table=TSV)
    kc = np.loadtxt(root / "intrinsic" / "intrinsic_color.txt")[:3, :3]
    kd = np.loadtxt(root / "intrinsic" / "intrinsic_depth.txt")[:3, :3]
    assert np.allclose(s.intrinsics, scale_intrinsics(kc, 32 / 96, 24 / 72))
    assert np.allclose(s.intrinsics_depth, scale_intrinsics(kd, 32 / 64, 24 / 48))
    assert not np.allclose(s.intrinsics, s.intrinsics_depth)
    assert s.load_color(0).shape == (24, 32, 3) and s.load_depth(0).shape == (24, 32)
    assert np.all(s.load_depth(0) == 2.0)


@needs_shared_label_table
def test_non_contiguous_ids_and_inf_poses_dropped(tmp_path):
    root = write_scene(tmp_path / "s", ids=(0, 5, 7, 20, 31), bad_pose_ids=(7, 31))
    with pytest.warns(UserWarning, match=r"dropped 2 frame\(s\).*\[7, 31\]"):
        s = load_scannet_scene(root, 32, 24, label_table=TSV)
    assert s.frame_ids == [0, 5, 20]
    assert np.all(np.isfinite(s.poses)) and s.poses.shape == (3, 4, 4)
    assert s.index_of(20) == 2


@needs_shared_label_table
def test_labels_mapped_and_never_interpolated(tmp_path):
    # raw ids of the real tsv: 1 wall, 2 chair, 3 floor, 4 table, 5 door, 13 pillow (not in ScanNet-20)
    root = write_scene(tmp_path / "s", label_ids=(1, 2, 3, 4, 5, 13))
    ls = load_label_set("scannet20")
    s = load_scannet_scene(root, 37, 23, label_set=ls, label_table=TSV)  # odd, non-integer scale
    lab = s.load_labels(0)
    assert lab.shape == (23, 37) and lab.dtype == np.uint8
    from sray_ros.data.label_sets import raw_to_class_lut

    expected_values = set(raw_to_class_lut(TSV, ls)[[1, 2, 3, 4, 5, 13]].tolist())
    assert expected_values == {ls.class_names.index(n) for n in ("wall", "chair", "floor", "table", "door")} | {255}
    assert set(np.unique(lab).tolist()) <= expected_values  # nearest only: no value in between


def test_resize_nearest_only_input_values():
    rng = np.random.default_rng(1)
    img = rng.choice(np.array([0, 3, 7, 255], np.uint8), size=(61, 83))
    for w, h in ((320, 240), (17, 13), (83, 61), (40, 200)):
        out = resize_nearest(img, w, h)
        assert out.shape == (h, w)
        assert set(np.unique(out).tolist()) <= {0, 3, 7, 255}
    depth = rng.choice(np.array([0.0, 1.5, 4.0], np.float32), size=(48, 64))
    assert set(np.unique(resize_nearest(depth, 37, 29)).tolist()) <= {0.0, 1.5, 4.0}


def test_missing_depth_and_labels_allowed(tmp_path):
    root = write_scene(tmp_path / "s", with_depth=False, with_labels=False)
    (root / "intrinsic" / "intrinsic_depth.txt").unlink()
    s = load_scannet_scene(root, 32, 24)
    assert not s.has_depth and not s.has_labels
    arr = s.preload()
    assert arr.depths is None and arr.labels is None and arr.colors.shape == (3, 24, 32, 3)
    with pytest.raises(SceneFormatError, match="no depth"):
        s.load_depth(0)


@needs_shared_label_table
def test_frame_missing_its_depth_file_reads_invalid(tmp_path):
    root = write_scene(tmp_path / "s")
    (root / "depth" / "1.png").unlink()
    s = load_scannet_scene(root, 32, 24, label_table=TSV)
    assert np.all(s.load_depth(1) == 0) and np.all(s.load_depth(0) == 2.0)


@needs_shared_label_table
@pytest.mark.parametrize("remove,message", [
    ("intrinsic/intrinsic_color.txt", "intrinsic_color.txt"),
    ("intrinsic/intrinsic_depth.txt", "intrinsic_depth.txt"),
    ("pose", "pose/"),
    ("color", "color/"),
])
def test_malformed_folder_names_missing_file(tmp_path, remove, message):
    import shutil

    root = write_scene(tmp_path / f"s_{remove.replace('/', '_')}")
    p = root / remove
    shutil.rmtree(p) if p.is_dir() else p.unlink()
    with pytest.raises(SceneFormatError, match=message.replace(".", r"\.")):
        load_scannet_scene(root, 32, 24, label_table=TSV)


def test_labels_without_table_fail_clearly(tmp_path, monkeypatch):
    import sray_ros.data.scannet as sc

    root = write_scene(tmp_path / "s", write_table=False)
    monkeypatch.setattr(sc, "_REPO", tmp_path / "nowhere" / "repo")
    monkeypatch.delenv("SCANNET_LABEL_TABLE", raising=False)
    with pytest.raises(SceneFormatError, match="scannetv2-labels.combined.tsv"):
        load_scannet_scene(root, 32, 24)


@needs_shared_label_table
def test_metadata_read_once(tmp_path):
    root = write_scene(tmp_path / "s")
    read_scannet_meta.cache_clear()
    load_scannet_scene(root, 32, 24, label_table=TSV)
    load_scannet_scene(root, 16, 12, label_table=TSV)
    info = read_scannet_meta.cache_info()
    assert info.misses == 1 and info.hits == 1


@needs_shared_label_table
def test_preload_bounds(tmp_path):
    s = load_scannet_scene(write_scene(tmp_path / "s"), 32, 24, label_table=TSV)
    arr = s.preload()
    assert arr.labels.dtype == np.uint8 and arr.depths.dtype == np.float32
    assert arr.near < 2.0 < arr.far


SAMPLE_ROOM = REPO / "sample_data" / "synthetic_room"


def test_resized_copy_loads_like_the_original_at_that_size(tmp_path):
    from sray_ros.data.resize import main as resize_main

    assert resize_main([str(SAMPLE_ROOM), str(tmp_path / "room"), "--width", "80", "--height", "60",
                        "--stride", "3"]) == 0
    small = load_scannet_scene(tmp_path / "room", 80, 60)
    full = load_scannet_scene(SAMPLE_ROOM, 80, 60)
    keep = list(range(0, len(full), 3))
    assert list(small.frame_ids) == [full.frame_ids[i] for i in keep]
    a, b = small.preload(), full.preload()
    np.testing.assert_allclose(a.intrinsics, b.intrinsics, atol=1e-5)
    np.testing.assert_allclose(a.poses, b.poses[keep], atol=1e-6)
    np.testing.assert_array_equal(a.labels, b.labels[keep])  # nearest-neighbour both ways: identical
    np.testing.assert_array_equal(a.depths, b.depths[keep])
    assert np.abs(a.colors.astype(int) - b.colors[keep].astype(int)).mean() < 3.0  # JPEG re-encoding only
    assert not list(tmp_path.glob("*.partial"))


def test_resize_rejects_malformed_input(tmp_path, capsys):
    from sray_ros.data.resize import main as resize_main

    (tmp_path / "empty").mkdir()
    assert resize_main([str(tmp_path / "empty"), str(tmp_path / "out"), "--width", "80", "--height", "60"]) == 2
    assert "no ScanNet-layout scene folders" in capsys.readouterr().err
    broken = tmp_path / "broken" / "scene_a"
    (broken / "pose").mkdir(parents=True)  # a scene folder without color/ or intrinsics
    assert resize_main([str(tmp_path / "broken"), str(tmp_path / "out"), "--width", "80", "--height", "60"]) == 2
    err = capsys.readouterr().err
    assert "missing folder color/" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "scene_a").exists() and not list((tmp_path / "out").glob("*.partial"))


# ------------------------------------------------------------------ every file checked, by kind of defect
def _break(root: Path, kind: str) -> str:
    """Damage frame 1 of a write_scene() scene; returns the damaged file's path relative to root."""
    rel = {"depth_8bit": "depth/1.png", "depth_other_size": "depth/1.png", "depth_3ch": "depth/1.png",
           "depth_empty": "depth/1.png", "color_empty": "color/1.jpg", "color_other_size": "color/1.jpg",
           "labels_colour": "label-filt/1.png", "labels_other_size": "label-filt/1.png"}[kind]
    path = root / rel
    if kind == "depth_8bit":  # 2 m as an 8-bit PNG: read as millimetres it would be 0.2 m
        cv2.imwrite(str(path), np.full((48, 64), 200, np.uint8))
    elif kind == "depth_other_size":
        cv2.imwrite(str(path), np.full((24, 32), 2000, np.uint16))
    elif kind == "depth_3ch":
        cv2.imwrite(str(path), np.full((48, 64, 3), 2000, np.uint16))
    elif kind in ("depth_empty", "color_empty"):
        path.write_bytes(b"")
    elif kind == "color_other_size":
        cv2.imwrite(str(path), np.zeros((36, 48, 3), np.uint8))
    elif kind == "labels_colour":
        cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (72, 96, 3), dtype=np.uint8))
    elif kind == "labels_other_size":
        cv2.imwrite(str(path), np.ones((36, 48), np.uint16))
    return rel


BROKEN_KINDS = {  # kind -> what the error must say was found
    "depth_8bit": "1-channel uint8", "depth_other_size": "32x24", "depth_3ch": "3-channel uint16",
    "depth_empty": "cannot read image", "color_empty": "cannot read image", "color_other_size": "48x36",
    "labels_colour": "3-channel uint8", "labels_other_size": "48x36",
}


@pytest.mark.parametrize("kind", sorted(BROKEN_KINDS))
def test_reader_names_a_bad_file_and_what_it_found(tmp_path, kind):
    root = write_scene(tmp_path / "scene")
    rel = _break(root, kind)
    with pytest.raises(SceneFormatError) as info:
        load_scannet_scene(root, 48, 36).preload()
    assert rel in str(info.value) and BROKEN_KINDS[kind] in str(info.value), str(info.value)


def test_8bit_depth_is_not_read_as_millimetres(tmp_path):
    root = write_scene(tmp_path / "scene")
    scene = load_scannet_scene(root, 64, 48)
    assert np.all(scene.load_depth(1) == 2.0)  # the 16-bit file: 2000 mm
    _break(root, "depth_8bit")
    with pytest.raises(SceneFormatError, match=r"depth/1\.png: depth must be a single-channel 16-bit PNG"):
        scene.load_depth(1)


@pytest.mark.parametrize("kind", ["depth_8bit", "color_empty", "labels_other_size"])
def test_tools_give_one_line_exit_2_naming_the_file(tmp_path, kind, capsys):
    from sray_ros.data.checks import main as checks_main
    from sray_ros.data.resize import main as resize_main
    from sray_ros.ros.scannet_to_bag import main as convert_main

    root = write_scene(tmp_path / "scene")
    rel = _break(root, kind)
    capsys.readouterr()
    for run in (lambda: convert_main([str(root), str(tmp_path / "bag"), "--no-progress"]),
                lambda: resize_main([str(root), str(tmp_path / "small"), "--width", "48", "--height", "36"]),
                lambda: checks_main([str(root), "--gap", "1", "--pairs", "2"])):
        assert run() == 2
        # the one line, apart from a progress bar's carriage-return updates
        err = [line for line in re.split(r"[\r\n]", capsys.readouterr().err) if line.strip() and "%|" not in line]
        assert len(err) == 1 and rel in err[0] and BROKEN_KINDS[kind] in err[0], err
    assert not (tmp_path / "bag").exists() and not (tmp_path / "small").exists()


def test_checks_says_why_a_scene_shorter_than_its_gap_is_skipped(tmp_path, capsys):
    from sray_ros.data.checks import main as checks_main

    root = write_scene(tmp_path / "scene")  # 3 frames
    assert checks_main([str(root), "--gap", "5"]) == 2
    err = capsys.readouterr().err
    assert "scene: skipped: 3 frame(s) with valid poses, a pair --gap 5 apart needs at least 6" in err
    assert "no scene under" in err
    assert checks_main([str(root), "--gap", "1", "--pairs", "2"]) == 0
    assert "median depth error" in capsys.readouterr().out
