"""Dense training of the per-view semantic prior (:mod:`sray_ros.model.semantic_prior`) on ScanNet-layout rooms.

Every pixel of every frame is supervised (cross-entropy, class-weighted), unlike S-Ray's ray batches. With a
frozen pretrained encoder each training frame is encoded once into a **feature cache** (the encoder's four
stage ends in float16, the geometry cues at /4, the labels at half resolution; one folder per scene, written to
``<scene>.partial`` and renamed when complete, so an interrupted caching run resumes where it stopped) and the
decoder trains on the cached features: about a tenth of the cost of running the encoder every step.

    python -m sray_ros.train.prior --train ROOT [ROOT ...] --val ROOT --out DIR [--base CKPT] [--steps N]

- ``--base CKPT``: an S-Ray checkpoint; at every new best the prior's weights are attached to it and written to
  ``DIR/sray_with_prior.pt`` (the model the node loads: S-Ray + priors in one file).
- Output: ``DIR/last.pt`` (resume state, every ``--save-every`` steps and on Ctrl-C), ``DIR/best.pt`` (best
  validation mIoU), ``DIR/log.jsonl`` (one line per validation), ``DIR/cache/`` (the feature cache).
- An unfrozen or from-scratch encoder (``--encoder resunet`` or ``--finetune-encoder``) trains on the images
  (no cache).
- Each ROOT is a scene folder or a folder of scenes; ``--max-scenes N`` takes the first N in sorted order, so a
  run resumed with a larger N (and a larger ``--steps``: the cosine learning rate is re-spread over it) trains
  on more rooms as a generator makes them.
- Budgets: ``--minutes`` (wall clock) and ``--cpu-minutes`` (this process's CPU time, robust to other load);
  a run stopped by either is validated at its last step, so it always leaves ``best.pt``.
- ``--cue-dropout P``: a share P of the training frames get all-zero geometry cues, exactly what the net sees
  for a keyframe without depth; without it the prior relies on the cues and degrades badly on RGB-only input.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from sray_ros import geometry
from sray_ros.data.label_sets import IGNORE_INDEX, load_label_set
from sray_ros.data.scannet import load_scannet_scene, scene_folders
from sray_ros.model.geometry_cues import cue_maps
from sray_ros.model.semantic_prior import PRIOR_ENCODERS, SemanticPriorNet, downsample_cues
from sray_ros.train.metrics import ConfusionMatrix

CACHE_VERSION = 1


@dataclass
class FrameSet:
    """Frames of many scenes in memory: images uint8 ``[n, H, W, 3]``, cues float16 ``[n, 3, H/4, W/4]``,
    labels uint8 ``[n, H/2, W/2]`` (255 = ignore), taps (float16 stage ends, or None without a cache),
    scene index per frame."""

    images: np.ndarray
    cues: np.ndarray
    labels: np.ndarray
    taps: list[np.ndarray] | None
    scene: np.ndarray

    def __len__(self) -> int:
        return self.labels.shape[0]


def _cache_scene(scene_dir: Path, out: Path, net: SemanticPriorNet | None, width: int, height: int, stride: int,
                 up: tuple[float, float, float], label_set: str) -> None:
    scene = load_scannet_scene(scene_dir, width, height, label_set)
    idx = list(range(0, len(scene), stride))
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    images = np.stack([scene.load_color(i) for i in idx])
    depths = np.stack([scene.load_depth(i) for i in idx])
    labels = np.stack([geometry.resize_nearest(scene.load_labels(i), width // 2, height // 2) for i in idx])
    K = torch.as_tensor(scene.intrinsics, dtype=torch.float32).expand(len(idx), 3, 3)
    c2w = torch.as_tensor(scene.poses[idx], dtype=torch.float32)
    cues, taps = [], None
    for s in range(0, len(idx), 8):
        sl = slice(s, s + 8)
        c = cue_maps(torch.from_numpy(depths[sl]), K[sl], c2w[sl], torch.tensor(up))
        cues.append(downsample_cues(c, ((height + 3) // 4, (width + 3) // 4)).half().numpy())
        if net is not None:
            x = torch.from_numpy(images[sl]).permute(0, 3, 1, 2).float() / 255.0
            t = [f.half().numpy() for f in net.encode(x)]
            taps = [[a] for a in t] if taps is None else [acc + [a] for acc, a in zip(taps, t)]
    np.save(tmp / "images.npy", images)
    np.save(tmp / "cues.npy", np.concatenate(cues))
    np.save(tmp / "labels.npy", labels)
    if taps is not None:
        for level, parts in enumerate(taps):
            np.save(tmp / f"taps{level}.npy", np.concatenate(parts))
    (tmp / "meta.json").write_text(json.dumps({"version": CACHE_VERSION, "frames": [scene.frame_ids[i] for i in idx],
                                               "width": width, "height": height, "stride": stride,
                                               "encoder": None if net is None else net_encoder_name(net)}))
    os.replace(tmp, out)


def net_encoder_name(net: SemanticPriorNet) -> str:
    return getattr(net.encoder, "variant", type(net.encoder).__name__)


def load_frames(roots: list[Path], cache: Path, net: SemanticPriorNet, use_taps: bool, width: int, height: int,
                stride: int, up: tuple[float, float, float], label_set: str, desc: str,
                max_scenes: int = 0) -> FrameSet:
    """Cache (once, resumably) and load every ``stride``-th frame of every scene under ``roots`` (the first
    ``max_scenes`` scenes in sorted order when it is > 0)."""
    scenes = [s for r in roots for s in scene_folders(r)]  # each root: a scene or a folder of scenes
    if max_scenes > 0:
        scenes = scenes[:max_scenes]
    parts = []
    for si, sd in enumerate(tqdm(scenes, desc=f"{desc}: caching", unit="scene")):
        out = cache / f"{sd.parent.name}__{sd.name}__s{stride}_{width}x{height}"
        meta = out / "meta.json"
        ok = meta.is_file() and json.loads(meta.read_text()).get("version") == CACHE_VERSION
        if ok and use_taps and json.loads(meta.read_text()).get("encoder") != net_encoder_name(net):
            shutil.rmtree(out)
            ok = False
        if not ok:
            _cache_scene(sd, out, net if use_taps else None, width, height, stride, up, label_set)
        mm = "r" if use_taps else None
        part = {k: np.load(out / f"{k}.npy", mmap_mode=mm) for k in ("images", "cues", "labels")}
        if use_taps:
            part["taps"] = [np.load(out / f"taps{i}.npy", mmap_mode="r") for i in range(4)]
        part["scene"] = np.full(part["labels"].shape[0], si, np.int32)
        parts.append(part)
    cat = lambda k: np.concatenate([p[k] for p in parts])  # noqa: E731
    taps = [np.concatenate([p["taps"][i] for p in parts]) for i in range(4)] if use_taps else None
    return FrameSet(cat("images"), cat("cues"), cat("labels"), taps, cat("scene"))


def batch(frames: FrameSet, idx: np.ndarray, net: SemanticPriorNet, use_taps: bool,
          drop_cues: np.ndarray | None = None) -> torch.Tensor:
    """Logits ``[b, K, h, w]`` of frames ``idx``; frames where ``drop_cues`` (bool ``[b]``) is set get all-zero
    cues, exactly what the net sees for a keyframe without depth."""
    cues = torch.from_numpy(frames.cues[idx].astype(np.float32))
    if drop_cues is not None and drop_cues.any():
        cues[torch.from_numpy(drop_cues)] = 0.0
    if use_taps:
        return net.decode([torch.from_numpy(t[idx].astype(np.float32)) for t in frames.taps], cues)
    x = torch.from_numpy(frames.images[idx]).permute(0, 3, 1, 2).float() / 255.0
    return net(x, cues)


def evaluate(frames: FrameSet, net: SemanticPriorNet, use_taps: bool, num_classes: int, bs: int = 16) -> dict:
    """mIoU / accuracy of the prior's argmax at half resolution over all frames."""
    cm = ConfusionMatrix(num_classes)
    net.eval()
    with torch.no_grad():
        for s in range(0, len(frames), bs):
            idx = np.arange(s, min(s + bs, len(frames)))
            logits = batch(frames, idx, net, use_taps)
            lab = torch.from_numpy(frames.labels[idx].astype(np.int64))
            pred = F.interpolate(logits, size=lab.shape[-2:], mode="bilinear", align_corners=False).argmax(1)
            for p, g in zip(pred, lab):
                cm.update(p, g)
    net.train()
    out = cm.summary()
    out["iou"] = [None if not math.isfinite(v) else float(v) for v in cm.iou()]
    return out


