"""Held-out view evaluation (``sray-eval``) and the frame split shared with fine-tuning.

Protocol: in each scene every ``holdout_every``-th frame (offset ``holdout_every // 2``) is a test view;
the remaining frames form the *source pool*. A test view is rendered from the ``m`` pool views chosen by
:func:`~sray_ros.data.view_selection.select_source_views`; test frames never serve as sources, and
fine-tuning (``sray-finetune``) trains on the pool only, so its scores are on frames it never saw.

Metrics: dataset-level mIoU (from the confusion matrix summed over all test views), per-frame mIoU (mean of
each view's mIoU), total accuracy, class-average accuracy, PSNR and SSIM of the rendered colour, and depth
errors of the rendered depth against the test view's sensor depth (AbsRel, RMSE, delta < 1.25, coverage;
:class:`~sray_ros.train.metrics.DepthErrors`). Metrics that cannot be computed (no labels, no depth) are
``null`` in metrics.json (strict JSON).

Keyframes are RGB-D by default (``--keyframe-depth``: the pool views' depth drives depth-guided sampling);
``--no-keyframe-depth`` evaluates what an RGB-only robot gets. ``--sampling`` picks hierarchical /
depth-guided / auto sampling (see :mod:`sray_ros.model.samplers`).

    sray-eval --checkpoint models/sray_default.pt --data /path/to/test_scenes --out eval/ [--num-sources 8] \
        [--sampling auto|hierarchical|depth_guided] [--no-keyframe-depth]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from sray_ros import geometry, viz
from sray_ros.data.label_noise import LabelCorruption, add_label_corruption_args
from sray_ros.data.label_sets import LabelSet
from sray_ros.data.scannet import load_scannet_scene, scene_folders
from sray_ros.data.scene import SceneArrays
from sray_ros.data.view_selection import select_source_views
from sray_ros.model.feature_net import SourceViews
from sray_ros.model.label_pooling import MAX_RADIUS, LabelPoolingConfig, pool_source_labels
from sray_ros.model.label_transfer import LabelTransferConfig
from sray_ros.model.render import render_view
from sray_ros.model.samplers import SAMPLING_MODES
from sray_ros.model.sray import SRay
from sray_ros.train.metrics import ConfusionMatrix, DepthErrors, psnr, ssim, strict_json


def split_frames(num_frames: int, holdout_every: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(pool indices, test indices): every ``holdout_every``-th frame is held out for testing."""
    if holdout_every < 2:
        raise ValueError("holdout_every must be >= 2 (some frames must remain as sources)")
    idx = np.arange(num_frames)
    test = idx[(idx % holdout_every) == holdout_every // 2]
    return np.setdiff1d(idx, test), test


def subset(scene: SceneArrays, indices: np.ndarray) -> SceneArrays:
    """The scene restricted to some frames (e.g. the source pool that fine-tuning may train on)."""
    pick = lambda a: None if a is None else a[indices]  # noqa: E731
    return SceneArrays(name=scene.name, frame_ids=scene.frame_ids[indices], colors=scene.colors[indices],
                       depths=pick(scene.depths), labels=pick(scene.labels), poses=scene.poses[indices],
                       intrinsics=scene.intrinsics, intrinsics_depth=scene.intrinsics_depth, near=scene.near,
                       far=scene.far, ignore_index=scene.ignore_index)


def color_aligned_depth(scene: SceneArrays, index: int) -> torch.Tensor | None:
    """Frame ``index``'s depth ``[H, W]`` (metres, 0 = invalid) in the colour camera: as stored when the two
    cameras share intrinsics, re-projected otherwise (real ScanNet). None without depth."""
    if scene.depths is None:
        return None
    depth = torch.from_numpy(np.ascontiguousarray(scene.depths[index])).float()
    if np.allclose(scene.intrinsics, scene.intrinsics_depth, atol=1e-3) and depth.shape == (scene.height, scene.width):
        return depth
    registered = geometry.register_depth(scene.depths[index], scene.intrinsics_depth, scene.intrinsics,
                                         (scene.width, scene.height))
    return torch.from_numpy(registered).float()


@torch.no_grad()
def encode_frames(model: SRay, scene: SceneArrays, indices: np.ndarray, device, batch: int = 8,
                  with_depth: bool = False) -> SourceViews:
    """Encode frames once (their features are reused by every test view that picks them); with
    ``with_depth`` (and depth in the scene) the views carry their colour-aligned depth."""
    parts = []
    K = torch.from_numpy(scene.intrinsics).float()
    for start in range(0, len(indices), batch):
        sel = indices[start:start + batch]
        images = torch.from_numpy(scene.colors[sel]).to(device).permute(0, 3, 1, 2).float().div_(255.0)
        c2w = torch.from_numpy(scene.poses[sel]).to(device).float()
        depths = None
        if with_depth and scene.depths is not None:
            depths = torch.stack([color_aligned_depth(scene, int(i)) for i in sel]).to(device)
        parts.append(model.encode_sources(images, K.expand(len(sel), 3, 3).to(device), c2w, depths))
    return SourceViews.cat(parts)


@dataclass
class SceneResult:
    name: str
    confusion: ConfusionMatrix
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    seconds_per_view: list[float] = field(default_factory=list)
    depth: DepthErrors = field(default_factory=DepthErrors)
    prior_2d: ConfusionMatrix | None = None  # the semantic prior net alone on the target image (2D baseline)

    def summary(self) -> dict[str, Any]:
        out = {"scene": self.name, "views": len(self.seconds_per_view), **self.confusion.summary(),
               **self.depth.summary()}
        if self.prior_2d is not None:
            out.update(prior2d_miou=self.prior_2d.miou(), prior2d_acc=self.prior_2d.total_accuracy())
        out.update({"psnr": float(np.mean(self.psnr)) if self.psnr else float("nan"),
                    "ssim": float(np.mean(self.ssim)) if self.ssim else float("nan"),
                    "seconds_per_view": float(np.mean(self.seconds_per_view)) if self.seconds_per_view else 0.0})
        return out


PANEL_MIN_TILE_WIDTH = 320  # px per panel tile (tiles are enlarged by an integer factor, nearest-neighbour)


def panel(rgb_gt: np.ndarray, labels_gt: np.ndarray | None, labels_pred: np.ndarray, confidence: np.ndarray,
          depth: np.ndarray, label_set: LabelSet, min_tile_width: int = PANEL_MIN_TILE_WIDTH) -> np.ndarray:
    """Camera | GT labels | predicted labels | confidence | depth with captions and a class legend, as one
    uint8 RGB image; each ``[H, W]`` tile is enlarged nearest-neighbour by the smallest integer factor that
    makes it at least ``min_tile_width`` px wide. Unknown (255) is hatched grey, as in the legend."""
    h, w = labels_pred.shape
    factor = viz.integer_factor(w, min_tile_width)
    tw, th = w * factor, h * factor
    colors, names = label_set.colors, list(label_set.class_names)
    valid = depth[np.isfinite(depth) & (depth > 0)]
    hi = float(np.percentile(valid, 99)) if valid.size else 1.0
    depth = np.where(np.isfinite(depth) & (depth > 0), depth, np.nan)
    tiles = [(viz.upscale(np.asarray(rgb_gt, np.uint8), tw, th), "camera (held out)")]
    shown = [labels_pred]
    if labels_gt is not None:
        tiles.append((viz.label_tile(labels_gt, colors, tw, th), "ground truth"))
        shown.append(labels_gt)
    tiles += [(viz.label_tile(labels_pred, colors, tw, th), "rendered labels"),
              (viz.scalar_tile(confidence, 0.0, 1.0, cv2.COLORMAP_VIRIDIS, tw, th),
               viz.colorbar_caption("confidence", 0.0, 1.0, "", "viridis")),
              (viz.scalar_tile(depth, 0.0, hi, cv2.COLORMAP_TURBO, tw, th),
               viz.colorbar_caption("depth", 0.0, hi, "m", "turbo"))]
    return viz.panel(tiles, names, colors, shown)


def source_labels(scene: SceneArrays, pool: np.ndarray, num_classes: int,
                  corruption: LabelCorruption | None = None) -> np.ndarray | None:
    """Labels ``uint8 [len(pool), H, W]`` of the source pool as label transfer sees them: corrupted by
    ``corruption`` (a copy; the scene's labels, held-out targets included, are never modified), or None
    when the scene has no labels."""
    if scene.labels is None:
        return None
    labels = scene.labels[pool]
    return corruption.apply(labels, num_classes) if corruption is not None else labels.copy()


def evaluate_scene(model: SRay, scene: SceneArrays, label_set: LabelSet, num_sources: int = 8,
                   holdout_every: int = 10, max_views: int = 0, chunk: int = 4096, device="cpu",
                   panel_dir: Path | None = None, num_panels: int = 2, progress: bool = True,
                   sampling: str | None = None, keyframe_depth: bool = True, num_surface_samples: int | None = None,
                   surface_semantics: str | None = None, near_far: str = "scene",
                   label_transfer: LabelTransferConfig | None = None,
                   label_corruption: LabelCorruption | None = None,
                   label_pooling: LabelPoolingConfig | None = LabelPoolingConfig()) -> SceneResult:
    """Render the held-out views of one scene and score them (see the module docstring).

    ``sampling`` (default: the model config's), ``num_surface_samples``, ``surface_semantics``: see
    :func:`~sray_ros.model.render.render_view`. ``keyframe_depth``: source views carry their depth.
    ``near_far``: ``"scene"`` (the scene's bounds) or ``"sources"`` (from the chosen views' depth, as the node
    does; falls back to the model defaults without depth). With ``label_transfer`` the source views carry
    their (``label_corruption``-corrupted) labels, pooled per keyframe as the node stores them
    (``label_pooling``, :mod:`sray_ros.model.label_pooling`; None = raw labels), and the scored labels are the
    fused ones.
    """
    pool, test = split_frames(scene.num_frames, holdout_every)
    if max_views:
        test = test[np.linspace(0, len(test) - 1, min(max_views, len(test))).round().astype(int)]
    device = torch.device(device)
    model = model.to(device).eval()
    pool_views = encode_frames(model, scene, pool, device, with_depth=keyframe_depth)
    labels = source_labels(scene, pool, label_set.num_classes, label_corruption) if label_transfer else None
    if labels is not None:
        pool_views = replace(pool_views, labels=torch.from_numpy(labels).to(device))
        if label_pooling is not None:
            pool_views = pool_source_labels(pool_views, label_set.num_classes, label_pooling)
    result = SceneResult(scene.name, ConfusionMatrix(label_set.num_classes, label_set.ignore_index,
                                                     list(label_set.class_names)))
    if model.semantic_prior is not None:
        result.prior_2d = ConfusionMatrix(label_set.num_classes, label_set.ignore_index, list(label_set.class_names))
    K = torch.from_numpy(scene.intrinsics).float()
    for n, t in enumerate(tqdm(test, desc=f"eval {scene.name}", unit="view", disable=not progress, leave=False)):
        chosen = select_source_views(scene.poses[t], scene.poses[pool], num_sources)
        sources = pool_views.select(torch.as_tensor(chosen, dtype=torch.long, device=device))
        start = time.perf_counter()
        near, far = (scene.near, scene.far) if near_far == "scene" else (None, None)
        view = render_view(model, sources, K, torch.from_numpy(scene.poses[t]).float(), scene.height, scene.width,
                           near=near, far=far, chunk=chunk, sampling=sampling, num_surface_samples=num_surface_samples,
                           surface_semantics=surface_semantics, label_transfer=label_transfer)
        result.seconds_per_view.append(time.perf_counter() - start)
        gt_depth = color_aligned_depth(scene, int(t))
        if gt_depth is not None:
            result.depth.update(view.depth.float().cpu(), gt_depth)
        pred = view.labels.cpu().numpy().astype(np.uint8)
        gt_rgb = torch.from_numpy(scene.colors[t]).float().div(255.0)
        result.psnr.append(psnr(view.rgb.cpu().clamp(0, 1), gt_rgb))
        result.ssim.append(ssim(view.rgb.cpu().clamp(0, 1), gt_rgb))
        if scene.labels is not None:
            result.confusion.update(pred, scene.labels[t])
            if result.prior_2d is not None:
                result.prior_2d.update(prior_2d_labels(model, scene, int(t), K, device, keyframe_depth),
                                       scene.labels[t])
        if panel_dir is not None and n < num_panels:
            panel_dir.mkdir(parents=True, exist_ok=True)
            image = panel(scene.colors[t], None if scene.labels is None else scene.labels[t], pred,
                          view.confidence.cpu().numpy(), view.depth.cpu().numpy(), label_set)
            cv2.imwrite(str(panel_dir / f"{scene.name}_{int(scene.frame_ids[t]):06d}.png"), image[..., ::-1])
    return result


def scene_up(scene: SceneArrays, frames: int = 8) -> tuple[float, float, float]:
    """The scene's world up direction (:func:`~sray_ros.model.geometry_cues.estimate_up` on ``frames`` evenly
    spread frames, with their depth when the scene has depth)."""
    from sray_ros.model.geometry_cues import estimate_up
    idx = np.linspace(0, scene.num_frames - 1, min(frames, scene.num_frames)).round().astype(int)
    c2w = torch.from_numpy(scene.poses[idx]).float()
    depth = None
    if scene.depths is not None:
        depth = torch.stack([color_aligned_depth(scene, int(i)) for i in idx])
    K = torch.from_numpy(scene.intrinsics).float().expand(len(idx), 3, 3)
    return tuple(float(v) for v in estimate_up(c2w, depth, K if depth is not None else None))


def prior_2d_labels(model: SRay, scene: SceneArrays, t: int, K: torch.Tensor, device, with_depth: bool) -> np.ndarray:
    """The semantic prior net's own labels ``uint8 [H, W]`` on frame ``t``'s image (and depth, for the geometry
    cues): what a single-view 2D segmenter on the target view would say."""
    image = torch.from_numpy(scene.colors[t]).to(device).permute(2, 0, 1).float().div_(255.0)[None]
    depth = color_aligned_depth(scene, t) if with_depth else None
    with torch.no_grad():
        logits = model.view_priors(image, K[None].to(device), torch.from_numpy(scene.poses[t]).float()[None].to(device),
                                   None if depth is None else depth[None].to(device))
        logits = torch.nn.functional.interpolate(logits, size=(scene.height, scene.width), mode="bilinear",
                                                 align_corners=False)
    return logits[0].argmax(0).cpu().numpy().astype(np.uint8)


def overall_summary(results: list[SceneResult], label_set: LabelSet) -> dict[str, Any]:
    total = ConfusionMatrix(label_set.num_classes, label_set.ignore_index, list(label_set.class_names))
    for r in results:
        total.matrix += r.confusion.matrix
        total.frame_mious.extend(r.confusion.frame_mious)
    depth = DepthErrors()
    for r in results:
        depth.merge(r.depth)
    out = {"scenes": len(results), "views": sum(len(r.seconds_per_view) for r in results), **total.summary(),
           **depth.summary()}
    for key in ("psnr", "ssim", "seconds_per_view"):
        values = [v for r in results for v in getattr(r, key)]
        out[key] = float(np.mean(values)) if values else float("nan")
    out["iou_per_class"] = {name: (None if not np.isfinite(v) else float(v))
                            for name, v in zip(label_set.class_names, total.iou())}
    priors = [r.prior_2d for r in results if r.prior_2d is not None]
    if priors:
        p2d = ConfusionMatrix(label_set.num_classes, label_set.ignore_index, list(label_set.class_names))
        for cm in priors:
            p2d.matrix += cm.matrix
        out.update(prior2d_miou=p2d.miou(), prior2d_acc=p2d.total_accuracy(),
                   prior2d_iou_per_class={name: (None if not np.isfinite(v) else float(v))
                                          for name, v in zip(label_set.class_names, p2d.iou())})
    return out


PERCENT_COLUMNS = ("miou", "frame_miou", "total_acc", "class_acc", "depth_delta1", "depth_coverage")
SCENE_COLUMNS = ("scene", "views", "miou", "frame_miou", "total_acc", "class_acc", "psnr", "ssim", "depth_abs_rel",
                 "depth_rmse", "depth_delta1", "seconds_per_view")


def markdown_table(rows: list[dict[str, Any]], cols: tuple[str, ...] | list[str] = SCENE_COLUMNS) -> str:
    """Rows as a Markdown table: ratios in ``PERCENT_COLUMNS`` as percentages, other floats to 3 decimals,
    missing or non-finite values as ``n/a``."""
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        cells = []
        for c in cols:
            v = row.get(c)
            if v is None or (isinstance(v, float) and not np.isfinite(v)):
                cells.append("n/a")
            elif isinstance(v, float):
                cells.append(f"{100 * v:.2f}" if c in PERCENT_COLUMNS else f"{v:.3f}")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@dataclass
class LoadedModel:
    checkpoint: Any  # sray_ros.train.checkpoint.Checkpoint
    label_set: LabelSet
    width: int
    height: int
    train_config: dict[str, Any]


def load_model_for_scenes(path: str, device, width: int | None = None, height: int | None = None) -> LoadedModel:
    """Load a checkpoint for evaluation / fine-tuning: its label set from config/, and the working
    resolution it was trained at unless given (320x240 for checkpoints that do not record it).

    Raises CheckpointError (bad file) or ValueError (label set on disk differs from the checkpoint's).
    """
    from sray_ros.data.label_sets import load_label_set
    from sray_ros.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path, map_location=device)
    trained = ckpt.extra.get("train_config", {}) if isinstance(ckpt.extra, dict) else {}
    label_set = load_label_set(ckpt.label_set["name"])
    if list(label_set.class_names) != list(ckpt.label_set["class_names"]):
        raise ValueError(f"{path}: label set '{label_set.name}' on disk differs from the checkpoint's")
    return LoadedModel(ckpt, label_set, width or int(trained.get("width", 320)),
                       height or int(trained.get("height", 240)), trained)


