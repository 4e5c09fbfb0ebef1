"""Pairing of messages from several named streams by header stamp (ApproximateTime-like), without ROS.

message_filters has no pip wheel, and its ApproximateTime cannot express "optional" inputs. This
synchroniser is driven by plain ``add(stream, stamp_ns, msg)`` calls (the node calls it from its
subscription callbacks), so tests need no ROS.

Policy (exact):

* The first required stream is the **pivot** (the colour image): at most one matched set is emitted
  per pivot message, stamped with the pivot's stamp, in pivot stamp order.
* For a pivot at stamp ``t`` and another stream ``S``, ``S``'s candidate is its queued message with
  the stamp closest to ``t``. The choice is **final** once ``S`` has delivered any stamp ``>= t``
  (stamps of one stream only increase, so no closer message can come). A final candidate matches
  when ``|stamp - t| <= slop``.
* Required streams: the pivot waits until every required stream's choice is final. Without a match
  in some required stream the pivot is dropped (reason ``no_match``). The wait is bounded by the
  pivot queue (``queue_size``): when it overflows, the oldest pivot is dropped (``queue_overflow``).
* Optional streams (depth, labels) that have never delivered a message do not block and appear as
  ``None``. Once seen, the pivot waits for a final choice at most ``optional_wait_s`` of *message
  time* (the newest stamp received on any stream minus ``t``), or until the pivot queue is full
  (so a low-rate labels stream cannot starve colour frames); then it is emitted with the best
  candidate found so far if it is within slop, else with ``None`` (counted as ``optional_missing``).
* Matched messages are consumed. Queued messages older than ``t - slop`` after a pivot is decided
  can never match a later pivot and are dropped (``unmatched``). Every queue holds at most
  ``queue_size`` messages (oldest dropped, ``queue_overflow``).
* A stamp older than the newest stamp of its stream is dropped as ``out_of_order``. Backwards time
  jumps (bag loop) are not this class's to detect: the owner's one
  :class:`~sray_ros.online.time_jump.TimeJumpDetector` sees every stamp first and calls :meth:`reset`.

Thread safety: ``add`` may be called from several executor threads; matching runs under a lock.
Callbacks run after it is released, one at a time and in decision order; when another thread is
already delivering, it also delivers the new sets (so a callback may run on the thread of another
stream's subscription). Callbacks may call ``add`` and ``counters``.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class MatchedSet:
    """One synchronised set: the pivot stamp and, per stream, the message and its stamp (None if absent)."""

    stamp_ns: int
    messages: Mapping[str, Any]
    stamps: Mapping[str, int | None]

    def __getitem__(self, stream: str) -> Any:
        return self.messages[stream]

    def get(self, stream: str, default: Any = None) -> Any:
        value = self.messages.get(stream)
        return default if value is None else value


class StampSynchronizer:
    """Pairs messages of required and optional streams by stamp within ``slop`` (see module docstring)."""

    def __init__(
        self,
        required: Sequence[str],
        optional: Sequence[str] = (),
        callback: Callable[[MatchedSet], None] | None = None,
        *,
        slop_s: float = 0.02,
        queue_size: int = 10,
        optional_wait_s: float = 0.5,
    ) -> None:
        if not required:
            raise ValueError("at least one required stream is needed (the first one is the pivot)")
        names = list(required) + list(optional)
        if len(set(names)) != len(names):
            raise ValueError(f"stream names must be unique, got {names}")
        if slop_s < 0 or queue_size < 1 or optional_wait_s < 0:
            raise ValueError(
                f"need slop_s >= 0, queue_size >= 1, optional_wait_s >= 0; got {slop_s}, {queue_size}, {optional_wait_s}"
            )
        self.required = tuple(required)
        self.optional = tuple(optional)
        self.pivot = self.required[0]
        self.callback = callback
        self.slop_ns = int(round(slop_s * NS_PER_S))
        self.queue_size = int(queue_size)
        self.optional_wait_ns = int(round(optional_wait_s * NS_PER_S))
        self._lock = threading.Lock()
        self._emit_lock = threading.Lock()
        self._pending: deque[MatchedSet] = deque()
        self._queues: dict[str, deque[tuple[int, Any]]] = {name: deque() for name in names}
        self._newest: dict[str, int | None] = {name: None for name in names}
        self._now_ns: int | None = None
        self.emitted = 0
        self.resets = 0
        self.dropped: dict[str, dict[str, int]] = {name: {} for name in names}
        self.optional_missing: dict[str, int] = {name: 0 for name in self.optional}

    # ----------------------------------------------------------------------------------- public
    def add(self, stream: str, stamp_ns: int, msg: Any) -> list[MatchedSet]:
        """Queue one message; returns the sets this call completed (also passed to the callback)."""
        if stream not in self._queues:
            raise KeyError(f"unknown stream {stream!r}; configured streams: {', '.join(self._queues)}")
        stamp_ns = int(stamp_ns)
        with self._lock:
            newest = self._newest[stream]
            if newest is not None and stamp_ns < newest:
                self._count(stream, "out_of_order")
                return []
            queue = self._queues[stream]
            queue.append((stamp_ns, msg))
            if len(queue) > self.queue_size:
                queue.popleft()
                self._count(stream, "queue_overflow")
            self._newest[stream] = stamp_ns
            self._now_ns = stamp_ns if self._now_ns is None else max(self._now_ns, stamp_ns)
            matched = self._process_locked()
            self.emitted += len(matched)
            if self.callback is not None:
                self._pending.extend(matched)
        if self.callback is not None and matched:
            self._deliver()
        return matched

    def _deliver(self) -> None:
        """Run callbacks for pending sets, in decision order, one thread at a time, without holding the state lock.

        A thread that finds another one delivering leaves its sets to it, so a callback may run on
        another subscription's thread; callbacks may call ``add`` or ``counters`` without deadlock.
        """
        while True:
            if not self._emit_lock.acquire(blocking=False):
                return
            try:
                while True:
                    with self._lock:
                        if not self._pending:
                            break
                        item = self._pending.popleft()
                    self.callback(item)
            finally:
                self._emit_lock.release()
            with self._lock:
                if not self._pending:
                    return

    def reset(self) -> None:
        """Forget all queued messages and which optional streams were seen (counters are kept); for a
        backwards time jump."""
        with self._lock:
            self._reset_locked()
            self.resets += 1

    def counters(self) -> dict[str, Any]:
        """Snapshot of the counters: emitted, resets, dropped[stream][reason], optional_missing."""
        with self._lock:
            return {
                "emitted": self.emitted,
                "resets": self.resets,
                "dropped": {name: dict(reasons) for name, reasons in self.dropped.items()},
                "optional_missing": dict(self.optional_missing),
                "queued": {name: len(queue) for name, queue in self._queues.items()},
            }

    # ---------------------------------------------------------------------------------- internal
    def _count(self, stream: str, reason: str, n: int = 1) -> None:
        self.dropped[stream][reason] = self.dropped[stream].get(reason, 0) + n

    def _reset_locked(self) -> None:
        for queue in self._queues.values():
            queue.clear()
        for name in self._newest:
            self._newest[name] = None
        self._now_ns = None
        # pending deliveries stay: they were decided before the reset

    def _process_locked(self) -> list[MatchedSet]:
        matched: list[MatchedSet] = []
        pivots = self._queues[self.pivot]
        while pivots:
            t, pivot_msg = pivots[0]
            # Optional streams stop blocking after optional_wait_s of message time, or when the pivot
            # queue is full (a low-rate labels stream must not make colour frames overflow).
            give_up_optional = self._now_ns - t > self.optional_wait_ns or len(pivots) >= self.queue_size
            choice: dict[str, tuple[int, Any] | None] = {}
            seen_but_missing: list[str] = []
            waiting = False
            no_match = False
            for stream in self.required[1:] + self.optional:
                optional = stream in self.optional
                newest = self._newest[stream]
                if newest is None:
                    if optional:
                        choice[stream] = None
                        continue
                    waiting = True
                    break
                queue = self._queues[stream]
                best = min(queue, key=lambda item: abs(item[0] - t)) if queue else None
                in_slop = best is not None and abs(best[0] - t) <= self.slop_ns
                final = newest >= t
                if not final:
                    if optional and give_up_optional:
                        final = True
                    else:
                        waiting = True
                        break
                if in_slop:
                    choice[stream] = best
                elif optional:
                    choice[stream] = None
                    seen_but_missing.append(stream)
                else:
                    no_match = True
            if waiting:
                break
            pivots.popleft()
            if no_match:
                self._count(self.pivot, "no_match")
            else:
                messages: dict[str, Any] = {self.pivot: pivot_msg}
                stamps: dict[str, int | None] = {self.pivot: t}
                for stream, item in choice.items():
                    if item is None:
                        messages[stream] = stamps[stream] = None
                    else:
                        queue = self._queues[stream]
                        # by identity: ROS messages compare field by field, which is slow for images
                        del queue[next(i for i, queued in enumerate(queue) if queued is item)]
                        stamps[stream], messages[stream] = item
                for stream in seen_but_missing:
                    self.optional_missing[stream] += 1
                matched.append(MatchedSet(t, messages, stamps))
            for stream, queue in self._queues.items():
                if stream == self.pivot:
                    continue
                stale = 0
                while queue and queue[0][0] < t - self.slop_ns:
                    queue.popleft()
                    stale += 1
                if stale:
                    self._count(stream, "unmatched", stale)
        return matched


__all__ = ["MatchedSet", "StampSynchronizer"]


class SheddingWorker:
    """One background thread that handles queued items in order; under overload the oldest waiting item is
    shed (counted in ``shed``), so a slow handler never blocks the producer (here: the subscription callbacks
    feeding the synchroniser, whose DDS queues would otherwise overwrite messages).

    ``handler(item)`` runs on the worker thread; an exception it raises is passed to ``on_error`` and the
    worker goes on with the next item. The standard library's queues either block the producer when full
    or (``deque(maxlen)``) drop silently without a count or a blocking ``get``, hence this small class.
    """

    def __init__(self, handler: Callable[[Any], None], capacity: int, on_error: Callable[[BaseException], None],
                 name: str = "shedding_worker", on_wake: Callable[[], float | None] | None = None) -> None:
        """``on_wake()`` (optional) runs on the worker thread after each item, after :meth:`poke` and when the
        time it returned last (seconds; None = no timeout) has passed: work that waits for something other
        than new items (here: frames waiting for their transform)."""
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.shed = 0
        self._handler, self._on_error, self._on_wake = handler, on_error, on_wake
        self._poked = False
        self._items: deque = deque()
        self._cv = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, item: Any) -> None:
        with self._cv:
            if len(self._items) >= self.capacity:
                self._items.popleft()  # keep the freshest
                self.shed += 1
            self._items.append(item)
            self._cv.notify()

    def poke(self) -> None:
        """Run ``on_wake`` soon on the worker thread (e.g. a transform arrived that waiting frames need)."""
        with self._cv:
            self._poked = True
            self._cv.notify()

    def clear(self) -> None:
        """Forget the items not yet handled (not counted as shed); the one being handled finishes."""
        with self._cv:
            self._items.clear()

    def pending(self) -> int:
        with self._cv:
            return len(self._items)

    def close(self, timeout: float = 5.0) -> None:
        """Stop after the item being handled (waiting items are dropped); joins the thread."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        timeout: float | None = None
        while True:
            with self._cv:
                if not self._items and not self._closing and not self._poked:
                    self._cv.wait(timeout)
                if self._closing:
                    return
                item = self._items.popleft() if self._items else _NOTHING
                self._poked = False
            try:
                if item is not _NOTHING:
                    self._handler(item)
                if self._on_wake is not None:
                    timeout = self._on_wake()
            except Exception as exc:  # noqa: BLE001 - one bad item must not end the worker
                self._on_error(exc)


_NOTHING = object()
