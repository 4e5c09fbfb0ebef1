"""``sray-train``: multi-scene pretraining of S-Ray from a YAML config.

    sray-train --config config/train/synthetic_cpu.yaml [--resume runs/x/last.pt] [--max-steps N]
    torchrun --nproc-per-node 4 -m sray_ros.train.train_cli --config ...   # multi-GPU / multi-node (DDP)

Writes into ``output_dir``: ``last.pt`` (every ``checkpoint_every`` steps, on Ctrl-C and at the end; full
optimiser/RNG state, resumable), ``best.pt`` (highest validation ray mIoU, or lowest validation loss with
``select_metric: val_loss``), ``step_<N>.pt`` every ``snapshot_every`` steps, ``log.jsonl`` (one JSON object
per logged step / validation) and ``config.yaml``. Checkpoint writes are atomic.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from sray_ros.data.augment import ClassBalanceConfig, ClassBalancedPixelSampler, PhotometricConfig
from sray_ros.data.label_sets import load_label_set
from sray_ros.data.ray_batch import RayBatchSampler
from sray_ros.data.scannet import list_scannet_scenes, load_scannet_scene
from sray_ros.data.scene import SceneArrays
from sray_ros.model.config import SRayConfig
from sray_ros.model.sray import SRay
from sray_ros.train.checkpoint import CheckpointError, load_checkpoint
from sray_ros.train.config import TrainConfig, resolve_device
from sray_ros.train.trainer import Trainer


def load_scene_arrays(root: str, cfg: TrainConfig, limit: int = 0, progress: bool = True) -> list[SceneArrays]:
    """Preload every ScanNet-layout scene under ``root`` at the configured resolution."""
    if not root:
        return []
    folders = list_scannet_scenes(root)
    if not folders:
        raise FileNotFoundError(f"{root}: no ScanNet-layout scene folders (each needs a pose/ folder)")
    if limit:
        folders = folders[:limit]
    scenes = []
    for folder in tqdm(folders, desc=f"loading {Path(root).name}", unit="scene", disable=not progress):
        scene = load_scannet_scene(folder, cfg.width, cfg.height, label_set=cfg.label_set)
        scenes.append(scene.preload())
    return scenes


def validation_batches(scenes: list[SceneArrays], cfg: TrainConfig) -> list:
    if not scenes:
        return []
    sampler = RayBatchSampler(scenes, num_rays=cfg.num_rays, num_sources=cfg.num_sources, seed=12345,
                              labeled_only=True)
    return [sampler.sample() for _ in range(cfg.val_batches)]


def _distributed_setup() -> tuple[bool, int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return False, 0, 1, 0
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return True, dist.get_rank(), dist.get_world_size(), local_rank


def _any_rank(flag: bool, distributed: bool) -> bool:
    """True on every rank when ``flag`` is true on any rank (ranks must stop at the same step under DDP)."""
    if not distributed:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sray-train", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="YAML file of TrainConfig fields")
    p.add_argument("--resume", help="checkpoint of this run to continue from (default: output_dir/last.pt if present)")
    p.add_argument("--init", help="model-only checkpoint to start from (weights only; fresh optimiser)")
    p.add_argument("--fresh", action="store_true", help="ignore an existing output_dir/last.pt")
    p.add_argument("--max-steps", type=int, help="override max_steps")
    p.add_argument("--output-dir", help="override output_dir")
    p.add_argument("--device", help="override device (cpu, cuda, auto)")
    p.add_argument("--max-minutes", type=float, default=0.0,
                   help="stop (and save last.pt) after this much wall time, e.g. to fit a GPU reservation; "
                        "resume later with the same command")
    p.add_argument("--sampling", choices=("hierarchical", "depth_guided", "auto"),
                   help="override sampling: query rays sample hierarchically or around their ground-truth depth")
    p.add_argument("--depth-loss-weight", type=float, help="override depth_loss_weight (L1 depth term)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=YAML",
                   help="override any config field, e.g. --set num_rays=512 --set model={attention: dense}")
    return p


def load_config(args: argparse.Namespace) -> TrainConfig:
    """The run's TrainConfig: the YAML file, then ``--set KEY=YAML`` items, then the dedicated options.

    Raises OSError (unreadable file), yaml.YAMLError, or ValueError / TypeError naming the bad key or value.
    """
    cfg = TrainConfig.from_yaml(args.config)
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=YAML_VALUE (e.g. --set num_rays=512), got {item!r}")
        overrides[key] = yaml.safe_load(value)
    for key, value in (("max_steps", args.max_steps), ("output_dir", args.output_dir), ("device", args.device),
                       ("sampling", args.sampling), ("depth_loss_weight", args.depth_loss_weight)):
        if value is not None:
            overrides[key] = value
    return TrainConfig.from_dict({**cfg.to_dict(), **overrides})


def _fail(message: str) -> int:
    """One line on stderr, exit status 2 (what every sray_ros CLI does with bad input)."""
    print(message, file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args)
    except (OSError, ValueError, TypeError, yaml.YAMLError) as exc:
        print(f"sray-train: bad configuration ({args.config}, --set): {exc}", file=sys.stderr)
        return 2

    distributed, rank, world, local_rank = _distributed_setup()
    try:
        device = resolve_device(cfg.device)
    except ValueError as exc:
        return _fail(f"sray-train: {exc}")
    if distributed and device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    is_main = rank == 0
    torch.manual_seed(cfg.seed + rank)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 tensor cores for fp32 matmuls (Ampere and later)
        torch.backends.cudnn.allow_tf32 = True

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        label_set = load_label_set(cfg.label_set)
        model_cfg = SRayConfig.from_dict({**SRayConfig().to_dict(), **cfg.model, "num_classes": label_set.num_classes,
                                          "ignore_index": label_set.ignore_index})
    except (OSError, ValueError, TypeError) as exc:
        return _fail(f"sray-train: bad label_set / model settings: {exc}")

    init = None
    if args.init:  # checked before the data is loaded: a bad file costs nothing
        try:
            init = load_checkpoint(args.init)
        except CheckpointError as exc:
            return _fail(f"sray-train: --init: {exc}")
        differing = [k for k in SRayConfig.ARCHITECTURE_FIELDS if getattr(init.config, k) != getattr(model_cfg, k)]
        if differing:
            return _fail(f"sray-train: --init {args.init}: its model differs from this run's in {differing}; "
                         "set the run's model settings to match (config 'model:' or --set)")
    resume = args.resume or (None if args.fresh or not (out / "last.pt").exists() else out / "last.pt")
    if resume:
        try:
            load_checkpoint(resume)
        except CheckpointError as exc:
            return _fail(f"sray-train: --resume: {exc}")

    try:
        train_scenes = load_scene_arrays(cfg.train_root, cfg, cfg.max_train_scenes, progress=is_main)
        val_scenes = load_scene_arrays(cfg.val_root, cfg, cfg.max_val_scenes, progress=is_main)
    except (OSError, ValueError) as exc:  # missing folders, unreadable or malformed scenes
        return _fail(f"sray-train: cannot load the data: {exc}")
    if not train_scenes:
        return _fail(f"sray-train: no training scenes (train_root={cfg.train_root!r})")
    class_balance = None
    if cfg.class_balance_power > 0:
        try:
            freq = RayBatchSampler.dataset_class_frequencies(train_scenes, label_set.num_classes)
        except ValueError as exc:
            return _fail(f"sray-train: class balancing: {exc}")
        balance = ClassBalanceConfig(cfg.class_balance_power, cfg.class_balance_max_weight,
                                     ignore_weight=0.0 if cfg.labeled_only else 1.0)
        class_balance = ClassBalancedPixelSampler(freq, balance, label_set.ignore_index)
        if is_main:
            (out / "class_frequencies.json").write_text(json.dumps(
                {"class_frequency": freq.tolist(), "sampling_weight": class_balance.class_weights.tolist()}))
    sampler = RayBatchSampler(train_scenes, num_rays=cfg.num_rays, num_sources=cfg.num_sources,
                              seed=cfg.seed + 1000 * rank, labeled_only=cfg.labeled_only,
                              class_balance=class_balance,
                              photometric=PhotometricConfig() if cfg.photometric_jitter else None)
    val_batches = validation_batches(val_scenes, cfg)

    model = SRay(model_cfg)
    if init is not None:
        model.load_state_dict(init.model.state_dict())
        del init
    trainer = Trainer(model, label_set.to_dict(), sampler, lr=cfg.lr, lr_final=cfg.lr_final,
                      max_steps=cfg.max_steps, grad_clip=cfg.grad_clip, chunk=cfg.chunk, device=device,
                      distributed=distributed, train_config=cfg.to_dict(), sampling=cfg.sampling,
                      depth_guided_fraction=cfg.depth_guided_fraction, depth_perturb=cfg.depth_perturb,
                      depth_loss_weight=cfg.depth_loss_weight)
    if resume:
        try:
            trainer.resume(resume)
        except (CheckpointError, ValueError, KeyError, TypeError) as exc:  # another run's file, no optimiser state
            return _fail(f"sray-train: --resume {resume}: {exc}")
        # best_val holds a loss (> 0) or a negated mIoU (<= 0): a run resumed with the other select_metric
        # starts its selection afresh rather than comparing the two
        if (cfg.select_metric == "val_miou") != (trainer.best_val <= 0):
            trainer.best_val = math.inf
        if rank:  # each rank resumed rank 0's batch stream: give it its own again
            sampler.rng = np.random.default_rng([cfg.seed, rank, trainer.step])
            torch.manual_seed(cfg.seed + rank + 7919 * trainer.step)
        if is_main:
            print(f"sray-train: resumed from {resume} at step {trainer.step}", flush=True)
    if is_main:
        (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    stop = threading.Event()
    previous_handler = signal.getsignal(signal.SIGINT)

    def request_stop(signum, frame):  # finish the current step, then save and exit
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        if is_main:
            print("\nsray-train: stopping after this step (Ctrl-C again to abort without saving)", file=sys.stderr)

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    log = (out / "log.jsonl").open("a") if is_main else None
    bar = tqdm(total=cfg.max_steps, initial=trainer.step, desc="train", unit="step", disable=not is_main,
               dynamic_ncols=True)
    started = time.monotonic()
    window: list = []

    def checkpoint(name: str, metrics: dict | None = None) -> None:
        if is_main:
            trainer.save(out / name, metrics)

    try:
        while trainer.step < cfg.max_steps and not stop.is_set():
            if args.max_minutes > 0 and _any_rank(time.monotonic() - started >= 60.0 * args.max_minutes, distributed):
                if is_main:
                    tqdm.write(f"sray-train: --max-minutes {args.max_minutes:g} reached at step {trainer.step}")
                break
            stats_box = []
            trainer.run(1, stop=stop, on_step=stats_box.append)
            if not stats_box:
                break
            stats = stats_box[0]
            window.append(stats)
            bar.update(1)
            if stats.step % cfg.log_every == 0 or stats.step == cfg.max_steps:
                mean = lambda attr: sum(getattr(s, attr) for s in window) / len(window)  # noqa: E731
                record = {"step": stats.step, "loss": mean("loss"), "semantic_loss": mean("semantic_loss"),
                          "color_loss": mean("color_loss"), "depth_loss": mean("depth_loss"),
                          "depth_guided_steps": sum(s.depth_guided for s in window),
                          "lr": stats.lr, "s_per_step": mean("seconds"),
                          "elapsed_s": time.monotonic() - started}
                window.clear()
                bar.set_postfix(loss=f"{record['loss']:.4f}", sem=f"{record['semantic_loss']:.3f}")
                if log:
                    log.write(json.dumps({k: (None if isinstance(v, float) and v != v else v)
                                          for k, v in record.items()}) + "\n")
                    log.flush()
            if val_batches and (stats.step % cfg.val_every == 0 or stats.step == cfg.max_steps):
                metrics = trainer.evaluate_batches(val_batches, cfg.val_sampling or None)
                record = {"step": stats.step, **metrics}
                if is_main:
                    tqdm.write(f"step {stats.step}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    # best_val is minimised: the negated mIoU when selecting on mIoU
                    score = (-metrics["val_miou"] if cfg.select_metric == "val_miou" and "val_miou" in metrics
                             else metrics["val_loss"])
                    if score < trainer.best_val:
                        trainer.best_val = score
                        checkpoint("best.pt", record)
            if stats.step % cfg.checkpoint_every == 0:
                checkpoint("last.pt")
            if cfg.snapshot_every and stats.step % cfg.snapshot_every == 0:
                checkpoint(f"step_{stats.step:06d}.pt")
    finally:
        bar.close()
        checkpoint("last.pt")
        if log:
            log.close()
        signal.signal(signal.SIGINT, previous_handler)
        if distributed:
            import torch.distributed as dist

            dist.destroy_process_group()
    if is_main:
        print(f"sray-train: step {trainer.step}/{cfg.max_steps}, checkpoint {out / 'last.pt'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
