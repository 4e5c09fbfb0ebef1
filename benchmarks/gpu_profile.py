"""Where a depth-guided view's time goes on a GPU: chunk sizes, then torch.profiler tables (a script).

    PYTHONPATH=. python benchmarks/gpu_profile.py --device cuda --scene "$SRAY_DATA/hololens_000" --out runs/gpu_profile
    PYTHONPATH=. python benchmarks/gpu_profile.py --device cpu --sizes 40x30 --out /tmp/prof   # CPU dry run

The view, model and modes are ``benchmarks/gpu_bench.py``'s. For each size and mode (``exact``: every pixel;
``fast``: the default view) the median of 3 renders for each ``--chunks`` value (rays per model call; 0 = the
automatic size), then one profiled render: ``prof_<size>_<mode>.txt`` holds the operator table sorted by
device time (CPU time on a CPU) and by CPU time, and the number of kernel launches; ``chunks.json`` the
timings.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_bench  # noqa: E402


def main() -> int:
    from sray_ros.model.render import render_view

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sizes", default="320x240,640x480")
    ap.add_argument("--chunks", default="0,16384,65536,262144")
    ap.add_argument("--scene", default=str(Path(os.environ.get("SRAY_DATA", ROOT / "data")) / "hololens_000"))
    ap.add_argument("--checkpoint", default=str(ROOT / "models" / "sray_default.pt"))
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    try:
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
        chunks = [int(c) or None for c in args.chunks.split(",")]
    except ValueError:
        ap.error("--sizes WxH,WxH and --chunks integers")
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    rows = []
    for width, height in sizes:
        model = gpu_bench._load(args, device, width, height)
        src, K, c2w, near, far = gpu_bench._view(args, model, device, width, height)
        for mode in ("exact", "fast"):
            base = dict(near=near, far=far, sampling="depth_guided", **gpu_bench.MODES[mode])
            with torch.no_grad():
                for chunk in chunks:
                    render_view(model, src, K, c2w, height, width, chunk=chunk, **base)
                    sync()
                    times = []
                    for _ in range(3):
                        start = time.perf_counter()
                        render_view(model, src, K, c2w, height, width, chunk=chunk, **base)
                        sync()
                        times.append(time.perf_counter() - start)
                    rows.append({"size": f"{width}x{height}", "mode": mode, "chunk": chunk,
                                 "median_ms": 1000 * statistics.median(times)})
                    print(json.dumps(rows[-1]), flush=True)
                activities = [torch.profiler.ProfilerActivity.CPU]
                if device.type == "cuda":
                    activities.append(torch.profiler.ProfilerActivity.CUDA)
                with torch.profiler.profile(activities=activities) as prof:
                    render_view(model, src, K, c2w, height, width, **base)
                    sync()
            table = prof.key_averages()
            key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
            launches = sum(e.count for e in table if e.key.startswith("cuda") and "Launch" in e.key)
            (out / f"prof_{width}x{height}_{mode}.txt").write_text(
                table.table(sort_by=key, row_limit=40) + "\n\n"
                + table.table(sort_by="self_cpu_time_total", row_limit=40)
                + f"\nkernel launches: {launches}\n")
    (out / "chunks.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