def add_view_arguments(p: argparse.ArgumentParser) -> None:
    """The held-out view options shared by sray-eval and sray-finetune (same meaning, same defaults)."""
    p.add_argument("--num-sources", type=int, default=8, help="source views per rendered view")
    p.add_argument("--holdout-every", type=int, default=10, help="every k-th frame is held out (split_frames)")
    p.add_argument("--max-views", type=int, default=0,
                   help="held-out views rendered per scene and evaluation, evenly spaced (0 = all)")
    p.add_argument("--width", type=int, help="render width (default: the checkpoint's training width, else 320)")
    p.add_argument("--height", type=int)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto")
    p.add_argument("--sampling", choices=SAMPLING_MODES,
                   help="ray sampling at evaluation (default: the checkpoint's config, 'auto' = depth-guided where "
                        "the keyframes carry depth)")
    p.add_argument("--num-surface-samples", type=int, help="samples per ray around the depth (depth-guided)")
    p.add_argument("--surface-semantics", choices=("volume", "surface"),
                   help="depth-guided semantics: weights-rendered logits or the max-weight sample's (GSNeRF)")
    p.add_argument("--view-scale", type=int, default=None,
                   help="fast depth-guided views: the network renders every N-th pixel per axis, the rest is "
                        "upsampled on the fused keyframe depth (1 = every pixel; default: the model's)")
    p.add_argument("--upsample-refine", choices=("none", "depth", "labels"), default=None,
                   help="fast views: pixels rendered exactly instead of upsampled (default: the model's)")
    p.add_argument("--confident-surface-samples", type=int, default=None,
                   help="adaptive K: samples per ray where the keyframes agree on the depth (0 = off)")
    p.add_argument("--keyframe-depth", action=argparse.BooleanOptionalAction, default=True,
                   help="source views carry their depth (RGB-D keyframes); --no-keyframe-depth for RGB-only")
    p.add_argument("--prior-weight", type=float, default=None,
                   help="weight of the fused per-view semantic priors (models with a prior net; 0 = S-Ray alone)")
    p.add_argument("--prior-up", default=None,
                   help="world up direction for the prior's height cue: 'x,y,z', or 'auto' to estimate it per scene "
                        "from the cameras and depth (datasets whose world is not z-up); default: the model's (+z)")
    p.add_argument("--label-transfer", default="off", choices=["off", "blend", "depth", "blend_depth", "uniform"],
                   help="fuse the source keyframes' labels into the rendered labels, with these view weights")
    p.add_argument("--label-pooling-max-radius", type=int, default=None,
                   help="pool each source keyframe's labels along its own surfaces, at most this many pixels far, "
                        "as far as its estimated label noise needs (as the node does; sray-finetune also trains on "
                        "the pooled labels; 0 = raw labels)")
    add_label_corruption_args(p)


