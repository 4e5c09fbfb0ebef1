"""Admission control for render requests (plain Python; the node's ``~/render_semantic_view`` goes through it).

Renders run one at a time on a worker thread of the queue (a 160x120 view takes seconds on a CPU). A request
is either admitted, when fewer than ``max_queued`` requests wait, and its ``done`` callback later gets the
render's result; or refused at once with a :class:`RenderRefused` whose message says why (the queue is full,
or the node is shutting down) and how long the requests ahead would take (from the recent render times).
Nothing is dropped silently: every admitted request gets ``done`` called exactly once, with the result, the
exception the work raised, or a :class:`RenderRefused` when the queue is closed before its turn.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

# Render times kept for the wait estimate (the mean of the most recent ones).
RECENT_RENDERS = 8


class RenderRefused(RuntimeError):
    """A render request that was not served; the message says why and what the caller can do."""


@dataclass
class _Job:
    work: Callable[[], Any]
    done: Callable[[Any], None]
    queued_at: float
    answered: bool = False  # done was called (exactly once; guarded by the queue's lock)


class RenderQueue:
    """A bounded FIFO of render jobs served by one worker thread.

    Args:
        max_queued: requests that may wait while one renders (0: refuse whenever a render is running).
        name: the worker thread's name.
        clock: monotonic seconds (tests pass a fake one).
    """

    def __init__(self, max_queued: int = 4, name: str = "sray_render", clock: Callable[[], float] = time.monotonic):
        if int(max_queued) < 0:
            raise ValueError(f"max_queued must be >= 0, got {max_queued}")
        self._max_queued = int(max_queued)
        self._clock = clock
        self._cond = threading.Condition()
        self._waiting: deque[_Job] = deque()
        self._running: _Job | None = None
        self._running_since = 0.0
        self._durations: deque[float] = deque(maxlen=RECENT_RENDERS)
        self._closed = False
        self.served = 0
        self.refused = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------- settings
    @property
    def max_queued(self) -> int:
        return self._max_queued

    def configure(self, max_queued: int) -> None:
        """Change the bound (requests already waiting keep their place)."""
        if int(max_queued) < 0:
            raise ValueError(f"max_queued must be >= 0, got {max_queued}")
        with self._cond:
            self._max_queued = int(max_queued)

    # ------------------------------------------------------------------------------------- requests
    def submit(self, work: Callable[[], Any], done: Callable[[Any], None]) -> RenderRefused | None:
        """Queue ``work`` (run on the worker thread; its return value, or the exception it raised, goes to
        ``done``). Returns None when admitted, else the :class:`RenderRefused` saying why (``done`` is then
        never called)."""
        with self._cond:
            if self._closed:
                self.refused += 1
                return RenderRefused("render refused: the node is shutting down")
            # One renders, max_queued wait (a request the worker has not picked up yet counts as waiting).
            if len(self._waiting) + (self._running is not None) > self._max_queued:
                self.refused += 1
                return RenderRefused(self._full_message())
            self._waiting.append(_Job(work, done, self._clock()))
            self._cond.notify_all()
        return None

    def estimated_wait_s(self) -> float | None:
        """Seconds until a request admitted now would start: the running render's remaining time plus one
        mean render per waiting request (None before any render finished)."""
        with self._cond:
            return self._estimate()

    def _mean_render_s(self) -> float | None:
        return sum(self._durations) / len(self._durations) if self._durations else None

    def _estimate(self) -> float | None:
        mean = self._mean_render_s()
        if mean is None:
            return None
        remaining = 0.0
        if self._running is not None:
            remaining = max(mean - (self._clock() - self._running_since), 0.0)
        return remaining + mean * len(self._waiting)

    def _full_message(self) -> str:
        wait = self._estimate()
        mean = self._mean_render_s()
        timing = ("no render has finished yet, so no wait estimate" if wait is None else
                  f"estimated wait {wait:.1f} s, {mean:.1f} s per render")
        if self._max_queued == 0:
            return f"render refused: busy rendering another request and max_queued_renders is 0 ({timing}); retry later"
        busy = "1 rendering" if self._running is not None else "none rendering yet"
        return (f"render refused: the render queue is full ({len(self._waiting)} waiting and {busy}, "
                f"max_queued_renders={self._max_queued}; {timing}); retry later")

    def counts(self) -> dict[str, int]:
        """``waiting``, ``running`` (0 or 1), ``served`` and ``refused`` so far."""
        with self._cond:
            return {"waiting": len(self._waiting), "running": int(self._running is not None),
                    "served": self.served, "refused": self.refused}

    # -------------------------------------------------------------------------------------- worker
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if not self._waiting:  # closed and drained
                    return
                job = self._waiting.popleft()
                self._running, self._running_since = job, self._clock()
            try:
                result: Any = job.work()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, never lost
                result = exc
            finally:
                with self._cond:
                    self._durations.append(self._clock() - self._running_since)
                    self._running = None
                    self.served += 1
                    self._cond.notify_all()
            self._answer(job, result)

    def _answer(self, job: _Job, result: Any) -> None:
        with self._cond:
            if job.answered:
                return
            job.answered = True
        _call(job.done, result)

    def close(self, timeout: float | None = None, abandon_running: bool = False) -> None:
        """Refuse new requests and the ones still waiting (their ``done`` gets a :class:`RenderRefused`) and join
        the worker (up to ``timeout`` s). The running render finishes and its ``done`` gets its result, unless
        ``abandon_running``: then its ``done`` gets a :class:`RenderRefused` at once (a shutting-down node cannot
        wait for a render of many seconds) and its result, when it comes, is dropped."""
        with self._cond:
            self._closed = True
            dropped = list(self._waiting)
            self._waiting.clear()
            self.refused += len(dropped)
            running = self._running if abandon_running else None
            self._cond.notify_all()
        for job in dropped:
            self._answer(job, RenderRefused("render refused: the node is shutting down"))
        if running is not None:
            self._answer(running, RenderRefused("render refused: the node is shutting down before this render "
                                                "finished"))
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)


def _call(done: Callable[[Any], None], result: Any) -> None:
    try:
        done(result)
    except Exception:  # noqa: BLE001 - a broken callback must not stop the worker serving the others
        pass
