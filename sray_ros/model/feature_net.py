"""ResUNet feature extractor (supp. Table 12) and the cached per-keyframe source views."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sray_ros import geometry
from sray_ros.model.config import SRayConfig


def _norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=True, track_running_stats=False)


class ResBlock(nn.Module):
    """Two 3x3 convs with InstanceNorm; a strided 1x1 projection on the skip when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = _norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = _norm(c_out)
        self.skip = None
        if stride != 1 or c_in != c_out:
            self.skip = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), _norm(c_out))

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return F.relu(y + (x if self.skip is None else self.skip(x)))


class ResUNet(nn.Module):
    """RGB ``[m, 3, H, W]`` in [0, 1] -> features ``[m, C, ceil(H/4), ceil(W/4)]``.

    7x7 conv stride 2 (1/2) -> residual stages at 1/4, 1/8, 1/16 (the last with ``encoder_channels[2]``,
    128 by default) -> decoder upsampling to 1/8 and 1/4 with skip connections -> 1x1 conv to C.
    """

    def __init__(self, cfg: SRayConfig):
        super().__init__()
        c0 = cfg.stem_channels
        c1, c2, c3 = cfg.encoder_channels
        self.stem = nn.Sequential(nn.Conv2d(3, c0, 7, 2, 3, bias=False), _norm(c0), nn.ReLU(inplace=True))
        self.layer1 = nn.Sequential(ResBlock(c0, c1, 2), ResBlock(c1, c1))
        self.layer2 = nn.Sequential(ResBlock(c1, c2, 2), ResBlock(c2, c2))
        self.layer3 = nn.Sequential(ResBlock(c2, c3, 2), ResBlock(c3, c3))
        self.up2 = nn.Sequential(nn.Conv2d(c3 + c2, c2, 3, 1, 1, bias=False), _norm(c2), nn.ReLU(inplace=True))
        self.up1 = nn.Sequential(nn.Conv2d(c2 + c1, c1, 3, 1, 1, bias=False), _norm(c1), nn.ReLU(inplace=True))
        self.out = nn.Conv2d(c1, cfg.feature_channels, 1)

    def forward(self, images: Tensor) -> Tensor:
        x = self.stem(images * 2.0 - 1.0)
        s1 = self.layer1(x)  # 1/4
        s2 = self.layer2(s1)  # 1/8
        s3 = self.layer3(s2)  # 1/16
        y = F.interpolate(s3, size=s2.shape[-2:], mode="bilinear", align_corners=False)
        y = self.up2(torch.cat([y, s2], 1))
        y = F.interpolate(y, size=s1.shape[-2:], mode="bilinear", align_corners=False)
        y = self.up1(torch.cat([y, s1], 1))
        return self.out(y)


