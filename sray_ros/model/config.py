"""Typed configuration of the S-Ray model; defaults are the paper's settings (CVPR 2023 + supp.)."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

from sray_ros.data.label_sets import IGNORE_INDEX
from sray_ros.model.samplers import SAMPLING_MODES, SURFACE_DISTRIBUTIONS, DepthGuidedSampler, HierarchicalSampler

ATTENTION_VARIANTS = ("cra", "dense", "none", "radial", "cross")
# Largest value of each size field (widths, head and sample counts). A checkpoint's stored config is checked
# against these before any layer is built, so a crafted file asking for a 20-million-wide layer is refused
# without allocating it. Far above every paper or trained setting (widths <= 160, 64 + 64 samples); the label
# output is mono8 with 255 = unknown, hence at most 255 classes.
SIZE_LIMITS = {
    "num_classes": 255, "stem_channels": 1024, "encoder_channels": 1024, "feature_channels": 1024,
    "prior_channels": 1024, "prior_input_height": 4096, "view_embed_hidden": 1024, "num_heads": 64,
    "attention_dim": 1024, "ffn_hidden": 4096, "semantic_weight_hidden": 1024, "geometry_hidden": 1024,
    "geometry_feature": 1024, "ray_attention_dim": 1024, "ray_attention_heads": 64, "num_coarse": 1024,
    "num_fine": 1024, "num_surface_samples": 1024, "num_uniform_samples": 1024, "coarse_depth_scale": 64,
}
PRIOR_ENCODERS = ("none", "resunet", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


@dataclass
class SRayConfig:
    """Everything that fixes the model's architecture and rendering behaviour.

    Architecture fields change parameter shapes and are checked when a checkpoint is loaded;
    rendering fields (sample counts, near/far, chunk) may be changed freely at inference.
    """

    # label set (set from the label set in use; ScanNet-20 by default)
    num_classes: int = 20
    # ResUNet feature extractor (supp. Table 12): stem 7x7 s2, encoder stages at 1/4, 1/8, 1/16
    stem_channels: int = 32
    encoder_channels: tuple[int, int, int] = (32, 64, 128)
    feature_channels: int = 32  # C of the 3D contextual space (output at 1/4 resolution)
    # per-view semantic priors (S-Ray Sec. 3.2; :mod:`sray_ros.model.semantic_prior`): a 2D segmentation net on
    # each source view whose class probabilities are fused along the ray. "none" (no priors: the models trained
    # before priors existed), "efficientnet_lite0" / "_lite1" / "_lite2" (ImageNet-pretrained encoder from the
    # installed wheel) or "resunet" (encoder trained from scratch)
    semantic_prior: str = "none"
    prior_channels: int = 64  # decoder width
    prior_geometry_cues: bool = True  # upward normal + height from keyframe depth (sray_ros.model.geometry_cues)
    prior_frozen_encoder: bool = True
    # rendering: weight of log(fused prior) added to a sample's semantic logits (0 = S-Ray alone) and the
    # world's gravity-up direction for the height cue (+z in REP-103 frames and the synthetic rooms)
    prior_weight: float = 1.0
    prior_input_height: int = 240  # source images are resized to this height for the prior net (its training size)
    prior_up: tuple[float, float, float] = (0.0, 0.0, 1.0)
    # view-direction difference embedding (4 -> 16 -> 32, ELU)
    view_embed_hidden: int = 16
    # hidden activation of the per-entry MLPs (FFN, weight nets, geometry net). "elu" is the paper's
    # (IBRNet's); "silu" is 4x cheaper per element on CPU (torch's ELU is not well vectorised there).
    # The view-direction embedding always uses ELU (4 -> 16 -> 32, as specified).
    activation: str = "elu"
    # Cross-Reprojection Attention
    attention: str = "cra"  # "cra" | "dense" | "none" | "radial" | "cross"
    num_heads: int = 4
    attention_dim: int = 32  # d: model width of the attention (= feature_channels)
    ffn_hidden: int = 64
    # semantic-aware weight net (supp. Table 14) and eq. 12 bound tau/m <= w_i <= 1/(tau m)
    semantic_weight_hidden: int = 32
    tau: float = 0.7
    # geometry-aware net (supp. Table 15, IBRNet style)
    geometry_hidden: int = 64
    geometry_feature: int = 32
    ray_attention_dim: int = 16
    ray_attention_heads: int = 4
    separate_fine_field: bool = False  # IBRNet uses two fields; we share one by default
    # sampling and rendering
    num_coarse: int = 64
    num_fine: int = 64
    fine_includes_coarse: bool = True  # fine pass evaluates the sorted union (64 + 64 = 128), as NeRF/IBRNet
    default_near: float = 0.5  # metres, used when neither near/far nor source depths are given
    default_far: float = 6.0
    last_delta: float = 1e10  # length of the last interval: the last sample absorbs what is left
    # depth-guided sampling (GSNeRF, CVPR 2024): rendering fields, free to change at inference.
    # sampling: "hierarchical" (coarse + fine above), "depth_guided" (samples around the target depth:
    # fused keyframe depth, else the coarse pass's expected depth) or "auto" (depth-guided where the source
    # views carry depth, hierarchical otherwise).
    sampling: str = "auto"
    num_surface_samples: int = 8  # K samples per ray around the target depth
    surface_distribution: str = "gaussian"  # "gaussian" (truncated normal quantiles) | "stratified"
    surface_band_min: float = 0.02  # relative band half-width at confidence 1 ...
    surface_band_max: float = 0.2  # ... and at confidence 0 (linear in between)
    num_uniform_samples: int = 0  # extra samples uniform in inverse depth over [near, far] (GSNeRF A.4 mix)
    # semantics of a depth-guided ray: "volume" (logits volume-rendered with the K samples' weights) or
    # "surface" (GSNeRF: the logits of the single max-weight sample)
    surface_semantics: str = "volume"
    # fast views (render_view with a target depth only; training and render_rays are unaffected): the network
    # runs at every view_scale-th pixel per axis and the rest is upsampled with weights from the full-resolution
    # fused keyframe depth (sray_ros.model.upsample), pixels chosen by upsample_refine ("none" | "depth":
    # no anchor on the pixel's surface | "labels": also where the anchors disagree on the class) are rendered
    # exactly; rays whose target depth has confidence >= confident_surface_threshold get
    # confident_surface_samples samples instead of num_surface_samples (0 = off). view_scale 1 and
    # confident_surface_samples 0 give the exact per-pixel path. Default 4 (every 4th pixel, refined at every 2nd,
    # then every pixel): 160x120 views of the real sequence and 10 unseen rooms 6.4x faster, mIoU 20.18 -> 20.30.
    view_scale: int = 4
    upsample_refine: str = "labels"
    upsample_depth_sigma: float = 0.03  # relative depth difference of the range kernel
    # "labels" refinement only where the upsampled class probabilities' top-1 minus top-2 is below this (1 = all)
    upsample_refine_margin: float = 1.0
    # 0: adaptive K is off by default: the shipped model was trained with K = 8 (its attention encodes the sample
    # index), and K = 4 on confident rays changed 12 % of the labels of a real-sequence view while not running faster
    confident_surface_samples: int = 0
    confident_surface_threshold: float = 0.6
    coarse_depth_confidence: float = 0.2  # confidence given to a coarse-pass depth (no keyframe depth there)
    coarse_depth_scale: int = 2  # RGB-only views: the coarse depth pass runs at 1/scale resolution
    # losses (supp. Table 5: 0.5 / 0.5)
    semantic_loss_weight: float = 0.5
    rgb_loss_weight: float = 0.5
    ignore_index: int = IGNORE_INDEX

    # fields that determine parameter shapes (checked against checkpoints)
    def depth_guided_sampler(self, num_samples: int | None = None) -> DepthGuidedSampler:
        """The :class:`~sray_ros.model.samplers.DepthGuidedSampler` these settings describe."""
        return DepthGuidedSampler(num_samples or self.num_surface_samples, self.surface_distribution,
                                  self.surface_band_min, self.surface_band_max, num_uniform=self.num_uniform_samples)

    def hierarchical_sampler(self, num_coarse: int | None = None, num_fine: int | None = None) -> HierarchicalSampler:
        """The :class:`~sray_ros.model.samplers.HierarchicalSampler` these settings describe."""
        return HierarchicalSampler(self.num_coarse if num_coarse is None else num_coarse,
                                   self.num_fine if num_fine is None else num_fine, self.fine_includes_coarse)

    ARCHITECTURE_FIELDS = (
        "num_classes", "stem_channels", "encoder_channels", "feature_channels", "view_embed_hidden",
        "activation", "attention", "num_heads", "attention_dim", "ffn_hidden", "semantic_weight_hidden",
        "geometry_hidden", "geometry_feature", "ray_attention_dim", "ray_attention_heads",
        "separate_fine_field", "semantic_prior", "prior_channels", "prior_geometry_cues", "prior_frozen_encoder",
    )

    def _check_types_and_sizes(self) -> None:
        """Every field of its declared kind (int, number, bool, str, tuple), numbers finite and sizes within
        :data:`SIZE_LIMITS`; raises ValueError naming the field, the value and the bound."""
        for f in dataclasses.fields(self):
            value, default = getattr(self, f.name), f.default
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ValueError(f"{f.name} must be true or false, got {value!r}")
            elif isinstance(default, int):
                if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                    raise ValueError(f"{f.name} must be an integer, got {value!r}")
                setattr(self, f.name, int(value))
            elif isinstance(default, float):
                if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                    raise ValueError(f"{f.name} must be a finite number, got {value!r}")
                setattr(self, f.name, float(value))
            elif isinstance(default, str):
                if not isinstance(value, str):
                    raise ValueError(f"{f.name} must be a string, got {value!r}")
        for name in ("encoder_channels", "prior_up"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or len(value) != 3:
                raise ValueError(f"{name} needs 3 entries, got {value!r}")
        if not all(isinstance(c, numbers.Integral) and not isinstance(c, bool) for c in self.encoder_channels):
            raise ValueError(f"encoder_channels must be integers, got {self.encoder_channels!r}")
        if not all(isinstance(c, numbers.Real) and not isinstance(c, bool) and math.isfinite(c) for c in self.prior_up):
            raise ValueError(f"prior_up must be finite numbers, got {self.prior_up!r}")
        for name, limit in SIZE_LIMITS.items():
            values = getattr(self, name)
            for value in (values if isinstance(values, (list, tuple)) else (values,)):
                low = 0 if name in ("num_fine", "num_uniform_samples") else 1
                if not low <= value <= limit:
                    raise ValueError(f"{name} = {value} is outside [{low}, {limit}]")

    def __post_init__(self) -> None:
        self._check_types_and_sizes()
        self.encoder_channels = tuple(int(c) for c in self.encoder_channels)
        self.prior_up = tuple(float(c) for c in self.prior_up)
        if self.semantic_prior not in PRIOR_ENCODERS:
            raise ValueError(f"semantic_prior must be one of {PRIOR_ENCODERS}, got {self.semantic_prior!r}")
        if self.prior_channels < 8 or self.prior_channels % 8:
            raise ValueError(f"prior_channels must be a multiple of 8 (GroupNorm groups), got {self.prior_channels}")
        if not (self.prior_weight >= 0.0 and self.prior_weight < float("inf")):
            raise ValueError(f"prior_weight must be finite and >= 0, got {self.prior_weight}")
        if not 16 <= self.prior_input_height <= 4096:
            raise ValueError(f"prior_input_height must be in [16, 4096], got {self.prior_input_height}")
        if len(self.prior_up) != 3 or sum(c * c for c in self.prior_up) < 1e-12:
            raise ValueError(f"prior_up must be a non-zero 3-vector, got {self.prior_up}")
        if self.attention not in ATTENTION_VARIANTS:
            raise ValueError(f"attention must be one of {ATTENTION_VARIANTS}, got {self.attention!r}")
        if self.activation not in ("elu", "silu"):
            raise ValueError(f"activation must be 'elu' or 'silu', got {self.activation!r}")
        if len(self.encoder_channels) != 3:
            raise ValueError(f"encoder_channels needs 3 entries (1/4, 1/8, 1/16), got {self.encoder_channels}")
        if self.attention_dim != self.feature_channels:
            raise ValueError("attention_dim must equal feature_channels (attention runs on the contextual space)")
        if self.attention_dim % self.num_heads or self.ray_attention_dim % self.ray_attention_heads:
            raise ValueError("attention widths must be divisible by their head counts")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {self.tau}")
        if self.num_classes < 1 or self.num_coarse < 2 or self.num_fine < 0:
            raise ValueError("num_classes >= 1, num_coarse >= 2 and num_fine >= 0 are required")
        if self.sampling not in SAMPLING_MODES:
            raise ValueError(f"sampling must be one of {SAMPLING_MODES}, got {self.sampling!r}")
        if self.surface_distribution not in SURFACE_DISTRIBUTIONS:
            raise ValueError(f"surface_distribution must be one of {SURFACE_DISTRIBUTIONS}, "
                             f"got {self.surface_distribution!r}")
        if self.surface_semantics not in ("volume", "surface"):
            raise ValueError(f"surface_semantics must be 'volume' or 'surface', got {self.surface_semantics!r}")
        if self.num_surface_samples < 2 or self.coarse_depth_scale < 1:
            raise ValueError("num_surface_samples >= 2 and coarse_depth_scale >= 1 are required")
        if self.view_scale < 1 or self.upsample_refine not in ("none", "depth", "labels"):
            raise ValueError(f"need view_scale >= 1 and upsample_refine in ('none', 'depth', 'labels'), got "
                             f"{self.view_scale}, {self.upsample_refine!r}")
        if not self.upsample_depth_sigma > 0 or self.confident_surface_samples == 1 or \
                self.confident_surface_samples < 0:
            raise ValueError("need upsample_depth_sigma > 0 and confident_surface_samples 0 (off) or >= 2")
        if not 0.0 <= self.upsample_refine_margin <= 1.0:
            raise ValueError(f"upsample_refine_margin must be in [0, 1], got {self.upsample_refine_margin}")
        if not 0.0 < self.default_near < self.default_far:
            raise ValueError("need 0 < default_near < default_far")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["encoder_channels"] = list(self.encoder_channels)
        out["prior_up"] = list(self.prior_up)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SRayConfig":
        """Build from a dict; unknown keys raise (a typo should not be silently ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown SRayConfig fields: {unknown}")
        return cls(**data)

    def replace(self, **changes: Any) -> "SRayConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def tiny(cls, **changes: Any) -> "SRayConfig":
        """A small configuration for tests and smoke runs (same structure, fewer channels/samples)."""
        base = dict(stem_channels=8, encoder_channels=(8, 16, 16), feature_channels=16, attention_dim=16,
                    num_heads=4, ffn_hidden=16, semantic_weight_hidden=16, geometry_hidden=16,
                    geometry_feature=16, ray_attention_dim=8, ray_attention_heads=2, num_coarse=8, num_fine=8,
                    view_embed_hidden=8)
        base.update(changes)
        return cls(**base)


