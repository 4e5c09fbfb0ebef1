"""Training loop: smoke pretraining improves validation loss, resume is exact, DDP (gloo) syncs gradients,
fine-tuning trains a copy and leaves the caller's model untouched, evaluation writes its reports."""

from __future__ import annotations

import json
import socket
import threading

import pytest
import torch

from conftest import REPO

SMOKE_CONFIG = REPO / "config" / "train" / "smoke.yaml"


def _tiny_setup(root, seed=0, num_rays=64):
    from sray_ros.data.label_sets import load_label_set
    from sray_ros.data.ray_batch import RayBatchSampler
    from sray_ros.model.config import SRayConfig
    from sray_ros.model.sray import SRay
    from sray_ros.train.config import TrainConfig
    from sray_ros.train.train_cli import load_scene_arrays

    cfg = TrainConfig.from_yaml(SMOKE_CONFIG)
    scenes = load_scene_arrays(str(root / "train"), cfg, progress=False)
    label_set = load_label_set(cfg.label_set)
    model_cfg = SRayConfig.from_dict({**SRayConfig().to_dict(), **cfg.model, "num_classes": label_set.num_classes})
    torch.manual_seed(0)
    model = SRay(model_cfg)
    sampler = RayBatchSampler(scenes, num_rays=num_rays, num_sources=cfg.num_sources, seed=seed)
    return model, label_set, sampler, scenes


@pytest.mark.slow
def test_smoke_training_improves_validation_loss(synthetic_mini_set, tmp_path):
    from sray_ros.train import train_cli

    out = tmp_path / "run"
    args = ["--config", str(SMOKE_CONFIG), "--set", f"train_root={synthetic_mini_set / 'train'}",
            "--set", f"val_root={synthetic_mini_set / 'test'}", "--set", "val_every=5", "--set", "max_steps=30",
            "--set", "log_every=5", "--output-dir", str(out)]
    assert train_cli.main(args) == 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    val = [r["val_loss"] for r in records if "val_loss" in r]
    assert len(val) == 6
    assert min(val[-2:]) < val[0], val
    assert (out / "last.pt").exists() and (out / "best.pt").exists()
    # Running again resumes from last.pt: nothing left to do at max_steps.
    assert train_cli.main(args) == 0
    from sray_ros.train.checkpoint import load_checkpoint

    assert load_checkpoint(out / "last.pt").extra["step"] == 30


def test_validation_sampling_can_differ_from_training(synthetic_mini_set):
    """Runs trained hierarchically and depth-guided are compared on the same (depth-guided) validation."""
    from sray_ros.train.trainer import Trainer

    model, label_set, sampler, _ = _tiny_setup(synthetic_mini_set, num_rays=32)
    trainer = Trainer(model, label_set.to_dict(), sampler, sampling="hierarchical")
    batches = [sampler.sample()]
    hier, guided = trainer.evaluate_batches(batches), trainer.evaluate_batches(batches, "depth_guided")
    assert hier["val_loss"] != guided["val_loss"]  # different samples along the rays
    assert trainer.evaluate_batches(batches) == hier  # deterministic
    with pytest.raises(ValueError, match="sampling must be one of"):
        trainer.evaluate_batches(batches, "uniform")


