#!/usr/bin/env python3
"""Keyframe labels before and after spatial pooling (``sray_ros.model.label_pooling``), per label-noise task.

    python scripts/label_pooling_card.py --data "$SRAY_DATA/sray_synth_large/val" [--rooms 10] \
        [--set max_radius=8,12 --set sigma_colour=0.1,0.2] [--out runs/pooling_val.json]

Each room's pool frames (every frame but every ``--holdout-every``-th, as the evaluations use; every
``--frame-step``-th of them) are corrupted per task with seed ``--seed`` (``sray_ros.data.label_noise``), pooled
with each configuration of the grid (``--set NAME=V1,V2`` over ``LabelPoolingConfig`` fields; the defaults
otherwise), and scored against the clean labels: mIoU / pixel accuracy of the raw noisy labels and of the
pooled ones (pixels left 255 count as misses), and the mean estimated label accuracy ``a``. No rendering and
no model weights: this is the per-keyframe half of label fusion, the one the pooling defaults were chosen on
(the validation rooms, never the test rooms).
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _grid(sets: list[str]) -> list[dict]:
    from sray_ros.model.label_pooling import LabelPoolingConfig

    names = {f.name: f.type for f in fields(LabelPoolingConfig)}
    axes: dict[str, list] = {}
    for s in sets:
        name, _, values = s.partition("=")
        if name not in names or not values:
            raise SystemExit(f"--set {s!r}: expected NAME=V1,V2 with NAME one of {', '.join(names)}")
        cast = int if name == "max_radius" else float
        try:
            axes[name] = [cast(v) for v in values.split(",")]
        except ValueError:
            raise SystemExit(f"--set {s!r}: values must be numbers") from None
    keys = list(axes)
    grid = [dict(zip(keys, combo)) for combo in itertools.product(*(axes[k] for k in keys))] or [{}]
    for overrides in grid:  # every configuration is checked before any room is read
        try:
            LabelPoolingConfig(**overrides)
        except ValueError as exc:
            raise SystemExit(f"--set {overrides}: {exc}") from None
    return grid


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="folder of rooms (ScanNet layout)")
    p.add_argument("--rooms", type=int, default=10)
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--height", type=int, default=120)
    p.add_argument("--holdout-every", type=int, default=10)
    p.add_argument("--frame-step", type=int, default=9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tasks", nargs="+", default=["clean", "pixel50", "pixel90", "region30", "segmenter"])
    p.add_argument("--set", action="append", default=[], help="NAME=V1,V2: grid over a LabelPoolingConfig field")
    p.add_argument("--no-depth", action="store_true", help="pool with colour alone (keyframes without depth)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out")
    args = p.parse_args(argv)

    from sray_ros.data.label_noise import LABEL_TASKS
    from sray_ros.data.label_sets import load_label_set
    from sray_ros.data.scannet import list_scannet_scenes, load_scannet_scene
    from sray_ros.model.label_pooling import LabelPoolingConfig, pool_labels
    from sray_ros.train.evaluate import split_frames

    spec_ltc = __import__("importlib.util").util.spec_from_file_location("ltc", ROOT / "scripts" / "label_transfer_card.py")
    ltc = __import__("importlib.util").util.module_from_spec(spec_ltc)
    spec_ltc.loader.exec_module(ltc)

    if args.rooms < 1 or args.frame_step < 1 or args.holdout_every < 2 or args.threads < 0 \
            or args.width < 8 or args.height < 8:
        raise SystemExit("need --rooms >= 1, --frame-step >= 1, --holdout-every >= 2, --threads >= 0 and "
                         "--width/--height >= 8")
    unknown = [t for t in args.tasks if t not in LABEL_TASKS]
    if unknown:
        raise SystemExit(f"unknown task(s) {unknown}; known: {', '.join(LABEL_TASKS)}")
    if not Path(args.data).is_dir():
        raise SystemExit(f"--data {args.data}: no such folder")
    grid = _grid(args.set)
    if args.threads:
        torch.set_num_threads(args.threads)
    label_set = load_label_set("scannet20")
    k = label_set.num_classes
    rooms = list_scannet_scenes(args.data)[: args.rooms]
    if not rooms:
        raise SystemExit(f"--data {args.data}: no rooms")
    raw = {t: ltc.Scores(k) for t in args.tasks}
    pooled = {(g, t): ltc.Scores(k) for g in range(len(grid)) for t in args.tasks}
    acc_est = {(g, t): [] for g in range(len(grid)) for t in args.tasks}
    radii = {(g, t): [] for g in range(len(grid)) for t in args.tasks}
    started = time.time()
    for room in rooms:
        scene = load_scannet_scene(room, args.width, args.height, label_set=label_set).preload()
        pool, _ = split_frames(scene.num_frames, args.holdout_every)
        frames = pool[:: args.frame_step]
        gt = scene.labels[frames]
        images = torch.from_numpy(scene.colors[frames]).permute(0, 3, 1, 2).float() / 255.0
        depths = None if (args.no_depth or scene.depths is None) else torch.from_numpy(scene.depths[frames])
        for t in args.tasks:
            task = LABEL_TASKS[t].__class__(**{**LABEL_TASKS[t].__dict__, "seed": args.seed})
            noisy = task.apply(scene.labels[pool], k)[:: args.frame_step]
            raw[t].update(noisy.reshape(-1), gt.reshape(-1))
            for g, overrides in enumerate(grid):
                out = pool_labels(torch.from_numpy(noisy), images, depths, k, cfg=LabelPoolingConfig(**overrides))
                pooled[(g, t)].update(out.labels.numpy().reshape(-1), gt.reshape(-1))
                acc_est[(g, t)].extend(out.accuracy.tolist())
                radii[(g, t)].extend(out.radius.tolist())
        print(f"[{time.time() - started:5.0f} s] {room.name}", flush=True)
    rows = []
    print(f"{len(rooms)} rooms, {args.width}x{args.height}, mIoU / pixel accuracy (%), mean estimated a")
    for t in args.tasks:
        s = raw[t].summary()
        print(f"{t:10s} raw            {100 * s['miou']:5.1f} / {100 * s['total_acc']:5.1f}")
        for g, overrides in enumerate(grid):
            s2 = pooled[(g, t)].summary()
            a, rad = float(np.mean(acc_est[(g, t)])), float(np.mean(radii[(g, t)]))
            print(f"{t:10s} pooled {overrides} {100 * s2['miou']:5.1f} / {100 * s2['total_acc']:5.1f}  "
                  f"a={a:.3f} radius={rad:.1f}")
            rows.append({"task": t, "config": {**LabelPoolingConfig().__dict__, **overrides},
                         "raw": s, "pooled": s2, "mean_accuracy_estimate": a, "mean_radius": rad})
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"rooms": [r.name for r in rooms], "seed": args.seed,
                                              "size": [args.width, args.height], "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
