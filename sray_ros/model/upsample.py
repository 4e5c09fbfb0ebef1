"""Depth-guided upsampling of a view rendered at a subset of its pixels (joint bilateral upsampling).

The per-sample network runs only at *anchor* pixels, every ``scale``-th pixel per axis of the target view
(rows and columns ``offset, offset + scale, ...`` with ``offset = (scale - 1) // 2``); the other pixels take a
weighted mean of the four anchors around them. The weights are bilinear in image position times a range
kernel on the full-resolution fused keyframe depth (the guide, :mod:`sray_ros.model.surface`), so a pixel
only borrows from anchors on its own surface: label and depth edges follow the full-resolution depth,
not the anchor grid (joint bilateral upsampling: Kopf et al., SIGGRAPH 2007; depth-guided semantic
upsampling as in GSNeRF's depth-aware rendering). Pixels that no anchor explains (no neighbour on the same
surface) or, optionally, whose anchors disagree on the class are reported so the caller renders them
exactly (:func:`sray_ros.model.render.render_view`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

REFINE_MODES = ("none", "depth", "labels")


def anchor_axes(height: int, width: int, scale: int, device=None) -> tuple[Tensor, Tensor]:
    """Anchor rows ``[h2]`` and columns ``[w2]`` (long) of a ``height x width`` view at stride ``scale``."""
    off = (scale - 1) // 2
    rows = torch.arange(off, height, scale, device=device)
    cols = torch.arange(off, width, scale, device=device)
    if rows.numel() == 0:
        rows = torch.zeros(1, dtype=torch.long, device=device)
    if cols.numel() == 0:
        cols = torch.zeros(1, dtype=torch.long, device=device)
    return rows, cols


def _axis_neighbours(n: int, anchors: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For full-resolution coordinates ``0..n-1``: lower / upper anchor index ``[n]`` and the weight of the
    upper one (linear in position, clamped at the borders)."""
    pos = torch.arange(n, device=anchors.device, dtype=torch.float32)
    a = anchors.float()
    i1 = torch.searchsorted(a, pos, right=False).clamp(max=a.numel() - 1)  # first anchor >= pos
    i0 = (i1 - 1).clamp_min(0)
    i0 = torch.where(a[i1] <= pos, i1, i0)  # exactly on (or past the last) anchor
    span = (a[i1] - a[i0]).clamp_min(1e-6)
    t = ((pos - a[i0]) / span).clamp(0.0, 1.0)
    t = torch.where(i1 == i0, torch.zeros_like(t), t)
    return i0, i1, t


@dataclass
class UpsampleWeights:
    """Per full-resolution pixel: the four neighbouring anchors' flat indices ``index [H*W, 4]`` into the
    ``h2 * w2`` anchor grid, their normalised joint weights ``weight [H*W, 4]`` (sum 1), the share of the
    spatial weight on anchors of the pixel's own surface ``support [H*W]`` in [0, 1], and ``is_anchor [H*W]``."""

    index: Tensor
    weight: Tensor
    support: Tensor
    is_anchor: Tensor


def joint_weights(guide: Tensor, rows: Tensor, cols: Tensor, depth_sigma: float,
                  spatial_floor: float = 0.01) -> UpsampleWeights:
    """Joint bilateral weights from the full-resolution guide depth ``guide [H, W]`` (metres, 0 = unknown).

    Spatial weight: bilinear in the pixel's position between its anchors plus ``spatial_floor`` (so the far
    anchors of the cell can still take over across a depth edge). Range weight:
    ``exp(-0.5 (|g_p - g_q| / (depth_sigma g_p))^2)`` for a known pixel depth ``g_p`` and known anchor depth
    ``g_q``; 1 where the pixel's depth is unknown, 1e-3 for an unknown anchor under a known pixel.
    """
    height, width = guide.shape
    r0, r1, ty = _axis_neighbours(height, rows)
    c0, c1, tx = _axis_neighbours(width, cols)
    w2 = cols.numel()
    iy = torch.stack([r0, r0, r1, r1], -1)[:, None, :].expand(height, width, 4)
    ix = torch.stack([c0, c1, c0, c1], -1)[None, :, :].expand(height, width, 4)
    wy = torch.stack([1 - ty, 1 - ty, ty, ty], -1)[:, None, :]
    wx = torch.stack([1 - tx, tx, 1 - tx, tx], -1)[None, :, :]
    spatial = (wy * wx + spatial_floor).reshape(-1, 4)
    index = (iy * w2 + ix).reshape(-1, 4)
    g_full = guide.reshape(-1).float()
    g_anchor = guide[rows][:, cols].reshape(-1).float()
    gq = g_anchor[index]  # [P, 4]
    gp = g_full[:, None]
    known_p, known_q = gp > 0, gq > 0
    rel = (gq - gp) / (depth_sigma * gp.clamp_min(1e-6))
    rng = torch.exp(-0.5 * rel * rel)
    rng = torch.where(known_p, torch.where(known_q, rng, torch.full_like(rng, 1e-3)), torch.ones_like(rng))
    joint = spatial * rng
    total = joint.sum(-1, keepdim=True)
    support = (total / spatial.sum(-1, keepdim=True)).squeeze(-1)
    is_anchor = torch.zeros(height, width, dtype=torch.bool, device=guide.device)
    is_anchor[rows[:, None], cols[None, :]] = True
    return UpsampleWeights(index, joint / total.clamp_min(1e-12), support, is_anchor.reshape(-1))


def upsample(values: Tensor, w: UpsampleWeights) -> Tensor:
    """Anchor values ``[h2 * w2, C]`` (or ``[h2 * w2]``) -> full resolution ``[H * W, C]`` (``[H * W]``).
    Accumulated one neighbour at a time, so no ``[H * W, 4, C]`` gather is held (peak memory)."""
    out = None
    for j in range(w.index.shape[1]):
        weight = w.weight[:, j].to(values.dtype)
        term = values[w.index[:, j]] * (weight if values.dim() == 1 else weight[:, None])
        out = term if out is None else out.add_(term)
    return out


def refine_mask(w: UpsampleWeights, anchor_labels: Tensor | None, mode: str, min_support: float = 0.1,
                min_weight: float = 0.05, margin: Tensor | None = None, max_margin: float = 1.0) -> Tensor:
    """Pixels ``[H * W]`` (bool) to render exactly instead of upsampling. Never anchors.

    ``"none"``: none. ``"depth"``: pixels whose anchors are all on other surfaces (``support < min_support``).
    ``"labels"``: those, plus pixels whose anchors with joint weight >= ``min_weight`` disagree on the class
    (``anchor_labels [h2 * w2]``, long) and, when ``margin [H * W]`` is given (the upsampled class
    probabilities' top-1 minus top-2), whose margin is below ``max_margin`` (1 = every such pixel)."""
    if mode not in REFINE_MODES:
        raise ValueError(f"refine mode must be one of {REFINE_MODES}, got {mode!r}")
    if mode == "none":
        return torch.zeros_like(w.is_anchor)
    need = w.support < min_support
    if mode == "labels":
        if anchor_labels is None:
            raise ValueError("refine mode 'labels' needs the anchors' labels")
        lab = anchor_labels[w.index]  # [P, 4]
        strong = w.weight >= min_weight
        first = torch.where(strong, lab, torch.full_like(lab, -1)).amax(-1, keepdim=True)
        disagree = ((lab != first) & strong).any(-1)
        if margin is not None and max_margin < 1.0:
            disagree = disagree & (margin < max_margin)
        need = need | disagree
    return need & ~w.is_anchor
