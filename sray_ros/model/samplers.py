"""Ray samplers: where along each ray the field is evaluated.

Two typed samplers with one job each (nerfstudio's pattern: a small class per sampling strategy):

* :class:`HierarchicalSampler`: NeRF / IBRNet / S-Ray coarse-to-fine sampling: ``num_coarse`` samples uniform
  in inverse depth in ``[near, far]`` (stratified when perturbed), then ``num_fine`` importance samples from
  the coarse weights (merged with the coarse ones when ``fine_includes_coarse``).
* :class:`DepthGuidedSampler`: GSNeRF's depth-guided sampling (Chou et al., CVPR 2024, Sec. 3.2): ``K``
  samples in a band around a target depth whose width follows the depth's confidence (narrow where the
  depth is trusted, wide where it is a guess), Gaussian (truncated normal quantiles, ``band = +-2 sigma``) or
  stratified-uniform inside the band, optionally plus a few samples uniform in inverse depth in
  ``[near, far]`` (GSNeRF's mix of guided and uniform samples, App. A.4) so a wrong target depth can still
  be corrected by the density field.

All depths are z-depths in metres (ray directions have camera-z = 1) and come back sorted ascending ``[R, N]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sray_ros import geometry

SAMPLING_MODES = ("hierarchical", "depth_guided", "auto")
SURFACE_DISTRIBUTIONS = ("gaussian", "stratified")


@dataclass
class HierarchicalSampler:
    """Coarse-to-fine sampling (NeRF Sec. 5.2): see the module docstring."""

    num_coarse: int = 64
    num_fine: int = 64
    fine_includes_coarse: bool = True

    def coarse(self, near: Tensor, far: Tensor, perturb: bool = False) -> Tensor:
        """``[R, num_coarse]`` depths uniform in inverse depth between ``near`` and ``far`` (each ``[R]``)."""
        return geometry.sample_inverse_depth(near, far, self.num_coarse, perturb=perturb)

    def fine(self, coarse_depths: Tensor, coarse_weights: Tensor, perturb: bool = False) -> Tensor:
        """``[R, num_fine (+ num_coarse)]`` importance samples from the coarse pass (detached, sorted)."""
        fine = geometry.sample_pdf(coarse_depths, coarse_weights, self.num_fine, deterministic=not perturb)
        if self.fine_includes_coarse:
            fine = torch.cat([coarse_depths.detach(), fine], -1).sort(-1).values
        return fine

    @property
    def samples_per_ray(self) -> int:
        """Samples of the (more expensive) fine pass, or of the coarse pass when there is no fine one."""
        if self.num_fine <= 0:
            return self.num_coarse
        return self.num_fine + (self.num_coarse if self.fine_includes_coarse else 0)


@dataclass
class DepthGuidedSampler:
    """``num_samples`` samples around a target depth (GSNeRF depth-guided sampling).

    Band: ``[d - h, d + h]`` with half-width ``h = d * (band_min + (1 - c) * (band_max - band_min))`` for
    target depth ``d`` and confidence ``c in [0, 1]`` (at least ``min_half_width`` metres; the lower end is
    kept in front of the camera). ``distribution``: ``"gaussian"`` places the samples at the quantiles
    ``(i + 0.5) / K`` (jittered inside their strata when perturbed) of a normal with ``sigma = h / 2``
    truncated to the band; ``"stratified"`` places them uniformly in ``K`` equal strata of the band.
    ``num_uniform`` more samples go uniform in inverse depth over ``[near, far]``.
    """

    num_samples: int = 8
    distribution: str = "gaussian"
    band_min: float = 0.02
    band_max: float = 0.2
    min_half_width: float = 0.02
    num_uniform: int = 0

    def __post_init__(self) -> None:
        if self.num_samples < 2:
            raise ValueError(f"depth-guided sampling needs num_samples >= 2, got {self.num_samples}")
        if self.distribution not in SURFACE_DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {SURFACE_DISTRIBUTIONS}, got {self.distribution!r}")
        if not 0 < self.band_min <= self.band_max < 1:
            raise ValueError(f"need 0 < band_min <= band_max < 1 (relative half-widths), got "
                             f"{self.band_min}, {self.band_max}")
        if self.num_uniform < 0 or self.min_half_width < 0:
            raise ValueError("num_uniform and min_half_width must be >= 0")

    @property
    def samples_per_ray(self) -> int:
        return self.num_samples + self.num_uniform

    def band(self, depth: Tensor, confidence: Tensor) -> tuple[Tensor, Tensor]:
        """Lower and upper band limits ``[R]`` (metres) for target depth and confidence ``[R]``."""
        c = confidence.clamp(0.0, 1.0)
        half = depth * (self.band_min + (1.0 - c) * (self.band_max - self.band_min))
        half = half.clamp_min(self.min_half_width)
        lo = torch.maximum(depth - half, torch.full_like(depth, 10 * geometry.DEPTH_EPS))
        return lo, depth + half

    def __call__(self, depth: Tensor, confidence: Tensor, near: Tensor | None = None, far: Tensor | None = None,
                 perturb: bool = False) -> Tensor:
        """Sorted depths ``[R, num_samples + num_uniform]`` for target depths / confidences ``[R]`` (> 0).

        ``near`` / ``far`` ``[R]`` are needed only when ``num_uniform > 0``.
        """
        k = self.num_samples
        r = depth.shape[0]
        lo, hi = self.band(depth, confidence)
        u = (torch.arange(k, device=depth.device, dtype=depth.dtype) + 0.5) / k
        if perturb:
            u = u + (torch.rand(r, k, device=depth.device, dtype=depth.dtype) - 0.5) / k
        else:
            u = u.expand(r, k)
        if self.distribution == "gaussian":
            # truncated normal on [-2, 2] standard deviations: map u through its inverse CDF
            lo_cdf = torch.special.ndtr(torch.tensor(-2.0, dtype=depth.dtype, device=depth.device))
            p = lo_cdf + u * (1.0 - 2.0 * lo_cdf)
            s = torch.special.ndtri(p).clamp(-2.0, 2.0) / 4.0 + 0.5  # in [0, 1] across the band
        else:
            s = u
        samples = lo[:, None] + s * (hi - lo)[:, None]
        if self.num_uniform > 0:
            if near is None or far is None:
                raise ValueError("near and far are needed for the uniform samples (num_uniform > 0)")
            extra = geometry.sample_inverse_depth(near, far, self.num_uniform, perturb=perturb)
            samples = torch.cat([samples, extra], -1)
        return samples.sort(-1).values


def adaptive_sample_counts(confidence: Tensor, num_samples: int, confident_samples: int,
                           threshold: float) -> list[tuple[Tensor, int]]:
    """Adaptive K for depth-guided sampling: rays whose target-depth confidence ``[R]`` is at least
    ``threshold`` (keyframes agree on the surface) get ``confident_samples`` samples, the others
    ``num_samples``. Returns ``(ray indices [R_g] long, K_g)`` per non-empty group; with
    ``confident_samples`` 0 (off) or not below ``num_samples``, one group of all rays with ``num_samples``.
    Raises ValueError for ``confident_samples`` of 1 or ``num_samples`` < 2."""
    if num_samples < 2 or confident_samples == 1 or confident_samples < 0:
        raise ValueError(f"need num_samples >= 2 and confident_samples 0 (off) or >= 2, got {num_samples}, "
                         f"{confident_samples}")
    every = torch.arange(confidence.shape[0], device=confidence.device)
    if confident_samples == 0 or confident_samples >= num_samples:
        return [(every, num_samples)]
    sure = confidence >= threshold
    groups = [(every[sure], confident_samples), (every[~sure], num_samples)]
    return [(idx, k) for idx, k in groups if idx.numel() > 0]


def resolve_sampling(mode: str, has_depth: bool) -> str:
    """``"hierarchical"`` or ``"depth_guided"`` for a sampling setting; ``"auto"`` is depth-guided when the
    source views carry depth. Raises ValueError for anything else."""
    if mode not in SAMPLING_MODES:
        raise ValueError(f"sampling must be one of {SAMPLING_MODES}, got {mode!r}")
    if mode == "auto":
        return "depth_guided" if has_depth else "hierarchical"
    return mode
