"""Class-balanced query rays and photometric jitter wired into training (RayBatchSampler, TrainConfig,
sray-train): rare classes are drawn at the rate the weights promise, jitter changes colours only, and
the config rejects settings that cannot work."""

from __future__ import annotations

import numpy as np
import pytest

from sray_ros.data.augment import (ClassBalanceConfig, ClassBalancedPixelSampler, PhotometricConfig, PhotometricParams,
                                   expected_class_share, photometric_jitter)
from sray_ros.data.ray_batch import RayBatchSampler, build_ray_batch
from sray_ros.data.scene import SceneArrays
from sray_ros.geometry import look_at

import torch


def _scene(name="toy", n=6, h=12, w=16, rare_class=3, rare_pixels=4, seed=0):
    """Labels: class 0 everywhere except ``rare_pixels`` pixels of ``rare_class`` per view, one unlabelled row."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((n, h, w), np.uint8)
    labels[:, 0, :rare_pixels] = rare_class
    labels[:, -1, :] = 255
    ang = np.linspace(0, np.pi / 4, n)
    eye = torch.tensor(np.stack([np.cos(ang), np.sin(ang), np.full(n, 1.5)], 1))
    poses = look_at(eye, torch.zeros(n, 3, dtype=torch.float64)).numpy().astype(np.float32)
    K = np.array([[10.0, 0, w / 2], [0, 10.0, h / 2], [0, 0, 1]], np.float32)
    return SceneArrays(name, np.arange(n), rng.integers(0, 255, (n, h, w, 3), dtype=np.uint8),
                       np.full((n, h, w), 2.0, np.float32), labels, poses, K, K.copy(), 0.5, 4.0)


def test_dataset_frequencies_sum_counts_over_scenes():
    a, b = _scene(rare_pixels=4), _scene(rare_pixels=12, seed=1)
    freq = RayBatchSampler.dataset_class_frequencies([a, b], num_classes=5)
    labelled = 6 * 11 * 16  # per scene: all rows but the unlabelled one
    assert freq[3] == pytest.approx((6 * 4 + 6 * 12) / (2 * labelled))
    assert freq[0] == pytest.approx(1 - freq[3]) and freq.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="label id 3 >= num_classes=3"):
        RayBatchSampler.dataset_class_frequencies([a], num_classes=3)


def test_class_balanced_rays_oversample_the_rare_class_as_promised():
    scene = _scene()
    freq = RayBatchSampler.dataset_class_frequencies([scene], 5)
    config = ClassBalanceConfig(power=1.0, max_weight=10.0, ignore_weight=0.0)  # labelled pixels only
    balance = ClassBalancedPixelSampler(freq, config, 255)
    uniform = RayBatchSampler([scene], num_rays=4000, num_sources=3, seed=0, labeled_only=True)
    balanced = RayBatchSampler([scene], num_rays=4000, num_sources=3, seed=0, class_balance=balance)
    u = np.concatenate([uniform.sample().labels.numpy() for _ in range(5)])
    b = np.concatenate([balanced.sample().labels.numpy() for _ in range(5)])
    assert not (b == 255).any()  # ignore_weight 0: never an unlabelled ray
    share = expected_class_share(freq, balance.class_weights)[3]
    # 4 / 176 pixels are rare: ~2.3 % uniformly; weight min(43, 10) = 10 -> 10*4 / (10*4 + 172) = 18.9 %
    assert share == pytest.approx(40 / 212)
    assert abs((b == 3).mean() - share) < 0.02  # 20000 draws: sampling sd ~ 0.003
    assert (u == 3).mean() < 0.04
    with pytest.raises(ValueError, match="ignore_weight=0"):  # labeled_only would be silently ignored
        RayBatchSampler([scene], num_rays=8, num_sources=3, labeled_only=True,
                        class_balance=ClassBalancedPixelSampler(freq, ClassBalanceConfig(ignore_weight=1.0), 255))


def test_photometric_jitter_changes_colours_consistently_and_nothing_else(monkeypatch):
    drawn = []
    draw = PhotometricParams.draw
    monkeypatch.setattr(PhotometricParams, "draw", staticmethod(lambda rng, cfg: drawn.append(draw(rng, cfg)) or drawn[-1]))
    scene = _scene()
    plain = RayBatchSampler([scene], num_rays=64, num_sources=3, seed=7)
    jittered = RayBatchSampler([scene], num_rays=64, num_sources=3, seed=7, photometric=PhotometricConfig())
    a, b = plain.sample(), jittered.sample()
    # the jitter's draws shift the pixel draws, so rebuild the plain batch at b's view and pixels
    pix = (b.uv[:, 1] * scene.width + b.uv[:, 0]).long().numpy()
    ref = build_ray_batch(scene, b.query_index, b.source_indices.numpy(), pix)
    assert torch.equal(ref.labels, b.labels) and torch.equal(ref.depths, b.depths) and torch.equal(ref.uv, b.uv)
    assert not torch.allclose(ref.colors, b.colors) and not torch.allclose(ref.source_images, b.source_images)
    # one draw for the whole batch, applied to the query image and to every source image
    assert len(drawn) == 1 and drawn[0] != PhotometricParams()
    params = drawn[0]
    q = photometric_jitter(scene.colors[b.query_index], params)
    rows, cols = pix // scene.width, pix % scene.width
    assert torch.allclose(b.colors, torch.from_numpy(q[rows, cols].astype(np.float32) / 255.0))
    s0 = photometric_jitter(scene.colors[int(b.source_indices[0])], params)
    assert torch.allclose(b.source_images[0], torch.from_numpy(s0.transpose(2, 0, 1).astype(np.float32) / 255.0))
    assert a.num_rays == b.num_rays


@pytest.mark.parametrize("changes, message", [
    ({"class_balance_power": -0.5}, "class_balance_power"),
    ({"class_balance_max_weight": 0.5}, "class_balance_max_weight"),
    ({"select_metric": "val_psnr"}, "select_metric"),
    ({"snapshot_every": -1}, "snapshot_every"),
    ({"val_sampling": "uniform"}, "val_sampling"),
])
def test_train_config_rejects_unusable_augmentation_settings(changes, message):
    from sray_ros.train.config import TrainConfig

    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)


@pytest.mark.slow
def test_sray_train_with_balance_jitter_snapshots_and_miou_selection(synthetic_mini_set, tmp_path):
    import json

    from conftest import REPO
    from sray_ros.train import train_cli
    from sray_ros.train.checkpoint import load_checkpoint

    out = tmp_path / "run"
    args = ["--config", str(REPO / "config/train/smoke.yaml"), "--set", f"train_root={synthetic_mini_set / 'train'}",
            "--set", f"val_root={synthetic_mini_set / 'test'}", "--set", "val_every=4", "--set", "max_steps=8",
            "--set", "class_balance_power=0.5", "--set", "photometric_jitter=true", "--set", "snapshot_every=4",
            "--output-dir", str(out)]
    assert train_cli.main(args) == 0
    assert (out / "step_000004.pt").exists() and (out / "step_000008.pt").exists()
    weights = json.loads((out / "class_frequencies.json").read_text())
    assert len(weights["class_frequency"]) == 20 and max(weights["sampling_weight"]) <= 10.0
    vals = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    vals = [r for r in vals if "val_miou" in r]
    assert [r["step"] for r in vals] == [4, 8]
    best = load_checkpoint(out / "best.pt").extra
    assert best["metrics"]["val_miou"] == max(r["val_miou"] for r in vals)


@pytest.mark.slow
def test_resuming_with_the_other_select_metric_restarts_selection(synthetic_mini_set, tmp_path):
    """best_val stores -mIoU (<= 0) or a loss (> 0); without a reset a loss never beats a stored -mIoU."""
    from conftest import REPO
    from sray_ros.train import train_cli
    from sray_ros.train.checkpoint import load_checkpoint

    out = tmp_path / "run"
    common = ["--config", str(REPO / "config/train/smoke.yaml"), "--set", f"train_root={synthetic_mini_set / 'train'}",
              "--set", f"val_root={synthetic_mini_set / 'test'}", "--set", "val_every=4", "--output-dir", str(out)]
    assert train_cli.main(common + ["--max-steps", "4", "--set", "select_metric=val_miou"]) == 0
    assert load_checkpoint(out / "best.pt").extra["best_val"] <= 0
    assert train_cli.main(common + ["--max-steps", "8", "--set", "select_metric=val_loss"]) == 0
    best = load_checkpoint(out / "best.pt").extra
    assert best["metrics"]["step"] == 8 and best["best_val"] == pytest.approx(best["metrics"]["val_loss"])


@pytest.mark.parametrize("extra, message", [
    (["--set", "class_balance_power=-1"], "class_balance_power >= 0"),
    (["--set", "select_metric=psnr"], "select_metric must be val_miou or val_loss, got 'psnr'"),
    (["--set", "val_sampling"], "--set expects KEY=YAML_VALUE"),
    (["--set", "no_such_key=1"], "unknown training config key"),
    (["--config", "/nonexistent/train.yaml"], "No such file"),
])
def test_sray_train_reports_a_bad_configuration_in_one_line(extra, message, capsys, tmp_path):
    """Exit 2 with what was wrong, before any data is loaded or any output written."""
    from conftest import REPO
    from sray_ros.train import train_cli

    args = ["--config", str(REPO / "config/train/smoke.yaml"), "--output-dir", str(tmp_path / "run")]
    assert train_cli.main(args + extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("sray-train: bad configuration") and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_sray_train_names_a_missing_data_folder(tmp_path, capsys):
    from conftest import REPO
    from sray_ros.train import train_cli

    assert train_cli.main(["--config", str(REPO / "config/train/smoke.yaml"), "--output-dir", str(tmp_path / "run"),
                           "--set", f"train_root={tmp_path / 'no-rooms'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sray-train: cannot load the data: ") and "no-rooms" in err and err.count("\n") == 1


class _NotWeights:
    """Only a full (unsafe) unpickling could rebuild this."""


def _bad_checkpoints(tmp_path):
    """name -> (file, the words its one-line refusal must contain)."""
    import torch

    from sray_ros.data.label_sets import load_label_set
    from sray_ros.model.config import SRayConfig
    from sray_ros.model.sray import SRay
    from sray_ros.train.checkpoint import save_checkpoint

    good = save_checkpoint(tmp_path / "good.pt", SRay(SRayConfig.tiny(num_classes=20)),
                           load_label_set("scannet20").to_dict())
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:2000])
    crafted = tmp_path / "crafted.pt"
    payload = torch.load(good, weights_only=True)
    payload["config"]["ffn_hidden"], payload["state_dict"] = 20_000_000, {}
    torch.save(payload, crafted)
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": _NotWeights()}, pickled)
    return {"truncated": (truncated, "cannot be read as a torch checkpoint (truncated or corrupt?)"),
            "crafted": (crafted, "ffn_hidden = 20000000 is outside [1, 4096]"),
            "pickled": (pickled, "not an sray_ros weights file"),
            "missing": (tmp_path / "missing.pt", "no such file")}


@pytest.mark.parametrize("option", ["--init", "--resume"])
@pytest.mark.parametrize("kind", ["truncated", "crafted", "pickled", "missing"])
def test_sray_train_with_a_bad_checkpoint_exits_2_with_one_line(tmp_path, capsys, option, kind):
    """It used to exit 1 with two tracebacks. The file is checked before any data is loaded (there is none here)."""
    from conftest import REPO
    from sray_ros.train import train_cli

    path, words = _bad_checkpoints(tmp_path)[kind]
    code = train_cli.main(["--config", str(REPO / "config/train/smoke.yaml"), "--output-dir", str(tmp_path / "run"),
                           "--set", f"train_root={tmp_path / 'no-rooms'}", option, str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"sray-train: {option}: checkpoint {path}: ") and words in err, err
    assert err.count("\n") == 1 and "Traceback" not in err and "weights_only" not in err


def test_sray_train_init_from_another_architecture_exits_2_naming_the_fields(tmp_path, capsys):
    from conftest import REPO
    from sray_ros.train import train_cli

    from sray_ros.data.label_sets import load_label_set
    from sray_ros.model.config import SRayConfig
    from sray_ros.model.sray import SRay
    from sray_ros.train.checkpoint import save_checkpoint

    path = save_checkpoint(tmp_path / "wider.pt", SRay(SRayConfig.tiny(num_classes=20, ffn_hidden=32)),
                           load_label_set("scannet20").to_dict())  # smoke.yaml trains ffn_hidden 16
    code = train_cli.main(["--config", str(REPO / "config/train/smoke.yaml"), "--output-dir", str(tmp_path / "run"),
                           "--set", f"train_root={tmp_path / 'no-rooms'}", "--init", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"sray-train: --init {path}: its model differs from this run's in "
                                        "['ffn_hidden']"), err
    assert err.count("\n") == 1