def apply_fast_view_options(cfg, args: argparse.Namespace) -> None:
    """Set the fast-view options of :func:`add_view_arguments` that were given on the model config ``cfg``
    (an :class:`~sray_ros.model.config.SRayConfig`); ValueError (config left valid) for a bad value."""
    before = {n: getattr(cfg, n) for n in ("view_scale", "upsample_refine", "confident_surface_samples")}
    for name in before:
        if getattr(args, name, None) is not None:
            setattr(cfg, name, getattr(args, name))
    try:
        cfg.__post_init__()
    except ValueError:
        for name, value in before.items():
            setattr(cfg, name, value)
        raise


def label_options(args: argparse.Namespace) -> tuple[LabelTransferConfig | None, LabelCorruption]:
    """The label transfer config (None when off) and label corruption of :func:`add_view_arguments`' options."""
    transfer = None if args.label_transfer == "off" else LabelTransferConfig(weighting=args.label_transfer)
    return transfer, LabelCorruption.from_args(args)


def label_pooling_option(args: argparse.Namespace, needs_transfer: bool = True) -> LabelPoolingConfig | None:
    """``--label-pooling-max-radius`` as a config (None for 0; default: the node's); ValueError for a radius
    outside [0, 64], or the flag without ``--label-transfer`` when ``needs_transfer`` (``sray-eval`` uses
    source labels only for label transfer; ``sray-finetune`` also trains on them)."""
    radius = getattr(args, "label_pooling_max_radius", None)
    if needs_transfer and radius is not None and getattr(args, "label_transfer", "off") == "off":
        raise ValueError("--label-pooling-max-radius acts on source labels, which are used only with "
                         "--label-transfer (blend, depth, blend_depth or uniform)")
    if radius is None:
        return LabelPoolingConfig()
    if not 0 <= radius <= MAX_RADIUS:
        raise ValueError(f"--label-pooling-max-radius must be in [0, {MAX_RADIUS}] (0 = off), got {radius}")
    return LabelPoolingConfig(max_radius=radius) if radius else None


