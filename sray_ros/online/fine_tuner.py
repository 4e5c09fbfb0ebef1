"""Background fine-tuning on the node's keyframes (plain Python; the node's action server drives it).

Keyframes with labels supervise semantics and colour (their labels pooled as the renderer pools them, pixels
of segmenter confidence 0 left out); those without contribute colour only. A few
labelled keyframes are held out (never trained on) to report ``holdout_miou``: each is rendered from the
training keyframes with the fine-tuned weights (the model's own labels, keyframe labels not fused in) and
compared with its labels. The fine-tuned model is a
copy; the caller swaps it into the :class:`~sray_ros.online.renderer.Renderer` only on success, so renders
during fine-tuning keep using the old weights.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from sray_ros import geometry
from sray_ros.data.label_sets import IGNORE_INDEX, LabelSet, as_label_set
from sray_ros.data.scene import SceneArrays
from sray_ros.model.sray import SRay
from sray_ros.online.keyframes import Keyframe
from sray_ros.online.renderer import RenderRequest, Renderer
from sray_ros.train.finetune import FINE_TUNE_LR, fine_tune
from sray_ros.train.metrics import ConfusionMatrix
from sray_ros.train.trainer import StepStats


# Ceiling of a goal's learning_rate: 10x the pretraining peak (1e-3), 20x the fine-tuning default. A goal
# of 1e6 turned every weight NaN within 5 steps; such goals are refused instead of run.
MAX_LEARNING_RATE = 1e-2


class FineTuneError(RuntimeError):
    """Fine-tuning cannot start; the message says why."""


@dataclass
class FineTuneGoal:
    max_steps: int = 300
    max_duration_s: float = 0.0  # 0 = no limit
    learning_rate: float = 0.0  # 0 = default
    keyframe_ids: list[int] = field(default_factory=list)  # empty = all
    num_rays: int = 512
    num_sources: int = 8
    max_holdout: int = 2
    holdout_scale: float = 0.5  # held-out keyframes are scored at this fraction of their size (render cost)


SUCCEEDED, CANCELED, FAILED = "succeeded", "canceled", "failed"


@dataclass
class FineTuneOutcome:
    """What one fine-tuning run produced. ``model`` is None when the run failed before or while training
    (nothing was swapped in or saved then)."""

    model: SRay | None
    steps_done: int
    final_loss: float
    holdout_miou: float  # negative when no labelled keyframe was held out
    holdout_ids: list[int]
    stopped_early: bool
    status: str = SUCCEEDED  # SUCCEEDED, CANCELED or FAILED
    message: str = ""
    checkpoint_path: str = ""  # where the fine-tuned weights were saved ("" = not saved)

    @property
    def success(self) -> bool:
        return self.status == SUCCEEDED

    @classmethod
    def failed(cls, message: str, steps_done: int = 0, final_loss: float = float("nan"),
               status: str = FAILED) -> FineTuneOutcome:
        return cls(None, steps_done, final_loss, -1.0, [], True, status, message)


def split_holdout(keyframes: list[Keyframe], max_holdout: int) -> tuple[list[Keyframe], list[Keyframe]]:
    """Hold out every 4th labelled keyframe (at most ``max_holdout``), keeping >= 2 for training."""
    labelled = [kf for kf in keyframes if kf.frame.labels is not None]
    held = labelled[2::4][:max_holdout] if len(labelled) >= 4 else []
    held_ids = {kf.id for kf in held}
    train = [kf for kf in keyframes if kf.id not in held_ids]
    return train, held


def keyframes_to_scene(keyframes: list[Keyframe], ignore_index: int = IGNORE_INDEX,
                       labels_of: Callable[[Keyframe], np.ndarray | None] | None = None) -> SceneArrays:
    """Stack keyframes (same size and intrinsics) into the in-memory scene the training loop samples.
    ``labels_of(keyframe)``: the labels it trains on (``uint8 [H, W]``, 255 = none; None = unlabelled), by
    default its label image as received; the node passes :meth:`Renderer.stored_labels` (pooled, pixels of
    segmenter confidence 0 left out)."""
    labels_of = labels_of or (lambda kf: kf.frame.labels)
    first = keyframes[0].frame
    h, w = first.rgb.shape[:2]
    for kf in keyframes:
        if kf.frame.rgb.shape[:2] != (h, w):
            raise FineTuneError(f"keyframe {kf.id} is {kf.frame.rgb.shape[1]}x{kf.frame.rgb.shape[0]}, "
                                f"keyframe {keyframes[0].id} is {w}x{h}: fine-tuning needs one image size")
        if not np.allclose(kf.frame.K, first.K, rtol=1e-3, atol=1e-3):
            raise FineTuneError(f"keyframe {kf.id} has other intrinsics than keyframe {keyframes[0].id}: "
                                "fine-tuning needs one camera")
    colors = np.stack([kf.frame.rgb for kf in keyframes])
    stacked = []
    for kf in keyframes:
        labels = labels_of(kf)
        stacked.append(np.full((h, w), ignore_index, np.uint8) if labels is None else np.asarray(labels, np.uint8))
    labels = np.stack(stacked)
    with_depth = all(kf.frame.depth is not None for kf in keyframes)
    depths = np.stack([kf.frame.depth for kf in keyframes]).astype(np.float32) if with_depth else None
    near, far = 0.1, 10.0
    if depths is not None and np.any(depths > 0):
        lo, hi = np.percentile(depths[depths > 0], [0.5, 99.5])
        near, far = max(0.05, 0.8 * float(lo)), 1.2 * float(hi)
    K = np.asarray(first.K, np.float32)
    return SceneArrays(name="keyframes", frame_ids=np.array([kf.id for kf in keyframes]), colors=colors,
                       depths=depths, labels=labels, poses=np.stack([kf.c2w for kf in keyframes]).astype(np.float32),
                       intrinsics=K, intrinsics_depth=K, near=near, far=far, ignore_index=ignore_index)


def holdout_miou(renderer: Renderer, model: SRay, label_set: LabelSet | dict, train: list[Keyframe], held: list[Keyframe],
                 num_sources: int, scale: float = 1.0) -> float:
    """mIoU (dataset-level over the held-out keyframes) of ``model`` rendering them from ``train``, at
    ``scale`` times their size (labels resized with :func:`geometry.resize_nearest`, as the readers do).
    The model's own labels are scored (the training keyframes' labels are not fused in): fine-tuning changes
    the model, and fused labels would mostly repeat the training keyframes' labels whatever the weights. The
    held-out keyframes' labels are scored as ``renderer`` stores them (:meth:`Renderer.stored_labels`: pooled,
    confidence-0 pixels left out), the same labels the training keyframes supervise with."""
    if not held:
        return -1.0
    probe = Renderer(device=str(renderer.device), num_source_views=num_sources, opacity_threshold=0.0,
                     chunk=renderer.chunk, max_pixels=10**9, use_keyframe_labels=False, label_pooling=None)
    probe.swap(model, label_set, "holdout probe")
    label_set = as_label_set(label_set)
    cm = ConfusionMatrix(label_set.num_classes, label_set.ignore_index)
    for kf in held:
        h0, w0 = kf.frame.rgb.shape[:2]
        w, h = max(8, round(w0 * scale)), max(8, round(h0 * scale))
        K = geometry.scale_intrinsics(np.asarray(kf.frame.K, np.float64), w / w0, h / h0)
        result = probe.render(tuple(train), RenderRequest(kf.c2w, K, w, h, num_sources))
        target = renderer.stored_labels(kf)
        cm.update(result.raw_labels, geometry.resize_nearest(target, w, h))
    value = cm.miou()
    return float(value) if np.isfinite(value) else 0.0


class FineTuneJob:
    """One fine-tuning run on a snapshot of keyframes; :meth:`run` blocks (call it from a worker thread)."""

    def __init__(self, renderer: Renderer, keyframes: tuple[Keyframe, ...], goal: FineTuneGoal) -> None:
        handle = renderer.handle
        if handle is None:
            raise FineTuneError("no model loaded: nothing to fine-tune")
        selected = list(keyframes)
        if goal.keyframe_ids:
            by_id = {kf.id: kf for kf in keyframes}
            unknown = sorted(set(goal.keyframe_ids) - set(by_id))
            if unknown:
                raise FineTuneError(f"unknown keyframe ids {unknown}; the buffer holds {sorted(by_id)}")
            selected = [by_id[i] for i in goal.keyframe_ids]
        if len(selected) < 2:
            raise FineTuneError(f"fine-tuning needs at least 2 keyframes, the buffer holds {len(selected)}")
        if goal.max_steps <= 0:
            raise FineTuneError("max_steps must be positive")
        lr = goal.learning_rate
        if not (lr == 0 or (math.isfinite(lr) and 0 < lr <= MAX_LEARNING_RATE)):
            raise FineTuneError(f"learning_rate {lr:g} is outside (0, {MAX_LEARNING_RATE:g}] (0 = the default "
                                f"{FINE_TUNE_LR:g})")
        num_classes = handle.label_set.num_classes
        for kf in selected:
            labels = kf.frame.labels
            if labels is not None and np.any((labels >= num_classes) & (labels != IGNORE_INDEX)):
                bad = sorted(set(np.unique(labels[(labels >= num_classes) & (labels != IGNORE_INDEX)]).tolist()))
                raise FineTuneError(f"keyframe {kf.id} has label ids {bad[:5]} outside the label set "
                                    f"'{handle.label_set.name}' (0..{num_classes - 1}, {IGNORE_INDEX} = unknown)")
        self.renderer, self.goal, self.handle = renderer, goal, handle
        self.train, self.held = split_holdout(selected, goal.max_holdout)
        self.scene = keyframes_to_scene(self.train, handle.label_set.ignore_index, renderer.stored_labels)
        self.stop = threading.Event()

    def run(self, on_step: Callable[[StepStats], None] | None = None) -> FineTuneOutcome:
        goal = self.goal
        result = fine_tune(self.handle.model, self.handle.label_set.to_dict(), self.scene, goal.max_steps,
                           lr=goal.learning_rate or FINE_TUNE_LR, stop=self.stop,
                           max_duration_s=goal.max_duration_s or None, on_step=on_step, num_rays=goal.num_rays,
                           num_sources=goal.num_sources, device=self.renderer.device)
        miou = -1.0
        if not self.stop.is_set():
            miou = holdout_miou(self.renderer, result.model, self.handle.label_set, self.train, self.held,
                                goal.num_sources, goal.holdout_scale)
        return FineTuneOutcome(result.model, result.steps_done, result.final_loss, miou, [kf.id for kf in self.held],
                               result.stopped_early)