def test_resume_restores_step_optimizer_and_batches(synthetic_mini_set, tmp_path):
    from sray_ros.train.trainer import Trainer

    model, label_set, sampler, _ = _tiny_setup(synthetic_mini_set)
    first = Trainer(model, label_set.to_dict(), sampler, max_steps=100)
    first.run(3)
    first.save(tmp_path / "ckpt.pt")
    saved_optimizer = first.optimizer.state_dict()
    saved_optimizer = {k: {kk: (vv.clone() if torch.is_tensor(vv) else vv) for kk, vv in v.items()}
                       for k, v in saved_optimizer["state"].items()}
    first.run(2)  # the uninterrupted run (torch's RNG is global: finish it before resuming the other)
    uninterrupted = [p.detach().clone() for p in first.model.parameters()]

    model2, _, sampler2, _ = _tiny_setup(synthetic_mini_set, seed=999)  # different batches unless restored
    second = Trainer(model2, label_set.to_dict(), sampler2, max_steps=100)
    second.resume(tmp_path / "ckpt.pt")
    assert second.step == 3
    resumed = second.optimizer.state_dict()["state"]
    assert resumed.keys() == saved_optimizer.keys()
    for key, state in saved_optimizer.items():
        assert torch.equal(state["exp_avg"], resumed[key]["exp_avg"])
        assert torch.equal(state["exp_avg_sq"], resumed[key]["exp_avg_sq"])
        assert float(state["step"]) == float(resumed[key]["step"]) == 3
    # The interrupted-and-resumed run continues exactly like the uninterrupted one.
    second.run(2)
    assert second.step == 5
    for (name, p2), p1 in zip(second.model.named_parameters(), uninterrupted):
        assert torch.allclose(p1, p2, atol=1e-6), name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, root: str, result_dir: str) -> None:
    import pathlib

    import torch.distributed as dist

    from sray_ros.train.trainer import Trainer

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        model, label_set, sampler, _ = _tiny_setup(pathlib.Path(root), seed=100 + rank, num_rays=32)
        trainer = Trainer(model, label_set.to_dict(), sampler, max_steps=10, distributed=True)
        first_batch = sampler.sample()
        trainer.run(2)
        torch.save({"params": [p.detach() for p in model.parameters()], "query": first_batch.query_index,
                    "scene": first_batch.scene_name, "uv": first_batch.uv},
                   pathlib.Path(result_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_gloo_two_processes_keep_replicas_identical(synthetic_mini_set, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(synthetic_mini_set), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    # The ranks trained on different rays ...
    assert not torch.equal(r0["uv"], r1["uv"])
    # ... yet hold identical weights: gradients were all-reduced. Without syncing they would diverge.
    for a, b in zip(r0["params"], r1["params"]):
        assert torch.allclose(a, b, atol=1e-6)
    initial = _tiny_setup(synthetic_mini_set)[0]
    assert any(not torch.allclose(a, b) for a, b in zip(r0["params"], initial.parameters()))


def test_fine_tune_trains_a_copy_and_honours_stop(synthetic_mini_set):
    from sray_ros.train.finetune import fine_tune

    model, label_set, _, scenes = _tiny_setup(synthetic_mini_set)
    before = [p.detach().clone() for p in model.parameters()]
    steps = []
    result = fine_tune(model, label_set.to_dict(), scenes[0], max_steps=4, num_rays=64, num_sources=4,
                       on_step=steps.append)
    assert result.steps_done == 4 and [s.step for s in steps] == [1, 2, 3, 4]
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())), "caller's model was modified"
    assert any(not torch.equal(a, b) for a, b in zip(before, result.model.parameters()))

    stop = threading.Event()
    stop.set()
    stopped = fine_tune(model, label_set.to_dict(), scenes[0], max_steps=50, stop=stop, num_rays=64, num_sources=4)
    assert stopped.steps_done == 0 and stopped.stopped_early


def test_eval_cli_writes_metrics_and_panels(synthetic_mini_set, tmp_path):
    from sray_ros.train import evaluate
    from sray_ros.train.trainer import Trainer

    model, label_set, sampler, _ = _tiny_setup(synthetic_mini_set)
    trainer = Trainer(model, label_set.to_dict(), sampler, max_steps=10,
                      train_config={"width": 80, "height": 60})
    trainer.save(tmp_path / "m.pt")
    out = tmp_path / "eval"
    code = evaluate.main(["--checkpoint", str(tmp_path / "m.pt"), "--data", str(synthetic_mini_set / "test"),
                          "--out", str(out), "--num-sources", "4", "--holdout-every", "8", "--max-views", "1"])
    assert code == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["width"] == 80 and report["overall"]["views"] == 1
    for key in ("miou", "frame_miou", "total_acc", "class_acc", "psnr", "ssim"):
        assert key in report["overall"]
    assert 0.0 <= report["overall"]["total_acc"] <= 1.0
    panels = list((out / "panels").glob("*.png"))
    assert len(panels) == 1
    import cv2

    image = cv2.imread(str(panels[0]))
    # camera | GT | labels | confidence | depth, 80 px enlarged 4x to 320 px (+ 4 px separators), legend below
    assert image.shape[1] == 5 * 320 + 4 * 4 and image.shape[0] > 26 + 240 + 20, image.shape
    assert "| test_" in (out / "metrics.md").read_text()


def test_eval_cli_rejects_corrupt_checkpoint(tmp_path, capsys):
    from sray_ros.train import evaluate

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert evaluate.main(["--checkpoint", str(bad), "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "bad.pt" in capsys.readouterr().err


def test_split_frames_keeps_test_frames_out_of_the_pool():
    from sray_ros.train.evaluate import split_frames

    pool, test = split_frames(25, 10)
    assert list(test) == [5, 15] and not set(pool) & set(test) and len(pool) + len(test) == 25
    with pytest.raises(ValueError):
        split_frames(10, 1)


def test_resolve_device_names_what_is_wrong():
    import torch

    from sray_ros.train.config import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("").type in ("cpu", "cuda") and resolve_device("auto") == resolve_device("")
    with pytest.raises(ValueError, match="'gpu0' is not a torch device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA GPU"):
            resolve_device("cuda")
    else:
        with pytest.raises(ValueError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_finetune_cli_records_the_field_with_and_without_label_transfer(synthetic_mini_set, tmp_path):
    """Rows (d) and (e) of the label card come from one run: each evaluation is scored fused and alone."""
    from sray_ros.train import finetune
    from sray_ros.train.trainer import Trainer

    model, label_set, sampler, _ = _tiny_setup(synthetic_mini_set)
    Trainer(model, label_set.to_dict(), sampler, max_steps=10, train_config={"width": 80, "height": 60}).save(
        tmp_path / "m.pt")
    scene = sorted((synthetic_mini_set / "test").iterdir())
    scene = [s for s in scene if s.is_dir()][0]
    out = tmp_path / "ft"
    assert finetune.main(["--checkpoint", str(tmp_path / "m.pt"), "--scene", str(scene), "--out", str(out),
                          "--steps", "2", "--eval-at", "0,2", "--num-rays", "32", "--num-sources", "4",
                          "--holdout-every", "8", "--max-views", "1", "--label-transfer", "depth",
                          "--label-pixel-noise", "0.5"]) == 0
    curve = json.loads((out / "curve.json").read_text())["curve"]
    assert [c["step"] for c in curve] == [0, 2]
    for c in curve:
        alone = c["without_transfer"]
        assert 0.0 <= alone["total_acc"] <= 1.0 and alone["views"] == c["views"] == 1
    # an untrained field is near chance; the (half wrong) keyframe labels it is fused with are not
    assert curve[0]["total_acc"] > curve[0]["without_transfer"]["total_acc"]


def test_finetune_cli_names_a_missing_scene(tmp_path, capsys):
    from sray_ros.train import finetune

    ckpt = REPO / "models" / "sray_default.pt"
    assert finetune.main(["--checkpoint", str(ckpt), "--scene", str(tmp_path / "nowhere"), "--out",
                          str(tmp_path / "ft"), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sray-finetune: scene folder") and "nowhere" in err and "does not exist" in err


def test_eval_cli_names_a_missing_or_empty_data_folder(tmp_path, capsys):
    from sray_ros.train import evaluate

    ckpt = REPO / "models" / "sray_default.pt"
    (tmp_path / "empty").mkdir()
    for data, message in ((tmp_path / "nowhere", "nowhere"), (tmp_path / "empty", "neither a ScanNet-layout scene")):
        assert evaluate.main(["--checkpoint", str(ckpt), "--data", str(data), "--out", str(tmp_path / "ev")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("sray-eval: ") and message in err
    assert not (tmp_path / "ev").exists()  # nothing written before the input was checked


def test_finetune_trains_on_pooled_labels_like_the_node(synthetic_mini_set):
    """sray-finetune's training labels go through the node's per-frame pooling: 90 % pixel noise becomes
    mostly right labels; clean labels stay exactly as they are."""
    import numpy as np

    from sray_ros.data.label_noise import LabelCorruption
    from sray_ros.data.scannet import load_scannet_scene
    from sray_ros.model.label_pooling import LabelPoolingConfig
    from sray_ros.train.finetune import pooled_scene_labels

    folder = next((synthetic_mini_set / "test").glob("test_*"))
    scene = load_scannet_scene(folder, 80, 60).preload()
    clean = scene.labels.copy()
    assert np.array_equal(pooled_scene_labels(scene, 20, LabelPoolingConfig()), clean)
    scene.labels = LabelCorruption(pixel_noise=0.9, seed=0).apply(clean, 20)
    known = clean != 255
    pooled = pooled_scene_labels(scene, 20, LabelPoolingConfig(), batch=3)
    assert (scene.labels == clean)[known].mean() < 0.15 and (pooled == clean)[known].mean() > 0.6
