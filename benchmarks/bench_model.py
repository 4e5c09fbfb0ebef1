"""Model benchmarks -> BENCHMARKS.md (a script, not a test).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_model.py [--threads 2] [--view-rays 2048] [--out BENCHMARKS.md]
    PYTHONPATH=. .venv/bin/python benchmarks/bench_model.py --guided-only --section bench_guided   # section 4 only

Each measurement runs in a fresh subprocess, after a small warm-up call. Peak memory of the measured call
over what was allocated before it:
* CUDA: ``torch.cuda.max_memory_allocated`` (reset before the call) minus ``memory_allocated`` before.
* CPU: peak resident set size sampled every 2 ms from /proc/self/statm by a thread, minus the RSS before
  the call (the allocator may reuse freed warm-up memory, so this is a lower bound of allocations).
FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` (matmuls + attention; the CPU fused-attention op is
registered by :func:`sray_ros.model.attention.register_cpu_sdpa_flop_formula`). One multiply-add = 2 FLOPs.
Full views: with ``--view-rays N`` only N rays of the view (a regular subset) are rendered and time is
extrapolated linearly to the whole view (rays are independent and chunked, so cost is linear in rays;
peak memory is per chunk and does not grow with the view). ``--view-rays 0`` renders whole views.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import threading
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sray_ros import geometry as G  # noqa: E402
from sray_ros.model import SRay, SRayConfig, render_rays  # noqa: E402
from sray_ros.model.attention import CrossReprojectionAttention, register_cpu_sdpa_flop_formula  # noqa: E402

PUBLIC_CODE_S_PER_VIEW = 814.0  # measured: public S-Ray code, 320x240, 8 views, 64+64, this 2-core CPU


class _RssSampler:
    """Peak resident set size (MB) of this process, sampled from /proc/self/statm every 2 ms in a thread.
    (``ru_maxrss`` is a lifetime high-water mark, so it cannot isolate one call after a bigger one.)"""

    def __init__(self) -> None:
        self.page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20
        self.peak = self.current()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def current(self) -> float:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self.page_mb

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(0.002)

    def __enter__(self) -> "_RssSampler":
        self.base = self.current()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())

    @property
    def delta(self) -> float:
        return self.peak - self.base


class _PeakMemory:
    """Peak memory of the enclosed block over what was allocated before it: CUDA max_memory_allocated
    on CUDA, sampled RSS on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sampler = None if device.type == "cuda" else _RssSampler()

    def __enter__(self) -> "_PeakMemory":
        if self.sampler is None:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            self.sampler.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.sampler is None:
            torch.cuda.synchronize(self.device)
            self.mb = torch.cuda.max_memory_allocated(self.device) / 2**20 - self.base
        else:
            self.sampler.__exit__(*exc)
            self.mb = self.sampler.delta


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------------------
# workers (run in a subprocess, print one JSON line)
# --------------------------------------------------------------------------------------------------
def worker_attention(variant: str, rays: int, train: bool, device: torch.device, kernel: str = "fused") -> dict:
    """``kernel="math"`` forces PyTorch's reference attention, which materialises the [L, L] attention
    matrix as the public S-Ray code (and the paper's memory numbers) do; ``"fused"`` lets PyTorch pick its
    fused kernels (flash / memory-efficient on CUDA, flash-for-CPU on CPU), which never build it."""
    if kernel == "math":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.MATH):
            return worker_attention(variant, rays, train, device, kernel="fused")
    torch.manual_seed(0)
    block = CrossReprojectionAttention(SRayConfig(attention=variant)).to(device)
    x = torch.randn(rays, 64, 8, 32, device=device, requires_grad=train)  # [R, N, m, C]
    valid = torch.rand(rays, 64, 8, device=device) > 0.2
    with torch.no_grad():
        block(x[:2], valid[:2])  # warm-up
    with _PeakMemory(device) as mem:
        t = time.perf_counter()
        with torch.set_grad_enabled(train):
            y = block(x, valid)
            if train:
                y.square().mean().backward()
        _sync(device)
        secs = time.perf_counter() - t
    return {"seconds": secs, "peak_mb": mem.mb}


