"""Label transfer: labelled source keyframes as evidence at render time (no training).

Semantic-NeRF (Zhi et al., ICCV 2021) showed that fusing per-frame labels through a scene's geometry cleans
sparse, noisy and low-resolution labels: the field is a multi-view label fusion. A generalizable field can do
the fusion at render time instead of by per-scene training: every sample of a target ray is reprojected into
the source keyframes (as the 3D contextual space does for features), the source label there is read, the
per-view labels are blended with visibility-aware weights (as IBRNet, Wang et al. CVPR 2021 Sec. 3.2, blends
source *colours*), and the blend is volume-rendered with the ray's sample weights into per-pixel class
evidence. That evidence is then fused with S-Ray's rendered logits.

Shapes: ``R`` rays, ``N`` samples per ray, ``m`` source views, ``K`` classes, source images ``H x W``.

1. :func:`label_distribution_maps` -- source labels ``[m, H, W]`` (255 = unknown) -> per-pixel class
   distributions ``[m, H*W, K]``: one-hot, all-zero where unknown. ``window > 0`` replaces the one-hot by the
   class histogram of the ``(2 window + 1)^2`` neighbourhood (unknown pixels excluded): a label-noise lever
   that still never interpolates class ids.
2. :func:`gather_view_labels` -- sample points ``[R, N, 3]`` -> :class:`ViewLabels`: the class distribution of
   the nearest source pixel ``[R, N, m, K]`` (nearest neighbour: ``round(u)``, ``round(v)`` under the
   integer-pixel-centre convention of :mod:`sray_ros.geometry`), zero for views that do not see the sample or
   have no label there, plus the sample's z-depth in each source and the source depth at that pixel.
3. :func:`depth_visibility` -- a depth test against source depth (RGB-D keyframes): the sample is the surface
   a source pixel sees when ``|z - d| <= tol * d`` (``"surface"``), or at least not hidden behind it when
   ``z <= (1 + tol) d`` (``"unoccluded"``); views with unknown depth (0) pass untested.
4. :func:`blend_views` -- per-sample class distribution ``q [R, N, K] = sum_i w_i p_i / sum_i w_i`` over the
   views ``i`` that carry a label there, with view weights ``w [R, N, m]`` (the geometry head's colour-blend
   weights, the depth test, their product, or uniform), and ``has [R, N]`` = whether any such view exists.
   Renormalising over *labelled* views is what makes a keyframe without labels add exactly nothing.
5. :func:`render_evidence` -- ``evidence [R, K] = sum_n W_n q_n`` and ``mass [R] = sum_n W_n has_n`` with the
   ray's volume-rendering weights ``W [R, N]`` (the same weights as colour, depth and logits);
   ``evidence / mass`` is the transferred class distribution, ``mass / acc`` the fraction of the rendered
   weight that is covered by label evidence.
6. :func:`fuse_with_logits` -- log-linear fusion (a product of experts):
   ``log p = log_softmax(logits) + beta * c * log(evidence / mass + eps)``, renormalised, with coverage
   ``c = clamp(mass / (full_coverage * acc), 0, 1)``: a pixel without evidence (``c = 0``) keeps S-Ray's
   distribution exactly; evidence on at least ``full_coverage`` of the ray's rendered weight counts with
   weight ``beta`` (the depth test leaves evidence on the few samples at a source surface, a small share of
   a weakly trained field's smeared weights, yet that evidence is the most reliable). The confidence is the
   fused probability of the chosen class; ``agreement = max_c evidence_c / mass`` says how far the weighted
   views agree (1 = unanimous).

The label views may be other keyframes than the geometry sources (``render_rays(label_sources=...)``, e.g.
the nearest *labelled* keyframes when few are labelled); then only the depth / uniform weightings apply.
Works for any label set (``K`` comes from the caller) and any number of views; label ids ``>= K`` other
than 255 raise ``ValueError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from sray_ros import geometry
from sray_ros.data.label_sets import IGNORE_INDEX


ViewWeighting = Literal["blend", "depth", "blend_depth", "uniform"]
DepthTest = Literal["surface", "unoccluded"]


@dataclass
class LabelTransferConfig:
    """How source labels become evidence and how that evidence is fused with S-Ray's logits.

    weighting: view weights of :func:`blend_views`: ``"blend"`` (the geometry head's colour-blend weights),
        ``"depth"`` (the source-depth test alone), ``"blend_depth"`` (their product), ``"uniform"``.
        Depth weightings fall back to untested views where sources have no depth.
    depth_test / depth_tolerance: :func:`depth_visibility` mode and relative tolerance.
    window: 0 = nearest source pixel (one-hot); ``r > 0`` = class histogram of the ``(2r+1)^2`` window.
    beta, eps, full_coverage: fusion weight, floor and coverage scale of :func:`fuse_with_logits`. The
        defaults were chosen on the two held-out views of ``sample_data/synthetic_room`` (clean and noisy
        labels, shipped model): beta 10 beat 1 and 3 in every task there but 90 % pixel noise with window 0.
    """

    weighting: ViewWeighting = "blend"
    depth_test: DepthTest = "surface"
    depth_tolerance: float = 0.1
    window: int = 0
    beta: float = 10.0
    eps: float = 1e-3
    full_coverage: float = 0.1

    def __post_init__(self) -> None:
        if self.weighting not in ("blend", "depth", "blend_depth", "uniform"):
            raise ValueError(f"weighting must be blend, depth, blend_depth or uniform, got {self.weighting!r}")
        if self.depth_test not in ("surface", "unoccluded"):
            raise ValueError(f"depth_test must be surface or unoccluded, got {self.depth_test!r}")
        if (not self.depth_tolerance > 0 or self.window < 0 or self.beta < 0 or not self.eps > 0
                or not 0 < self.full_coverage <= 1):
            raise ValueError("need depth_tolerance > 0, window >= 0, beta >= 0, eps > 0 and full_coverage in (0, 1], "
                             f"got {self.depth_tolerance}, {self.window}, {self.beta}, {self.eps}, {self.full_coverage}")

    @property
    def uses_blend(self) -> bool:
        return self.weighting in ("blend", "blend_depth")


def label_distribution_maps(labels: Tensor, num_classes: int, window: int = 0) -> Tensor:
    """Per-pixel class distributions ``float32 [m, H*W, K]`` of source labels ``[m, H, W]`` (integer ids).

    ``window == 0``: one-hot of the pixel's label, all-zero where it is 255 (no evidence). ``window = r > 0``:
    the normalised histogram of the known labels in the ``(2r+1) x (2r+1)`` neighbourhood (zero where none is
    known). Raises ``ValueError`` for ids outside ``[0, K)`` other than 255.
    """
    if labels.dim() != 3:
        raise ValueError(f"labels must be [m, H, W], got {tuple(labels.shape)}")
    ids = labels.long()
    known = ids != IGNORE_INDEX
    bad = known & ((ids < 0) | (ids >= num_classes))
    if bool(bad.any()):
        raise ValueError(f"label ids must be in [0, {num_classes}) or {IGNORE_INDEX} (unknown), got "
                         f"{sorted(set(ids[bad].unique().tolist()))[:10]}")
    m, h, w = ids.shape
    one_hot = F.one_hot(ids.where(known, 0), num_classes).to(torch.float32) * known.unsqueeze(-1)
    if window > 0:
        counts = F.avg_pool2d(one_hot.permute(0, 3, 1, 2), 2 * window + 1, stride=1, padding=window,
                              count_include_pad=False)  # [m, K, H, W]
        total = counts.sum(1, keepdim=True)
        one_hot = torch.where(total > 0, counts / total.clamp_min(1e-12), counts).permute(0, 2, 3, 1)
    return one_hot.reshape(m, h * w, num_classes)


@dataclass
class ViewLabels:
    """Source evidence of ``R x N`` samples in ``m`` views: dist ``[R, N, m, K]`` (class distribution of the
    nearest source pixel; zero where the view does not see the sample or has no label there), labelled
    ``[R, N, m]`` bool (dist is non-zero), z ``[R, N, m]`` (the sample's z-depth in each source camera),
    source_depth ``[R, N, m]`` (the source's depth at that pixel, metres, 0 = unknown) or None."""

    dist: Tensor
    labelled: Tensor
    z: Tensor
    source_depth: Tensor | None


def gather_view_labels(maps: Tensor, K: Tensor, c2w: Tensor, height: int, width: int, points: Tensor,
                       depths: Tensor | None = None) -> ViewLabels:
    """Read each sample's source labels at its reprojection, nearest neighbour.

    Args: maps ``[m, H*W, K]`` from :func:`label_distribution_maps`; K ``[m, 3, 3]``, c2w ``[m, 4, 4]`` of the
    sources (full resolution, the labels' resolution); points ``[R, N, 3]`` world samples; depths
    ``[m, H, W]`` source depth in metres or None. Projection and validity are
    :func:`geometry.project_with_validity`'s (in front of the camera, inside the image).
    """
    r, n, _ = points.shape
    m, hw, k = maps.shape
    if hw != height * width:
        raise ValueError(f"maps cover {hw} pixels, sources are {height}x{width}")
    flat = points.reshape(1, r * n, 3).to(torch.float32)
    uv, z, valid = geometry.project_with_validity(flat, K.float(), geometry.invert_pose(c2w.float()), height, width)
    # integer pixel centres: the nearest pixel of (u, v) is (floor(u + 0.5), floor(v + 0.5))
    col = torch.floor(uv[..., 0] + 0.5).long().clamp_(0, width - 1)
    row = torch.floor(uv[..., 1] + 0.5).long().clamp_(0, height - 1)
    pix = row * width + col  # [m, RN]
    index = pix + torch.arange(m, device=pix.device)[:, None] * hw
    dist = maps.reshape(m * hw, k)[index.reshape(-1)].view(m, r * n, k) * valid.unsqueeze(-1)
    labelled = dist.sum(-1) > 0
    src_depth = None
    if depths is not None:
        src_depth = depths.reshape(-1).to(torch.float32)[index.reshape(-1)].view(m, r * n) * valid
        src_depth = src_depth.view(m, r, n).permute(1, 2, 0)
    return ViewLabels(dist.view(m, r, n, k).permute(1, 2, 0, 3), labelled.view(m, r, n).permute(1, 2, 0),
                      z.view(m, r, n).permute(1, 2, 0), src_depth)


def depth_visibility(z: Tensor, source_depth: Tensor, tolerance: float, mode: DepthTest = "surface") -> Tensor:
    """Float ``{0, 1}`` visibility ``[...]`` of samples at z-depth ``z`` in a source whose depth at that pixel
    is ``source_depth`` (metres; invalid depth per :func:`geometry.valid_depth` passes untested).

    ``"surface"``: ``|z - d| <= tolerance * d`` (the sample is what the source pixel sees, so its label is
    the sample's); ``"unoccluded"``: ``z <= (1 + tolerance) d`` (not hidden behind the seen surface).
    """
    known = geometry.valid_depth(source_depth)
    if mode == "surface":
        ok = (z - source_depth).abs() <= tolerance * source_depth
    elif mode == "unoccluded":
        ok = z <= (1.0 + tolerance) * source_depth
    else:
        raise ValueError(f"mode must be surface or unoccluded, got {mode!r}")
    return (ok | ~known).to(z.dtype)


def blend_views(views: ViewLabels, weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per-sample class distribution over the labelled views.

    ``q [R, N, K] = sum_i w_i p_i / sum_i w_i`` over views with a label at the sample (``views.labelled``),
    and ``has [R, N]`` bool (some labelled view has weight > 0); ``q`` is 0 where ``has`` is False.
    ``weights [R, N, m] >= 0`` (None: uniform). Unlabelled views carry no weight, so adding one changes
    nothing.
    """
    w = views.labelled.to(views.dist.dtype)
    if weights is not None:
        w = w * weights.to(w.dtype)
    total = w.sum(-1)  # [R, N]
    has = total > 0
    q = torch.einsum("rnm,rnmk->rnk", w, views.dist) / total.clamp_min(1e-30).unsqueeze(-1)
    return q * has.unsqueeze(-1), has


@dataclass
class LabelEvidence:
    """Rendered label evidence: evidence ``[R, K]`` (sums to ``mass`` per ray), mass ``[R]`` in ``[0, acc]``."""

    evidence: Tensor
    mass: Tensor

    def distribution(self) -> Tensor:
        """``evidence / mass`` ``[R, K]``; all-zero rows where there is no evidence."""
        return self.evidence / self.mass.clamp_min(1e-12).unsqueeze(-1)

    def labels(self) -> Tensor:
        """Transferred labels ``long [R]``: argmax of the evidence, 255 where there is none."""
        return torch.where(self.mass > 0, self.evidence.argmax(-1), torch.full_like(self.mass, IGNORE_INDEX,
                                                                                    dtype=torch.long))

    def agreement(self) -> Tensor:
        """``max_c evidence_c / mass`` ``[R]``: 1 when the weighted views agree, ``1/K`` at worst, 0 without evidence."""
        return self.distribution().amax(-1)


def render_evidence(q: Tensor, has: Tensor, weights: Tensor) -> LabelEvidence:
    """Volume-render per-sample distributions ``q [R, N, K]`` / ``has [R, N]`` with sample weights ``W [R, N]``."""
    w = weights.to(q.dtype)
    return LabelEvidence((w.unsqueeze(-1) * q).sum(-2), (w * has.to(w.dtype)).sum(-1))


def transfer_labels(maps: Tensor, K: Tensor, c2w: Tensor, height: int, width: int, points: Tensor,
                    sample_weights: Tensor, cfg: LabelTransferConfig, blend: Tensor | None = None,
                    depths: Tensor | None = None) -> LabelEvidence:
    """Steps 2-5 for one batch of rays: points ``[R, N, 3]``, sample weights ``[R, N]``, the geometry head's
    blend weights ``[R, N, m]`` (needed by the ``blend`` weightings; ``ValueError`` when missing) and source
    depth ``[m, H, W]`` (used by the ``depth`` weightings; without it they weight views uniformly)."""
    views = gather_view_labels(maps, K, c2w, height, width, points, depths)
    weights = None
    if cfg.uses_blend:
        if blend is None:
            raise ValueError(f"weighting {cfg.weighting!r} needs the geometry head's blend weights [R, N, m]")
        weights = blend
    if cfg.weighting in ("depth", "blend_depth") and views.source_depth is not None:
        vis = depth_visibility(views.z, views.source_depth, cfg.depth_tolerance, cfg.depth_test)
        weights = vis if weights is None else weights * vis
    q, has = blend_views(views, weights)
    return render_evidence(q, has, sample_weights)


@dataclass
class FusedLabels:
    """Per-pixel fusion result: log_probs ``[R, K]``, labels ``long [R]``, confidence ``[R]`` (fused probability
    of the label), coverage ``[R]`` (``mass / (full_coverage * acc)`` clamped to [0, 1]), agreement ``[R]``
    (see :class:`LabelEvidence`)."""

    log_probs: Tensor
    labels: Tensor
    confidence: Tensor
    coverage: Tensor
    agreement: Tensor


def fuse_with_logits(logits: Tensor, evidence: LabelEvidence, acc: Tensor, beta: float = 10.0,
                     eps: float = 1e-3, full_coverage: float = 0.1) -> FusedLabels:
    """Log-linear fusion of S-Ray's rendered logits ``[R, K]`` with label evidence (module docstring, step 6).

    ``log p = log_softmax(logits) + beta * c * log(evidence / mass + eps)``, renormalised, ``c = clamp(mass /
    (full_coverage * acc), 0, 1)`` with the ray's opacity ``acc [R]``. Where ``mass == 0`` the result equals
    S-Ray's softmax.
    """
    log_sray = torch.log_softmax(logits.float(), -1)
    coverage = (evidence.mass / (full_coverage * acc.float()).clamp_min(1e-6)).clamp(0.0, 1.0) * (evidence.mass > 0)
    dist = evidence.distribution()
    log_p = torch.log_softmax(log_sray + (beta * coverage).unsqueeze(-1) * torch.log(dist + eps), -1)
    conf, labels = log_p.max(-1)
    return FusedLabels(log_p, labels, conf.exp(), coverage, evidence.agreement())
