"""Cost of the semantic prior: keyframe encoding and view rendering, model A vs model B, interleaved.

    python benchmarks/bench_prior.py --a OLD.pt --b models/sray_default.pt [--reps 5] [--threads 2]

On the sample room (``sample_data/synthetic_room``, RGB-D keyframes), each repetition times, for A then B:
encoding one keyframe (``encode_sources`` on a single 160x120 frame with its depth: the node's per-keyframe
cost) and rendering one 160x120 view from 8 keyframes (``render_view``, the node's default sampling).
Medians are reported with the B/A ratio; the load average before and after is printed, since other processes
on the machine change absolute times (the ratio, measured in one interleaved run, is what to compare).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import sys

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sray_ros.data.scannet import load_scannet_scene
from sray_ros.data.view_selection import select_source_views
from sray_ros.model.render import render_view
from sray_ros.train.checkpoint import load_checkpoint
from sray_ros.train.evaluate import encode_frames

ROOT = Path(__file__).resolve().parents[1]


def gemm_gflops(n: int = 20) -> float:
    a, b = torch.randn(4096, 512), torch.randn(512, 512)
    a @ b
    start = time.perf_counter()
    for _ in range(n):
        a @ b
    return 2 * 4096 * 512 * 512 * n / (time.perf_counter() - start) / 1e9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--a", required=True, help="checkpoint A (e.g. the previous default)")
    ap.add_argument("--b", required=True, help="checkpoint B")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--width", type=int, default=160)
    ap.add_argument("--height", type=int, default=120)
    args = ap.parse_args()
    for flag, path in (("--a", args.a), ("--b", args.b)):
        if not Path(path).is_file():
            ap.error(f"{flag} {path}: no such checkpoint file")
    if args.reps < 1 or args.threads < 1 or args.width < 8 or args.height < 8:
        ap.error("--reps and --threads must be >= 1, --width/--height >= 8")
    torch.set_num_threads(args.threads)
    scene = load_scannet_scene(ROOT / "sample_data" / "synthetic_room", args.width, args.height).preload()
    target = 7
    pool = np.array([i for i in range(scene.num_frames) if i not in (7, 31)])
    chosen = pool[select_source_views(scene.poses[target], scene.poses[pool], 8)]
    K = torch.from_numpy(scene.intrinsics).float()
    pose = torch.from_numpy(scene.poses[target]).float()
    models = {"A": load_checkpoint(args.a).model.eval(), "B": load_checkpoint(args.b).model.eval()}
    times = {(k, what): [] for k in models for what in ("encode", "render")}
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; fp32 GEMM {gemm_gflops():.0f} GFLOP/s; "
          f"{args.threads} threads; {args.width}x{args.height}", flush=True)
    with torch.no_grad():
        for rep in range(args.reps + 1):  # the first repetition warms up and is not counted
            for key, model in models.items():
                start = time.perf_counter()
                encode_frames(model, scene, chosen[:1], "cpu", with_depth=True)
                t_enc = time.perf_counter() - start
                sources = encode_frames(model, scene, chosen, "cpu", with_depth=True)
                start = time.perf_counter()
                render_view(model, sources, K, pose, scene.height, scene.width)
                t_ren = time.perf_counter() - start
                if rep:
                    times[(key, "encode")].append(t_enc)
                    times[(key, "render")].append(t_ren)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; fp32 GEMM {gemm_gflops():.0f} GFLOP/s")
    print("| | A (median s) | B (median s) | B / A |")
    print("|---|---|---|---|")
    for what in ("encode", "render"):
        a, b = statistics.median(times[("A", what)]), statistics.median(times[("B", what)])
        label = "encode one keyframe" if what == "encode" else f"render one {args.width}x{args.height} view (8 keyframes)"
        print(f"| {label} | {a:.3f} | {b:.3f} | {b / a:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
