"""Backwards time jumps (a bag that loops or restarts, a simulator reset): the node's one detector.

Every stamp the node receives (images and camera_infos of every stream, dynamic /tf, and the /clock time on
sim time) goes through one :class:`TimeJumpDetector` *before* it is stored anywhere. Its verdict:

* ``"jump"``: the stamp is more than ``threshold_s`` older than the newest stamp seen so far. The caller clears
  every holder of old-timeline state (transforms, the synchroniser's queues, frames waiting for a pose, the
  keyframe worker's queue, keyframes) and *then* stores the message, so the new timeline's first message is
  kept whichever stream brought the jump.
* ``"stale"``: a message of the old timeline that arrived after the jump (DDS delivers streams independently:
  an old image may come after the new /clock or /tf). It lies more than ``threshold_s`` ahead of the new
  timeline and no later than the old timeline's newest stamp; storing it would make the next new-timeline
  stamp look like another jump and clear the new timeline's first frames. The caller drops it. Once the new
  timeline passes the old one's newest stamp nothing is stale any more.
* ``"ok"``: anything else. Small reorderings (within ``threshold_s``) are not jumps.

Thread-safe.
"""

from __future__ import annotations

import threading

NS_PER_S = 1_000_000_000
VERDICTS = ("ok", "jump", "stale")


class TimeJumpDetector:
    """Tracks the newest stamp (ns) and classifies each new one (module docstring)."""

    def __init__(self, threshold_s: float = 1.0) -> None:
        if not threshold_s > 0:
            raise ValueError(f"time-jump threshold must be > 0 s, got {threshold_s}")
        self.threshold_ns = int(round(threshold_s * NS_PER_S))
        self._newest: int | None = None
        self._old_newest: int | None = None  # the previous timeline's newest stamp, after a jump
        self._lock = threading.Lock()
        self.jumps = 0
        self.stale = 0

    def _classify(self, stamp_ns: int) -> str:
        newest = self._newest
        if newest is None:
            return "ok"
        if newest - stamp_ns > self.threshold_ns:
            return "jump"
        old = self._old_newest
        if old is not None and stamp_ns - newest > self.threshold_ns and stamp_ns <= old + self.threshold_ns:
            return "stale"
        return "ok"

    def classify(self, stamp_ns: int) -> str:
        """The verdict for ``stamp_ns`` without recording it."""
        with self._lock:
            return self._classify(int(stamp_ns))

    def observe(self, stamp_ns: int) -> str:
        """Record ``stamp_ns`` and return its verdict: ``"ok"``, ``"jump"`` (the new timeline starts at this
        stamp) or ``"stale"`` (not recorded)."""
        stamp_ns = int(stamp_ns)
        with self._lock:
            verdict = self._classify(stamp_ns)
            if verdict == "jump":
                self._old_newest = self._newest
                self._newest = stamp_ns
                self.jumps += 1
            elif verdict == "stale":
                self.stale += 1
            elif stamp_ns > self._newest if self._newest is not None else True:
                self._newest = stamp_ns
                if self._old_newest is not None and stamp_ns > self._old_newest + self.threshold_ns:
                    self._old_newest = None  # the new timeline has passed the old one
            return verdict

    def update(self, stamp_ns: int) -> bool:
        """:meth:`observe` as a bool: True for a backwards jump."""
        return self.observe(stamp_ns) == "jump"

    def reset(self) -> None:
        with self._lock:
            self._newest = self._old_newest = None


__all__ = ["TimeJumpDetector", "VERDICTS"]
