"""Cost of pooling one keyframe's labels (``sray_ros.model.label_pooling.pool_labels``), once per keyframe.

    python benchmarks/bench_label_pooling.py [--sizes 160x120,320x240] [--reps 5] [--threads 1]

A keyframe of two surfaces (colour and depth differ) with clean labels and with 50 % / 90 % pixel noise
(20 classes): the noise sets the radius each keyframe pools over (0, 2 and 11-12 px), and the cost grows with
the square of it. The noise levels are interleaved in each repetition; the median seconds are printed with
the radius and the load average.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sray_ros.model.label_pooling import pool_labels  # noqa: E402


def keyframe(width: int, height: int, rate: float, k: int = 20, seed: int = 0):
    """(labels [1, H, W], images [1, 3, H, W], depths [1, H, W]): two surfaces, ``rate`` of the pixels wrong."""
    images = torch.full((1, 3, height, width), 0.6)
    images[:, :, :, width // 2:] = torch.tensor([0.5, 0.3, 0.1]).view(1, 3, 1, 1)
    depths = torch.full((1, height, width), 2.0)
    depths[:, :, width // 2:] = 1.5
    labels = np.ones((height, width), np.uint8)
    labels[:, width // 2:] = 3
    rng = np.random.default_rng(seed)
    flat = labels.reshape(-1)
    idx = rng.choice(flat.size, int(round(rate * flat.size)), replace=False)
    flat[idx] = (flat[idx] + rng.integers(1, k, idx.size)) % k
    return torch.from_numpy(labels)[None], images, depths


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="160x120,320x240")
    ap.add_argument("--rates", default="0,0.5,0.9")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    try:
        rates = [float(r) for r in args.rates.split(",")]
        sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")]
    except ValueError:
        ap.error("--rates are numbers, --sizes WxH,WxH")
    if not all(0 <= r <= 1 for r in rates) or not all(len(sz) == 2 and min(sz) >= 8 for sz in sizes):
        ap.error("--rates must be in [0, 1] and --sizes WxH with W, H >= 8")
    if args.reps < 1 or args.threads < 1:
        ap.error("--reps and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    print(json.dumps({"load_average": os.getloadavg(), "threads": args.threads, "torch": torch.__version__}))
    for width, height in sizes:
        size = f"{width}x{height}"
        inputs = {r: keyframe(width, height, r) for r in rates}
        times: dict[float, list[float]] = {r: [] for r in rates}
        radius = {}
        for _ in range(args.reps):
            for r in rates:  # interleaved
                start = time.perf_counter()
                out = pool_labels(*inputs[r], 20)
                times[r].append(time.perf_counter() - start)
                radius[r] = int(out.radius[0])
        for r in rates:
            print(json.dumps({"size": size, "pixel_noise": r, "radius": radius[r],
                              "median_s": round(statistics.median(times[r]), 4)}))
    print(json.dumps({"load_average_after": os.getloadavg()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
