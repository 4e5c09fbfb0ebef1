"""Training configuration: a typed dataclass whose defaults are the paper's settings (YAML only at the edge)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class TrainConfig:
    # data: folders of ScanNet-layout scenes (each sub-folder one scene)
    train_root: str = ""
    val_root: str = ""
    label_set: str = "scannet20"
    width: int = 320
    height: int = 240
    max_train_scenes: int = 0  # 0 = all
    max_val_scenes: int = 0
    # optimisation (paper: 1024 rays/step, 8 source views, Adam 1e-3 decaying to 5e-5)
    num_rays: int = 1024
    num_sources: int = 8
    lr: float = 1e-3
    lr_final: float = 5e-5
    max_steps: int = 250_000
    grad_clip: float = 1.0
    labeled_only: bool = False
    # class-balanced query rays (0 = uniform pixels): a pixel of class c is drawn with weight
    # min((f_c / f_max) ** -power, max_weight), f_c the class's share of the whole training set's labelled
    # pixels (sray_ros.data.augment); 0.5 with cap 10 oversamples e.g. toilets ~5-10x
    class_balance_power: float = 0.0
    class_balance_max_weight: float = 10.0
    # photometric augmentation: each batch draws brightness / contrast / saturation / hue factors (ranges of
    # sray_ros.data.augment.PhotometricConfig) and applies them to its query and source images
    photometric_jitter: bool = False
    seed: int = 0
    # model: overrides of SRayConfig fields (num_classes comes from the label set)
    model: dict[str, Any] = field(default_factory=dict)
    chunk: int = 4096
    # ray sampling of the query rays (see sray_ros.model.samplers): "hierarchical" (the paper's S-Ray), or
    # "depth_guided" / "auto" (GSNeRF): samples around each query ray's ground-truth depth, its centre perturbed
    # by a relative N(0, depth_perturb) error and its band width drawn from a random confidence in [0, 1] so
    # the field learns to localise the surface inside any band the renderer may use. Rays without depth take
    # the coarse pass's depth. depth_guided_fraction < 1 mixes: each step is depth-guided with that
    # probability, hierarchical otherwise (GSNeRF App. A.4 mixes guided and uniform samples).
    sampling: str = "hierarchical"
    depth_guided_fraction: float = 1.0
    depth_perturb: float = 0.05
    depth_loss_weight: float = 0.0  # L1 on rendered vs sensor depth (metres) where valid
    # bookkeeping
    output_dir: str = "runs/sray"
    log_every: int = 10
    val_every: int = 500
    val_batches: int = 8
    # best.pt keeps the checkpoint with the highest validation ray mIoU ("val_miou") or lowest loss
    # ("val_loss"); validation rooms must be held-out *training-split* rooms, never the test rooms
    select_metric: str = "val_miou"
    # how validation renders its rays ("" = as training; "depth_guided": at the rays' depth, as the node does
    # with RGB-D keyframes): set it when comparing runs trained with different samplings
    val_sampling: str = ""
    snapshot_every: int = 0  # also keep step_<N>.pt every N steps (learning curves); 0 = off
    checkpoint_every: int = 250
    device: str = "auto"

    def __post_init__(self) -> None:
        from sray_ros.model.samplers import SAMPLING_MODES

        if self.sampling not in SAMPLING_MODES:
            raise ValueError(f"sampling must be one of {SAMPLING_MODES}, got {self.sampling!r}")
        if not 0.0 <= self.depth_guided_fraction <= 1.0 or self.depth_perturb < 0 or self.depth_loss_weight < 0:
            raise ValueError("need 0 <= depth_guided_fraction <= 1, depth_perturb >= 0, depth_loss_weight >= 0")
        if not self.class_balance_power >= 0 or not self.class_balance_max_weight >= 1:
            raise ValueError("need class_balance_power >= 0 (0 = uniform) and class_balance_max_weight >= 1")
        if self.val_sampling and self.val_sampling not in SAMPLING_MODES:
            raise ValueError(f"val_sampling must be empty or one of {SAMPLING_MODES}, got {self.val_sampling!r}")
        if self.select_metric not in ("val_miou", "val_loss"):
            raise ValueError(f"select_metric must be val_miou or val_loss, got {self.select_metric!r}")
        if self.snapshot_every < 0:
            raise ValueError(f"snapshot_every must be >= 0, got {self.snapshot_every}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown training config key(s) {unknown}; known: {sorted(names)}")
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        with open(path) as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of training settings, got {type(data).__name__}")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def resolve_device(name: str):
    """The torch device for a device setting ("" / "auto": CUDA when available, else CPU). Raises ValueError
    with what was wrong and what is expected for a name torch does not know or a GPU that is not there."""
    import torch

    if name in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {name!r} is not a torch device (use cpu, cuda, cuda:N, or empty for automatic)") \
            from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but this torch ({torch.__version__}) sees no CUDA GPU; "
                             "use cpu, or leave it empty to pick automatically")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return device
