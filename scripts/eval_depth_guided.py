#!/usr/bin/env python3
"""Evaluate one checkpoint with hierarchical and depth-guided sampling, RGB-D and RGB-only keyframes.

For every data set (the synthetic test rooms: mIoU, PSNR, depth; the real hololens_000 sequence, which has no
labels: PSNR, depth) and every combination of ``--modes`` x keyframe depth, the held-out views of each scene
(:func:`sray_ros.train.evaluate.split_frames`) are rendered with :func:`sray_ros.train.evaluate.evaluate_scene`
and the pooled metrics are written to ``OUT/results.json`` (strict JSON) and ``OUT/results.md``.

    python scripts/eval_depth_guided.py --checkpoint models/sray_default.pt --out eval/depth_guided \\
        --rooms "$SRAY_DATA/sray_synth/test" --real "$SRAY_DATA/hololens_000" \\
        --width 160 --height 120 --max-views 4 --threads 2

Defaults: ``$SRAY_DATA/sray_synth/test`` and ``$SRAY_DATA/hololens_000`` (``SRAY_DATA`` defaults to ``data``,
relative to the working directory; DATASETS.md). ``--dry-run`` renders one view of one scene per setting (checks the wiring in about a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch


DATA = os.environ.get("SRAY_DATA", "data")  # folder of the data sets (DATASETS.md)

def load_avg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    from sray_ros.data.scannet import load_scannet_scene
    from sray_ros.train.config import resolve_device
    from sray_ros.train.evaluate import (evaluate_scene, load_model_for_scenes, markdown_table, overall_summary,
                                         scene_folders)
    from sray_ros.train.metrics import strict_json

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="models/sray_default.pt")
    p.add_argument("--out", required=True)
    p.add_argument("--rooms", default=os.path.join(DATA, "sray_synth", "test"), help="folder of labelled test scenes ('' = skip)")
    p.add_argument("--real", default=os.path.join(DATA, "hololens_000"), help="real RGB-D scene ('' = skip)")
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--height", type=int, default=120)
    p.add_argument("--num-sources", type=int, default=8)
    p.add_argument("--holdout-every", type=int, default=10)
    p.add_argument("--max-views", type=int, default=4, help="held-out views per scene (0 = all)")
    p.add_argument("--max-scenes", type=int, default=0, help="test rooms used (0 = all)")
    p.add_argument("--modes", default="hierarchical,depth_guided",
                   help="comma-separated sampling modes; 'depth_guided+surface' uses GSNeRF's semantics of the "
                        "max-weight sample instead of weight-rendered logits (the ablation row)")
    p.add_argument("--keyframes", default="rgbd,rgb", help="rgbd and/or rgb (RGB-only keyframes)")
    p.add_argument("--num-surface-samples", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dry-run", action="store_true", help="one view of one scene per setting")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    loaded = load_model_for_scenes(args.checkpoint, device, args.width, args.height)
    model, label_set = loaded.checkpoint.model, loaded.label_set
    datasets = []
    if args.rooms:
        folders = scene_folders(args.rooms)
        folders = folders[:1] if args.dry_run else folders[: args.max_scenes or None]
        datasets.append(("test_rooms", folders))
    if args.real:
        datasets.append(("real_" + Path(args.real).name, [Path(args.real)]))
    max_views = 1 if args.dry_run else args.max_views
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, folders in datasets:
        scenes = [load_scannet_scene(f, args.width, args.height, label_set=label_set).preload() for f in folders]
        for mode_spec in args.modes.split(","):
            mode, _, semantics = mode_spec.partition("+")
            for keyframes in args.keyframes.split(","):
                start = time.perf_counter()
                results = [evaluate_scene(model, s, label_set, args.num_sources, args.holdout_every, max_views,
                                          device=device, progress=False, sampling=mode,
                                          keyframe_depth=keyframes == "rgbd",
                                          num_surface_samples=args.num_surface_samples,
                                          surface_semantics=semantics or None)
                           for s in scenes]
                summary = overall_summary(results, label_set)  # with per-class IoU (JSON only)
                row = {"data": name, "sampling": mode_spec, "keyframes": keyframes, **summary,
                       "wall_s": time.perf_counter() - start, "load_avg": load_avg()}
                rows.append(row)
                print(json.dumps(strict_json({k: row[k] for k in ("data", "sampling", "keyframes", "views", "miou",
                                                                   "psnr", "depth_abs_rel", "depth_rmse",
                                                                   "depth_delta1", "depth_coverage",
                                                                   "seconds_per_view", "load_avg")})), flush=True)
    report = {"checkpoint": args.checkpoint, "width": args.width, "height": args.height,
              "num_sources": args.num_sources, "max_views": max_views, "threads": args.threads,
              "device": str(device), "rows": rows}
    (out / "results.json").write_text(json.dumps(strict_json(report), indent=2, allow_nan=False))
    cols = ["data", "sampling", "keyframes", "views", "miou", "psnr", "depth_abs_rel", "depth_rmse", "depth_delta1",
            "depth_coverage", "seconds_per_view", "load_avg"]
    table = markdown_table(rows, cols)
    (out / "results.md").write_text(table)
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