def worker_flops(variant: str, rays: int) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    import sray_ros.model.attention as attention

    register_cpu_sdpa_flop_formula()
    attention.PAIR_MAX_LENGTH = 0  # count the model's arithmetic, not the paired kernel's masked-out half
    block = CrossReprojectionAttention(SRayConfig(attention=variant))
    x = torch.randn(rays, 64, 8, 32)
    valid = torch.ones(rays, 64, 8, dtype=torch.bool)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        block(x, valid)
    return {"flops": counter.get_total_flops()}


def _scene(m: int, height: int, width: int, device: torch.device):
    """m source cameras on a small circle looking at a point 3 m ahead; random images."""
    K = G.intrinsics_matrix(0.8125 * width, 0.8125 * width, (width - 1) / 2, (height - 1) / 2)
    up = torch.tensor([0.0, -1.0, 0.0])
    target = torch.tensor([0.0, 0.0, 3.0])
    poses = [G.look_at(torch.tensor([0.3 * float(torch.cos(torch.tensor(a))), 0.3 * float(torch.sin(torch.tensor(a))), 0.0]),
                       target, up) for a in torch.linspace(0, 6.2832, m + 1)[:-1].tolist()]
    query = G.look_at(torch.tensor([0.05, 0.02, 0.0]), target, up)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(m, 3, height, width, generator=gen)
    return K, torch.stack(poses), query, images


def worker_view(height: int, width: int, m: int, n_coarse: int, n_fine: int, max_rays: int, chunk: int,
                device: torch.device, union: bool = True, autocast: bool = False) -> dict:
    torch.manual_seed(0)
    model = SRay(SRayConfig(num_coarse=n_coarse, num_fine=n_fine, fine_includes_coarse=union)).to(device).eval()
    K, poses, query, images = _scene(m, height, width, device)
    with torch.no_grad():
        src = model.encode_sources(images.to(device), K.expand(m, 3, 3).to(device), poses.to(device))
    uv = G.pixel_grid(height, width)
    total = uv.shape[0]
    if max_rays and max_rays < total:
        uv = uv[torch.linspace(0, total - 1, max_rays).long()]
    o, d = G.generate_rays(K, query, uv)
    o, d = o.to(device), d.to(device)
    amp = torch.autocast("cuda", dtype=torch.float16) if autocast and device.type == "cuda" else contextlib.nullcontext()
    with torch.no_grad(), amp:
        render_rays(model, src, o[:64], d[:64], 0.5, 6.0, chunk=chunk or None)  # warm-up
        with _PeakMemory(device) as mem:
            t = time.perf_counter()
            out = render_rays(model, src, o, d, 0.5, 6.0, chunk=chunk or None)
            out.fine.logits.argmax(-1)
            _sync(device)
            secs = time.perf_counter() - t
    return {"rays": uv.shape[0], "total_rays": total, "seconds_measured": secs,
            "seconds_per_view": secs * total / uv.shape[0], "rays_per_s": uv.shape[0] / secs, "peak_mb": mem.mb}


