"""Spatial pooling of a keyframe's labels along its own surfaces, with a strength set by the labels' noise.

Semantic-NeRF (Zhi et al., ICCV 2021, Sec. 4.2) recovers labels from heavy pixel noise because one surface
point is seen by many pixels and its field averages them. Fusion at render time gets one vote per keyframe and
target pixel, about 8: too few when most of them are wrong. Inside one keyframe, though, the pixels close to a
pixel *in the image, in colour and in depth* usually lie on the same surface and carry the same true class, so
their labels are further observations of it. This module pools them, per keyframe, before the keyframes vote
across views (:mod:`sray_ros.model.label_transfer`); it reads only the keyframe's own RGB, depth and labels.

Model (shapes: ``m`` keyframes, ``H x W`` pixels, ``K`` classes; ``l_q`` the label of pixel ``q``):

1. **Same-surface prior** ``pi_pq`` for each pixel ``q`` in a square around ``p`` (a joint-bilateral weight
   guided by colour and depth, as in Kopf et al., SIGGRAPH 2007, without a spatial fall-off: step 4 sizes
   the square): ``pi_pq = same_surface * exp(-|rgb_q - rgb_p|^2 / 2 c^2) * exp(-((d_q - d_p) / d_p)^2 / 2 t^2)``
   (the depth term is 1 where either depth is unknown).
2. **Label accuracy** ``a`` of the keyframe ("one-coin" noise, as :func:`~sray_ros.model.label_transfer.fuse_reliable`:
   a label is right with probability ``a``, otherwise any other class alike). Two pixels of one surface agree
   with probability ``A = a^2 + (1 - a)^2 / (K - 1)``; ``A`` is measured as the ``pi``-weighted agreement of
   horizontally and vertically adjacent pixels, and solved for ``a = (1 + sqrt(1 - K + K (K - 1) A)) / K``.
   Clean labels give ``a`` near 1, 90 % pixel noise about 0.1; errors that come in regions (a segmenter's
   confusions, boundary shifts) also give ``a`` near 1, so those keyframes are left almost as they are: spatial
   pooling cannot fix a wrong region, the vote across keyframes can.
3. **Posterior** of the true class ``c`` of pixel ``p``: neighbour ``q`` is on ``p``'s surface with probability
   ``pi_pq`` (then its label follows the noise model) or not (then its label says nothing: uniform), so
   ``log p(c | labels) = sum_q w_q delta_pq [l_q = c] + const`` with
   ``delta_pq = log(pi a + (1 - pi) / K) - log(pi (1 - a) / (K - 1) + (1 - pi) / K)``, ``pi = 1`` for ``q = p``
   (the pixel's own label: ``log(a (K - 1) / (1 - a))``), and ``w_q`` the segmenter's confidence of ``q`` (1
   without one; 0 = no vote). The pooled label is the posterior's argmax, its confidence the posterior
   probability, which then weights that pixel's vote across keyframes.
4. **How far to pool** follows from ``a`` alone (:func:`pooling_radius`): the square holds as many votes as a
   uniform surface needs for the true class to win with probability ``1 - error_rate``; none for clean labels
   (about 0), 2 px for 50 % pixel noise, 11-12 px for 90 % (12 is the default cap).

Consequences: clean keyframes are left exactly as they came; with random noise many same-surface neighbours
outvote a pixel's own label, while borders between surfaces that differ in colour or depth stay where they
are; pixels without a label of their own (255 or confidence 0) stay 255 with confidence 0. Cost:
``(2 r + 1)^2`` shifted compares per pixel (``r`` the largest radius of the batch), once per keyframe (the node
caches it with the keyframe's features); clean keyframes cost two compares per pixel (the accuracy estimate).

The defaults were chosen on the validation rooms of the synthetic set (never on the test rooms): per-keyframe
pooled labels under clean, 50 % and 90 % pixel, 30 % region and segmenter-like noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import torch
from torch import Tensor

from sray_ros.data.label_sets import IGNORE_INDEX
from sray_ros.model.label_transfer import known_label_mask


#: the largest ``max_radius`` accepted (a 129 x 129 square; the cost grows with its square)
MAX_RADIUS = 64


@dataclass(frozen=True)
class LabelPoolingConfig:
    """Parameters of :func:`pool_labels` (module docstring for the model).

    max_radius: the largest neighbourhood half-size in pixels (0 turns pooling off); each keyframe pools over
        the square of half-size :func:`pooling_radius` of its estimated accuracy, at most this;
    error_rate: the pixel error the radius is sized for on a uniform surface (step 4);
    sigma_colour: colour scale ``c`` (RGB in [0, 1], Euclidean); sigma_depth: relative depth scale ``t``;
    same_surface: ``pi`` of a neighbour of the same colour and depth (below 1: even such a neighbour may
        belong to another object).
    """

    max_radius: int = 12
    error_rate: float = 0.01
    sigma_colour: float = 0.2
    sigma_depth: float = 0.1
    same_surface: float = 0.9

    def __post_init__(self) -> None:
        r = self.max_radius
        if (isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or int(r) != r
                or not 0 <= r <= MAX_RADIUS):
            raise ValueError(f"max_radius must be an integer in [0, {MAX_RADIUS}], got {r!r}")
        if not 0 < self.error_rate < 1:
            raise ValueError(f"error_rate must be in (0, 1), got {self.error_rate}")
        for name in ("sigma_colour", "sigma_depth"):
            v = getattr(self, name)
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a finite number > 0, got {v}")
        if not 0 < self.same_surface < 1:
            raise ValueError(f"same_surface must be in (0, 1), got {self.same_surface}")


def pooling_radius(accuracy: Tensor, num_classes: int, cfg: LabelPoolingConfig) -> Tensor:
    """Half-size ``long [m]`` of the square each keyframe pools over, from its label accuracy ``a`` ``[m]``.

    On a uniform surface, ``n`` votes give the true class ``n a`` votes on average and a given other class
    ``n b`` (``b = (1 - a) / (K - 1)``); their gap has standard deviation about
    ``sqrt(n (a + b - (a - b)^2))``. The true class keeps a plurality over all ``K - 1`` others with
    probability about ``1 - error_rate`` when the gap is ``z = Phi^-1(1 - error_rate / (K - 1))`` deviations,
    i.e. ``n >= z^2 (a + b - (a - b)^2) / (a - b)^2``; the radius is the smallest with ``(2 r + 1)^2 >= n``,
    at most ``max_radius``. Clean labels and region-wise errors (``a`` near 1) get 0: nothing to pool.
    ``a`` is clamped to ``[1/K + 0.01, 0.999]``; ValueError for ``a`` outside [0, 1] or not finite, or ``K``
    outside [2, 255].
    """
    k = _check_num_classes(num_classes)
    a = accuracy.float()
    if not bool((torch.isfinite(a) & (a >= 0) & (a <= 1)).all()):
        raise ValueError("accuracy must be finite and in [0, 1]")
    a = a.clamp(1.0 / k + 0.01, 0.999)
    b = (1 - a) / (k - 1)
    z = NormalDist().inv_cdf(1 - cfg.error_rate / (k - 1))
    n = z * z * (a + b - (a - b) ** 2) / (a - b).clamp_min(1e-6) ** 2
    r = torch.ceil((torch.sqrt(n) - 1) / 2).clamp(0, cfg.max_radius)
    return r.long()


@dataclass
class PooledLabels:
    """labels ``uint8 [m, H, W]`` (255 where the pixel had no label of its own), confidence ``float32 [m, H, W]``
    (posterior probability of the label, 0 where unlabelled), accuracy ``[m]`` (estimated label accuracy ``a``
    of each keyframe), radius ``long [m]`` (the half-size each keyframe pooled over, pixels)."""

    labels: Tensor
    confidence: Tensor
    accuracy: Tensor
    radius: Tensor


def _check_num_classes(num_classes) -> int:
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or not 2 <= int(num_classes) <= 255:
        raise ValueError(f"num_classes must be an integer in [2, 255], got {num_classes!r}")
    return int(num_classes)


def _checked(labels: Tensor, images: Tensor, depths: Tensor | None, num_classes: int,
             weights: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None, Tensor, Tensor, int]:
    """``(ids long, images float32, depths float32 | None, known bool, weight float32, K)`` after checking the
    inputs of :func:`pool_labels` / :func:`estimate_label_accuracy`; ValueError naming what is wrong."""
    k = _check_num_classes(num_classes)
    if labels.dim() != 3:
        raise ValueError(f"labels must be [m, H, W], got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class ids, got {labels.dtype}")
    m, h, w = labels.shape
    if tuple(images.shape) != (m, 3, h, w):
        raise ValueError(f"images must be [m, 3, H, W] = {(m, 3, h, w)}, got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point RGB in [0, 1], got {images.dtype}")
    images = images.to(device=labels.device, dtype=torch.float32)
    if images.numel() and float(torch.nan_to_num(images, nan=0.0, posinf=0.0, neginf=0.0).abs().max()) > 1.0 + 1e-3:
        raise ValueError("images must be RGB in [0, 1] (divide 8-bit images by 255)")
    if depths is not None:
        if tuple(depths.shape) != (m, h, w):
            raise ValueError(f"depths must be [m, H, W] = {(m, h, w)}, got {tuple(depths.shape)}")
        depths = depths.to(device=labels.device, dtype=torch.float32)
    ids = labels.long()
    known = known_label_mask(ids, k)
    if weights is not None:
        if tuple(weights.shape) != (m, h, w):
            raise ValueError(f"confidence must be [m, H, W] = {(m, h, w)}, got {tuple(weights.shape)}")
        conf = torch.nan_to_num(weights.to(device=labels.device, dtype=torch.float32), nan=0.0)
        if bool(((conf < 0) | (conf > 1)).any()):
            raise ValueError("confidence must be in [0, 1]")
    else:
        conf = torch.ones(m, h, w, device=labels.device)
    return ids, images, depths, known, conf * known, k


def _shift(x: Tensor, dy: int, dx: int, fill: float) -> Tensor:
    """``y[..., i, j] = x[..., i + dy, j + dx]``, ``fill`` where that falls outside the image."""
    h, w = x.shape[-2:]
    out = torch.full_like(x, fill)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    out[..., max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)] = \
        x[..., max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]
    return out


def _surface_prior(images: Tensor, depths: Tensor | None, dy: int, dx: int, cfg: LabelPoolingConfig) -> Tensor:
    """``pi_pq`` ``[m, H, W]`` between every pixel ``p`` and ``q = p + (dy, dx)`` (0 outside the image)."""
    shifted = _shift(images, dy, dx, float("nan"))
    colour = ((shifted - images) ** 2).sum(1)  # [m, H, W]
    log_pi = -colour / (2 * cfg.sigma_colour ** 2)
    if depths is not None:
        dq = _shift(depths, dy, dx, 0.0)
        known = (depths > 0) & (dq > 0) & torch.isfinite(depths) & torch.isfinite(dq)
        rel = torch.where(known, (dq - depths) / depths.clamp_min(1e-6), torch.zeros_like(depths))
        log_pi = log_pi - rel ** 2 / (2 * cfg.sigma_depth ** 2)
    pi = cfg.same_surface * torch.exp(log_pi)
    return torch.nan_to_num(pi, nan=0.0)


def estimate_label_accuracy(labels: Tensor, images: Tensor, depths: Tensor | None, num_classes: int,
                            weights: Tensor | None = None, cfg: LabelPoolingConfig | None = None) -> Tensor:
    """Each keyframe's label accuracy ``a`` ``[m]`` from the agreement of adjacent same-surface pixels (step 2).

    labels ``[m, H, W]`` integer ids (255 unknown), images ``[m, 3, H, W]`` in [0, 1], depths ``[m, H, W]``
    metres (0 unknown) or None, weights ``[m, H, W]`` per-pixel confidence or None. A keyframe with no
    labelled adjacent pair gets ``a = 1`` (nothing to pool). The result is clamped to ``[1/K + 0.01, 0.999]``.
    Raises ``ValueError`` as :func:`pool_labels` does.
    """
    cfg = cfg or LabelPoolingConfig()
    ids, images, depths, _, w, k = _checked(labels, images, depths, num_classes, weights)
    agree = torch.zeros(ids.shape[0], device=ids.device)
    total = torch.zeros_like(agree)
    for dy, dx in ((0, 1), (1, 0)):
        pi = _surface_prior(images, depths, dy, dx, cfg) * w * _shift(w, dy, dx, 0.0)
        same = (ids == _shift(ids, dy, dx, IGNORE_INDEX)).float()
        agree += (pi * same).sum((-2, -1))
        total += pi.sum((-2, -1))
    A = torch.where(total > 0, agree / total.clamp_min(1e-12), torch.ones_like(total))
    a = (1 + torch.sqrt((1 - k + k * (k - 1) * A).clamp_min(0.0))) / k
    return a.clamp(1.0 / k + 0.01, 0.999)


def pool_labels(labels: Tensor, images: Tensor, depths: Tensor | None, num_classes: int,
                confidence: Tensor | None = None, cfg: LabelPoolingConfig | None = None) -> PooledLabels:
    """Pool each keyframe's labels over its same-surface neighbourhood (module docstring, steps 1-3).

    Args: labels ``[m, H, W]`` integer class ids in ``[0, K)`` or 255 (unknown); images ``[m, 3, H, W]`` RGB in
    [0, 1] (the keyframes' own colour, the labels' resolution); depths ``[m, H, W]`` metres (0 = unknown) or
    None (colour and distance alone then); confidence ``[m, H, W]`` in [0, 1] (a segmenter's per-pixel
    confidence: the weight of the pixel's vote; NaN = 0) or None.
    Returns :class:`PooledLabels`. A keyframe whose radius is 0 (clean labels, region-wise errors,
    ``cfg.max_radius == 0``) is returned exactly as it came: its labels, and as confidence the given one (1
    without), 0 where unlabelled.
    Pixels without a label of their own (255, or confidence 0) stay 255 with confidence 0: pooling denoises
    labels, it does not fill in what the segmenter left out.
    Raises ``ValueError`` for mismatched shapes, labels that are not integer ids, ids outside ``[0, K)`` other
    than 255, ``K`` outside [2, 255], images that are not floating point in [0, 1], a confidence outside
    [0, 1], or a ``cfg`` that is not a :class:`LabelPoolingConfig`.
    """
    cfg = cfg or LabelPoolingConfig()
    if not isinstance(cfg, LabelPoolingConfig):
        raise ValueError(f"cfg must be a LabelPoolingConfig, got {type(cfg).__name__}")
    ids, images, depths, known, weight, k = _checked(labels, images, depths, num_classes, confidence)
    m, h, w = ids.shape
    a = estimate_label_accuracy(ids, images, depths, k, weight, cfg)  # [m]
    radius = pooling_radius(a, k, cfg)  # [m]
    if not bool((radius > 0).any()):  # nothing to pool (clean labels): every keyframe as it came
        has = weight > 0
        return PooledLabels(torch.where(has, ids, torch.full_like(ids, IGNORE_INDEX)).to(torch.uint8), weight,
                            a, radius)
    b = (1 - a) / (k - 1)
    a4, b4, r4 = a.view(m, 1, 1), b.view(m, 1, 1), radius.view(m, 1, 1)
    slot = torch.where(known, ids, torch.full_like(ids, k))  # unknown -> an extra bin, dropped below
    score = torch.zeros(m, k + 1, h, w, device=labels.device)
    votes = weight.clone()
    score.scatter_add_(1, slot.unsqueeze(1), (weight * torch.log(a4 * (k - 1) / (1 - a4))).unsqueeze(1))
    r = int(radius.max()) if m else 0
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy == 0 and dx == 0:
                continue
            pi = _surface_prior(images, depths, dy, dx, cfg) * (r4 >= max(abs(dy), abs(dx)))
            wq = _shift(weight, dy, dx, 0.0) * (pi > 0)
            delta = torch.log(pi * a4 + (1 - pi) / k) - torch.log(pi * b4 + (1 - pi) / k)
            score.scatter_add_(1, _shift(slot, dy, dx, k).unsqueeze(1), (wq * delta).unsqueeze(1))
            votes += wq
    score = score[:, :k]
    post = torch.softmax(score, 1)
    best, arg = post.max(1)
    has = (votes > 0) & (weight > 0)  # only pixels that carry a label of their own are relabelled
    # a keyframe with nothing to pool (radius 0) is left exactly as it came: its labels, its confidence
    untouched = (radius == 0).view(m, 1, 1)
    arg = torch.where(untouched, ids, arg)
    best = torch.where(untouched, weight, best)
    out = torch.where(has, arg, torch.full_like(arg, IGNORE_INDEX)).to(torch.uint8)
    return PooledLabels(out, torch.where(has, best, torch.zeros_like(best)), a, radius)


def pool_in_batches(labels: Tensor, images: Tensor, depths: Tensor | None, num_classes: int,
                    confidence: Tensor | None = None, cfg: LabelPoolingConfig | None = None,
                    batch: int = 16) -> tuple[Tensor, Tensor]:
    """:func:`pool_labels` over ``batch`` keyframes at a time (bounded memory: ``[batch, K, H, W]`` scores);
    returns ``(labels uint8 [m, H, W], confidence float32 [m, H, W])``. Same arguments and errors."""
    labels_out, conf_out = [], []
    for i in range(0, labels.shape[0], batch):
        sl = slice(i, i + batch)
        pooled = pool_labels(labels[sl], images[sl], None if depths is None else depths[sl], num_classes,
                             None if confidence is None else confidence[sl], cfg)
        labels_out.append(pooled.labels)
        conf_out.append(pooled.confidence)
    if not labels_out:  # no keyframes: checked and returned empty
        pooled = pool_labels(labels, images, depths, num_classes, confidence, cfg)
        return pooled.labels, pooled.confidence
    return torch.cat(labels_out), torch.cat(conf_out)


def pool_source_labels(views: "SourceViews", num_classes: int, cfg: LabelPoolingConfig | None = None,
                       batch: int = 16) -> "SourceViews":
    """``views`` with their labels pooled (:func:`pool_labels` on the views' own images, depths and label
    confidence, :func:`pool_in_batches`): labels replaced by the pooled labels, ``label_confidence`` by the
    posterior. Views without labels are returned as they are. This is what a keyframe's labels go through
    once, when it is stored."""
    from dataclasses import replace

    if views.labels is None:
        return views
    labels, confidence = pool_in_batches(views.labels, views.images, views.depths, num_classes,
                                         views.label_confidence, cfg, batch)
    return replace(views, labels=labels, label_confidence=confidence)
