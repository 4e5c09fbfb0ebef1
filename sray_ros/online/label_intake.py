"""Label images at keyframe intake: a 2D segmenter's class ids -> the node's label set, and the segmenter's
per-pixel confidence. Plain Python (no rclpy): the node's intake edge decodes the messages and calls
:meth:`LabelIntake.convert` / :meth:`LabelIntake.check_confidence` before a frame becomes a keyframe.

* **Label map** (the node's ``label_map`` parameter, :mod:`sray_ros.data.label_map`): each id of the label image
  (mono8 / mono16) is converted through the map, so a segmenter trained on ADE20K-150, COCO-panoptic-133 or
  NYU40 can be plugged in directly. Without a map the ids must already be the label set's (0..K-1).
* **Unknown ids are counted, never a reason to drop the frame**: an id the map does not know (not in its
  ``source_classes``) or, without a map, an id outside the label set becomes 255 (unknown: no vote, no
  training signal) and is counted in :attr:`LabelIntake.unknown_pixels` / ``unknown_frames`` (the node's
  ``NodeStatus.label_unknown_pixels`` / ``label_unknown_frames``) with a warning naming the ids. 255 on the wire
  is unknown already and not counted (unless the map lists 255 as a source class: then the map decides).
* **Confidence** (``labels/confidence``, 32FC1, stamped like the labels, the label image's size, values in
  [0, 1]): each pixel's value weights that pixel's vote in label fusion (0 = no vote,
  :func:`sray_ros.model.label_transfer.label_distribution_maps`). A confidence image that breaks any of these
  (another encoding, another size or optical frame than the label image, NaN or inf, a value outside [0, 1],
  e.g. logits or percent) is **ignored for that frame**: its labels vote with weight 1 as without a confidence
  topic, a warning says why, and it is counted in :attr:`LabelIntake.confidence_ignored`. The labels are still
  the segmenter's, so the frame is kept; numbers that are not probabilities would weight the votes arbitrarily.

Thread-safe: the keyframe worker converts while the parameter callback may swap the map (:meth:`use`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from sray_ros.data.label_map import LabelMap, load_label_map, resolve_label_map_path
from sray_ros.data.label_sets import IGNORE_INDEX, LabelSet, load_label_set
from sray_ros.online.intake import IntakeRejection


class LabelMapError(ValueError):
    """A ``label_map`` value the node cannot use; the message names the parameter, its value, the file and what
    is wrong with it."""


def _key(label_set: LabelSet) -> tuple[str, tuple[str, ...]]:
    return label_set.name, tuple(label_set.class_names)


@dataclass(frozen=True)
class BoundLabelMap:
    """A label map loaded for one label set: ``spec`` (the parameter's value: a shipped name or a path),
    ``path`` of its YAML, ``label_set`` (name, class names) its targets were resolved in, ``table``."""

    spec: str
    path: Path
    label_set: tuple[str, tuple[str, ...]]
    table: LabelMap


def _declared_label_set(path: Path) -> LabelSet:
    """The label set a map names as ``target_label_set`` (used while no model is loaded)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
        raise LabelMapError(f"{path}: not a readable YAML file ({exc})") from None
    name = data.get("target_label_set") if isinstance(data, dict) else None
    if not name:
        raise LabelMapError(f"{path}: no model is loaded and the map names no target_label_set, so its target "
                            "classes cannot be resolved to class ids; add target_label_set or load a model first")
    try:
        return load_label_set(str(name))
    except (FileNotFoundError, ValueError) as exc:
        raise LabelMapError(f"{path}: target_label_set {name!r}: {exc}") from None


class LabelIntake:
    """Label ids and confidence of keyframe candidates (policy in the module docstring). ``warn(message)`` is
    told of frames with unknown ids and of ignored confidence images, each kind at most once per
    ``warn_every_s`` (the counters count every one)."""

    def __init__(self, warn: Callable[[str], None] = lambda message: None, warn_every_s: float = 5.0) -> None:
        self._warn_to, self._warn_every_s = warn, float(warn_every_s)
        self._warned_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._map: BoundLabelMap | None = None
        self._failed: tuple[BoundLabelMap, tuple, str] | None = None  # a map that does not fit a new label set
        self.unknown_pixels = 0
        self.unknown_frames = 0
        self.confidence_ignored = 0

    def _warn(self, kind: str, message: str) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._warned_at.get(kind)
            if last is not None and now - last < self._warn_every_s:
                return
            self._warned_at[kind] = now
        self._warn_to(message)

    @staticmethod
    def prepare(spec: str, label_set: LabelSet | None) -> BoundLabelMap | None:
        """Load and check the map ``spec`` (a shipped map's name such as ``ade20k150_to_scannet20``, or a YAML
        path; empty = no map) against ``label_set`` (the model's; None without a model: the map's declared
        ``target_label_set``). Changes nothing; :meth:`use` applies the result. Raises :class:`LabelMapError`:
        missing file or unknown name, malformed YAML, source ids outside [0, 65535], a target that is no class
        of the label set, a map for another label set."""
        spec = str(spec).strip()
        if not spec:
            return None
        try:
            path = resolve_label_map_path(spec)
            if label_set is None:
                label_set = _declared_label_set(path)
            table = load_label_map(str(path), list(label_set.class_names), label_set.name)
        except (FileNotFoundError, ValueError) as exc:
            raise LabelMapError(f"parameter 'label_map' = {spec!r}: {exc}") from None
        return BoundLabelMap(spec, path, _key(label_set), table)

    def use(self, bound: BoundLabelMap | None) -> None:
        """Convert the label images of later frames with ``bound`` (None = ids of the label set, no map)."""
        with self._lock:
            self._map, self._failed = bound, None

    @property
    def spec(self) -> str:
        bound = self._map
        return "" if bound is None else bound.spec

    def _bound_for(self, label_set: LabelSet | None) -> BoundLabelMap | None:
        """The current map, re-resolved when the model's label set changed (``~/load_checkpoint``); raises
        :class:`IntakeRejection` ``bad_label_map`` when the map does not fit the new label set."""
        bound = self._map
        if bound is None or label_set is None or _key(label_set) == bound.label_set:
            return bound
        key = _key(label_set)
        failed = self._failed
        if failed is not None and failed[0] is bound and failed[1] == key:
            raise IntakeRejection("bad_label_map", failed[2])
        try:
            rebound = self.prepare(bound.spec, label_set)
        except LabelMapError as exc:
            detail = (f"label_map {bound.spec!r} does not fit the model's label set {label_set.name!r} ({exc}); set "
                      "label_map to a map for this label set, or to '' for label images in its ids")
            with self._lock:
                if self._map is bound:
                    self._failed = (bound, key, detail)
            raise IntakeRejection("bad_label_map", detail) from None
        with self._lock:
            if self._map is bound:
                self._map = rebound
        return rebound

    def convert(self, ids: np.ndarray, label_set: LabelSet | None) -> np.ndarray:
        """``uint8 [H, W]`` class ids of ``label_set`` (255 unknown) from a label image's ids ``[H, W]`` (uint8 or
        uint16, as sent). ``label_set`` None (no model) and no map: ids are kept (narrowed to 255 above it), as
        nothing can check them yet. Raises :class:`IntakeRejection` ``bad_label_map`` (see :meth:`_bound_for`)."""
        ids = np.asarray(ids)
        if ids.dtype not in (np.uint8, np.uint16):
            raise IntakeRejection("bad_labels", f"label ids must be uint8 or uint16 (mono8 / mono16), got {ids.dtype}")
        bound = self._bound_for(label_set)
        if bound is not None:
            labels = bound.table.lut[ids]
            unknown = ~bound.table.known[ids]
            against = f"the label map {bound.spec!r}"
        elif label_set is not None:
            inside = ids < label_set.num_classes
            labels = np.where(inside, ids, IGNORE_INDEX).astype(np.uint8)
            unknown = ~inside
            against = f"the label set {label_set.name!r} (0..{label_set.num_classes - 1}; no label_map)"
        else:
            return np.minimum(ids, IGNORE_INDEX).astype(np.uint8)
        unknown &= ids != IGNORE_INDEX
        if unknown.any():
            count = int(unknown.sum())
            values = [int(v) for v in np.unique(ids[unknown])[:5]]
            with self._lock:
                self.unknown_pixels += count
                self.unknown_frames += 1
            self._warn("unknown_ids", f"label image: {count} pixels with ids {values} that {against} does not know "
                                      f"set to {IGNORE_INDEX} (unknown); the frame is kept (counted in "
                                      "label_unknown_pixels)")
        return labels

    def check_confidence(self, values: np.ndarray | None, problem: str | None, labels_shape: tuple[int, ...],
                         same_frame: bool = True) -> np.ndarray | None:
        """The confidence ``float32 [H, W]`` to store with the labels, or None when it is ignored (policy in the
        module docstring): ``problem`` is the decoder's (wrong encoding), ``labels_shape`` the label image's
        ``(H, W)`` as sent, ``same_frame`` False when its optical frame is not the label image's."""
        if problem is None and values is not None:
            values = np.asarray(values, np.float32)
            if not same_frame:
                problem = "it is in another optical frame than the label image"
            elif values.shape != tuple(labels_shape):
                size = "x".join(str(n) for n in values.shape[::-1])
                problem = (f"it is {size}, the label image {labels_shape[1]}x{labels_shape[0]}; publish it at the "
                           "label image's size")
            elif not np.isfinite(values).all():
                problem = f"{int((~np.isfinite(values)).sum())} pixels are NaN or infinite"
            elif values.size and (values.min() < 0.0 or values.max() > 1.0):
                problem = (f"values span [{values.min():.3g}, {values.max():.3g}], outside [0, 1] (probabilities "
                           "expected, not logits or percent)")
        if problem is None:
            return values
        with self._lock:
            self.confidence_ignored += 1
        self._warn("confidence", f"labels/confidence ignored for this frame ({problem}); its labels vote with weight "
                                 "1 (counted in label_confidence_ignored)")
        return None

    def counters(self) -> dict[str, int | str]:
        with self._lock:
            return {"label_map": self.spec, "unknown_pixels": self.unknown_pixels,
                    "unknown_frames": self.unknown_frames, "confidence_ignored": self.confidence_ignored}


__all__ = ["BoundLabelMap", "LabelIntake", "LabelMapError"]
