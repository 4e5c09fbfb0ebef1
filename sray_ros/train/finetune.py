"""Per-scene fine-tuning: ``sray-finetune`` and the callable the ROS node runs in the background.

:func:`fine_tune` trains a *copy* of the model on in-memory frames (a :class:`SceneArrays`), so the caller
keeps rendering with the old weights and swaps the returned model in atomically. Frames without labels
(label 255 everywhere) contribute only the photometric loss.

    sray-finetune --checkpoint models/sray_default.pt --scene /data/test/room_0003 --steps 1000 \
        --eval-at 0,100,300,1000 --out runs/ft_room_0003
trains on the scene's source pool (every frame but the held-out test frames of
:func:`~sray_ros.train.evaluate.split_frames`) and evaluates on the held-out frames at the given steps.
With ``--label-*`` corruption options the pool's labels are corrupted for training and for label transfer
alike; with ``--label-transfer`` each evaluation is recorded fused (the curve's metrics) and, under
``without_transfer``, from the fine-tuned field alone.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from sray_ros.data.ray_batch import RayBatchSampler
from sray_ros.data.scene import SceneArrays
from sray_ros.model.sray import SRay
from sray_ros.train.trainer import StepStats, Trainer

FINE_TUNE_LR = 5e-4  # below the pretraining peak: fine-tuning starts from a trained model


@dataclass
class FineTuneResult:
    model: SRay  # the fine-tuned copy (eval mode, on the device it was trained on)
    steps_done: int
    final_loss: float
    stopped_early: bool
    seconds: float


def fine_tune(model: SRay, label_set: dict[str, Any], scene: SceneArrays, max_steps: int,
              lr: float = FINE_TUNE_LR, stop: threading.Event | None = None, max_duration_s: float | None = None,
              on_step: Callable[[StepStats], None] | None = None, num_rays: int = 1024, num_sources: int = 8,
              device: torch.device | str = "cpu", seed: int = 0, chunk: int = 4096, sampling: str = "hierarchical",
              depth_loss_weight: float = 0.0) -> FineTuneResult:
    """Fine-tune a copy of ``model`` on ``scene`` for up to ``max_steps`` steps / ``max_duration_s`` s.

    ``stop`` (checked between steps) ends it early; the weights reached so far are returned.
    ``sampling`` / ``depth_loss_weight``: query-ray sampling and L1 depth weight, as in
    :class:`~sray_ros.train.config.TrainConfig` (depth-guided steps need depth in the scene).
    """
    if scene.num_frames < 2:
        raise ValueError(f"fine-tuning needs at least 2 frames (a query and a source), got {scene.num_frames}")
    tuned = copy.deepcopy(model).to(device)
    sampler = RayBatchSampler([scene], num_rays=num_rays, num_sources=min(num_sources, scene.num_frames - 1),
                              seed=seed)
    trainer = Trainer(tuned, label_set, sampler, lr=lr, lr_final=lr * 0.1, max_steps=max(max_steps, 1),
                      chunk=chunk, device=device, sampling=sampling, depth_loss_weight=depth_loss_weight)
    losses: list[float] = []

    def record(stats: StepStats) -> None:
        losses.append(stats.loss)
        if on_step is not None:
            on_step(stats)

    start = time.monotonic()
    done = trainer.run(max_steps, stop=stop, max_duration_s=max_duration_s, on_step=record)
    tuned.eval()
    final = float(np.mean(losses[-10:])) if losses else float("nan")
    return FineTuneResult(tuned, done, final, done < max_steps, time.monotonic() - start)


def pooled_scene_labels(scene, num_classes: int, pooling, batch: int = 16):
    """``uint8 [N, H, W]``: every frame's labels pooled along its own surfaces, as the node pools a keyframe's
    (:func:`sray_ros.model.label_pooling.pool_in_batches` on the frames' colour and depth)."""
    import torch

    from sray_ros.model.label_pooling import pool_in_batches

    images = torch.from_numpy(scene.colors).permute(0, 3, 1, 2).float() / 255.0
    depths = None if scene.depths is None else torch.from_numpy(scene.depths)
    return pool_in_batches(torch.from_numpy(scene.labels), images, depths, num_classes, cfg=pooling,
                           batch=batch)[0].numpy()


def main(argv: list[str] | None = None) -> int:
    from sray_ros.data.scannet import load_scannet_scene
    from sray_ros.train.checkpoint import CheckpointError, save_checkpoint
    from sray_ros.train.metrics import strict_json
    from sray_ros.train.config import resolve_device
    from sray_ros.train.evaluate import (add_view_arguments, apply_fast_view_options, evaluate_scene, label_options,
                                         label_pooling_option, load_model_for_scenes, source_labels, split_frames, subset)
    from tqdm import tqdm

    p = argparse.ArgumentParser(prog="sray-finetune", description="Fine-tune a pretrained S-Ray on one scene.")
    p.add_argument("--checkpoint", required=True, help="pretrained checkpoint")
    p.add_argument("--scene", required=True, help="ScanNet-layout scene folder")
    p.add_argument("--out", required=True, help="output folder (finetuned.pt, curve.json)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=FINE_TUNE_LR)
    p.add_argument("--num-rays", type=int, default=1024)
    p.add_argument("--eval-at", default="", help="comma-separated steps at which to evaluate the held-out frames")
    add_view_arguments(p)
    p.add_argument("--train-sampling", choices=("hierarchical", "depth_guided", "auto"), default="hierarchical",
                   help="query-ray sampling while fine-tuning (depth_guided / auto: around the rays' sensor depth)")
    p.add_argument("--depth-loss-weight", type=float, default=0.0, help="L1 depth loss weight while fine-tuning")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    try:
        device = resolve_device(args.device)
        loaded = load_model_for_scenes(args.checkpoint, device, args.width, args.height)
        label_transfer, label_corruption = label_options(args)
        label_pooling = label_pooling_option(args, needs_transfer=False)
        apply_fast_view_options(loaded.checkpoint.model.cfg, args)
    except (CheckpointError, ValueError) as exc:
        print(f"sray-finetune: {exc}", file=sys.stderr)
        return 2
    ckpt, label_set, width, height, trained = (loaded.checkpoint, loaded.label_set, loaded.width, loaded.height,
                                               loaded.train_config)
    try:
        scene = load_scannet_scene(args.scene, width, height, label_set=label_set).preload()
    except (OSError, ValueError) as exc:  # SceneFormatError: missing folder, unreadable or malformed frames
        print(f"sray-finetune: {exc}", file=sys.stderr)
        return 2
    pool, test = split_frames(scene.num_frames, args.holdout_every)
    train_scene = subset(scene, pool)
    # fine-tuning sees the corrupted pool labels, pooled per frame as the node pools a keyframe's labels (the
    # same ones label transfer gets in evaluate_scene)
    train_scene.labels = source_labels(scene, pool, label_set.num_classes, label_corruption)
    if label_pooling is not None and train_scene.labels is not None:
        train_scene.labels = pooled_scene_labels(train_scene, label_set.num_classes, label_pooling)
    eval_steps = sorted({int(s) for s in args.eval_at.split(",") if s.strip()})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    curve = []
    model = ckpt.model
    done = 0
    stop = threading.Event()
    bar = tqdm(total=args.steps, desc=f"fine-tune {scene.name}", unit="step")

    def evaluate(step: int) -> None:
        def run(transfer):
            return evaluate_scene(model, scene, label_set, args.num_sources, args.holdout_every, args.max_views,
                                  device=device, progress=False, sampling=args.sampling,
                                  keyframe_depth=args.keyframe_depth, num_surface_samples=args.num_surface_samples,
                                  surface_semantics=args.surface_semantics, label_transfer=transfer,
                                  label_corruption=label_corruption, label_pooling=label_pooling).summary()

        curve.append({"step": step, **run(label_transfer)})
        message = f"step {step}: mIoU {100 * curve[-1]['miou']:.2f}, acc {100 * curve[-1]['total_acc']:.2f}"
        if label_transfer is not None:  # also the fine-tuned field alone, so both rows come from one run
            alone = run(None)
            curve[-1]["without_transfer"] = alone
            message += f" (without transfer: mIoU {100 * alone['miou']:.2f}, acc {100 * alone['total_acc']:.2f})"
        tqdm.write(message)

    targets = sorted(set(eval_steps + [args.steps]))
    try:
        for target in targets:
            if target > done:
                result = fine_tune(model, ckpt.label_set, train_scene, target - done, lr=args.lr, stop=stop,
                                   on_step=lambda s: (bar.update(1), bar.set_postfix(loss=f"{s.loss:.4f}")),
                                   num_rays=args.num_rays, num_sources=args.num_sources, device=device,
                                   seed=args.seed + done, sampling=args.train_sampling,
                                   depth_loss_weight=args.depth_loss_weight)
                model, done = result.model, done + result.steps_done
            if target in eval_steps:
                evaluate(done)
    except KeyboardInterrupt:
        tqdm.write("sray-finetune: interrupted; saving the weights reached so far")
    finally:
        bar.close()
        extra = {"fine_tuned_on": scene.name, "steps": done, "train_frames": [int(i) for i in scene.frame_ids[pool]],
                 "test_frames": [int(i) for i in scene.frame_ids[test]], "train_config": trained}
        save_checkpoint(out / "finetuned.pt", model, ckpt.label_set, extra)
        (out / "curve.json").write_text(json.dumps(strict_json({"scene": scene.name, "curve": curve}), indent=2,
                                                   allow_nan=False))
    print(json.dumps(strict_json({"scene": scene.name, "steps": done, "curve": [
        {"step": c["step"], "miou": c["miou"], "total_acc": c["total_acc"]} for c in curve]}), indent=2,
        allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