def worker_guided_view(height: int, width: int, mode: str, k: int, max_rays: int, threads: int, checkpoint: str,
                       scene: str, device: torch.device) -> dict:
    """One held-out view of a real RGB-D scene from its 8 nearest keyframes (with depth), rendered with
    ``mode`` = ``"hierarchical"`` (64 + 64, fine pass on the 64 importance samples, as the public S-Ray code)
    or ``"depth_guided"`` (``k`` samples per ray around the fused keyframe depth; the time includes the
    target-depth estimate). ``max_rays`` > 0 renders a regular subset of the rays and extrapolates (only for
    hierarchical: depth-guided always renders the whole view). Reports the process's peak RSS too."""
    import resource

    import numpy as np

    from sray_ros.data.scannet import load_scannet_scene
    from sray_ros.data.view_selection import select_source_views
    from sray_ros.model.render import render_view
    from sray_ros.train.evaluate import encode_frames, load_model_for_scenes, split_frames

    torch.set_num_threads(threads)
    load_before = os.getloadavg()[0]
    if checkpoint and Path(checkpoint).exists():
        loaded = load_model_for_scenes(checkpoint, device, width, height)
        model, label_set = loaded.checkpoint.model.to(device).eval(), loaded.label_set
    else:
        from sray_ros.data.label_sets import load_label_set

        label_set = load_label_set("scannet20")
        model = SRay(SRayConfig(num_classes=label_set.num_classes)).to(device).eval()
    sc = load_scannet_scene(scene, width, height, label_set=label_set).preload()
    pool, test = split_frames(sc.num_frames, 10)
    t = int(test[len(test) // 2])
    chosen = select_source_views(sc.poses[t], sc.poses[pool], 8)
    src = encode_frames(model, sc, pool[chosen], device, with_depth=True)
    K = torch.from_numpy(sc.intrinsics).float()
    c2w = torch.from_numpy(sc.poses[t]).float()
    total = height * width
    with torch.no_grad():
        if mode == "depth_guided":
            render_view(model, src, K, c2w, 12, 16, sampling="depth_guided", num_surface_samples=k)  # warm-up
            with _PeakMemory(device) as mem:
                start = time.perf_counter()
                view = render_view(model, src, K, c2w, height, width, near=sc.near, far=sc.far,
                                   sampling="depth_guided", num_surface_samples=k)
                _sync(device)
                secs = time.perf_counter() - start
            rays = total
            gt = sc.depths[t] if sc.depths is not None else None
            ok = None if gt is None else (gt > 0) & np.isfinite(view.depth.cpu().numpy())
            abs_rel = (float(np.mean(np.abs(view.depth.cpu().numpy()[ok] - gt[ok]) / gt[ok]))
                       if ok is not None and ok.any() else float("nan"))
        else:
            uv = G.pixel_grid(height, width)
            if max_rays and max_rays < total:
                uv = uv[torch.linspace(0, total - 1, max_rays).long()]
            o, d = G.generate_rays(K, c2w, uv)
            o, d = o.to(device), d.to(device)
            model.cfg.fine_includes_coarse = False  # fine pass on the 64 importance samples only
            render_rays(model, src, o[:16], d[:16], sc.near, sc.far, num_coarse=64, num_fine=64,
                        sampling="hierarchical")  # warm-up
            with _PeakMemory(device) as mem:
                start = time.perf_counter()
                render_rays(model, src, o, d, sc.near, sc.far, num_coarse=64, num_fine=64, sampling="hierarchical")
                _sync(device)
                secs = time.perf_counter() - start
            rays = uv.shape[0]
            abs_rel = float("nan")
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rays": rays, "total_rays": total, "seconds_per_view": secs * total / rays, "peak_mb": mem.mb,
            "peak_rss_mb": peak_rss_mb, "load_before": load_before, "load_after": os.getloadavg()[0],
            "abs_rel": abs_rel}


def worker_matmul(device: torch.device) -> dict:
    """Machine-speed calibration: fp32 GEMM rate right now (the shared machine's load varies)."""
    a, b = torch.randn(4096, 512, device=device), torch.randn(512, 512, device=device)
    a @ b
    _sync(device)
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    _sync(device)
    return {"gflops": 10 * 2 * 4096 * 512 * 512 / (time.perf_counter() - t) / 1e9}


def worker_encode(height: int, width: int, m: int, device: torch.device) -> dict:
    model = SRay(SRayConfig()).to(device).eval()
    images = torch.rand(m, 3, height, width, device=device)
    with torch.no_grad():
        model.encode(images[:1])
        _sync(device)
        t = time.perf_counter()
        for _ in range(3):
            model.encode(images)
        _sync(device)
    return {"seconds_per_keyframe": (time.perf_counter() - t) / (3 * m)}


# --------------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------------
def run_worker(args: argparse.Namespace, kind: str, **kw) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--worker-args", json.dumps(kw), "--threads", str(args.threads),
           "--device", args.device]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"worker {kind} {kw} failed:\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"  {kind} {kw}: {out}", flush=True)
    return out



