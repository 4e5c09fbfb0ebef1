"""Cross-Reprojection Attention (paper Sec. 3.2) and its ablation variants.

Shape vocabulary: ``R`` rays, ``m`` source views, ``N`` samples per ray, ``C`` channels.
The contextual space enters and leaves as ``x [R, N, m, C]`` with ``valid [R, N, m]`` (per sample, the
view axis next to channels: what the cross-view attention and the weight nets work over); only the
radial attention transposes to ``[R, m, N, C]``.

Invalid entries (sample behind the source camera or outside its image) are excluded as **keys**
everywhere (boolean mask in ``scaled_dot_product_attention``). A query whose keys are all invalid
(a ray invisible in a view, a sample seen by no view) attends to all keys instead, which keeps the
result finite; such a query is itself invalid, and its output is zeroed and never aggregated.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sray_ros.model.config import SRayConfig


def sinusoidal_encoding(length: int, dim: int, device=None, dtype=torch.float32) -> Tensor:
    """Fixed position embedding ``[length, dim]`` of the sample index (works for any sample count)."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(1000.0) / dim))
    enc = torch.zeros(length, dim, device=device, dtype=torch.float32)
    enc[:, 0::2] = torch.sin(pos * freq)
    enc[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return enc.to(dtype)


def safe_key_mask(key_valid: Tensor) -> Tensor:
    """Boolean key mask ``[B, L]`` where all-invalid rows are opened up (no NaN from an empty softmax)."""
    return key_valid | ~key_valid.any(dim=-1, keepdim=True)


# Sequences this short are attended in pairs (see masked_attention); 0 disables pairing.
PAIR_MAX_LENGTH = 16


def masked_attention(q: Tensor, k: Tensor, v: Tensor, key_valid: Tensor) -> Tensor:
    """``softmax(q k^T / sqrt(d)) v`` per sequence with invalid keys excluded; q, k, v ``[B, H, L, d]``,
    key_valid ``[B, L]`` (already made safe by :func:`safe_key_mask`). Returns ``[B, H, L, d]``.

    CPU cost of the fused kernel is dominated by per-(sequence, head) overhead when ``L`` is tiny (8 samples
    or 8 views; the issue profiled it at 0.8 GFLOP/s). Two sequences are therefore concatenated into one of
    length ``2 L`` with a block-diagonal mask, so each query still only sees keys of its own sequence: the
    same result, half the kernel tasks, twice the (tiny) arithmetic. Measured at 1 thread (shared, loaded
    2-core CPU) on ``[4096, 4, 8, 8]``: 0.042-0.059 s paired vs 0.086-0.113 s unpaired (groups of 4 or 8
    were slower); 2048 depth-guided rays of the shipped model (K = 8, 8 views), six interleaved runs:
    median 2.2 s paired vs 2.5 s unpaired. A plain batched-matmul attention was not faster than the fused
    kernel here (0.36 s vs 0.36 s on ``[16384, 4, 8, 8]``).

    On CUDA, sequences this short go to :func:`short_attention` (plain batched matmuls) instead: PyTorch's
    masked fused kernel runs such batches poorly there. Measured on one H200 (fp32, ``[524288, 4, 8, 16]``):
    12.4 ms vs 33.0 ms paired and 58.7 ms unpaired; whole depth-guided views of the shipped model 1.4x faster
    at every pixel (640x480: 436 vs 622 ms, BENCHMARKS.md) with identical labels.
    """
    b, h, length, d = q.shape
    if q.is_cuda and 0 < length <= PAIR_MAX_LENGTH:
        return short_attention(q, k, v, key_valid)
    if not (0 < length <= PAIR_MAX_LENGTH) or b < 2:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=key_valid[:, None, None, :])
    return paired_attention(q, k, v, key_valid)


def paired_attention(q: Tensor, k: Tensor, v: Tensor, key_valid: Tensor) -> Tensor:
    """:func:`masked_attention`'s CPU path for short sequences: two sequences of length ``L`` attended as one
    of ``2 L`` with a block-diagonal mask (same shapes and result as the fused kernel per sequence)."""
    b, h, length, d = q.shape
    odd = b % 2
    if odd:  # pad with a copy of the last sequence; its output is dropped
        q, k, v = (torch.cat([t, t[-1:]], 0) for t in (q, k, v))
        key_valid = torch.cat([key_valid, key_valid[-1:]], 0)
    n = q.shape[0] // 2

    def pair(t: Tensor) -> Tensor:  # [2n, H, L, d] -> [n, H, 2L, d]
        return t.view(n, 2, h, length, d).transpose(1, 2).reshape(n, h, 2 * length, d)

    own = torch.arange(2 * length, device=q.device) // length
    mask = (own[:, None] == own[None, :]) & key_valid.reshape(n, 1, 2 * length)  # [n, 2L, 2L]
    out = F.scaled_dot_product_attention(pair(q), pair(k), pair(v), attn_mask=mask[:, None])
    out = out.view(n, h, 2, length, d).transpose(1, 2).reshape(2 * n, h, length, d)
    return out[:b] if odd else out


