"""Training losses: cross-entropy on coarse + fine semantic logits and photometric MSE."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from sray_ros.data.label_sets import IGNORE_INDEX
from sray_ros.model.render import RayRenderResult


@dataclass
class LossOutput:
    total: Tensor
    semantic: Tensor  # CE, coarse + fine (each averaged over non-ignored rays)
    rgb: Tensor  # MSE, coarse + fine

    def as_floats(self) -> dict[str, float]:
        return {"total": float(self.total.detach()), "semantic": float(self.semantic), "rgb": float(self.rgb)}


def semantic_ce(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Mean CE over rays whose label is not ``ignore_index``; 0 (with gradient graph) if none is labelled."""
    keep = labels != ignore_index
    if not bool(keep.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[keep], labels[keep].long())


def sray_loss(result: RayRenderResult, labels: Tensor | None, rgb: Tensor | None, semantic_weight: float = 0.5,
              rgb_weight: float = 0.5, ignore_index: int = IGNORE_INDEX) -> LossOutput:
    """``semantic_weight * (CE_coarse + CE_fine) + rgb_weight * (MSE_coarse + MSE_fine)``.

    labels ``[R]`` (class ids, ``ignore_index`` excluded) and rgb ``[R, 3]`` in [0, 1]; either may be None
    (its term is then 0). Passes whose semantic logits were not computed are skipped for CE.
    Paper default weights 0.5 / 0.5 (``SRayConfig.semantic_loss_weight`` / ``rgb_loss_weight``).
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
    return LossOutput(semantic_weight * sem + rgb_weight * photo, sem.detach(), photo.detach())
