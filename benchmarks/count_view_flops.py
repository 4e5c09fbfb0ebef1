"""FLOPs per rendered ray / per 320x240 view and per encoded keyframe (FlopCounterMode; deterministic).

    PYTHONPATH=. .venv/bin/python benchmarks/count_view_flops.py

Counts 32 rays of a 320x240 view with 8 source views at 64+64 samples (random weights, synthetic scene of
bench_model.py) and scales linearly to 76800 rays (rays are independent). Matmuls and attention are
counted; elementwise ops, grid_sample and normalisation are not.
"""

import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_model import _scene  # noqa: E402
from sray_ros import geometry as G  # noqa: E402
from sray_ros.model import SRay, SRayConfig, render_rays  # noqa: E402
from sray_ros.model.attention import register_cpu_sdpa_flop_formula  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    register_cpu_sdpa_flop_formula()
    K, poses, query, images = _scene(8, 240, 320, torch.device("cpu"))
    for union in (True, False):
        model = SRay(SRayConfig(fine_includes_coarse=union)).eval()
        with torch.no_grad():
            src = model.encode_sources(images, K.expand(8, 3, 3), poses)
            uv = G.pixel_grid(240, 320)[::2400]
            o, d = G.generate_rays(K, query, uv)
            with FlopCounterMode(display=False) as counter:
                render_rays(model, src, o, d, 0.5, 6.0)
        per_ray = counter.get_total_flops() / uv.shape[0]
        print(f"fine pass on {128 if union else 64} samples: {per_ray / 1e6:.1f} MFLOP/ray, "
              f"{per_ray * 76800 / 1e12:.2f} TFLOP per 320x240 view")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.encode(images[:1])
    print(f"feature extraction: {counter.get_total_flops() / 1e9:.2f} GFLOP per 320x240 keyframe")


if __name__ == "__main__":
    main()