def portable_path(text: str) -> str:
    """``text`` with the data folder written as ``$SRAY_DATA`` and the repository as a relative path, so the
    command recorded in BENCHMARKS.md names no path of the machine it ran on."""
    data = os.environ.get("SRAY_DATA")
    if data and text.startswith(str(Path(data).resolve())):
        return "$SRAY_DATA" + text[len(str(Path(data).resolve())):]
    if data and text.startswith(data):
        return "$SRAY_DATA" + text[len(data):]
    if text.startswith(str(ROOT) + os.sep):
        return os.path.relpath(text, ROOT)
    return text

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--attention-rays", type=int, default=1024, help="rays for the CRA vs dense time/memory rows")
    ap.add_argument("--view-rays", type=int, default=2048, help="rays rendered for the 320x240 rows (0 = whole view)")
    ap.add_argument("--small-view-rays", type=int, default=0, help="rays rendered for the 160x120 row (0 = whole view)")
    ap.add_argument("--chunk", type=int, default=0, help="rays per chunk (0 = render.auto_chunk)")
    ap.add_argument("--machine", default=f"{os.cpu_count()}-core {platform.machine()} CPU")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--section", default="bench_model",
                    help="name of the marked section of --out that this run replaces (one per machine kind)")
    ap.add_argument("--autocast", action="store_true", help="view rows under float16 autocast (CUDA only)")
    ap.add_argument("--views-only", action="store_true", help="only the full-view rows (section 2)")
    ap.add_argument("--skip-train", action="store_true", help="skip the forward+backward attention rows")
    ap.add_argument("--guided-only", action="store_true",
                    help="only section 4: depth-guided vs hierarchical on a real RGB-D scene")
    ap.add_argument("--guided-scene", default=os.path.join(os.environ.get("SRAY_DATA", "data"), "hololens_000"),
                    help="RGB-D scene for section 4 (default: $SRAY_DATA/hololens_000, SRAY_DATA defaulting to data)")
    ap.add_argument("--checkpoint", default=str(ROOT / "models" / "sray_default.pt"), help="weights for section 4")
    ap.add_argument("--guided-threads", default="1,2", help="thread counts for section 4")
    ap.add_argument("--guided-sizes", default="160x120,320x240", help="view sizes for section 4")
    ap.add_argument("--guided-hier-rays", type=int, default=1024,
                    help="rays rendered (then extrapolated) for the hierarchical rows of section 4 (0 = whole view)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--worker-args", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        kw = json.loads(args.worker_args)
        dev = torch.device(args.device)
        fn = {"attention": worker_attention, "view": worker_view, "encode": worker_encode,
              "matmul": worker_matmul, "guided": worker_guided_view}.get(args.worker)
        print(json.dumps(worker_flops(**kw) if args.worker == "flops" else fn(device=dev, **kw)))
        return

    started = datetime.datetime.now(datetime.timezone.utc)
    machine = f"{args.machine}, torch {torch.__version__}, {args.threads} threads, device {args.device}"
    print(f"benchmarking on {machine}", flush=True)
    rows: list[str] = []
    gemm_before = run_worker(args, "matmul")["gflops"]

    if not args.guided_only and not args.views_only:
        # (1) CRA vs dense on the paper's input
        fl = {v: run_worker(args, "flops", variant=v, rays=1024)["flops"] for v in ("cra", "dense")}
        modes = [False] + ([] if args.skip_train else [True])
        kernels = ("fused", "math")
        att = {(v, tr, k): run_worker(args, "attention", variant=v, rays=args.attention_rays, train=tr, kernel=k)
               for k in kernels for tr in modes for v in ("cra", "dense")}
        rows.append("### 1. Cross-Reprojection Attention vs dense attention\n")
        rows.append(f"Input: {args.attention_rays} rays x 64 samples x 8 views x 32 channels (FLOPs always for 1024 rays), "
                    "attention block only (projections, attention, LayerNorm, feed-forward), 20% invalid keys, random weights.\n")
        rows.append("| quantity | CRA | dense | CRA / dense | paper CRA | paper dense | paper ratio |")
        rows.append("|---|---|---|---|---|---|---|")
        rows.append(f"| GFLOPs (forward, 1024 rays) | {fl['cra'] / 1e9:.2f} | {fl['dense'] / 1e9:.2f} | "
                    f"{fl['cra'] / fl['dense']:.3f} | 5.40 | 10.25 | 0.527 |")
        for k in kernels:
            for tr in modes:
                name = ("forward+backward" if tr else "forward (no grad)") + (
                    ", fused attention kernel" if k == "fused" else ", materialised attention (math kernel)")
                c, d = att[("cra", tr, k)], att[("dense", tr, k)]
                rows.append(f"| peak memory MB, {name} | {c['peak_mb']:.0f} | {d['peak_mb']:.0f} | "
                            f"{c['peak_mb'] / max(d['peak_mb'], 1e-9):.3f} | 4143 | 17647 | 0.235 |")
                rows.append(f"| time s, {name} | {c['seconds']:.3f} | {d['seconds']:.3f} | "
                            f"{c['seconds'] / d['seconds']:.3f} | | | |")
        rows.append("")

    if not args.guided_only:
        # (2) full views
        rows.append("### 2. Full semantic views (8 source views, chunk %s, random weights%s)\n"
                    % (args.chunk or "auto", ", float16 autocast" if args.autocast else ""))
        rows.append("| view | samples (coarse+fine) | rays measured | s / view | rays / s | peak memory MB | speed-up vs public code (814 s) |")
        rows.append("|---|---|---|---|---|---|---|")
        for (h, w, nc, nf, union, target, rays) in [(120, 160, 32, 32, True, "< 5 s", args.small_view_rays),
                                                     (240, 320, 64, 64, True, "< 30 s", args.view_rays),
                                                     (240, 320, 64, 64, False, "< 30 s", args.view_rays)]:
            r = run_worker(args, "view", height=h, width=w, m=8, n_coarse=nc, n_fine=nf, max_rays=rays, chunk=args.chunk,
                           union=union, autocast=args.autocast)
            extrap = "" if r["rays"] == r["total_rays"] else " (extrapolated)"
            vs = f"{PUBLIC_CODE_S_PER_VIEW / r['seconds_per_view']:.2f}x" if (h, w, nc, nf) == (240, 320, 64, 64) else ""
            fine_n = nc + nf if union else nf
            rows.append(f"| {w}x{h} (target {target}) | {nc}+{nf} (fine pass on {fine_n}) | {r['rays']} of {r['total_rays']} | "
                        f"{r['seconds_per_view']:.1f}{extrap} | {r['rays_per_s']:.0f} | {r['peak_mb']:.0f} | {vs} |")
        rows.append("")

    if not args.views_only and not args.guided_only:
        # (3) feature extraction
        rows.append("### 3. Feature extraction (ResUNet, once per keyframe)\n")
        rows.append("| image | s / keyframe (batch of 8) | s / keyframe (single) |")
        rows.append("|---|---|---|")
        for (h, w) in [(240, 320), (120, 160)]:
            e8 = run_worker(args, "encode", height=h, width=w, m=8)
            e1 = run_worker(args, "encode", height=h, width=w, m=1)
            rows.append(f"| {w}x{h} | {e8['seconds_per_keyframe']:.3f} | {e1['seconds_per_keyframe']:.3f} |")
        rows.append("")

    # (4) depth-guided vs hierarchical sampling on a real RGB-D scene (trained weights, real depth)
    if Path(args.guided_scene).is_dir() and (args.guided_only or not args.views_only):
        rows.append("### 4. Depth-guided vs hierarchical sampling (real RGB-D scene, 8 nearest keyframes with depth)\n")
        rows.append(f"Scene `{portable_path(args.guided_scene)}`, one held-out pose, weights `{Path(args.checkpoint).name}`. "
                    "Hierarchical: 64 + 64, fine pass on the 64 importance samples (as the public S-Ray code), "
                    f"{args.guided_hier_rays or 'all'} rays measured and extrapolated. Depth-guided: whole view, "
                    "time includes the keyframe-depth splat / fusion and the coarse pass in depth holes. "
                    "Peak RSS: whole worker process (model, scene, features). Load: 1-minute load average "
                    "before / after the row.\n")
        rows.append("| view | threads | sampling | s / view | speed-up vs hierarchical | depth AbsRel | peak RSS MB | load |")
        rows.append("|---|---|---|---|---|---|---|---|")
        for size in args.guided_sizes.split(","):
            w, h = (int(v) for v in size.lower().split("x"))
            for threads in (int(t) for t in args.guided_threads.split(",")):
                base = None
                for mode, k in (("hierarchical", 0), ("depth_guided", 8), ("depth_guided", 16)):
                    r = run_worker(args, "guided", height=h, width=w, mode=mode, k=k, max_rays=args.guided_hier_rays,
                                   threads=threads, checkpoint=args.checkpoint, scene=args.guided_scene)
                    base = r["seconds_per_view"] if mode == "hierarchical" else base
                    name = "hierarchical 64+64" if mode == "hierarchical" else f"depth-guided K={k}"
                    extrap = " (extrapolated)" if r["rays"] != r["total_rays"] else ""
                    speed = "1.00x" if mode == "hierarchical" else f"{base / r['seconds_per_view']:.1f}x"
                    rel = "" if r["abs_rel"] != r["abs_rel"] else f"{r['abs_rel']:.3f}"
                    rows.append(f"| {w}x{h} | {threads} | {name} | {r['seconds_per_view']:.2f}{extrap} | {speed} | "
                                f"{rel} | {r['peak_rss_mb']:.0f} | {r['load_before']:.2f} / {r['load_after']:.2f} |")
        rows.append("")

    gemm_after = run_worker(args, "matmul")["gflops"]
    rows.append(f"Machine-speed calibration: fp32 GEMM (4096x512 @ 512x512) ran at {gemm_before:.0f} GFLOP/s before and "
                f"{gemm_after:.0f} GFLOP/s after this run (158 GFLOP/s was measured on the idle machine, where "
                "the public code's 814 s/view was measured).\n")
    cmd = "PYTHONPATH=. .venv/bin/python benchmarks/bench_model.py " + " ".join(portable_path(a) for a in sys.argv[1:])
    header = (f"## Model benchmarks ({started:%Y-%m-%d %H:%M} UTC)\n\nMachine: {machine}. Command: `{cmd}`.\n"
              "Timings on a shared machine are noisy: compare ratios measured within one run. Peak memory: "
              "CUDA max_memory_allocated, CPU sampled peak RSS increase over the call, each in a fresh process.\n")
    section = header + "\n" + "\n".join(rows) + "\n"
    out = Path(args.out)
    text = out.read_text() if out.exists() else "# Benchmarks\n\n"
    marker = f"<!-- {args.section} -->"
    if marker in text:
        head, _, rest = text.partition(marker)
        _, _, tail = rest.partition(f"<!-- /{args.section} -->")
        text = head + marker + "\n" + section + f"<!-- /{args.section} -->" + tail
    else:
        text = text.rstrip() + "\n\n" + marker + "\n" + section + f"<!-- /{args.section} -->\n"
    out.write_text(text)
    print(section)


if __name__ == "__main__":
    main()
