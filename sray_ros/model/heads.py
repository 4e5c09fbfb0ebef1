"""Per-sample heads: view-direction embedding, semantic-aware weight net (supp. Table 14) and the
geometry-aware net (supp. Table 15, IBRNet style).

Per-sample tensors are laid out ``[R, N, m, *]`` (rays, samples, views, channels) with a view validity
mask ``valid [R, N, m]``; every reduction over views ignores invalid views.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sray_ros.model.attention import MaskedSelfAttention, activation_module, sinusoidal_encoding
from sray_ros.model.config import SRayConfig


class ViewDirectionEmbedding(nn.Module):
    """MLP 4 -> 16 -> C (ELU) of the view-direction difference (unit difference vector + dot product)."""

    def __init__(self, hidden: int, out: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, hidden), nn.ELU(inplace=True), nn.Linear(hidden, out), nn.ELU(inplace=True))

    def forward(self, dir_diff: Tensor) -> Tensor:
        return self.net(dir_diff)


def semantic_weights(scores: Tensor, valid: Tensor, tau: float) -> Tensor:
    """Weights over views with sum 1 and ``tau / m_v <= w_i <= 1 / (tau m_v)`` (paper eq. 12).

    ``m_v`` is the number of VALID views of the sample; invalid views get weight 0 and a sample with no
    valid view gets all-zero weights. Construction (closed form, exact, no iteration): with
    ``p = softmax(scores)`` over the valid views and ``u = 1 / m_v``,
    ``w = u + c (p - u)`` where ``c in [0, 1]`` is the largest value keeping every ``w_i`` inside the bound,
    i.e. the softmax is shrunk toward the uniform distribution just enough (and used unchanged when it
    already satisfies the bound). ``sum_i w_i = 1`` for any ``c``; ordering follows the scores; gradients
    flow through ``p`` and through ``c`` where the bound is active. ``tau = 1`` gives the plain mean.
    (An iterative alternative, ``w_i = lo + (hi - lo) sigmoid(s_i - b)`` with ``b`` solved by Newton, was
    10x slower here: its worst rows converged only linearly.)

    Args: scores ``[..., m]``, valid ``[..., m]`` bool. Returns float32 ``[..., m]``.
    """
    scores = scores.float()  # the bound and the unit sum are enforced in float32, also under autocast
    v = valid.to(scores.dtype)
    m_safe = v.sum(-1, keepdim=True).clamp_min(1.0)
    uniform = v / m_safe
    if tau >= 1.0:
        return uniform
    p = torch.softmax(scores.masked_fill(~valid, torch.finfo(scores.dtype).min), dim=-1) * v
    dev = (p - uniform) * m_safe  # m p_i - 1; w_i = (1 + c dev_i) / m
    # lower bound: 1 + c dev_i >= tau ; upper bound: 1 + c dev_i <= 1 / tau
    lim_lo = torch.where(dev < 0, (1.0 - tau) / (-dev).clamp_min(1e-12), torch.ones_like(dev))
    lim_hi = torch.where(dev > 0, (1.0 / tau - 1.0) / dev.clamp_min(1e-12), torch.ones_like(dev))
    c = torch.minimum(lim_lo, lim_hi).amin(-1, keepdim=True).clamp(max=1.0)
    return (uniform + c * (p - uniform)) * v


class SemanticHead(nn.Module):
    """Semantic-aware weight net: score per view from [F''_i, view-dir diff], bounded weights,
    weighted sum of the view features, linear classifier -> logits ``[R, N, K]``."""

    def __init__(self, cfg: SRayConfig):
        super().__init__()
        c = cfg.feature_channels
        self.tau = cfg.tau
        act = lambda: activation_module(cfg.activation)  # noqa: E731
        self.score = nn.Sequential(nn.Linear(c + 4, cfg.semantic_weight_hidden), act(),
                                   nn.Linear(cfg.semantic_weight_hidden, 1))
        self.classifier = nn.Linear(c, cfg.num_classes)

    def forward(self, feats: Tensor, dir_diff: Tensor, valid: Tensor) -> Tensor:
        """feats ``[R, N, m, C]``, dir_diff ``[R, N, m, 4]``, valid ``[R, N, m]`` -> logits ``[R, N, K]``."""
        scores = self.score(torch.cat([feats, dir_diff], -1)).squeeze(-1)
        w = semantic_weights(scores, valid, self.tau).to(feats.dtype)
        fused = (w.unsqueeze(-1) * feats).sum(-2)
        return self.classifier(fused)


def _weighted_mean_var(x: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """Mean / variance over views (dim -2) of ``x [..., m, D]`` with weights ``w [..., m, 1]`` summing to 1."""
    mean = (x * w).sum(-2, keepdim=True)
    var = (((x - mean) ** 2) * w).sum(-2, keepdim=True)
    return mean, var


class GeometryHead(nn.Module):
    """IBRNet-style density and colour from per-view features ``[R, N, m, C+3]`` (feature, rgb).

    per-view MLP on [x_i, mean, var] -> visibility-weighted mean/variance across views -> MLP ->
    ray-wise attention over samples (``ray_attention_dim`` wide) -> sigma = softplus >= 0, set to 0 where
    no view sees the sample. Colour = softmax blend over valid views of the source pixel colours.
    """

    def __init__(self, cfg: SRayConfig):
        super().__init__()
        d_in = cfg.feature_channels + 3
        h, g, a = cfg.geometry_hidden, cfg.geometry_feature, cfg.ray_attention_dim
        act = lambda: activation_module(cfg.activation)  # noqa: E731
        self.act = F.elu if cfg.activation == "elu" else F.silu
        # first layer of MLP([x_i, mean, var]) split in two: the [mean, var] part is per sample, not per view
        self.base_view = nn.Linear(d_in, h)
        self.base_global = nn.Linear(2 * d_in, h, bias=False)
        self.base_out = nn.Linear(h, g)
        self.vis1 = nn.Sequential(nn.Linear(g, g), act(), nn.Linear(g, g + 1))
        self.vis2 = nn.Sequential(nn.Linear(g, g), act(), nn.Linear(g, 1))
        self.geometry_fc = nn.Sequential(nn.Linear(2 * g + 1, h), act(), nn.Linear(h, a), act())
        self.ray_attention = MaskedSelfAttention(a, cfg.ray_attention_heads)
        self.ray_norm = nn.LayerNorm(a)
        self.sigma_fc = nn.Sequential(nn.Linear(a, a), act(), nn.Linear(a, 1))
        self.rgb_fc = nn.Sequential(nn.Linear(g + 1 + 4, g), act(), nn.Linear(g, 1))

    def forward(self, x: Tensor, rgb: Tensor, dir_diff: Tensor, valid: Tensor,
                return_blend: bool = False) -> tuple[Tensor, ...]:
        """x ``[R, N, m, D]``, rgb ``[R, N, m, 3]``, dir_diff ``[R, N, m, 4]``, valid ``[R, N, m]``
        -> sigma ``[R, N]``, colour ``[R, N, 3]`` and, with ``return_blend``, the colour-blend weights
        ``[R, N, m]`` (softmax over valid views, 0 for invalid ones), which label transfer reuses."""
        r, n, m, _ = x.shape
        mask = valid.unsqueeze(-1).to(x.dtype)
        num_valid = mask.sum(-2, keepdim=True)  # [R, N, 1, 1]
        w = mask / num_valid.clamp_min(1.0)
        mean, var = _weighted_mean_var(x, w)
        h = self.act(self.base_view(x) + self.base_global(torch.cat([mean, var], -1)), inplace=True)
        h = self.act(self.base_out(h), inplace=True)
        res_vis = self.vis1(h * w)
        h = h + res_vis[..., :-1]
        vis = torch.sigmoid(res_vis[..., -1:]) * mask
        vis = torch.sigmoid(self.vis2(h * vis)) * mask
        w = vis / (vis.sum(-2, keepdim=True) + 1e-8)
        mean, var = _weighted_mean_var(h, w)
        # IBRNet appends weight.mean(views), which is the constant 1/m (weights sum to 1) and would make
        # the output depend on how many invalid views there are; the count of valid views is used instead
        g = self.geometry_fc(torch.cat([mean, var, torch.log1p(num_valid)], -1)).view(r, n, -1)
        seen = num_valid.view(r, n) > 0
        pos = sinusoidal_encoding(n, g.shape[-1], device=g.device, dtype=g.dtype)
        g = self.ray_norm(g + self.ray_attention(g + pos, seen))
        sigma = F.softplus(self.sigma_fc(g).squeeze(-1)) * seen.to(g.dtype)
        score = self.rgb_fc(torch.cat([h, vis, dir_diff], -1)).squeeze(-1)
        score = score.masked_fill(~valid, torch.finfo(score.dtype).min)
        blend = torch.softmax(score, dim=-1) * mask.squeeze(-1)  # all-invalid rows -> zeros, no NaN
        colour = (blend.unsqueeze(-1) * rgb).sum(-2)
        return (sigma, colour, blend) if return_blend else (sigma, colour)