def class_weights(labels: np.ndarray, num_classes: int, power: float = 0.5, max_weight: float = 10.0) -> torch.Tensor:
    """``min((f_c / f_max) ** -power, max_weight)`` from the label histogram (the ray sampler's rule)."""
    counts = np.bincount(labels[labels != IGNORE_INDEX].ravel(), minlength=256)[:num_classes].astype(np.float64)
    f = counts / max(counts.sum(), 1)
    with np.errstate(divide="ignore"):  # absent classes (f = 0) get weight 0
        w = np.where(f > 0, np.minimum((f / f.max()) ** -power, max_weight), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def attach_prior(base_ckpt: str | Path, net: SemanticPriorNet, prior_cfg: dict, out: Path,
                 extra: dict | None = None) -> Path:
    """Write an S-Ray checkpoint = ``base_ckpt``'s model + this prior net (config fields ``prior_cfg``)."""
    from sray_ros.model.sray import SRay
    from sray_ros.train.checkpoint import load_checkpoint, save_checkpoint
    ck = load_checkpoint(base_ckpt)
    model = SRay(ck.model.cfg.replace(**prior_cfg))
    state = {k: v for k, v in ck.model.state_dict().items() if not k.startswith("semantic_prior.")}
    state.update({f"semantic_prior.{k}": v for k, v in net.state_dict().items()})
    model.load_state_dict(state, strict=True)
    return save_checkpoint(out, model, ck.label_set, extra={**(ck.extra or {}), "prior": extra or {}})


def check_args(args: argparse.Namespace) -> str | None:
    """What is wrong with the command line's values (one sentence), or None. Scene roots must be ScanNet-layout
    scenes or folders of them; counts and sizes positive; rates and budgets finite and not negative."""
    at_least = {"steps": 1, "batch": 1, "val_every": 1, "save_every": 1, "train_stride": 1, "val_stride": 1,
                "channels": 1, "width": 32, "height": 32, "max_scenes": 0, "threads": 0}
    for name, low in at_least.items():
        if getattr(args, name) < low:
            return f"--{name.replace('_', '-')} must be >= {low}, got {getattr(args, name)}"
    for name in ("lr", "lr_end"):
        if not (math.isfinite(getattr(args, name)) and getattr(args, name) > 0):
            return f"--{name.replace('_', '-')} must be a finite number > 0, got {getattr(args, name)}"
    for name in ("minutes", "cpu_minutes"):
        if not (math.isfinite(getattr(args, name)) and getattr(args, name) >= 0):
            return f"--{name.replace('_', '-')} must be a finite number >= 0 (0 = no budget), got {getattr(args, name)}"
    if not 0.0 <= args.cue_dropout <= 1.0:
        return f"--cue-dropout must be in [0, 1], got {args.cue_dropout}"
    try:
        load_label_set(args.label_set)
    except (FileNotFoundError, ValueError) as exc:
        return f"--label-set: {exc}"
    for flag, roots in (("--train", args.train), ("--val", args.val)):
        for root in roots:
            try:
                scene_folders(root)
            except FileNotFoundError as exc:
                return f"{flag}: {exc}"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sray_ros.train.prior", description=__doc__.split("\n")[0])
    ap.add_argument("--train", nargs="+", type=Path, required=True, help="folders of ScanNet-layout scenes")
    ap.add_argument("--val", nargs="+", type=Path, required=True, help="held-out training-split scenes (selection)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--base", default=None, help="S-Ray checkpoint to attach the prior to (DIR/sray_with_prior.pt)")
    ap.add_argument("--encoder", default="efficientnet_lite0", choices=PRIOR_ENCODERS[1:])
    ap.add_argument("--finetune-encoder", action="store_true", help="train the pretrained encoder too (no cache)")
    ap.add_argument("--no-cues", action="store_true", help="without geometry cues (ablation)")
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--cue-dropout", type=float, default=0.0,
                    help="share of training frames whose geometry cues are zeroed, as for RGB-only keyframes or "
                         "single images without depth (0 = always with cues)")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-end", type=float, default=5e-5)
    ap.add_argument("--minutes", type=float, default=0.0, help="stop after this wall-clock budget (0 = steps only)")
    ap.add_argument("--cpu-minutes", type=float, default=0.0,
                    help="stop after this much CPU time of this process, all threads (0 = no limit): an equal "
                         "budget for runs that share a machine with other work")
    ap.add_argument("--train-stride", type=int, default=4, help="every k-th frame of each training scene")
    ap.add_argument("--max-scenes", type=int, default=0,
                    help="train on the first N scenes (sorted by name) of --train only (0 = all)")
    ap.add_argument("--val-stride", type=int, default=5)
    ap.add_argument("--val-every", type=int, default=250)
    ap.add_argument("--save-every", type=int, default=100)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=None, help="feature cache folder (default OUT/cache)")
    ap.add_argument("--label-set", default="scannet20")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    problem = check_args(args)
    if problem:
        ap.error(problem)
    from sray_ros.train.checkpoint import CheckpointError, load_checkpoint, read_weights_file
    try:  # bad input files are named before any work starts (one line, exit 2)
        if args.base:
            load_checkpoint(args.base)
        state = read_weights_file(args.out / "last.pt", what="prior run state") if (args.out / "last.pt").is_file() \
            else None
    except CheckpointError as exc:
        print(f"sray_ros.train.prior: {exc}", file=sys.stderr)
        return 2
    if state is not None and not (isinstance(state, dict) and {"net", "opt", "step", "best"} <= set(state)):
        print(f"sray_ros.train.prior: {args.out / 'last.pt'}: not a prior run state (expected net, opt, step, best)",
              file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    ls = load_label_set(args.label_set)
    k = len(ls.class_names)
    cues = not args.no_cues
    frozen = args.encoder != "resunet" and not args.finetune_encoder
    net = SemanticPriorNet(args.encoder, k, args.channels, cues, frozen=frozen, pretrained=args.encoder != "resunet")
    use_taps = frozen
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.cache or args.out / "cache"
    up = (0.0, 0.0, 1.0)
    net.eval()
    train = load_frames(args.train, cache, net, use_taps, args.width, args.height, args.train_stride, up,
                        args.label_set, "train", args.max_scenes)
    val = load_frames(args.val, cache, net, use_taps, args.width, args.height, args.val_stride, up,
                      args.label_set, "val")
    print(f"[prior] {len(train)} training frames, {len(val)} validation frames, encoder {args.encoder} "
          f"({'frozen, cached features' if use_taps else 'trained on images'}), cues {cues}", flush=True)
    weights = class_weights(train.labels, k)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=args.lr)
    prior_cfg = dict(semantic_prior=args.encoder, prior_channels=args.channels, prior_geometry_cues=cues,
                     prior_frozen_encoder=frozen)
    step, best, elapsed, cpu_used = 0, -1.0, 0.0, 0.0
    last = args.out / "last.pt"
    if state is not None:
        st = state
        net.load_state_dict(st["net"])
        opt.load_state_dict(st["opt"])
        step, best, elapsed = int(st["step"]), float(st["best"]), float(st.get("elapsed", 0.0))
        cpu_used = float(st.get("cpu_seconds", 0.0))
        rng = np.random.default_rng([args.seed, step])
        print(f"[prior] resumed at step {step} (best val mIoU {best:.4f})", flush=True)
    stop = {"flag": False}
    signal.signal(signal.SIGINT, lambda *_: stop.update(flag=True))
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))

    def save_state() -> None:
        _atomic_save({"net": net.state_dict(), "opt": opt.state_dict(), "step": step, "best": best,
                      "elapsed": elapsed, "cpu_seconds": cpu_used, "validated_at": validated_at, "config": prior_cfg,
                      "args": {k_: str(v) for k_, v in vars(args).items()}},
                     last)

    log = (args.out / "log.jsonl").open("a")
    net.train()
    bar = tqdm(total=args.steps, initial=step, desc="prior", unit="step")
    t_start = time.time() - elapsed
    cpu_start = time.process_time() - cpu_used
    validated_at = int(state.get("validated_at", -1)) if state is not None else -1
    loss = torch.tensor(float("nan"))  # logged with a validation that comes before any step of this run

    def validate() -> None:
        """Score the validation frames; keep ``best.pt`` (and the attached S-Ray checkpoint) when it improves."""
        nonlocal best, validated_at
        res = evaluate(val, net, use_taps, k)
        res.update(step=step, minutes=elapsed / 60.0, cpu_minutes=cpu_used / 60.0, loss=float(loss.detach()))
        log.write(json.dumps(res) + "\n")
        log.flush()
        tqdm.write(f"[prior] step {step}: val mIoU {res['miou']:.4f} acc {res['total_acc']:.4f}")
        validated_at = step
        if res["miou"] > best:
            best = res["miou"]
            _atomic_save({"net": net.state_dict(), "config": prior_cfg, "step": step, "val": res},
                         args.out / "best.pt")
            if args.base:
                attach_prior(args.base, net, prior_cfg, args.out / "sray_with_prior.pt",
                             extra={"step": step, "val_miou": best, "minutes": elapsed / 60.0,
                                    "train": [p.name for p in args.train]})

    budget_spent = False
    while step < args.steps and not stop["flag"]:
        if args.minutes and (time.time() - t_start) / 60.0 >= args.minutes:
            budget_spent = True
            break
        if args.cpu_minutes and (time.process_time() - cpu_start) / 60.0 >= args.cpu_minutes:
            budget_spent = True
            break
        lr = args.lr_end + 0.5 * (args.lr - args.lr_end) * (1 + math.cos(math.pi * step / args.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = np.sort(rng.choice(len(train), size=min(args.batch, len(train)), replace=False))
        drop = rng.random(len(idx)) < args.cue_dropout if cues else None
        logits = batch(train, idx, net, use_taps, drop)
        lab = torch.from_numpy(train.labels[idx].astype(np.int64))
        logits = F.interpolate(logits, size=lab.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits, lab, weight=weights, ignore_index=IGNORE_INDEX)
        if not torch.isfinite(loss):
            print(f"[prior] non-finite loss at step {step}: stopping without saving this state", flush=True)
            return 1
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        elapsed = time.time() - t_start
        cpu_used = time.process_time() - cpu_start
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.1e}")
        if step % args.val_every == 0 or step == args.steps:
            validate()
        if step % args.save_every == 0:
            save_state()
    bar.close()
    if budget_spent and step > 0 and validated_at != step:  # a time budget ends between validations: score the end
        validate()
    save_state()
    print(f"[prior] stopped at step {step} after {elapsed / 60:.1f} min; best val mIoU {best:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