@dataclass
class SourceViews:
    """Posed source views with their CNN features, encoded once per keyframe and reused per query.

    Shapes: images ``[m, 3, H, W]`` (RGB in [0, 1]), features ``[m, C, h, w]`` (1/4 resolution, sampled
    with normalised coordinates; the two cover the same image extent exactly when H and W are divisible
    by 4, as 320x240 and 640x480 are; otherwise edge features are off by < 0.5 feature pixel), K ``[m, 3, 3]``
    (full-resolution intrinsics, integer pixel centres), c2w ``[m, 4, 4]``; optional depths ``[m, H, W]``
    in metres (0 = unknown), used to derive a default near/far and, for depth-guided sampling, the target
    view's surface depth (:mod:`sray_ros.model.surface`); optional labels ``[m, H, W]`` integer class ids
    (uint8 / long, 255 = unknown), the evidence of label transfer (:mod:`sray_ros.model.label_transfer`);
    a keyframe without labels is all 255; optional priors ``[m, K, h, w]`` per-view class probabilities of the
    semantic prior net (:mod:`sray_ros.model.semantic_prior`) on the features' grid; optional label_confidence
    ``[m, H, W]`` float in [0, 1], the weight of each label pixel's vote (a segmenter's per-pixel confidence;
    None = weight 1 everywhere).
    """

    images: Tensor
    features: Tensor
    K: Tensor
    c2w: Tensor
    depths: Tensor | None = None
    labels: Tensor | None = None
    priors: Tensor | None = None
    label_confidence: Tensor | None = None

    def __post_init__(self) -> None:
        m = self.images.shape[0]
        if self.images.dim() != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be [m, 3, H, W], got {tuple(self.images.shape)}")
        if self.features.dim() != 4 or self.features.shape[0] != m:
            raise ValueError(f"features must be [m, C, h, w] with m={m}, got {tuple(self.features.shape)}")
        if tuple(self.K.shape) != (m, 3, 3) or tuple(self.c2w.shape) != (m, 4, 4):
            raise ValueError(f"K must be [m, 3, 3] and c2w [m, 4, 4] with m={m}, got "
                             f"{tuple(self.K.shape)} and {tuple(self.c2w.shape)}")
        if self.depths is not None and tuple(self.depths.shape) != (m, *self.images.shape[-2:]):
            raise ValueError(f"depths must be [m, H, W] = {(m, *self.images.shape[-2:])}, got {tuple(self.depths.shape)}")
        if self.labels is not None:
            if tuple(self.labels.shape) != (m, *self.images.shape[-2:]):
                raise ValueError(f"labels must be [m, H, W] = {(m, *self.images.shape[-2:])}, got "
                                 f"{tuple(self.labels.shape)}")
            if self.labels.dtype not in (torch.uint8, torch.int16, torch.int32, torch.int64):
                raise ValueError(f"labels must be integer class ids (uint8 or long, 255 = unknown), got {self.labels.dtype}")
        if self.label_confidence is not None and tuple(self.label_confidence.shape) != (m, *self.images.shape[-2:]):
            raise ValueError(f"label_confidence must be [m, H, W] = {(m, *self.images.shape[-2:])}, got "
                             f"{tuple(self.label_confidence.shape)}")
        if self.priors is not None and (self.priors.dim() != 4 or self.priors.shape[0] != m):
            raise ValueError(f"priors must be [m, K, h, w] with m={m}, got {tuple(self.priors.shape)}")

    @property
    def num_views(self) -> int:
        return self.images.shape[0]

    @property
    def height(self) -> int:
        return self.images.shape[-2]

    @property
    def width(self) -> int:
        return self.images.shape[-1]

    @property
    def device(self) -> torch.device:
        return self.features.device

    @property
    def w2c(self) -> Tensor:
        return geometry.invert_pose(self.c2w)

    def select(self, index: Tensor | list[int]) -> "SourceViews":
        """The subset (or permutation) of views at ``index``."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.images.device)
        return SourceViews(self.images[idx], self.features[idx], self.K[idx], self.c2w[idx],
                           None if self.depths is None else self.depths[idx],
                           None if self.labels is None else self.labels[idx],
                           None if self.priors is None else self.priors[idx],
                           None if self.label_confidence is None else self.label_confidence[idx])

    def to(self, device=None, dtype=None) -> "SourceViews":
        def mv(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device=device, dtype=dtype if t.is_floating_point() else None)
        return SourceViews(mv(self.images), mv(self.features), mv(self.K), mv(self.c2w), mv(self.depths),
                           mv(self.labels), mv(self.priors), mv(self.label_confidence))

    @staticmethod
    def cat(views: list["SourceViews"]) -> "SourceViews":
        """Stack cached single keyframes (each m=1 or more) into one set of source views.

        Views without depth get an all-zero depth map (0 = unknown, the ScanNet convention) when any other
        view has depth, so one depth-less keyframe (its optional depth message came too late) does not
        discard the depth of all the others (:func:`~sray_ros.model.render.near_far_from_sources` and the
        target-depth estimate of :mod:`sray_ros.model.surface` both ignore zeros). Likewise views without
        labels get all-255 labels (no evidence) when any other view has labels, in the first labelled
        view's dtype, and views without a label confidence get confidence 1 when any other view has one."""
        if not views:
            raise ValueError("need at least one SourceViews to concatenate")
        depths = None
        ref = next((v.depths for v in views if v.depths is not None), None)
        if ref is not None:
            depths = torch.cat([v.depths if v.depths is not None else ref.new_zeros((v.num_views, v.height, v.width))
                                for v in views])
        labels = None
        ref = next((v.labels for v in views if v.labels is not None), None)
        if ref is not None:
            labels = torch.cat([v.labels.to(ref.dtype) if v.labels is not None
                                else ref.new_full((v.num_views, v.height, v.width), 255) for v in views])
        priors = None
        if any(v.priors is not None for v in views):
            if not all(v.priors is not None for v in views):
                raise ValueError("either every view or none carries semantic priors (one model encoded them all)")
            priors = torch.cat([v.priors for v in views])
        confidence = None
        ref = next((v.label_confidence for v in views if v.label_confidence is not None), None)
        if ref is not None:
            confidence = torch.cat([v.label_confidence.to(ref.dtype) if v.label_confidence is not None
                                    else ref.new_ones((v.num_views, v.height, v.width)) for v in views])
        return SourceViews(
            torch.cat([v.images for v in views]), torch.cat([v.features for v in views]),
            torch.cat([v.K for v in views]), torch.cat([v.c2w for v in views]), depths, labels, priors, confidence,
        )

    def detach(self) -> "SourceViews":
        return replace(self, features=self.features.detach(),
                       priors=None if self.priors is None else self.priors.detach())
