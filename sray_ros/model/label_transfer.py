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
   views agree (1 = unanimous). This is the earlier rule (``fusion="average"``).
7. :func:`fuse_reliable` -- the default (``fusion="reliability"``): one vote per keyframe and ray, weighted
   by per-keyframe, per-class precisions estimated by Dawid-Skene EM, with S-Ray's distribution as a prior
   mixed with the uniform one and the view's class marginal (its docstring). The labels it receives are
   usually pooled per keyframe first (:mod:`sray_ros.model.label_pooling`).

The label views may be other keyframes than the geometry sources (``render_rays(label_sources=...)``, e.g.
the nearest *labelled* keyframes when few are labelled); then only the depth / uniform weightings apply.
Works for any label set (``K`` comes from the caller) and any number of views; label ids ``>= K`` other
than 255 raise ``ValueError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from sray_ros import geometry
from sray_ros.data.label_sets import IGNORE_INDEX


ViewWeighting = Literal["blend", "depth", "blend_depth", "uniform"]
DepthTest = Literal["surface", "unoccluded"]
Fusion = Literal["reliability", "average"]


@dataclass
class LabelTransferConfig:
    """How source labels become evidence and how that evidence is fused with S-Ray's logits.

    weighting: view weights of :func:`blend_views`: ``"blend"`` (the geometry head's colour-blend weights),
        ``"depth"`` (the source-depth test alone), ``"blend_depth"`` (their product), ``"uniform"``.
        Depth weightings fall back to untested views where sources have no depth.
    depth_test / depth_tolerance: :func:`depth_visibility` mode and relative tolerance.
    window: 0 = nearest source pixel (one-hot); ``r > 0`` = class histogram of the ``(2r+1)^2`` window.
    beta, eps, full_coverage: fusion weight, floor and coverage scale of :func:`fuse_with_logits` (the
        ``"average"`` rule; ``full_coverage`` is also the coverage scale of each view's vote in
        ``"reliability"``). The defaults were chosen on the two held-out views of ``sample_data/synthetic_room``
        (clean and noisy labels, shipped model): beta 10 beat 1 and 3 in every task there but 90 % pixel noise
        with window 0.
    fusion: ``"reliability"`` (:func:`fuse_reliable`: each labelled view votes once per ray, weighted by a
        per-keyframe, per-class confusion estimated from the views' agreement, Dawid-Skene EM) or
        ``"average"`` (:func:`fuse_with_logits`: the visibility-weighted average of the views' labels,
        the rule before reliability weighting, kept for comparison).
    em_iterations: EM steps of :func:`fuse_reliable`.
    """

    weighting: ViewWeighting = "blend"
    depth_test: DepthTest = "surface"
    depth_tolerance: float = 0.1
    window: int = 0
    beta: float = 10.0
    eps: float = 1e-3
    full_coverage: float = 0.1
    fusion: Fusion = "reliability"
    em_iterations: int = 2

    def __post_init__(self) -> None:
        if self.fusion not in ("reliability", "average"):
            raise ValueError(f"fusion must be reliability or average, got {self.fusion!r}")
        if int(self.em_iterations) != self.em_iterations or self.em_iterations < 0:
            raise ValueError(f"em_iterations must be an integer >= 0, got {self.em_iterations}")
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


def known_label_mask(ids: Tensor, num_classes: int) -> Tensor:
    """``ids != 255`` (bool, same shape) after checking every other id is in ``[0, num_classes)``; raises
    ``ValueError`` naming up to 10 offending ids."""
    known = ids != IGNORE_INDEX
    bad = known & ((ids < 0) | (ids >= num_classes))
    if bool(bad.any()):
        raise ValueError(f"label ids must be in [0, {num_classes}) or {IGNORE_INDEX} (unknown), got "
                         f"{sorted(set(ids[bad].unique().tolist()))[:10]}")
    return known


