"""Backwards time jumps of message stamps (a bag that loops, a restarted simulation clock).

One rule for every consumer of stamps: a stamp more than ``threshold_s`` *older* than the newest stamp seen
so far is a backwards jump. Small reorderings (DDS delivers streams independently) are not jumps.
"""

from __future__ import annotations

import threading

NS_PER_S = 1_000_000_000


def is_backwards_jump(newest_ns: int | None, stamp_ns: int, threshold_ns: int) -> bool:
    """True when ``stamp_ns`` is more than ``threshold_ns`` older than ``newest_ns`` (None = nothing seen yet)."""
    return newest_ns is not None and newest_ns - stamp_ns > threshold_ns


class TimeJumpDetector:
    """Tracks the newest stamp (ns) and reports backwards jumps; thread-safe.

    After a jump the detector restarts from the jumped-to stamp, so a looping bag is one jump per loop.
    """

    def __init__(self, threshold_s: float = 1.0) -> None:
        if not threshold_s > 0:
            raise ValueError(f"time-jump threshold must be > 0 s, got {threshold_s}")
        self.threshold_ns = int(round(threshold_s * NS_PER_S))
        self._newest: int | None = None
        self._lock = threading.Lock()
        self.jumps = 0

    def update(self, stamp_ns: int) -> bool:
        """Record ``stamp_ns``; True when it is a backwards jump (the caller clears what the old time filled)."""
        with self._lock:
            newest = self._newest
            if is_backwards_jump(newest, stamp_ns, self.threshold_ns):
                self._newest = stamp_ns
                self.jumps += 1
                return True
            if newest is None or stamp_ns > newest:
                self._newest = stamp_ns
            return False

    def reset(self) -> None:
        with self._lock:
            self._newest = None
