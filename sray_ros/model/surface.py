"""Target-view surface depth from keyframe depth (the depth that depth-guided sampling samples around).

GSNeRF (Chou et al., CVPR 2024, Sec. 3.2) estimates the target view's depth before sampling; robots that run
this package mostly have RGB-D keyframes, so here the estimate is geometric: every selected source view's
depth map is back-projected and forward-warped into the target camera with a z-buffer (a vectorised
``scatter_reduce(amin)`` on a flat ``view * H * W + pixel`` index, no loop over pixels), the per-view depths
are fused (the nearest surface that at least two views agree on, within a relative tolerance, where several
views see the pixel) and small holes are filled from valid neighbours.

Depth convention: z-depth in metres along the target camera's optical axis (what
:func:`geometry.generate_rays` makes the ray parameter). Invalid source depth (0, negative, non-finite; the
sensor's 65535 mm "no return" is already 0 after :func:`geometry.depth_from_raw`) is masked with
:func:`geometry.valid_depth` and never becomes a surface.

Confidence in [0, 1] grows with the number of agreeing views (``agree / (agree + 1)``, scaled by the fraction
of the views that see the pixel and agree); a hole filled from neighbours gets ``fill_confidence`` times
its neighbours' confidence. 0 means "no surface known" (``valid`` False).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from sray_ros import geometry


@dataclass
class SurfaceDepth:
    """Estimated surface depth of a target view or ray batch.

    depth: z-depth in metres (0 where unknown); confidence: in [0, 1] (0 where unknown); valid: bool.
    All three have the same shape: ``[H, W]`` for a view, ``[R]`` for rays.
    """

    depth: Tensor
    confidence: Tensor
    valid: Tensor

    def reshape(self, *shape: int) -> "SurfaceDepth":
        return SurfaceDepth(self.depth.reshape(*shape), self.confidence.reshape(*shape), self.valid.reshape(*shape))


@dataclass
class SurfaceConfig:
    """How source depth is fused into a target depth.

    rel_tol: two depths agree when they differ by at most ``rel_tol`` times the nearer one (3 %: sensor
    noise of structured-light / ToF depth at indoor range is ~1 %, plus resampling at depth edges).
    min_agree: views that must agree on a surface where at least that many views see the pixel.
    fill_iters: passes of 3x3 hole filling (each fills holes up to one pixel further from valid depth).
    fill_confidence: confidence factor of a filled pixel relative to its neighbours.
    occlusion_tol: a splatted depth further than ``(1 + occlusion_tol)`` times the median of its closer
    valid 3x3 neighbours, when most of them are closer, is background seen through a crack of a
    forward-warped foreground surface and is replaced by that median.
    """

    rel_tol: float = 0.03
    min_agree: int = 2
    fill_iters: int = 2
    fill_confidence: float = 0.5
    occlusion_tol: float = 0.1

    def __post_init__(self) -> None:
        if not self.rel_tol > 0 or self.min_agree < 1 or self.fill_iters < 0 or not 0 <= self.fill_confidence <= 1:
            raise ValueError("SurfaceConfig needs rel_tol > 0, min_agree >= 1, fill_iters >= 0, "
                             f"0 <= fill_confidence <= 1; got {self}")


def splat_depth(depths: Tensor, K_src: Tensor, c2w_src: Tensor, K: Tensor, c2w: Tensor, height: int,
                width: int) -> Tensor:
    """Per-view z-buffer of source depth maps forward-warped into a target camera.

    Args:
        depths: ``[m, Hs, Ws]`` metres (invalid entries: 0 / negative / non-finite).
        K_src: ``[m, 3, 3]`` intrinsics of the depth maps; c2w_src: ``[m, 4, 4]``.
        K: ``[3, 3]`` target intrinsics; c2w: ``[4, 4]`` target pose; height, width: target size.
    Returns:
        ``[m, height, width]`` nearest target z-depth each source sees at each target pixel (nearest pixel
        centre), ``inf`` where that view puts no valid point.
    """
    if depths.dim() != 3 or depths.shape[0] != K_src.shape[0] or depths.shape[0] != c2w_src.shape[0]:
        raise ValueError(f"depths must be [m, H, W] with m matching K_src {tuple(K_src.shape)} and c2w_src "
                         f"{tuple(c2w_src.shape)}, got {tuple(depths.shape)}")
    with torch.autocast(depths.device.type, enabled=False):  # metric geometry stays float32 under autocast
        return _splat_depth(depths.float(), K_src, c2w_src, K, c2w, height, width)


def _splat_depth(depths: Tensor, K_src: Tensor, c2w_src: Tensor, K: Tensor, c2w: Tensor, height: int,
                 width: int) -> Tensor:
    m, hs, ws = depths.shape
    dev = depths.device
    uv_src = geometry.pixel_grid(hs, ws, device=dev)  # [P, 2]
    K_src = K_src.to(dev, torch.float32)
    c2w_src = c2w_src.to(dev, torch.float32)
    # camera rays with z = 1 in every source: x = (u - cx - s y) / fx, y = (v - cy) / fy
    fx, fy = K_src[:, 0, 0, None], K_src[:, 1, 1, None]
    cx, cy, skew = K_src[:, 0, 2, None], K_src[:, 1, 2, None], K_src[:, 0, 1, None]
    y = (uv_src[None, :, 1] - cy) / fy
    x = (uv_src[None, :, 0] - cx - skew * y) / fx
    flat = depths.reshape(m, -1)
    ok = geometry.valid_depth(flat)
    z = torch.where(ok, flat, torch.zeros_like(flat))
    cam = torch.stack([x * z, y * z, z], -1)  # [m, P, 3]
    world = cam @ c2w_src[:, :3, :3].transpose(1, 2) + c2w_src[:, None, :3, 3]
    w2c = geometry.invert_pose(c2w.to(dev, torch.float32))
    uv, zt = geometry.project_points(world, K.to(dev, torch.float32), w2c)  # [m, P, 2], [m, P]
    col = torch.round(uv[..., 0])
    row = torch.round(uv[..., 1])
    keep = ok & (zt > geometry.DEPTH_EPS) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
    view = torch.arange(m, device=dev)[:, None].expand(m, flat.shape[1])
    index = (view * (height * width) + row.clamp(0, height - 1).long() * width + col.clamp(0, width - 1).long())
    buf = torch.full((m * height * width,), float("inf"), device=dev)
    buf.scatter_reduce_(0, index[keep], zt[keep], reduce="amin", include_self=True)
    return buf.view(m, height, width)


def _neighbours(x: Tensor, fill: float) -> Tensor:
    """The 3x3 neighbourhood ``[..., 9, H, W]`` of ``x [..., H, W]`` (padded with ``fill``)."""
    lead = x.shape[:-2]
    h, w = x.shape[-2:]
    padded = F.pad(x.reshape(-1, 1, h, w), (1, 1, 1, 1), value=fill)
    return F.unfold(padded, 3).view(*lead, 9, h, w)


def _remove_bleed_through(zbuf: Tensor, tol: float) -> Tensor:
    """Replace depths seen through cracks of a nearer splatted surface (per view, ``[m, H, W]``, inf = none)."""
    nb = _neighbours(zbuf, float("inf"))
    closer = nb < zbuf.unsqueeze(-3) / (1.0 + tol)
    n_closer = closer.sum(-3)
    # median of the closer neighbours: sort with non-closer entries pushed to +inf
    vals = torch.where(closer, nb, torch.full_like(nb, float("inf"))).sort(-3).values
    med = vals.gather(-3, ((n_closer - 1).clamp_min(0) // 2).unsqueeze(-3)).squeeze(-3)
    leak = torch.isfinite(zbuf) & (n_closer >= 5)  # a straight depth edge gives 3, a convex corner 1
    return torch.where(leak, med, zbuf)


def fuse_views(zbuf: Tensor, cfg: SurfaceConfig) -> tuple[Tensor, Tensor]:
    """Fuse per-view depths ``[m, H, W]`` (inf = not seen) into depth and confidence ``[H, W]``.

    Where at least ``min_agree`` views see a pixel, the result is the nearest depth that ``min_agree`` views
    agree on within ``rel_tol``; where fewer views see it, or none agree, the nearest depth (lower
    confidence). Unseen pixels: depth 0, confidence 0.
    """
    z = zbuf.sort(0).values  # [m, H, W] ascending, inf last
    seen = torch.isfinite(z)
    n_seen = seen.sum(0)
    zi, zj = z.unsqueeze(1), z.unsqueeze(0)  # [m, 1, ...], [1, m, ...]
    agree = ((zi - zj).abs() <= cfg.rel_tol * zi.clamp_max(zj)) & seen.unsqueeze(1) & seen.unsqueeze(0)
    n_agree = agree.sum(1)  # [m, H, W] views agreeing with candidate i (itself included)
    need = n_seen.clamp(max=cfg.min_agree)
    good = seen & (n_agree >= need.unsqueeze(0))
    # first good candidate (nearest), else the nearest seen one
    first = torch.where(good.any(0), good.float().argmax(0), torch.zeros_like(n_seen))
    depth = z.gather(0, first.unsqueeze(0)).squeeze(0)
    agreed = n_agree.gather(0, first.unsqueeze(0)).squeeze(0).float()
    conf = agreed / (agreed + 1.0) * agreed / n_seen.clamp_min(1).float()
    has = n_seen > 0
    return torch.where(has, depth, torch.zeros_like(depth)), torch.where(has, conf, torch.zeros_like(conf))


def fill_holes(depth: Tensor, confidence: Tensor, iters: int, factor: float) -> tuple[Tensor, Tensor]:
    """Fill unknown pixels (depth 0) of ``[H, W]`` maps with the median of their valid 3x3 neighbours
    (at least 3 of them), ``iters`` times; filled confidence is ``factor`` times the neighbours' mean."""
    for _ in range(iters):
        valid = depth > 0
        nb = _neighbours(depth, 0.0)
        nb_conf = _neighbours(confidence, 0.0)
        nb_ok = nb > 0
        count = nb_ok.sum(0)
        vals = torch.where(nb_ok, nb, torch.full_like(nb, float("inf"))).sort(0).values
        med = vals.gather(0, ((count - 1).clamp_min(0) // 2).unsqueeze(0)).squeeze(0)
        fill = ~valid & (count >= 3)
        if not bool(fill.any()):
            break
        mean_conf = (nb_conf * nb_ok).sum(0) / count.clamp_min(1)
        depth = torch.where(fill, med, depth)
        confidence = torch.where(fill, factor * mean_conf, confidence)
    return depth, confidence


def surface_from_sources(depths: Tensor, K_src: Tensor, c2w_src: Tensor, K: Tensor, c2w: Tensor, height: int,
                         width: int, cfg: SurfaceConfig | None = None) -> SurfaceDepth:
    """Target-view surface depth ``[H, W]`` from source depth maps (see the module docstring).

    Args: as :func:`splat_depth`. Returns a :class:`SurfaceDepth` of shape ``[height, width]``.
    """
    cfg = cfg or SurfaceConfig()
    zbuf = splat_depth(depths, K_src, c2w_src, K, c2w, height, width)
    if cfg.occlusion_tol > 0:
        zbuf = _remove_bleed_through(zbuf, cfg.occlusion_tol)
    depth, conf = fuse_views(zbuf, cfg)
    depth, conf = fill_holes(depth, conf, cfg.fill_iters, cfg.fill_confidence)
    valid = geometry.valid_depth(depth)
    return SurfaceDepth(torch.where(valid, depth, torch.zeros_like(depth)),
                        torch.where(valid, conf, torch.zeros_like(conf)), valid)


def surface_for_rays(depths: Tensor, K_src: Tensor, c2w_src: Tensor, K: Tensor, c2w: Tensor, height: int,
                     width: int, uv: Tensor, cfg: SurfaceConfig | None = None) -> SurfaceDepth:
    """Surface depth ``[R]`` at pixel coordinates ``uv [R, 2]`` of a ``height x width`` target camera
    (nearest pixel; the map is estimated for the whole target image, then looked up)."""
    view = surface_from_sources(depths, K_src, c2w_src, K, c2w, height, width, cfg)
    col = torch.round(uv[:, 0]).long().clamp(0, width - 1)
    row = torch.round(uv[:, 1]).long().clamp(0, height - 1)
    idx = (row * width + col).to(view.depth.device)
    return SurfaceDepth(view.depth.reshape(-1)[idx], view.confidence.reshape(-1)[idx], view.valid.reshape(-1)[idx])
