"""Depth-guided view timings on a GPU, sized for a short GPU slot (a script, not a test).

    PYTHONPATH=. python benchmarks/gpu_bench.py [--device cuda] [--out gpu_bench.json]
    PYTHONPATH=. python benchmarks/gpu_bench.py --device cpu --sizes 40x30 --reps 1   # dry run on a CPU

One held-out view of the real RGB-D sequence (``--scene``, default ``$SRAY_DATA/hololens_000``; a random
8-camera scene when the folder is missing) from its 8 nearest keyframes with depth, the shipped model
(random weights when the checkpoint is missing). For every size and mode (``exact``: every pixel K = 8;
``fast``: the config's defaults, :func:`sray_ros.model.render.render_guided_view`), each in float32 and in
float16 autocast (CUDA only): ``--warmup`` untimed renders, then ``--reps`` timed ones (synchronised), median
seconds, and peak device memory over what was allocated before (``torch.cuda.max_memory_allocated``; on CPU
the sampled RSS growth of bench_model._PeakMemory). Each result line is printed as soon as it is measured,
and the JSON is rewritten after every row, so a slot that ends early still leaves what was measured.
Targets for a GPU (issue acceptance): 320x240 <= 20 ms and 640x480 <= 60 ms per view.
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

from bench_model import _PeakMemory, _sync, worker_matmul  # noqa: E402

MODES = {"exact": dict(view_scale=1, confident_surface_samples=0), "fast": {}}


def _load(args, device, width, height):
    from sray_ros.model import SRay, SRayConfig

    ckpt = Path(args.checkpoint)
    if ckpt.exists():
        from sray_ros.train.evaluate import load_model_for_scenes

        model = load_model_for_scenes(str(ckpt), device, width, height).checkpoint.model
    else:
        print(f"checkpoint {ckpt} missing: random weights", flush=True)
        model = SRay(SRayConfig())
    return model.to(device).eval()


def _view(args, model, device, width, height):
    """(sources, K, c2w, near, far) of one held-out view."""
    scene_dir = Path(args.scene)
    if (scene_dir / "pose").is_dir():
        from sray_ros.data.scannet import load_scannet_scene
        from sray_ros.data.view_selection import select_source_views
        from sray_ros.train.evaluate import encode_frames, split_frames

        sc = load_scannet_scene(scene_dir, width, height).preload()
        pool, test = split_frames(sc.num_frames, 10)
        t = int(test[len(test) // 2])
        chosen = select_source_views(sc.poses[t], sc.poses[pool], 8)
        src = encode_frames(model, sc, pool[chosen], device, with_depth=True)
        return src, torch.from_numpy(sc.intrinsics).float(), torch.from_numpy(sc.poses[t]).float(), sc.near, sc.far
    from bench_model import _scene

    print(f"scene {scene_dir} missing: random 8-camera scene with a plane at 3 m", flush=True)
    K, poses, query, images = _scene(8, height, width, device)
    depths = torch.full((8, height, width), 3.0)
    with torch.no_grad():
        src = model.encode_sources(images.to(device), K.expand(8, 3, 3).to(device), poses.to(device), depths.to(device))
    return src, K, query, 0.5, 6.0


def main() -> int:
    from sray_ros.model.render import render_view

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sizes", default="160x120,320x240,640x480")
    ap.add_argument("--modes", default="exact,fast")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--scene", default=str(Path(os.environ.get("SRAY_DATA", ROOT / "data")) / "hololens_000"),
                    help="real RGB-D sequence (default $SRAY_DATA/hololens_000)")
    ap.add_argument("--checkpoint", default=str(ROOT / "models" / "sray_default.pt"))
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (CPU dry run)")
    ap.add_argument("--out", default="gpu_bench.json")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    report = {"device": str(device), "name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "gemm_gflops": worker_matmul(device)["gflops"], "rows": []}
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}), flush=True)
    out = Path(args.out)
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.split("x"))
        model = _load(args, device, width, height)
        src, K, c2w, near, far = _view(args, model, device, width, height)
        for mode in args.modes.split(","):
            for amp in ((False, True) if device.type == "cuda" else (False,)):
                kw = dict(near=near, far=far, sampling="depth_guided", autocast=amp, **MODES[mode])
                with torch.no_grad():
                    for _ in range(args.warmup):
                        render_view(model, src, K, c2w, height, width, **kw)
                    _sync(device)
                    times = []
                    with _PeakMemory(device) as mem:
                        for _ in range(args.reps):
                            start = time.perf_counter()
                            view = render_view(model, src, K, c2w, height, width, **kw)
                            _sync(device)
                            times.append(time.perf_counter() - start)
                row = {"size": size, "mode": mode, "fp16": amp, "median_ms": 1000 * statistics.median(times),
                       "min_ms": 1000 * min(times), "peak_mb": mem.mb, "network_rays": view.network_rays}
                report["rows"].append(row)
                print(json.dumps(row), flush=True)
                out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
