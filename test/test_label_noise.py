"""Semantic-NeRF's label tasks as corruptions (sray_ros.data.label_noise): each changes exactly the stated
fraction, is deterministic per seed, and never reaches held-out targets (sray-eval / sray-finetune)."""

import argparse

import numpy as np
import pytest

from sray_ros.data.label_noise import (LabelCorruption, add_label_corruption_args, downscale_labels,
                                       label_regions)

K = 20


def blocky_labels(frames: int = 6, h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """Frames of rectangles of random classes (many connected regions) with some unknown (255) pixels."""
    rng = np.random.default_rng(seed)
    out = np.empty((frames, h, w), np.uint8)
    for f in range(frames):
        out[f] = rng.integers(0, K, size=(h // 8, w // 8)).repeat(8, 0).repeat(8, 1).astype(np.uint8)
        out[f, rng.random((h, w)) < 0.05] = 255
    return out


def test_pixel_noise_changes_exactly_the_stated_fraction_to_other_classes():
    labels = blocky_labels()
    for p in (0.5, 0.9):
        noisy = LabelCorruption(pixel_noise=p, seed=3).apply(labels, K)
        for f in range(labels.shape[0]):
            known = labels[f] != 255
            changed = noisy[f] != labels[f]
            assert not changed[~known].any()  # unknown pixels stay unknown
            assert changed.sum() == round(p * known.sum())  # exactly, and each changed one is another class
            assert noisy[f][changed].max() < K
    assert np.array_equal(labels, blocky_labels())  # the input is not modified


def test_region_noise_relabels_the_stated_fraction_of_whole_regions():
    labels = blocky_labels()
    noisy = LabelCorruption(region_noise=0.3, seed=1).apply(labels, K)
    for f in range(labels.shape[0]):
        regions, classes = label_regions(labels[f])
        assert len(classes) > 20
        flipped = 0
        for rid, c in enumerate(classes):
            values = np.unique(noisy[f][regions == rid])
            assert values.size == 1  # a region is relabelled as a whole
            flipped += int(values[0] != c)
            assert values[0] < K
        assert flipped == round(0.3 * len(classes))
        assert np.array_equal(noisy[f] == 255, labels[f] == 255)


def test_keep_fraction_keeps_exactly_that_many_labelled_frames():
    labels = blocky_labels(frames=40)
    out = LabelCorruption(keep_fraction=0.1, seed=2).apply(labels, K)
    kept = [f for f in range(40) if (out[f] != 255).any()]
    assert len(kept) == 4
    assert all(np.array_equal(out[f], labels[f]) for f in kept)
    assert all((out[f] == 255).all() for f in range(40) if f not in kept)
    assert LabelCorruption(keep_fraction=0.01).kept_frames(40).sum() == 1  # at least one when F > 0
    assert LabelCorruption(keep_fraction=0.0).kept_frames(40).sum() == 0


def test_downscale_gives_labels_at_one_sth_resolution_upsampled_nearest():
    labels = np.random.default_rng(0).integers(0, K, size=(1, 48, 64)).astype(np.uint8)
    out = LabelCorruption(downscale=8).apply(labels, K)[0]
    blocks = out.reshape(6, 8, 8, 8).transpose(0, 2, 1, 3).reshape(48, 64)
    assert (blocks == blocks[:, :1]).all()  # constant on every 8x8 block
    assert set(np.unique(out)) <= set(np.unique(labels))  # ids are never mixed
    assert np.array_equal(out, downscale_labels(labels[0], 8))
    # each block takes one of its own pixels' labels (nearest neighbour, no shift)
    for by, bx in ((0, 0), (3, 5), (5, 7)):
        assert out[8 * by, 8 * bx] in labels[0, 8 * by:8 * by + 8, 8 * bx:8 * bx + 8]


def test_deterministic_per_seed():
    labels = blocky_labels()
    a = LabelCorruption(0.5, 0.5, 0.3, 2, seed=7).apply(labels, K)
    b = LabelCorruption(0.5, 0.5, 0.3, 2, seed=7).apply(labels, K)
    c = LabelCorruption(0.5, 0.5, 0.3, 2, seed=8).apply(labels, K)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(LabelCorruption().apply(labels, K), labels)


def test_bad_values_are_rejected_with_what_is_expected():
    with pytest.raises(ValueError, match=r"pixel_noise must be in \[0, 1\]"):
        LabelCorruption(pixel_noise=1.5)
    with pytest.raises(ValueError, match="downscale must be an integer >= 1"):
        LabelCorruption(downscale=0)
    with pytest.raises(ValueError, match="label ids must be < 20"):
        LabelCorruption(pixel_noise=0.1).apply(np.full((1, 4, 4), 30, np.uint8), K)
    with pytest.raises(ValueError, match=r"\[frames, H, W\]"):
        LabelCorruption().apply(np.zeros((4, 4), np.uint8), K)


def test_cli_options_round_trip():
    p = argparse.ArgumentParser()
    add_label_corruption_args(p)
    args = p.parse_args(["--label-keep-fraction", "0.1", "--label-pixel-noise", "0.5", "--label-region-noise", "0.3",
                         "--label-downscale", "8", "--label-noise-seed", "4"])
    assert LabelCorruption.from_args(args) == LabelCorruption(0.1, 0.5, 0.3, 8, 4)
    assert LabelCorruption.from_args(p.parse_args([])).is_identity
    for corruption in (LabelCorruption(0.1, 0.5, 0.3, 8, 4), LabelCorruption(pixel_noise=0.1234567), LabelCorruption()):
        assert LabelCorruption.from_args(p.parse_args(corruption.to_args())) == corruption


def test_evaluation_never_corrupts_held_out_targets(monkeypatch):
    """sray-eval's path: corrupted labels reach the source views only; the scored targets keep theirs."""
    import torch

    from sray_ros.data.label_sets import load_label_set
    from sray_ros.data.scene import SceneArrays
    from sray_ros.model.label_transfer import LabelTransferConfig
    from sray_ros.model.sray import SRay, SRayConfig
    from sray_ros.train import evaluate as ev

    label_set = load_label_set("scannet20")
    n, h, w = 12, 32, 48
    rng = np.random.default_rng(0)
    poses = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))
    poses[:, 0, 3] = np.linspace(-0.2, 0.2, n)
    labels = rng.integers(0, 20, (n, h, w)).astype(np.uint8)
    scene = SceneArrays("toy", np.arange(n), rng.integers(0, 255, (n, h, w, 3), dtype=np.uint8), None, labels.copy(),
                        poses, np.array([[40, 0, 23.5], [0, 40, 15.5], [0, 0, 1]], np.float32),
                        np.eye(3, dtype=np.float32), 1.0, 3.0)
    pool, test = ev.split_frames(n, 5)
    seen = {}

    def fake_render(model, sources, K, c2w, height, width, **kwargs):
        seen.setdefault("sources", []).append(sources.labels.clone())
        t = int(np.argmin(np.abs(poses[:, 0, 3] - float(c2w[0, 3]))))
        pred = torch.from_numpy(labels[t]).long()  # a perfect prediction of the clean target
        return type("V", (), {"labels": pred, "rgb": torch.zeros(height, width, 3), "confidence": torch.ones(height, width),
                              "depth": torch.ones(height, width)})()

    monkeypatch.setattr(ev, "render_view", fake_render)
    corruption = LabelCorruption(pixel_noise=0.9, seed=1)
    model = SRay(SRayConfig.tiny(num_classes=20))
    result = ev.evaluate_scene(model, scene, label_set, num_sources=4, holdout_every=5, progress=False,
                               label_transfer=LabelTransferConfig(), label_corruption=corruption,
                               label_pooling=None)  # the corrupted labels as they are (pooling: its own test)
    assert np.array_equal(scene.labels, labels)  # the scene (held-out targets included) is untouched
    assert result.confusion.summary()["total_acc"] == 1.0  # scored against the clean target labels
    expected = corruption.apply(labels[pool], 20)
    for src in seen["sources"]:  # sources are corrupted pool frames, never a target
        assert any(np.array_equal(src[i].numpy(), expected[j]) for i in range(src.shape[0]) for j in range(len(pool)))
        assert not any(np.array_equal(src[i].numpy(), labels[t]) for i in range(src.shape[0]) for t in test)


def test_sray_eval_rejects_corruption_without_label_transfer(tmp_path, capsys):
    from pathlib import Path

    from sray_ros.train.evaluate import main

    ckpt = Path(__file__).resolve().parents[1] / "models" / "sray_default.pt"
    rc = main(["--checkpoint", str(ckpt), "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--device", "cpu",
               "--label-pixel-noise", "0.5"])
    assert rc == 2 and "--label-transfer" in capsys.readouterr().err
    rc = main(["--checkpoint", str(ckpt), "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--device", "cpu",
               "--label-pixel-noise", "1.5", "--label-transfer", "blend"])
    assert rc == 2 and "pixel_noise must be in [0, 1]" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# segmenter-like noise
# --------------------------------------------------------------------------------------------------
def _room_labels(frames: int = 4):
    """Frames of a synthetic room: wall (0) | floor (1) halves, a table (6) block, a small picture (10) of
    3 x 3 pixels (0.19 % of the image) and a window (8)."""
    lab = np.zeros((frames, 60, 80), np.uint8)
    lab[:, 30:] = 1
    lab[:, 35:50, 20:50] = 6
    lab[:, 5:8, 60:63] = 10
    lab[:, 5:20, 5:25] = 8
    return lab


def test_segmenter_noise_is_deterministic_per_seed_and_flickers_between_frames():
    from sray_ros.data.label_noise import LabelCorruption, SegmenterNoise
    lab = _room_labels(6)
    a = LabelCorruption(segmenter=SegmenterNoise(), seed=3).apply(lab, 20)
    assert np.array_equal(a, LabelCorruption(segmenter=SegmenterNoise(), seed=3).apply(lab, 20))
    assert not np.array_equal(a, LabelCorruption(segmenter=SegmenterNoise(), seed=4).apply(lab, 20))
    # identical input frames come out different: each frame draws its own errors
    assert len({a[i].tobytes() for i in range(6)}) > 1
    assert not LabelCorruption(segmenter=SegmenterNoise()).is_identity


def test_one_frame_at_a_time_equals_the_whole_sequence():
    from sray_ros.data.label_noise import LabelCorruption, SegmenterNoise
    lab = _room_labels(4)
    task = LabelCorruption(segmenter=SegmenterNoise(), pixel_noise=0.2, region_noise=0.1, seed=5)
    whole = task.apply(lab, 20)
    for i in range(4):
        assert np.array_equal(task.apply_frame(lab[i], 20, i), whole[i])
    assert np.array_equal(lab, _room_labels(4))  # input untouched
    with pytest.raises(ValueError, match="keep_fraction needs the whole sequence"):
        LabelCorruption(keep_fraction=0.5).apply_frame(lab[0], 20, 0)
    with pytest.raises(ValueError, match="label ids must be < 20"):
        task.apply_frame(np.full((4, 4), 30, np.uint8), 20, 0)


def test_segmenter_confusions_stay_within_similar_classes_and_boundaries_move_by_at_most_the_radius():
    from sray_ros.data.label_noise import SegmenterNoise, similar_class_groups
    from sray_ros.data.label_sets import load_label_set
    names = load_label_set("scannet20").class_names
    groups = similar_class_groups(names)
    assert (names.index("table"), names.index("desk"), names.index("counter")) in groups
    lab = _room_labels(1)[0]
    noise = SegmenterNoise(boundary_px=2, confusion=1.0, miss_small=0.0, flicker=0.0)
    for seed in range(10):
        out = noise.apply_frame(lab, 20, np.random.default_rng(seed), groups)
        table = lab == 6
        # the table region is always relabelled within its group (confusion 1): desk or counter, never else
        inner = np.zeros_like(table)
        inner[38:47, 23:47] = True  # 3 px inside the table: boundary moves cannot reach it
        assert set(np.unique(out[inner]).tolist()) <= {names.index("desk"), names.index("counter")}
        # far (> 2 px) from every class edge nothing changes for classes outside any group (wall / floor)
        far = np.zeros_like(table)
        far[22:27, 30:78] = True  # wall rows between the window and the floor edge, >= 3 px from both
        assert np.all(out[far] == 0)


def test_segmenter_misses_small_objects_and_rejects_bad_settings():
    from sray_ros.data.label_noise import SegmenterNoise
    lab = _room_labels(1)[0]
    out = SegmenterNoise(boundary_px=0, confusion=0.0, miss_small=1.0, flicker=0.0).apply_frame(
        lab, 20, np.random.default_rng(0), ())
    assert not np.any(out == 10)  # the 9-pixel picture (below 0.3 % of the image) is gone ...
    assert np.all(out[5:8, 60:63] == 0)  # ... replaced by the wall around it
    assert np.sum(out == 6) == np.sum(lab == 6)  # large objects stay
    for bad in (dict(boundary_px=-1), dict(confusion=1.5), dict(flicker=-0.1), dict(boundary_px=1.5)):
        with pytest.raises(ValueError):
            SegmenterNoise(**bad)
