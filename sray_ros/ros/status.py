"""The node's status: intake counters and their aggregation into ``NodeStatus``, ``/diagnostics`` and ``LabelInfo``.

:class:`IntakeStats` is plain Python (thread-safe counters the intake and render paths update);
:func:`node_status` folds them with the keyframe buffer's, the synchroniser's and the fine-tuner's state into one
``sray_ros/NodeStatus``: reject reasons with counts (a colour frame whose camera_info never came counts as
``missing_camera_info``, frames shed under overload as ``intake_overflow``), the input rate over the last 5 s and
the resident memory.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import ColorRGBA

from sray_ros.data.label_sets import IGNORE_INDEX, LabelSet
from sray_ros.msg import LabelInfo, NodeStatus

RATE_WINDOW_S = 5.0


class IntakeStats:
    """Counters of the node's intake and render paths (thread-safe): frames received, rejections by reason,
    colour arrival times (for the input rate), renders served and the last render time."""

    def __init__(self, reasons: tuple[str, ...]) -> None:
        self._lock = threading.Lock()
        self.rejected = {reason: 0 for reason in reasons}
        self.frames_received = 0
        self.renders_served = 0
        self.last_render_time_s = 0.0
        self._arrivals: deque[float] = deque(maxlen=200)
        self._last_color_stamp_ns: int | None = None

    def reject(self, reason: str) -> None:
        with self._lock:
            self.rejected[reason] += 1

    def color_received(self, stamp_ns: int, now: float | None = None) -> bool:
        """Count a colour image; True when it repeats the previous colour image's stamp."""
        with self._lock:
            self.frames_received += 1
            self._arrivals.append(time.monotonic() if now is None else now)
            repeated, self._last_color_stamp_ns = stamp_ns == self._last_color_stamp_ns, stamp_ns
        return repeated

    def forget_last_stamp(self) -> None:
        """After a backwards time jump: the new timeline may repeat an old stamp."""
        with self._lock:
            self._last_color_stamp_ns = None

    def render_served(self, seconds: float) -> None:
        with self._lock:
            self.renders_served += 1
            self.last_render_time_s = float(seconds)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"rejected": dict(self.rejected), "arrivals": list(self._arrivals),
                    "frames_received": self.frames_received, "renders_served": self.renders_served,
                    "last_render_time_s": self.last_render_time_s}


def input_rate_hz(arrivals: list[float], now: float, window_s: float = RATE_WINDOW_S) -> float:
    """Colour frames per second over the last ``window_s`` (0 with fewer than two arrivals)."""
    recent = [t for t in arrivals if now - t <= window_s]
    if len(recent) > 1 and recent[-1] > recent[0]:
        return (len(recent) - 1) / (recent[-1] - recent[0])
    return 0.0


def resident_memory_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def node_status(stats: dict[str, Any], keyframes, keyframe_counters: dict[str, Any], sync_counters: dict[str, Any],
                shed: int, fine_tune, handle, device: str, labels: dict[str, Any] | None = None) -> NodeStatus:
    """``NodeStatus`` from :meth:`IntakeStats.snapshot`, the keyframe snapshot and counters, the synchroniser's
    counters, frames shed by the intake queues, the fine-tuner's state, the model handle (None = no model) and
    the label intake's counters (:meth:`sray_ros.online.label_intake.LabelIntake.counters`).
    The header is left for the caller to stamp."""
    reasons = dict(keyframe_counters["rejected"])
    reasons.update(stats["rejected"])
    reasons["missing_camera_info"] = sync_counters["dropped"].get("color", {}).get("no_match", 0)
    reasons["intake_overflow"] = sum(d.get("queue_overflow", 0) for d in sync_counters["dropped"].values()) + shed
    msg = NodeStatus()
    msg.keyframe_count = len(keyframes)
    msg.keyframe_ids = [kf.id for kf in keyframes]
    msg.labelled_keyframe_count = sum(kf.frame.labels is not None for kf in keyframes)
    msg.frames_received = stats["frames_received"]
    msg.frames_accepted = sum(keyframe_counters["accepted"].values())
    msg.reject_reasons = list(reasons)
    msg.reject_counts = [int(v) for v in reasons.values()]
    msg.frames_rejected = int(sum(reasons.values()))
    msg.input_rate_hz = float(input_rate_hz(stats["arrivals"], time.monotonic()))
    if labels is not None:
        msg.label_map = str(labels["label_map"])
        msg.label_unknown_pixels = int(labels["unknown_pixels"])
        msg.label_unknown_frames = int(labels["unknown_frames"])
        msg.label_confidence_ignored = int(labels["confidence_ignored"])
    msg.checkpoint = handle.source if handle else ""
    msg.device = device
    msg.label_set = handle.label_set.name if handle else ""
    msg.fine_tune_state = fine_tune.state
    msg.fine_tune_step = int(fine_tune.step)
    msg.renders_served = stats["renders_served"]
    msg.last_render_time_s = float(stats["last_render_time_s"])
    msg.resident_memory_mb = resident_memory_mb()
    return msg


def diagnostics(msg: NodeStatus, name: str) -> DiagnosticArray:
    """``/diagnostics`` for a ``NodeStatus``: ERROR without a model, WARN without keyframes, else OK."""
    level = DiagnosticStatus.OK
    summary = f"{msg.keyframe_count} keyframes, {msg.renders_served} renders"
    if not msg.checkpoint:
        level, summary = DiagnosticStatus.ERROR, "no model loaded"
    elif msg.keyframe_count == 0:
        level, summary = DiagnosticStatus.WARN, "no keyframes yet"
    values = {"keyframes": msg.keyframe_count, "labelled_keyframes": msg.labelled_keyframe_count,
              "input_rate_hz": f"{msg.input_rate_hz:.2f}",
              "frames_received": msg.frames_received, "frames_accepted": msg.frames_accepted,
              "last_render_time_s": f"{msg.last_render_time_s:.3f}", "fine_tune_state": msg.fine_tune_state,
              "device": msg.device, "checkpoint": msg.checkpoint, "label_map": msg.label_map,
              "label_unknown_pixels": msg.label_unknown_pixels, "label_unknown_frames": msg.label_unknown_frames,
              "label_confidence_ignored": msg.label_confidence_ignored,
              "resident_memory_mb": f"{msg.resident_memory_mb:.0f}"}
    values.update({f"rejected/{r}": c for r, c in zip(msg.reject_reasons, msg.reject_counts)})
    status = DiagnosticStatus(level=level, name=f"{name}: sray", message=summary, hardware_id=msg.device,
                              values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
    return DiagnosticArray(header=msg.header, status=[status])


def label_info(label_set: LabelSet) -> LabelInfo:
    """The latched ``~/label_info``: class names and display colours of the model's label set."""
    msg = LabelInfo(name=label_set.name, class_names=list(label_set.class_names), ignore_id=IGNORE_INDEX)
    msg.class_colors = [ColorRGBA(r=c[0] / 255.0, g=c[1] / 255.0, b=c[2] / 255.0, a=1.0) for c in label_set.colors]
    return msg


__all__ = ["IntakeStats", "diagnostics", "input_rate_hz", "label_info", "node_status"]
