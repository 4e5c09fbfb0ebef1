"""Fast depth-guided views against the exact per-pixel path, in one interleaved run (a script, not a test).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_fast_views.py --data <scene or folder of scenes> \\
        --sizes 160x120,320x240 --views 1 [--modes exact,fast] [--out result.json]

For every scene and size: the shipped model encodes the scene's keyframe pool once; for each of ``--views``
evenly spaced held-out views (every 10th frame, as sray-eval) the 8 nearest keyframes (with depth) are
selected and every mode renders the view, modes alternating within the view (so machine load hits all
modes alike). Per mode: seconds per view (median and all), rays the network rendered, peak RSS growth of the
render call (sampled, see bench_model._PeakMemory), mIoU over all rendered views (scenes with labels) and depth
AbsRel against the sensor / ground-truth depth (scenes with depth), pooled over pixels as sray-eval does, and
the fraction of pixels whose label equals the first mode's. The fp32 GEMM rate (calibration) and the load
average are recorded before and after, and the process's peak RSS at the end (run one mode per process to
compare modes' peak RSS: the per-call RSS growth depends on what earlier calls left allocated).

Modes: ``exact`` = ``view_scale=1, confident_surface_samples=0`` (the per-pixel K=8 path);
``fast`` = the model config's defaults; ``scaleN`` = ``view_scale=N``; ``scaleN_depth`` /
``scaleN_none`` = with ``upsample_refine`` depth / none; ``scaleN_mX`` = label refinement only below
probability margin X (``upsample_refine_margin``); ``adaptive`` = per pixel with adaptive K (4).
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_model import _PeakMemory, worker_matmul  # noqa: E402


def mode_kwargs(name: str) -> dict:
    """render_view keyword arguments of a mode name (see the module docstring)."""
    if name == "exact":
        return dict(view_scale=1, confident_surface_samples=0)
    if name == "fast":
        return {}
    if name == "adaptive":
        return dict(view_scale=1, confident_surface_samples=4)
    if name.startswith("scale"):
        scale, _, refine = name[5:].partition("_")
        if refine.startswith("m"):  # scaleN_m0.3: label refinement below that probability margin
            return dict(view_scale=int(scale), confident_surface_samples=0, margin=float(refine[1:]))
        return dict(view_scale=int(scale), confident_surface_samples=0, upsample_refine=refine or "labels")
    raise ValueError(f"unknown mode {name!r}")


def main() -> int:
    from sray_ros.data.scannet import load_scannet_scene
    from sray_ros.data.view_selection import select_source_views
    from sray_ros.model.render import render_view
    from sray_ros.train.evaluate import color_aligned_depth, encode_frames, load_model_for_scenes, scene_folders, \
        split_frames
    from sray_ros.train.metrics import ConfusionMatrix, DepthErrors

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", action="append", required=True, help="scene folder or folder of scenes (repeatable)")
    ap.add_argument("--checkpoint", default=str(ROOT / "models" / "sray_default.pt"))
    ap.add_argument("--sizes", default="160x120,320x240")
    ap.add_argument("--views", type=int, default=1, help="held-out views per scene")
    ap.add_argument("--modes", default="exact,fast")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-scenes", type=int, default=0)
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    modes = args.modes.split(",")
    for m in modes:
        mode_kwargs(m)
    folders = [f for d in args.data for f in scene_folders(d)]
    if args.max_scenes:
        folders = folders[:args.max_scenes]
    report = {"threads": args.threads, "modes": modes, "scenes": [f.name for f in folders],
              "views_per_scene": args.views, "load_before": os.getloadavg(),
              "gemm_gflops_before": worker_matmul(device)["gflops"], "sizes": {}}
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.split("x"))
        loaded = load_model_for_scenes(args.checkpoint, device, width, height)
        model, label_set = loaded.checkpoint.model.eval(), loaded.label_set
        stats = {m: dict(seconds=[], rays=[], peak_mb=[], agree=[], conf=ConfusionMatrix(label_set.num_classes,
                                                                                         label_set.ignore_index),
                         depth=DepthErrors()) for m in modes}
        for folder in folders:
            scene = load_scannet_scene(folder, width, height, label_set=label_set).preload()
            pool, test = split_frames(scene.num_frames, 10)
            test = test[np.linspace(0, len(test) - 1, min(args.views, len(test))).round().astype(int)]
            pool_views = encode_frames(model, scene, pool, device, with_depth=True)
            K = torch.from_numpy(scene.intrinsics).float()
            with torch.no_grad():
                render_view(model, pool_views.select(torch.arange(2)), K, torch.from_numpy(scene.poses[0]).float(),
                            12, 16, sampling="depth_guided")  # warm-up
            for t in test:
                chosen = select_source_views(scene.poses[t], scene.poses[pool], 8)
                src = pool_views.select(torch.as_tensor(chosen, dtype=torch.long))
                c2w = torch.from_numpy(scene.poses[t]).float()
                gt_depth = color_aligned_depth(scene, int(t))
                exact_labels = None
                for m in modes:
                    kw = mode_kwargs(m)
                    model.cfg.upsample_refine_margin = kw.pop("margin", 1.0)
                    with _PeakMemory(device) as mem:
                        start = time.perf_counter()
                        view = render_view(model, src, K, c2w, height, width, near=scene.near, far=scene.far,
                                           sampling="depth_guided", **kw)
                        secs = time.perf_counter() - start
                    s = stats[m]
                    s["seconds"].append(secs)
                    s["rays"].append(view.network_rays / (height * width))
                    s["peak_mb"].append(mem.mb)
                    if gt_depth is not None:
                        s["depth"].update(view.depth.float(), gt_depth)
                    if scene.labels is not None:
                        s["conf"].update(view.labels.numpy().astype(np.uint8), scene.labels[t])
                    if m == modes[0]:
                        exact_labels = view.labels
                    s["agree"].append(float((view.labels == exact_labels).float().mean()))
                    print(f"{size} {folder.name} frame {int(t)} {m}: {secs:.2f} s, rays {s['rays'][-1]:.3f}, "
                          f"load {os.getloadavg()[0]:.1f}", flush=True)
        rows = {}
        base = statistics.median(stats[modes[0]]["seconds"])
        for m in modes:
            s = stats[m]
            med = statistics.median(s["seconds"])
            rows[m] = {"median_s": med, "speedup_vs_first": base / med,
                       "speedup_per_view_median": statistics.median(
                           a / b for a, b in zip(stats[modes[0]]["seconds"], s["seconds"])),
                       "seconds": s["seconds"], "network_ray_fraction": statistics.mean(s["rays"]),
                       "peak_mb_max": max(s["peak_mb"]), "label_agreement_with_first": statistics.mean(s["agree"]),
                       "miou": s["conf"].miou() if s["conf"].matrix.sum() else None,
                       "depth_abs_rel": s["depth"].summary()["depth_abs_rel"]}
            print(f"{size} {m}: {json.dumps({k: v for k, v in rows[m].items() if k != 'seconds'})}", flush=True)
        report["sizes"][size] = rows
    import resource

    # the process's peak RSS (MB): compare modes by running each alone (--modes exact / --modes fast)
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report["load_after"] = os.getloadavg()
    report["gemm_gflops_after"] = worker_matmul(device)["gflops"]
    print(json.dumps({k: report[k] for k in ("load_before", "load_after", "gemm_gflops_before", "gemm_gflops_after",
                                             "peak_rss_mb")}))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
