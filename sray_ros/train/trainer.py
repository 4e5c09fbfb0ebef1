"""The training loop shared by pretraining (``sray-train``), per-scene fine-tuning (``sray-finetune``) and
the ROS node's background fine-tuning.

One optimisation step: encode the batch's source views, cast the query rays, render them (stratified
coarse samples + importance-sampled fine samples, or depth-guided samples around the rays' perturbed
ground-truth depth) and minimise ``0.5 CE + 0.5 MSE`` (paper defaults, plus an optional L1 depth term) on
the rendered passes. Multi-process training (``torchrun``) wraps the step in
:class:`~torch.nn.parallel.DistributedDataParallel`, so gradients are all-reduced the standard way; the
same code runs on CPU with the gloo backend.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from sray_ros import geometry
from sray_ros.data.label_sets import IGNORE_INDEX
from sray_ros.data.ray_batch import RayBatch
from sray_ros.model.render import render_rays
from sray_ros.model.sray import SRay
from sray_ros.train.checkpoint import load_checkpoint, save_checkpoint
from sray_ros.train.losses import sray_loss
from sray_ros.train.metrics import ConfusionMatrix


class TrainingStep(nn.Module):
    """One forward = one batch's losses, so DistributedDataParallel can wrap the whole step."""

    def __init__(self, model: SRay, chunk: int = 4096, depth_perturb: float = 0.05,
                 depth_loss_weight: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.chunk = chunk
        self.depth_perturb = depth_perturb
        self.depth_loss_weight = depth_loss_weight

    def forward(self, batch: RayBatch, perturb: bool = True, depth_guided: bool = False,
                ) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
        """Losses of one batch: (total, semantic, colour, final-pass logits (detached), depth L1 or None).

        ``depth_guided``: sample around the query rays' ground-truth depth (``batch.depths``); with
        ``perturb`` the band centre gets a relative N(0, depth_perturb) error and the band width a random
        confidence in [0, 1]; without it (validation) the exact depth with confidence 1.
        """
        model = self.model
        # source depth feeds only the semantic prior's geometry cues (models with a prior net)
        depths = batch.source_depths if model.semantic_prior is not None else None
        if depths is not None and tuple(depths.shape[-2:]) != tuple(batch.source_images.shape[-2:]):
            depths = None  # depth of another resolution/camera: no cues rather than misaligned ones
        sources = model.encode_sources(batch.source_images, batch.source_K, batch.source_c2w, depths)
        rays_o, rays_d = geometry.generate_rays(batch.query_K, batch.query_c2w, batch.uv)
        if depth_guided:
            gt = batch.depths
            target, confidence = gt, torch.ones_like(gt)
            if perturb:
                target = gt * (1.0 + self.depth_perturb * torch.randn_like(gt)).clamp_min(0.5)
                confidence = torch.rand_like(gt)
            target = torch.where(geometry.valid_depth(gt), target, torch.zeros_like(gt))
            result = render_rays(model, sources, rays_o, rays_d, batch.near, batch.far, chunk=self.chunk,
                                 perturb=perturb, sampling="depth_guided", target_depth=target,
                                 target_confidence=confidence)
        else:
            result = render_rays(model, sources, rays_o, rays_d, batch.near, batch.far, chunk=self.chunk,
                                 perturb=perturb, coarse_semantics=True, sampling="hierarchical")
        cfg = model.cfg
        loss = sray_loss(result, batch.labels, batch.colors, cfg.semantic_loss_weight, cfg.rgb_loss_weight,
                         batch.ignore_index, depth=batch.depths, depth_weight=self.depth_loss_weight)
        logits = result.best.logits
        return loss.total, loss.semantic, loss.rgb, None if logits is None else logits.detach(), loss.depth


def exponential_lr(lr: float, lr_final: float, max_steps: int) -> Callable[[int], float]:
    """Multiplier for LambdaLR: ``lr -> lr_final`` exponentially over ``max_steps`` (constant after)."""
    ratio = lr_final / lr if lr > 0 else 1.0
    return lambda step: ratio ** (min(step, max_steps) / max(max_steps, 1))


@dataclass
class StepStats:
    step: int
    loss: float
    semantic_loss: float
    color_loss: float
    lr: float
    seconds: float
    depth_loss: float = math.nan  # L1 metres (nan when the depth loss is off)
    depth_guided: bool = False


class Trainer:
    """Owns model, optimiser, schedule and step count; saves and resumes all of it.

    ``batches`` is any iterator of :class:`RayBatch` (e.g. :class:`~sray_ros.data.ray_batch.RayBatchSampler`);
    if it has an ``rng`` attribute (a numpy Generator) its state is checkpointed too, so a resumed run
    draws the same batches as an uninterrupted one.
    """

    def __init__(self, model: SRay, label_set: dict[str, Any], batches: Iterator[RayBatch] | Any,
                 lr: float = 1e-3, lr_final: float = 5e-5, max_steps: int = 250_000, grad_clip: float = 1.0,
                 chunk: int = 4096, device: torch.device | str = "cpu", distributed: bool = False,
                 train_config: dict[str, Any] | None = None, sampling: str = "hierarchical",
                 depth_guided_fraction: float = 1.0, depth_perturb: float = 0.05,
                 depth_loss_weight: float = 0.0) -> None:
        """``sampling`` / ``depth_guided_fraction`` / ``depth_perturb`` / ``depth_loss_weight``: see
        :class:`~sray_ros.train.config.TrainConfig` (a step is depth-guided, with probability
        ``depth_guided_fraction``, when ``sampling`` is not ``"hierarchical"`` and the batch has valid depth)."""
        from sray_ros.model.samplers import SAMPLING_MODES

        if sampling not in SAMPLING_MODES:
            raise ValueError(f"sampling must be one of {SAMPLING_MODES}, got {sampling!r}")
        self.sampling = sampling
        self.depth_guided_fraction = depth_guided_fraction
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.label_set = label_set
        self.batches = batches
        self._batch_iter = iter(batches) if not hasattr(batches, "sample") else None
        self.max_steps = max_steps
        self.grad_clip = grad_clip
        self.train_config = train_config or {}
        step_module: nn.Module = TrainingStep(self.model, chunk, depth_perturb, depth_loss_weight)
        if distributed:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            step_module = DistributedDataParallel(step_module, device_ids=device_ids)
        self.step_module = step_module
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, exponential_lr(lr, lr_final, max_steps))
        self.step = 0
        self.best_val: float = math.inf
        self.history: list[dict[str, Any]] = []

    # -- one step ---------------------------------------------------------------------------------
    def _next_batch(self) -> RayBatch:
        batch = self.batches.sample() if self._batch_iter is None else next(self._batch_iter)
        return batch.to(self.device)

    def _use_depth_guidance(self, batch: RayBatch) -> bool:
        if self.sampling == "hierarchical" or not bool(geometry.valid_depth(batch.depths).any()):
            return False
        return self.depth_guided_fraction >= 1.0 or float(torch.rand(())) < self.depth_guided_fraction

    def train_step(self) -> StepStats:
        start = time.perf_counter()
        self.model.train()
        batch = self._next_batch()
        guided = self._use_depth_guidance(batch)
        total, semantic, color, _, depth = self.step_module(batch, depth_guided=guided)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return StepStats(self.step, float(total.detach()), float(semantic), float(color),
                         self.optimizer.param_groups[0]["lr"], time.perf_counter() - start,
                         math.nan if depth is None else float(depth), guided)

    @torch.no_grad()
    def evaluate_batches(self, batches: list[RayBatch], sampling: str | None = None) -> dict[str, float]:
        """Mean loss and ray-level semantic metrics on fixed batches (deterministic sampling).

        ``sampling``: how the query rays are rendered, ``"hierarchical"`` or depth-guided at the rays' exact
        depth (``"depth_guided"`` / ``"auto"``, where the batch has depth); default: the training sampling.
        Runs trained with different samplings are comparable only when validated with the same one.
        """
        from sray_ros.model.samplers import SAMPLING_MODES

        sampling = sampling or self.sampling
        if sampling not in SAMPLING_MODES:
            raise ValueError(f"sampling must be one of {SAMPLING_MODES}, got {sampling!r}")
        self.model.eval()
        cm = ConfusionMatrix(self.model.cfg.num_classes, ignore_index=batches[0].ignore_index if batches else IGNORE_INDEX)
        losses = []
        for batch in batches:
            batch = batch.to(self.device)
            module = getattr(self.step_module, "module", self.step_module)
            guided = sampling != "hierarchical" and bool(geometry.valid_depth(batch.depths).any())
            total, _, _, logits, _ = TrainingStep(self.model, self.step_module_chunk, module.depth_perturb,
                                                  module.depth_loss_weight)(batch, perturb=False, depth_guided=guided)
            losses.append(float(total))
            if logits is not None:
                cm.update(logits.argmax(-1).cpu(), batch.labels.cpu())
        out = {"val_loss": float(np.mean(losses)) if losses else math.nan}
        if cm.matrix.sum() > 0:
            out.update({"val_miou": cm.miou(), "val_acc": cm.total_accuracy()})
        return out

    @property
    def step_module_chunk(self) -> int:
        module = getattr(self.step_module, "module", self.step_module)
        return module.chunk

    # -- loop ---------------------------------------------------------------------------------------
    def run(self, num_steps: int, stop: threading.Event | None = None, max_duration_s: float | None = None,
            on_step: Callable[[StepStats], None] | None = None) -> int:
        """Run up to ``num_steps`` more steps (never past ``max_steps``); returns the steps done.

        Stops early, between steps, when ``stop`` is set or ``max_duration_s`` has passed.
        """
        start = time.monotonic()
        done = 0
        while done < num_steps and self.step < self.max_steps:
            if stop is not None and stop.is_set():
                break
            if max_duration_s is not None and max_duration_s > 0 and time.monotonic() - start >= max_duration_s:
                break
            stats = self.train_step()
            done += 1
            if on_step is not None:
                on_step(stats)
        return done

    # -- checkpoints ----------------------------------------------------------------------------------
    def save(self, path: str | Path, metrics: dict[str, Any] | None = None) -> Path:
        extra: dict[str, Any] = {
            "step": self.step,
            "best_val": self.best_val,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "train_config": json.loads(json.dumps(self.train_config)),
            "metrics": metrics or {},
        }
        rng = getattr(self.batches, "rng", None)
        if isinstance(rng, np.random.Generator):
            extra["batch_rng"] = json.dumps(rng.bit_generator.state)
        return save_checkpoint(path, self.model, self.label_set, extra)

    def resume(self, path: str | Path) -> None:
        """Restore weights, optimiser, schedule, step count and RNG state from a checkpoint of this run."""
        checkpoint = load_checkpoint(path, map_location=self.device)
        if checkpoint.config.to_dict() != self.model.cfg.to_dict():
            differing = sorted(k for k, v in checkpoint.config.to_dict().items() if self.model.cfg.to_dict().get(k) != v)
            raise ValueError(f"{path}: model config differs from this run's in {differing}")
        self.model.load_state_dict(checkpoint.model.state_dict())
        extra = checkpoint.extra
        if any(key not in extra for key in ("optimizer", "scheduler", "step")):
            raise ValueError(f"{path}: has no optimiser state / step (a model-only checkpoint cannot be resumed; "
                             "use it as --init instead)")
        self.optimizer.load_state_dict(extra["optimizer"])
        self.scheduler.load_state_dict(extra["scheduler"])
        self.step = int(extra["step"])
        self.best_val = float(extra.get("best_val", math.inf))
        if "torch_rng" in extra:
            torch.set_rng_state(extra["torch_rng"].cpu())
        rng = getattr(self.batches, "rng", None)
        if isinstance(rng, np.random.Generator) and "batch_rng" in extra:
            rng.bit_generator.state = json.loads(extra["batch_rng"])
