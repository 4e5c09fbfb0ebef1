"""Training losses: cross-entropy on coarse + fine semantic logits, photometric MSE and (optionally) an L1
depth loss against sensor depth."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from sray_ros import geometry
from sray_ros.data.label_sets import IGNORE_INDEX
from sray_ros.model.render import RayRenderResult


@dataclass
class LossOutput:
    total: Tensor
    semantic: Tensor  # CE, coarse + fine (each averaged over non-ignored rays)
    rgb: Tensor  # MSE, coarse + fine
    depth: Tensor | None = None  # L1 depth error (metres), coarse + fine, over rays with valid depth

    def as_floats(self) -> dict[str, float]:
        out = {"total": float(self.total.detach()), "semantic": float(self.semantic), "rgb": float(self.rgb)}
        if self.depth is not None:
            out["depth"] = float(self.depth)
        return out


def depth_l1(pred_depth: Tensor, acc: Tensor, gt: Tensor) -> Tensor:
    """Mean ``|d / acc - d*|`` (metres) over rays whose ground truth is valid
    (:func:`geometry.valid_depth`); 0 (with graph) when none is. ``pred_depth`` is the expected depth
    ``sum_k w_k t_k``, normalised by the opacity ``acc`` like the rendered depth maps."""
    keep = geometry.valid_depth(gt)
    if not bool(keep.any()):
        return pred_depth.sum() * 0.0
    return (pred_depth[keep] / acc[keep].clamp_min(1e-6) - gt[keep]).abs().mean()


def semantic_ce(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Mean CE over rays whose label is not ``ignore_index``; 0 (with gradient graph) if none is labelled."""
    keep = labels != ignore_index
    if not bool(keep.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[keep], labels[keep].long())


def sray_loss(result: RayRenderResult, labels: Tensor | None, rgb: Tensor | None, semantic_weight: float = 0.5,
              rgb_weight: float = 0.5, ignore_index: int = IGNORE_INDEX, depth: Tensor | None = None,
              depth_weight: float = 0.0) -> LossOutput:
    """``semantic_weight * (CE_coarse + CE_fine) + rgb_weight * (MSE_coarse + MSE_fine)
    + depth_weight * (L1_coarse + L1_fine)``.

    labels ``[R]`` (class ids, ``ignore_index`` excluded) and rgb ``[R, 3]`` in [0, 1]; either may be None
    (its term is then 0). Passes whose semantic logits were not computed are skipped for CE.
    Paper default weights 0.5 / 0.5 (``SRayConfig.semantic_loss_weight`` / ``rgb_loss_weight``).
    ``depth [R]`` (metres, 0 = invalid) with ``depth_weight > 0`` adds :func:`depth_l1` (GSNeRF supervises
    its depth too), so the field's own depth improves for RGB-only use; a depth-guided render has only one
    pass (``coarse`` None).
    """
    passes = [p for p in (result.coarse, result.fine) if p is not None]
    zero = passes[0].rgb.sum() * 0.0
    sem = zero
    if labels is not None:
        for p in passes:
            if p.logits is not None:
                sem = sem + semantic_ce(p.logits, labels.to(p.logits.device), ignore_index)
    photo = zero
    if rgb is not None:
        for p in passes:
            photo = photo + F.mse_loss(p.rgb, rgb.to(p.rgb))
    total = semantic_weight * sem + rgb_weight * photo
    depth_term = None
    if depth is not None and depth_weight > 0:
        depth_term = zero
        for p in passes:
            depth_term = depth_term + depth_l1(p.depth, p.acc, depth.to(p.depth))
        total = total + depth_weight * depth_term
        depth_term = depth_term.detach()
    return LossOutput(total, sem.detach(), photo.detach(), depth_term)
