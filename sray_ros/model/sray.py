"""The S-Ray model: shared ResUNet + per-sample field (contextual space -> CRA -> heads)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sray_ros import geometry
from sray_ros.model.attention import CrossReprojectionAttention
from sray_ros.model.config import SRayConfig
from sray_ros.model.feature_net import ResUNet, SourceViews
from sray_ros.model.heads import GeometryHead, SemanticHead, ViewDirectionEmbedding


@dataclass
class ContextualSpace:
    """The 3D contextual space of R rays x N samples seen from m source views.

    Layout rays, samples, views, channels (the view axis next to channels: every head reduces over views):
    features ``[R, N, m, C]`` (bilinearly sampled CNN features), rgb ``[R, N, m, 3]`` (source colours),
    dir_diff ``[R, N, m, 4]`` (unit query-minus-source direction, dot product), valid ``[R, N, m]``.
    """

    features: Tensor
    rgb: Tensor
    dir_diff: Tensor
    valid: Tensor


def contextual_space(sources: SourceViews, points: Tensor, ray_dirs: Tensor) -> ContextualSpace:
    """Project sample points ``[R, N, 3]`` (on rays with directions ``[R, 3]``) into every source view.

    Projection uses :func:`geometry.project_with_validity` at full source resolution; features and
    colours are sampled with :func:`geometry.normalize_pixels` coordinates (``align_corners=False``),
    which address the same image extent in the 1/4-resolution feature maps.
    """
    r, n, _ = points.shape
    m = sources.num_views
    flat = points.reshape(1, r * n, 3)
    uv, _, valid = geometry.project_with_validity(flat, sources.K, sources.w2c, sources.height, sources.width)
    grid = geometry.normalize_pixels(uv, sources.height, sources.width).unsqueeze(1)  # [m, 1, RN, 2]
    grid = grid.to(sources.features.dtype)
    feats = F.grid_sample(sources.features, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    rgb = F.grid_sample(sources.images.to(grid.dtype), grid, mode="bilinear", padding_mode="border", align_corners=False)
    feats = feats.view(m, -1, r, n).permute(2, 3, 0, 1).contiguous()  # [R, N, m, C]
    rgb = rgb.view(m, 3, r, n).permute(2, 3, 0, 1).contiguous()
    valid = valid.view(m, r, n).permute(1, 2, 0).contiguous()

    query_dir = F.normalize(ray_dirs, dim=-1)[:, None, None, :]  # [R, 1, 1, 3]
    centres = geometry.camera_centers(sources.c2w)[None, None, :, :]  # [1, 1, m, 3]
    src_dir = F.normalize(points.unsqueeze(2) - centres, dim=-1)  # [R, N, m, 3]
    diff = query_dir - src_dir
    dir_diff = torch.cat([F.normalize(diff, dim=-1), (query_dir * src_dir).sum(-1, keepdim=True)], -1)
    return ContextualSpace(feats, rgb, dir_diff.to(feats.dtype), valid)


@dataclass
class FieldOutput:
    sigma: Tensor  # [R, N] >= 0
    rgb: Tensor  # [R, N, 3]
    logits: Tensor | None  # [R, N, K]
    blend: Tensor | None = None  # [R, N, m] geometry head's colour-blend weights (only when asked for)


class SRayField(nn.Module):
    """Per-sample network: contextual space -> (density, colour, semantic logits)."""

    def __init__(self, cfg: SRayConfig):
        super().__init__()
        self.view_embedding = ViewDirectionEmbedding(cfg.view_embed_hidden, cfg.feature_channels)
        self.cross_reprojection_attention = CrossReprojectionAttention(cfg)
        self.semantic_head = SemanticHead(cfg)
        self.geometry_head = GeometryHead(cfg)

    def forward(self, ctx: ContextualSpace, semantics: bool = True, blend: bool = False) -> FieldOutput:
        """With ``semantics=False`` only density/colour are computed (CRA and the semantic head are
        skipped): what the coarse pass needs at inference to place the fine samples. ``blend`` also
        returns the geometry head's colour-blend weights (label transfer's view weights)."""
        x = ctx.features + self.view_embedding(ctx.dir_diff)  # [R, N, m, C]
        sigma, rgb, *weights = self.geometry_head(torch.cat([x, ctx.rgb], -1), ctx.rgb, ctx.dir_diff, ctx.valid,
                                                  return_blend=blend)
        logits = None
        if semantics:
            refined = self.cross_reprojection_attention(x, ctx.valid)  # [R, N, m, C]
            logits = self.semantic_head(refined, ctx.dir_diff, ctx.valid)
        return FieldOutput(sigma, rgb, logits, weights[0] if weights else None)


class SRay(nn.Module):
    """Semantic-Ray: ``encode_sources`` once per keyframe, then render rays with
    :func:`sray_ros.model.render.render_rays` / :func:`~sray_ros.model.render.render_view`."""

    def __init__(self, cfg: SRayConfig | None = None):
        super().__init__()
        self.cfg = cfg or SRayConfig()
        self.feature_net = ResUNet(self.cfg)
        self.field_coarse = SRayField(self.cfg)
        # registered only when separate, so a shared field is stored once in the state dict
        self.field_fine = SRayField(self.cfg) if self.cfg.separate_fine_field else None

    def encode(self, images: Tensor) -> Tensor:
        """RGB ``[m, 3, H, W]`` in [0, 1] -> features ``[m, C, H/4, W/4]``."""
        return self.feature_net(images)

    def encode_sources(self, images: Tensor, K: Tensor, c2w: Tensor, depths: Tensor | None = None,
                       labels: Tensor | None = None) -> SourceViews:
        """Encode posed source images once; the result is reused for any number of queries. ``labels``
        ``[m, H, W]`` (255 = unknown) ride along unchanged as label-transfer evidence."""
        if images.dim() == 3:
            images, K, c2w = images[None], K[None], c2w[None]
            depths = None if depths is None else depths[None]
            labels = None if labels is None else labels[None]
        features = self.encode(images)
        # poses/intrinsics stay float32 even when features come out of fp16 autocast: projection needs it
        return SourceViews(images, features, K.to(images.device, torch.float32), c2w.to(images.device, torch.float32),
                           None if depths is None else depths.to(images.device, torch.float32),
                           None if labels is None else labels.to(images.device))

    def field(self, fine: bool) -> SRayField:
        return self.field_fine if fine and self.field_fine is not None else self.field_coarse
