#!/usr/bin/env python3
"""Labels of two models on held-out poses of a real sequence without ground-truth labels, side by side.

For each chosen held-out pose of a ScanNet-layout scene (``sray-eval``'s split: every 10th frame) both
checkpoints render the view from the 8 nearest other frames (RGB-D keyframes, depth-guided, 160x120 by
default) and one panel is written: camera | model A labels | model B labels | model B's prior alone on the
camera image (when B has one), tiles enlarged nearest-neighbour to >= 480 px, with a legend. The share of
each class in every rendered view goes to ``fractions.json`` and ``fractions.md``, so the panels can be
described in words. The world's up direction for the prior's height cue is estimated from the scene
(``sray-eval --prior-up auto``).

    python scripts/real_sequence_panels.py --before OLD.pt --after models/sray_default.pt \
        --data "$SRAY_DATA/hololens_000" --out runs/real_panels --views 5 25 65 105 165
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sray_ros import viz
from sray_ros.data.scannet import load_scannet_scene
from sray_ros.data.scene import SceneFormatError
from sray_ros.data.view_selection import select_source_views
from sray_ros.model.render import render_view
from sray_ros.train.checkpoint import CheckpointError, load_checkpoint
from sray_ros.train.evaluate import encode_frames, prior_2d_labels, scene_up, split_frames


def shares(labels: np.ndarray, names: list[str]) -> dict[str, float]:
    counts = np.bincount(labels.ravel(), minlength=256)
    total = counts.sum()
    out = {names[k]: float(counts[k] / total) for k in range(len(names)) if counts[k]}
    if counts[255]:
        out["unknown"] = float(counts[255] / total)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--views", type=int, nargs="*", default=None, help="frame ids of held-out poses (default: all)")
    ap.add_argument("--width", type=int, default=160)
    ap.add_argument("--height", type=int, default=120)
    ap.add_argument("--tile", type=int, default=480, help="minimum tile width in pixels")
    args = ap.parse_args()
    if min(args.width, args.height) < 16 or args.tile < 1:
        ap.error(f"--width/--height must be >= 16 and --tile >= 1, got {args.width}x{args.height}, {args.tile}")
    try:
        models = {"before": load_checkpoint(args.before), "after": load_checkpoint(args.after)}
        scene = load_scannet_scene(args.data, args.width, args.height).preload()
    except (CheckpointError, SceneFormatError, OSError) as exc:
        ap.error(str(exc))
    label_set = models["after"].label_set
    names, colors = list(label_set["class_names"]), np.asarray(label_set["colors"], np.uint8)
    up = scene_up(scene)
    pool, test = split_frames(scene.num_frames)
    if args.views:
        held_out = [int(scene.frame_ids[t]) for t in test]
        missing = sorted(set(args.views) - set(held_out))
        if missing:
            ap.error(f"--views {missing}: not held-out frames of {args.data} (every 10th frame is held out: "
                     f"{held_out[:12]}{' ...' if len(held_out) > 12 else ''})")
        test = np.array([t for t in test if int(scene.frame_ids[t]) in set(args.views)])
    K = torch.from_numpy(scene.intrinsics).float()
    encoded = {}
    for key, ck in models.items():
        ck.model.eval()
        ck.model.cfg.prior_up = up
        encoded[key] = encode_frames(ck.model, scene, pool, "cpu", with_depth=True)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"scene": Path(args.data).name, "up": up, "width": args.width, "height": args.height, "views": {}}
    factor = viz.integer_factor(args.width, args.tile)
    tw, th = args.width * factor, args.height * factor
    for t in test:
        chosen = select_source_views(scene.poses[t], scene.poses[pool], 8)
        row, label_images, entry = [], [], {}
        cam = viz.upscale(scene.colors[t], tw, th, nearest=False)
        row.append((cam, f"camera, frame {int(scene.frame_ids[t])} (held out)"))
        for key, ck in models.items():
            sources = encoded[key].select(torch.as_tensor(chosen))
            with torch.no_grad():
                view = render_view(ck.model, sources, K, torch.from_numpy(scene.poses[t]).float(), scene.height,
                                   scene.width)
            labels = view.labels.numpy().astype(np.uint8)
            label_images.append(labels)
            entry[key] = shares(labels, names)
            prior = "with priors" if ck.model.semantic_prior is not None else "no priors"
            row.append((viz.label_tile(labels, colors, tw, th), f"{key}: rendered labels ({prior})"))
        after = models["after"].model
        if after.semantic_prior is not None:
            p2d = prior_2d_labels(after, scene, int(t), K, "cpu", True)
            label_images.append(p2d)
            entry["after_prior_2d"] = shares(p2d, names)
            row.append((viz.label_tile(p2d, colors, tw, th), "after: 2D prior alone on the camera image"))
        image = viz.panel(row, names, colors, label_images)
        path = args.out / f"{Path(args.data).name}_{int(scene.frame_ids[t]):06d}.png"
        cv2.imwrite(str(path), image[..., ::-1])
        report["views"][int(scene.frame_ids[t])] = entry
        print(path, {k: {c: round(100 * v, 1) for c, v in list(d.items())[:5]} for k, d in entry.items()}, flush=True)
    (args.out / "fractions.json").write_text(json.dumps(report, indent=1))
    lines = ["| frame | model | largest classes (% of pixels) |", "|---|---|---|"]
    for frame, entry in report["views"].items():
        for key, d in entry.items():
            lines.append(f"| {frame} | {key} | " + ", ".join(f"{c} {100 * v:.0f}" for c, v in list(d.items())[:6]) + " |")
    (args.out / "fractions.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