def label_distribution_maps(labels: Tensor, num_classes: int, window: int = 0,
                            confidence: Tensor | None = None) -> Tensor:
    """Per-pixel class distributions ``float32 [m, H*W, K]`` of source labels ``[m, H, W]`` (integer ids).

    ``window == 0``: one-hot of the pixel's label, all-zero where it is 255 (no evidence). ``window = r > 0``:
    the normalised histogram of the known labels in the ``(2r+1) x (2r+1)`` neighbourhood (zero where none is
    known). ``confidence`` ``[m, H, W]`` in ``[0, 1]`` (e.g. the segmenter's per-pixel probability; NaN = 0)
    scales each pixel's one-hot before the window, so a pixel of confidence 0 is no evidence at all.
    Raises ``ValueError`` for ids outside ``[0, K)`` other than 255, or a confidence of another shape or
    outside ``[0, 1]``.
    """
    if labels.dim() != 3:
        raise ValueError(f"labels must be [m, H, W], got {tuple(labels.shape)}")
    ids = labels.long()
    known = known_label_mask(ids, num_classes)
    m, h, w = ids.shape
    one_hot = F.one_hot(ids.where(known, 0), num_classes).to(torch.float32) * known.unsqueeze(-1)
    if confidence is not None:
        if tuple(confidence.shape) != tuple(ids.shape):
            raise ValueError(f"confidence must be [m, H, W] like the labels {tuple(ids.shape)}, "
                             f"got {tuple(confidence.shape)}")
        conf = torch.nan_to_num(confidence.to(device=one_hot.device, dtype=torch.float32), nan=0.0)
        if bool(((conf < 0) | (conf > 1)).any()):
            raise ValueError("confidence must be in [0, 1]")
        one_hot = one_hot * conf.unsqueeze(-1)
    if window > 0:
        counts = F.avg_pool2d(one_hot.permute(0, 3, 1, 2), 2 * window + 1, stride=1, padding=window,
                              count_include_pad=False)  # [m, K, H, W]
        # share of known pixels in the window: the histogram over them sums to their mean confidence (1 without)
        total = F.avg_pool2d(known.unsqueeze(1).float(), 2 * window + 1, stride=1, padding=window,
                             count_include_pad=False)
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
    """Rendered label evidence: evidence ``[R, K]`` (sums to ``mass`` per ray), mass ``[R]`` in ``[0, acc]``;
    per label view (for :func:`fuse_reliable`): view_votes ``[R, m, K]`` (each view's labels volume-rendered
    along the ray with the sample weights times its visibility) and view_mass ``[R, m]`` (the rendered weight
    of the samples the view labels), or None."""

    evidence: Tensor
    mass: Tensor
    view_votes: Tensor | None = None
    view_mass: Tensor | None = None

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


def render_view_votes(views: ViewLabels, view_weights: Tensor | None, sample_weights: Tensor) -> tuple[Tensor, Tensor]:
    """Each view's labels volume-rendered along the ray: votes ``[R, m, K] = sum_n W_n v_nm p_nm`` and mass
    ``[R, m] = sum_n W_n v_nm [view m labels sample n]`` with sample weights ``W [R, N]`` and per-view
    visibility ``v [R, N, m]`` in ``[0, 1]`` (None: 1)."""
    w = views.labelled.to(views.dist.dtype) * sample_weights.to(views.dist.dtype).unsqueeze(-1)
    if view_weights is not None:
        w = w * view_weights.to(w.dtype)
    return torch.einsum("rnm,rnmk->rmk", w, views.dist), w.sum(1)


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
    evidence = render_evidence(q, has, sample_weights)
    if cfg.fusion == "reliability":
        vis = weights
        if vis is not None and cfg.uses_blend:  # blend weights share 1 among views: rescale to a visibility
            vis = vis / vis.amax(-1, keepdim=True).clamp_min(1e-12)
        evidence.view_votes, evidence.view_mass = render_view_votes(views, vis, sample_weights)
    return evidence


@dataclass
class FusedLabels:
    """Per-pixel fusion result: log_probs ``[R, K]``, labels ``long [R]``, confidence ``[R]`` (fused probability
    of the label), coverage ``[R]`` (``mass / (full_coverage * acc)`` clamped to [0, 1]), agreement ``[R]``
    (see :class:`LabelEvidence`), reliability ``[m]`` (:func:`fuse_reliable`'s per-view accuracy estimate, else
    None), sray_weight (:func:`fuse_reliable`'s share ``s`` of S-Ray's distribution in its mixture with the
    uniform one, 1.0 when not estimated, else None)."""

    log_probs: Tensor
    labels: Tensor
    confidence: Tensor
    coverage: Tensor
    agreement: Tensor
    reliability: Tensor | None = None
    sray_weight: float | None = None


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


@dataclass
class ReliabilityPrior:
    """Beta pseudo-counts of each keyframe's per-class precision in :func:`fuse_reliable`: a class a keyframe
    labels starts as ``prior_strength`` pseudo-pixels of which a share ``prior_accuracy`` are right, so a
    class the keyframe labels rarely stays near ``prior_accuracy``, and no estimate reaches 0 or 1."""

    prior_accuracy: float = 0.8
    prior_strength: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.prior_accuracy < 1 or not self.prior_strength > 0:
            raise ValueError(f"need prior_accuracy in (0, 1) and prior_strength > 0, got {self.prior_accuracy}, "
                             f"{self.prior_strength}")


