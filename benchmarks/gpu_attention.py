"""Attention paths for short sequences (8 views of a sample, 8 samples of a ray), alone and in whole views.

    PYTHONPATH=. python benchmarks/gpu_attention.py --device cuda --scene "$SRAY_DATA/hololens_000" --out attention.json
    PYTHONPATH=. python benchmarks/gpu_attention.py --device cpu --batches 256 --sizes 40x30 --out /tmp/a.json

Paths (``sray_ros/model/attention.py``): ``paired`` (two sequences as one with a block-diagonal mask, the CPU
path), ``unpaired`` (PyTorch's fused kernel with a key mask, one sequence each), ``short`` (batched matmuls,
the CUDA path) and ``short_half`` (the same in float16). Micro: ``[B, 4, 8, 16]`` queries, keys and values,
20 % of the keys invalid, median of 5. Whole views: ``gpu_bench.py``'s view rendered with each path in turn
(interleaved, twice), median of 3, and the share of labels equal to the ``paired`` render.
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
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_bench  # noqa: E402
import sray_ros.model.attention as attention  # noqa: E402


def _unpaired(q, k, v, key_valid):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=key_valid[:, None, None, :])


def _short_half(q, k, v, key_valid):
    return attention.short_attention(q.half(), k.half(), v.half(), key_valid).to(q.dtype)


PATHS = {"paired": attention.paired_attention, "unpaired": _unpaired, "short": attention.short_attention,
         "short_half": _short_half}


def main() -> int:
    from sray_ros.model.render import render_view

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batches", default="65536,524288")
    ap.add_argument("--sizes", default="320x240,640x480")
    ap.add_argument("--scene", default=str(Path(os.environ.get("SRAY_DATA", ROOT / "data")) / "hololens_000"))
    ap.add_argument("--checkpoint", default=str(ROOT / "models" / "sray_default.pt"))
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    try:
        batches = [int(b) for b in args.batches.split(",")]
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    except ValueError:
        ap.error("--batches integers, --sizes WxH,WxH")
    device = torch.device(args.device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    report = {"device": str(device), "micro": [], "views": []}
    gen = torch.Generator(device=device).manual_seed(0)
    for b in batches:
        q, k, v = (torch.randn(b, 4, 8, 16, device=device, generator=gen) for _ in range(3))
        valid = attention.safe_key_mask(torch.rand(b, 8, device=device, generator=gen) > 0.2)
        ref = _unpaired(q, k, v, valid)
        for name, fn in PATHS.items():
            err = float((fn(q, k, v, valid) - ref).abs().max())
            times = []
            for _ in range(5):
                sync()
                start = time.perf_counter()
                fn(q, k, v, valid)
                sync()
                times.append(time.perf_counter() - start)
            report["micro"].append({"B": b, "path": name, "ms": 1000 * statistics.median(times), "max_err": err})
            print(json.dumps(report["micro"][-1]), flush=True)
    original = attention.masked_attention
    try:
        for width, height in sizes:
            model = gpu_bench._load(args, device, width, height)
            src, K, c2w, near, far = gpu_bench._view(args, model, device, width, height)
            for mode in ("exact", "fast"):
                kw = dict(near=near, far=far, sampling="depth_guided", **gpu_bench.MODES[mode])
                base = None
                for rep in range(2):
                    for name, fn in PATHS.items():
                        attention.masked_attention = fn
                        with torch.no_grad():
                            render_view(model, src, K, c2w, height, width, **kw)
                            times = []
                            for _ in range(3):
                                sync()
                                start = time.perf_counter()
                                view = render_view(model, src, K, c2w, height, width, **kw)
                                sync()
                                times.append(time.perf_counter() - start)
                        if name == "paired":
                            base = view.labels.clone()
                        row = {"size": f"{width}x{height}", "mode": mode, "rep": rep, "path": name,
                               "ms": 1000 * statistics.median(times),
                               "same_labels": float((view.labels == base).float().mean())}
                        report["views"].append(row)
                        print(json.dumps(row), flush=True)
    finally:
        attention.masked_attention = original
    Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