def short_attention(q: Tensor, k: Tensor, v: Tensor, key_valid: Tensor) -> Tensor:
    """:func:`masked_attention` as explicit batched matmuls: ``softmax(q k^T / sqrt(d) + mask) v`` with
    invalid keys at ``-inf`` (``key_valid`` must be safe: some key valid per sequence). Materialises the
    ``[B, H, L, L]`` scores, cheap for the short sequences it is used for."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    scores = scores.masked_fill(~key_valid[:, None, None, :], float("-inf"))
    return torch.matmul(torch.softmax(scores, -1), v)


class MaskedSelfAttention(nn.Module):
    """Multi-head self-attention over ``x [B, L, D]`` with a per-key validity mask ``[B, L]``."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, key_valid: Tensor) -> Tensor:
        b, length, dim = x.shape
        qkv = self.qkv(x).view(b, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        out = masked_attention(qkv[0], qkv[1], qkv[2], safe_key_mask(key_valid))
        return self.proj(out.transpose(1, 2).reshape(b, length, dim))


def activation_module(name: str) -> nn.Module:
    return nn.ELU(inplace=True) if name == "elu" else nn.SiLU(inplace=True)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, activation: str = "elu"):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), activation_module(activation), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class CrossReprojectionAttention(nn.Module):
    """Intra-view radial attention then cross-view sparse attention (each residual + LayerNorm),
    then a residual feed-forward layer. ``variant`` selects the ablations:

    * ``"cra"``: radial (per view, over the N samples) + cross-view (per sample, over the m views)
    * ``"dense"``: one attention over all ``m * N`` entries of a ray (the paper's baseline)
    * ``"radial"`` / ``"cross"``: only one of the two CRA stages
    * ``"none"``: no attention (feed-forward only)
    """

    def __init__(self, cfg: SRayConfig):
        super().__init__()
        d, h = cfg.attention_dim, cfg.num_heads
        self.variant = cfg.attention
        if self.variant in ("cra", "radial"):
            self.radial_attention = MaskedSelfAttention(d, h)
            self.radial_norm = nn.LayerNorm(d)
        if self.variant in ("cra", "cross"):
            self.cross_view_attention = MaskedSelfAttention(d, h)
            self.cross_norm = nn.LayerNorm(d)
        if self.variant == "dense":
            self.dense_attention = MaskedSelfAttention(d, h)
            self.dense_norm = nn.LayerNorm(d)
        self.ffn = FeedForward(d, cfg.ffn_hidden, cfg.activation)
        self.ffn_norm = nn.LayerNorm(d)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        """x ``[R, N, m, C]``, valid ``[R, N, m]`` -> ``[R, N, m, C]`` (invalid entries zeroed)."""
        r, n, m, c = x.shape
        pos = sinusoidal_encoding(n, c, device=x.device, dtype=x.dtype)  # over the sample index
        if self.variant == "dense":
            flat = x.reshape(r, n * m, c)
            att = self.dense_attention(flat + pos.repeat_interleave(m, 0), valid.reshape(r, n * m))
            x = self.dense_norm(flat + att).view(r, n, m, c)
        if self.variant in ("cra", "radial"):
            flat = x.transpose(1, 2).reshape(r * m, n, c)  # one ray's samples as seen by one view
            att = self.radial_attention(flat + pos, valid.transpose(1, 2).reshape(r * m, n))
            x = self.radial_norm(flat + att).view(r, m, n, c).transpose(1, 2).contiguous()
        if self.variant in ("cra", "cross"):
            flat = x.reshape(r * n, m, c)  # one sample as seen by all views
            att = self.cross_view_attention(flat, valid.reshape(r * n, m))
            x = self.cross_norm(flat + att).view(r, n, m, c)
        x = self.ffn_norm(x + self.ffn(x))
        return x * valid.unsqueeze(-1).to(x.dtype)


# --------------------------------------------------------------------------------------------------
# FLOP counting: torch's FlopCounterMode has no formula for the CPU fused attention kernel, so without
# this it would count attention as 0 FLOPs on CPU. Registered lazily (bench + tests only).
# --------------------------------------------------------------------------------------------------
_FLOP_FORMULA_REGISTERED = False


def register_cpu_sdpa_flop_formula() -> None:
    """Teach ``torch.utils.flop_counter`` the CPU flash-attention op (same count as the CUDA kernels:
    2*B*H*L*S*d for Q K^T plus the same for P V; masking does not reduce the count)."""
    global _FLOP_FORMULA_REGISTERED
    if _FLOP_FORMULA_REGISTERED:
        return
    from torch.utils import flop_counter

    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None and op.default not in flop_counter.flop_registry:
        @flop_counter.register_flop_formula(op)
        def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)
    _FLOP_FORMULA_REGISTERED = True
