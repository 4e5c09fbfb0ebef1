"""The keyframe worker of the node: matched sets -> wait for the pose -> decode and register -> keyframe buffer.

Runs on one :class:`~sray_ros.online.sync.SheddingWorker` thread. A matched set waits for its pose in a
:class:`~sray_ros.online.intake.TransformWait` (retried as transforms arrive, each until its own
``tf_timeout_s``), so one unresolvable frame never holds up the frames behind it. A frame whose pose is there is
prechecked (time and motion, before any decoding), decoded and registered (:mod:`sray_ros.ros.intake_edge`,
policy in :mod:`sray_ros.online.intake`) and offered to the :class:`~sray_ros.online.keyframes.KeyframeBuffer`.

:meth:`KeyframeIntake.clear` (``~/clear_keyframes``, a backwards time jump) bumps an epoch under a lock: a frame
being handled meanwhile is dropped instead of landing in the cleared buffer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from sray_ros.data.label_sets import LabelSet
from sray_ros.online.intake import IntakeRejection, TransformWait
from sray_ros.online.label_intake import LabelIntake
from sray_ros.online.keyframes import Frame, KeyframeBuffer
from sray_ros.online.sync import MatchedSet, SheddingWorker
from sray_ros.ros.intake_edge import frame_from_matched
from sray_ros.ros.tf_buffer import LoopError, TransformBuffer

# Matched frame sets that may wait for the keyframe worker before the oldest is shed. A live camera
# (SensorDataQoS) gets a short queue: the freshest frames matter and older ones are stale. Reliable
# subscriptions (bag replay) mean every frame is wanted, so the queue only bounds memory.
KEYFRAME_QUEUE_LIVE = 4
KEYFRAME_QUEUE_RELIABLE = 64


class KeyframeIntake:
    """``pose_of(matched) -> c2w`` (raises while the transform is missing); ``reject(reason, detail)`` counts a
    rejection; ``labels`` converts label images (label map, unknown ids counted, confidence checked) into
    ``label_set()``, the model's label set (None without a model); ``note(notes)`` logs camera_info
    notes; ``accepted(frame)`` is told of each new keyframe; ``tf_timeout_s()`` is read per frame;
    ``is_current(stamp_ns)`` False drops a set of the timeline before a backwards time jump."""

    def __init__(self, tf: TransformBuffer, keyframes: KeyframeBuffer, capacity: int,
                 pose_of: Callable[[MatchedSet], np.ndarray], reject: Callable[[str, str], None],
                 labels: LabelIntake, label_set: Callable[[], LabelSet | None],
                 note: Callable[[tuple[str, ...]], None],
                 accepted: Callable[[Frame], None], tf_timeout_s: Callable[[], float],
                 is_current: Callable[[int], bool], on_error: Callable[[BaseException], None]) -> None:
        self.tf, self.keyframes = tf, keyframes
        self._pose_of, self._reject, self._note = pose_of, reject, note
        self.labels, self._label_set = labels, label_set
        self._accepted, self._tf_timeout_s, self._is_current = accepted, tf_timeout_s, is_current
        self._on_error = on_error
        self.waiting = TransformWait(capacity, permanent=lambda exc: isinstance(exc, LoopError))
        self.worker = SheddingWorker(self._on_matched, capacity, on_error, name="sray_keyframes",
                                     on_wake=self.resolve_waiting)
        self._clear_lock = threading.Lock()
        self._epoch = 0

    @property
    def shed(self) -> int:
        """Matched sets shed under overload (worker queue and frames waiting for a pose)."""
        return self.worker.shed + self.waiting.shed

    def start(self) -> None:
        self.worker.start()

    def close(self) -> None:
        self.worker.close()

    def submit(self, matched: MatchedSet) -> None:
        """The synchroniser's callback: queue a matched set for the worker (the oldest is shed when full)."""
        self.worker.put(matched)

    def transforms_arrived(self) -> None:
        """New transforms: frames waiting for their pose are tried again on the worker thread."""
        if len(self.waiting):
            self.worker.poke()

    def clear(self, also: Callable[[], None] = lambda: None) -> int:
        """Drop the keyframes and every frame in flight (``also`` runs under the same lock); returns how many
        keyframes were dropped."""
        with self._clear_lock:
            self._epoch += 1
            self.worker.clear()
            self.waiting.clear()
            also()
            count = len(self.keyframes)
            self.keyframes.clear()
        return count

    def _on_matched(self, matched: MatchedSet) -> None:
        if self._is_current(matched.stamp_ns):
            self.waiting.add(matched, time.monotonic() + self._tf_timeout_s())

    def resolve_waiting(self) -> float | None:
        """Handle every waiting frame whose pose is there, give up those past their deadline; returns the
        seconds until the next deadline (the worker wakes then, or when transforms arrive)."""
        with self._clear_lock:
            epoch = self._epoch
        resolved, given_up, wait = self.waiting.resolve(self._pose_of, time.monotonic())
        for _, exc in given_up:
            self._reject("missing_tf", str(exc))
        for matched, c2w in resolved:
            self._on_posed(matched, c2w, epoch)
        return wait

    def _on_posed(self, matched: MatchedSet, c2w: np.ndarray, epoch: int) -> None:
        # Pose, time and motion first: most frames of a slow camera are not keyframe candidates, and decoding a
        # full image for them would dominate intake. Under the lock: a frame of a timeline cleared meanwhile
        # must not set the buffer's clock.
        with self._clear_lock:
            if epoch != self._epoch:
                return
            candidate, _ = self.keyframes.precheck(matched.stamp_ns, c2w)
        if not candidate:
            return
        # Per-pixel streams in another optical frame: TF at the frame's stamp, no wait (its pose resolved).
        lookup = lambda target, source: self.tf.lookup_transform(target, source, matched.stamp_ns)  # noqa: E731
        try:
            frame = frame_from_matched(matched, c2w, self.labels, self._label_set(), lookup, self._note)
        except IntakeRejection as exc:
            self._reject(exc.reason, exc.detail)
            return
        with self._clear_lock:  # a clear waits for this frame, or this frame sees the clear
            if epoch != self._epoch:
                return
            accepted, reason = self.keyframes.consider(frame)
        if not accepted and reason == "encode_failed":  # counted by the buffer; the error is logged
            self._on_error(RuntimeError(f"keyframe encoding failed: {self.keyframes.last_encode_error}"))
        if accepted:
            self._accepted(frame)


__all__ = ["KEYFRAME_QUEUE_LIVE", "KEYFRAME_QUEUE_RELIABLE", "KeyframeIntake"]