def fuse_reliable(logits: Tensor, evidence: LabelEvidence, acc: Tensor, full_coverage: float = 0.1,
                  iterations: int = 2, prior: ReliabilityPrior | None = None, class_prior: bool = True,
                  sray_mixture: bool = True) -> FusedLabels:
    """Reliability-aware fusion of S-Ray's logits ``[R, K]`` with per-view label votes (Dawid-Skene EM).

    The "one-coin" model of Dawid & Skene (1979, "Maximum likelihood estimation of observer error-rates
    using the EM algorithm", Appl. Statist. 28(1)), per keyframe and per class: when keyframe ``i`` labels a
    surface ``k``, it is right with probability ``a_ik`` (its precision for ``k``) and otherwise names any of
    the ``K - 1`` other classes alike. The target rays of one rendered view are the items; each view votes
    once per ray with its rendered label distribution ``d_ri = view_votes / view_mass``, at strength
    ``s_ri = clamp(view_mass / (full_coverage * acc), 0, 1)`` (how much of the ray's rendered weight the view
    labels, as :func:`fuse_with_logits`' coverage). Then (up to a constant per ray)

        log p(c | r) = log_softmax(logits)_rc + sum_i s_ri d_ri[c] log(a_ic (K - 1) / (1 - a_ic))^+

    E-step: the keyframes' consensus ``q(c | r) = softmax_c(sum_i s_ri d_ri[c] w_ic)`` (``w`` the vote weights
    above; S-Ray's logits are left out, so keyframes are judged by their agreement with each other). M-step:

        a_ik = (prior_strength prior_accuracy + sum_r o_ri q(k | r) s_ri d_ri[k])
               / (prior_strength + sum_r o_ri s_ri d_ri[k])

    with ``o_ri = clamp(sum_{j != i} s_rj, 0, 1)`` (how far the *other* keyframes see ray ``r``): how often the
    consensus agrees where the keyframe says ``k``, at co-visible surfaces only (Beta pseudo-counts of
    :class:`ReliabilityPrior`; a keyframe nobody else sees keeps ``prior_accuracy``). The vote weight is clipped
    at 0, so a keyframe no better than chance adds nothing (it never votes *against* its label). Consequences:
    keyframes that agree at co-visible surfaces keep equal weights (the rule reduces to a majority vote), a
    keyframe or a class the others contradict loses weight, random noise averages out, and the result does not
    depend on the order of the views. The confidence is the posterior probability of the returned label.

    Class marginal (``class_prior``): the share ``pi_c`` of each class in the keyframes' consensus over the view's
    labelled rays is a prior ``log pi_c`` on *every* ray of the view, so a ray no keyframe labels takes S-Ray's
    distribution reweighted by the classes the keyframes see around it. Pseudo-counts: one ray per class, and each
    unlabelled ray counts ``1/K`` for every class (it could be any). So a class no keyframe shows stays possible in
    proportion to how much of the view no keyframe labels: with 10 % unlabelled (20 classes, one class on the other
    90 %) it costs ``log(0.9 / 0.005) = 5.2`` and S-Ray wins it where it is sure (about 0.99 with ``s`` near 1), not
    where it merely leans; with 0.1 % unlabelled it costs about 9, more than S-Ray's mixture ever gives, which stops
    a peaked S-Ray from inventing a class on a few stray pixels. Without any labelled ray the marginal is uniform
    and S-Ray's distribution is kept exactly. Rays whose logits are not finite get a uniform S-Ray term (and do not
    enter the fit of ``s``).

    S-Ray's own distribution ``p_s`` is the prior, but a field on a room it was not trained on can be sure and wrong
    (a peaked semantic prior makes ``log p_s`` of the true class very negative, out-voting several keyframes). With
    ``sray_mixture`` its term is ``log(s p_s + (1 - s) / K)``: S-Ray is right "as a whole" with probability ``s``
    and otherwise says nothing, ``s`` fitted by EM (mixture weight, 10 steps) to the keyframes' consensus label (the
    argmax of their votes) on the rays they label, weighted by their coverage (``prior_strength`` pseudo-rays at
    1/2). The mixture keeps S-Ray's ranking of the classes on every ray and bounds how far S-Ray can favour one:
    ``log(1 + s K / (1 - s))``; with no labelled ray at all S-Ray's distribution is kept exactly.

    Needs ``evidence.view_votes`` ``[R, m, K]`` / ``view_mass`` ``[R, m]`` (``transfer_labels`` with
    ``fusion="reliability"``); raises ``ValueError`` without them. Returns :class:`FusedLabels` whose
    ``reliability`` ``[m]`` is each view's estimated accuracy (its precisions weighted by how much it says
    each class).
    """
    if evidence.view_votes is None or evidence.view_mass is None:
        raise ValueError("fuse_reliable needs per-view votes (transfer_labels with fusion='reliability')")
    prior = prior or ReliabilityPrior()
    log_sray = torch.log_softmax(logits.float(), -1)
    finite = torch.isfinite(log_sray).all(-1)  # a ray with NaN / inf logits: S-Ray says nothing there
    log_sray = torch.where(finite.unsqueeze(-1), log_sray, torch.full_like(log_sray, -math.log(log_sray.shape[-1])))
    r, k = log_sray.shape
    mass = evidence.view_mass.float()
    strength = (mass / (full_coverage * acc.float()).clamp_min(1e-6).unsqueeze(-1)).clamp(0.0, 1.0) * (mass > 0)
    votes = evidence.view_votes.float() / mass.clamp_min(1e-12).unsqueeze(-1) * strength.unsqueeze(-1)  # [R, m, K]
    # a ray informs keyframe i's precision as far as the *other* keyframes label it (co-visible surfaces)
    others = (strength.sum(-1, keepdim=True) - strength).clamp(0.0, 1.0)  # [R, m]
    said = torch.einsum("rm,rmk->mk", others, votes)  # [m, K]: how much each view says each class there
    precision = torch.full_like(said, prior.prior_accuracy)
    log_marginal = torch.zeros(k, device=votes.device)
    labelled = strength.amax(-1) > 0  # rays some keyframe labels
    for step in range(iterations + 1):
        weight = torch.log(precision * (k - 1) / (1 - precision)).clamp_min(0.0)  # [m, K]
        weighted = votes * weight  # [R, m, K]
        total = weighted.sum(1) + log_marginal  # [R, K]: the class marginal is a prior for every ray
        if step == iterations:
            break
        # E-step: the keyframes' consensus (S-Ray not included); M-step: agreement at co-visible surfaces
        q = torch.softmax(total, -1)
        agree = torch.einsum("rm,rk,rmk->mk", others, q, votes)
        precision = (prior.prior_strength * prior.prior_accuracy + agree) / (prior.prior_strength + said)
        if class_prior:
            # one pseudo-ray per class, and each unlabelled ray counts 1/K for every class (it could be any)
            share = (q * labelled.unsqueeze(-1)).sum(0) + 1.0 + (~labelled).sum() / k
            log_marginal = torch.log(share / share.sum())
    coverage = strength.amax(-1) if strength.shape[1] else torch.zeros_like(acc.float())
    weight_s = 1.0
    if sray_mixture and bool(labelled.any()):
        consensus = F.one_hot(total.argmax(-1), k).to(log_sray.dtype)  # the keyframes' label, S-Ray left out
        log_sray, weight_s = _sray_mixture(log_sray, consensus, coverage * labelled * finite, prior)
    log_p = torch.log_softmax(log_sray + total, -1)
    conf, labels = log_p.max(-1)
    reliability = (precision * said).sum(-1) / said.sum(-1).clamp_min(1e-12)
    return FusedLabels(log_p, labels, conf.exp(), coverage, evidence.agreement(), reliability, weight_s)


def _sray_mixture(log_sray: Tensor, consensus: Tensor, ray_weight: Tensor, prior: ReliabilityPrior,
                  steps: int = 10) -> tuple[Tensor, float]:
    """``(log(s p_s + (1 - s) / K) [R, K], s)``: the share ``s`` of S-Ray's distribution ``p_s`` that best
    explains the keyframes' consensus ``q [R, K]`` (one-hot or soft; EM on a two-component mixture, rays weighted by
    ``ray_weight [R]``, ``prior.prior_strength`` pseudo-rays at 1/2)."""
    k = log_sray.shape[-1]
    p_s = log_sray.exp()
    s = torch.tensor(0.5, device=log_sray.device)
    total = prior.prior_strength + ray_weight.sum()
    for _ in range(steps):
        sp = s * p_s
        share = (consensus * sp / (sp + (1 - s) / k)).sum(-1)  # [R]: how much of q S-Ray's component explains
        s = (prior.prior_strength * 0.5 + (ray_weight * share).sum()) / total
    return torch.log(s * p_s + (1 - s) / k), float(s)