def main(argv: list[str] | None = None) -> int:
    from sray_ros.train.checkpoint import CheckpointError
    from sray_ros.train.config import resolve_device

    p = argparse.ArgumentParser(prog="sray-eval", description="Render held-out views of test scenes and score them.")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="a ScanNet-layout scene folder or a folder of them")
    p.add_argument("--out", required=True, help="output folder (metrics.json, metrics.md, panels/)")
    add_view_arguments(p)
    p.add_argument("--num-panels", type=int, default=2, help="PNG panels per scene")
    p.add_argument("--chunk", type=int, default=4096)
    args = p.parse_args(argv)

    try:
        device = resolve_device(args.device)
        loaded = load_model_for_scenes(args.checkpoint, device, args.width, args.height)
        label_transfer, label_corruption = label_options(args)
        label_pooling = label_pooling_option(args)
        if label_transfer is None and not label_corruption.is_identity:
            raise ValueError("the --label-* corruption options act on source labels, which sray-eval uses only "
                             "with --label-transfer (blend, depth, blend_depth or uniform)")
        folders = scene_folders(args.data)
    except (CheckpointError, ValueError, OSError) as exc:
        print(f"sray-eval: {exc}", file=sys.stderr)
        return 2
    ckpt, label_set, width, height = loaded.checkpoint, loaded.label_set, loaded.width, loaded.height
    if args.prior_weight is not None:
        if not args.prior_weight >= 0:
            print(f"sray-eval: --prior-weight must be >= 0, got {args.prior_weight}", file=sys.stderr)
            return 2
        ckpt.model.cfg.prior_weight = args.prior_weight
    try:
        apply_fast_view_options(ckpt.model.cfg, args)
    except ValueError as exc:
        print(f"sray-eval: {exc}", file=sys.stderr)
        return 2
    if args.prior_up not in (None, "auto"):
        try:
            ckpt.model.cfg.prior_up = tuple(float(v) for v in args.prior_up.split(","))
            ckpt.model.cfg.__post_init__()
        except ValueError as exc:
            print(f"sray-eval: --prior-up must be 'auto' or three numbers x,y,z: {exc}", file=sys.stderr)
            return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for folder in tqdm(folders, desc="scenes", unit="scene"):
        try:
            scene = load_scannet_scene(folder, width, height, label_set=label_set).preload()
        except (OSError, ValueError) as exc:  # SceneFormatError: unreadable or malformed frames
            print(f"sray-eval: {exc}", file=sys.stderr)
            return 2
        if args.prior_up == "auto":
            ckpt.model.cfg.prior_up = scene_up(scene)
        results.append(evaluate_scene(ckpt.model, scene, label_set, args.num_sources, args.holdout_every,
                                      args.max_views, args.chunk, device, out / "panels", args.num_panels,
                                      sampling=args.sampling, keyframe_depth=args.keyframe_depth,
                                      num_surface_samples=args.num_surface_samples,
                                      surface_semantics=args.surface_semantics,
                                      label_transfer=label_transfer, label_corruption=label_corruption,
                                      label_pooling=label_pooling))
    rows = [r.summary() for r in results]
    overall = overall_summary(results, label_set)
    report = {"checkpoint": str(args.checkpoint), "data": str(args.data), "width": width, "height": height,
              "num_sources": args.num_sources, "holdout_every": args.holdout_every, "max_views": args.max_views,
              "device": str(device), "sampling": args.sampling or ckpt.model.cfg.sampling,
              "keyframe_depth": args.keyframe_depth, "num_surface_samples": args.num_surface_samples,
              "surface_semantics": args.surface_semantics, "label_transfer": args.label_transfer,
              "view_scale": ckpt.model.cfg.view_scale, "upsample_refine": ckpt.model.cfg.upsample_refine,
              "confident_surface_samples": ckpt.model.cfg.confident_surface_samples,
              "semantic_prior": ckpt.model.cfg.semantic_prior, "prior_weight": ckpt.model.cfg.prior_weight,
              "label_corruption": label_corruption.describe(), "scenes": rows, "overall": overall}
    (out / "metrics.json").write_text(json.dumps(strict_json(report), indent=2, allow_nan=False))
    table = markdown_table(rows + [{**overall, "scene": "**overall**"}])
    (out / "metrics.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
