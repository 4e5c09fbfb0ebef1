"""Fine-tuning orchestration for the online node (plain Python; the node's action server and its automatic
trigger both go through :class:`FineTuneRunner`).

What it guarantees:

* **One run at a time.** A requested run (``~/fine_tune`` goal) while another requested run is active fails
  at once with a reason, unless that run is being cancelled: then it waits for it to stop (a goal sent right
  after a cancel runs). An automatic run never blocks a requested one: the request cancels it (the
  automatic run stops at its next step, keeping the weights in use) and then runs.
* **No corrupted model.** A run whose loss or weights become non-finite (NaN / inf) fails: the weights in
  use stay, nothing is saved. The fine-tuned copy is swapped in only if the model generation it started
  from is still the one in use, so a checkpoint loaded meanwhile is never overwritten.
* **Cancellable and joined.** Every run, automatic ones included, stops at the next training step when
  cancelled or when :meth:`FineTuneRunner.close` is called (its outcome then says the node is shutting down);
  ``close`` joins the automatic run's thread and waits for a requested run to return.
* **State under a lock.** :meth:`FineTuneRunner.state` is safe to read from any thread.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sray_ros.online.checkpoint_paths import DEFAULT_NAME, default_checkpoint_dir
from sray_ros.online.fine_tuner import (CANCELED, FAILED, SUCCEEDED, FineTuneError, FineTuneGoal, FineTuneJob,
                                     FineTuneOutcome)
from sray_ros.online.keyframes import Keyframe
from sray_ros.online.renderer import Renderer, StaleModelError
from sray_ros.train.checkpoint import non_finite_tensors, save_checkpoint
from sray_ros.train.trainer import StepStats

IDLE, RUNNING = "idle", "running"
# How long a goal sent right after a cancel waits for the cancelled run to stop (it stops at its next step).
CANCELLED_RUN_WAIT_S = 30.0
SHUTTING_DOWN = "the node is shutting down"


def default_fine_tune_path(requested: str = "", configured: str = "") -> Path:
    """Where fine-tuned weights go without a :class:`~sray_ros.online.checkpoint_paths.CheckpointDirectory`: the
    goal's path, else the configured one, else ``fine_tuned.pt`` in
    :func:`~sray_ros.online.checkpoint_paths.default_checkpoint_dir`. (The node confines names to its
    checkpoint folder: ``FineTuneRunner(resolve_path=...)``.)"""
    if requested:
        return Path(requested).expanduser()
    if configured:
        return Path(configured).expanduser()
    return default_checkpoint_dir() / DEFAULT_NAME


@dataclass(frozen=True)
class FineTuneState:
    state: str  # IDLE, RUNNING, or how the last run ended: SUCCEEDED, CANCELED, FAILED
    step: int  # training steps done by the current (or last) run
    automatic: bool  # the current (or last) run was started by the automatic trigger


class FineTuneRunner:
    """Runs :class:`~sray_ros.online.fine_tuner.FineTuneJob` s on the node's keyframes and swaps the result into
    ``renderer``.

    Args:
        renderer: holds the model in use; fine-tuning trains a copy of it.
        keyframes: returns the current keyframe snapshot (called when a run starts).
        configured_path: returns the configured default checkpoint path ("" = ``$ROS_HOME`` default).
        log: ``log(level, message)`` with level "info", "warning" or "error" (the node's logger).
        resolve_path: the file a run's ``checkpoint_path`` ("" = the configured default) is written to; raises
            ValueError (e.g. :class:`~sray_ros.online.checkpoint_paths.CheckpointPathError`) to refuse it. It is
            checked before training starts and again before writing. Default: :func:`default_fine_tune_path`.
    """

    def __init__(self, renderer: Renderer, keyframes: Callable[[], tuple[Keyframe, ...]],
                 configured_path: Callable[[], str] = lambda: "",
                 log: Callable[[str, str], None] = lambda level, message: None,
                 resolve_path: Callable[[str], Path] | None = None) -> None:
        self.renderer = renderer
        self._keyframes = keyframes
        self._configured_path = configured_path
        self._resolve_path = resolve_path or (lambda requested: default_fine_tune_path(requested, configured_path()))
        self._log = log
        self._lock = threading.Condition()  # guards every field below; notified when a requested run ends
        self._run_lock = threading.Lock()  # held by the run that trains
        self._state = FineTuneState(IDLE, 0, False)
        self._requested_active = False
        self._requested_cancel: Callable[[], bool] = lambda: False  # the active requested run's cancel flag
        self._auto_thread: threading.Thread | None = None
        self._auto_stop: threading.Event | None = None
        self._current_stop: threading.Event | None = None
        self._labelled_since_run = 0
        self._closed = False

    # ------------------------------------------------------------------------------------- queries
    def state(self) -> FineTuneState:
        with self._lock:
            return self._state

    @property
    def requested_run_active(self) -> bool:
        """A ``~/fine_tune`` goal is being served (new goals are refused meanwhile)."""
        with self._lock:
            return self._requested_active

    @property
    def automatic_run_active(self) -> bool:
        with self._lock:
            return self._auto_thread is not None

    # ------------------------------------------------------------------------------------ requested
    def run(self, goal: FineTuneGoal, checkpoint_path: str = "", on_step: Callable[[StepStats], None] | None = None,
            cancel_requested: Callable[[], bool] = lambda: False) -> FineTuneOutcome:
        """One requested run (blocks; call it from a worker thread). An automatic run in progress is
        cancelled first; a requested run in progress refuses this one with the reason, unless it is being
        cancelled: then this one waits (up to :data:`CANCELLED_RUN_WAIT_S`) for it to stop. ``checkpoint_path``
        "" = the default path."""
        deadline = time.monotonic() + CANCELLED_RUN_WAIT_S
        with self._lock:
            while self._requested_active and not self._closed:
                if not _safe_flag(self._requested_cancel):
                    step = self._state.step
                    return FineTuneOutcome.failed(f"another fine-tuning goal is running (step {step}); cancel it "
                                                  "or send this goal after it ends")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return FineTuneOutcome.failed(f"the cancelled fine-tuning run did not stop within "
                                                  f"{CANCELLED_RUN_WAIT_S:.0f} s; send the goal again later")
                self._lock.wait(min(remaining, 0.1))
            if self._closed:
                return FineTuneOutcome.failed(f"not started: {SHUTTING_DOWN}")
            self._requested_active, self._requested_cancel = True, cancel_requested
            if self._auto_stop is not None:
                self._auto_stop.set()
        try:
            with self._run_lock:
                return self._execute(goal, checkpoint_path, on_step, cancel_requested, automatic=False)
        finally:
            with self._lock:
                self._requested_active, self._requested_cancel = False, lambda: False
                self._lock.notify_all()

    # ------------------------------------------------------------------------------------ automatic
    def labelled_keyframe_added(self, every: int, goal: Callable[[], FineTuneGoal]) -> bool:
        """Count a new labelled keyframe; after ``every`` of them (0 = off) start an automatic run with
        ``goal()`` unless a run is in progress. Returns True when a run was started."""
        with self._lock:
            self._labelled_since_run += 1
            if not every or self._labelled_since_run < every:
                return False
        started = self.start_automatic(goal())
        if started:
            with self._lock:
                self._labelled_since_run = 0
        return started

    def start_automatic(self, goal: FineTuneGoal) -> bool:
        """Start an automatic run in a thread of the runner (joined by :meth:`close`); False when a run is
        already in progress or the runner is closed."""
        with self._lock:
            if self._closed or self._requested_active or self._auto_thread is not None:
                return False
            stop = threading.Event()
            thread = threading.Thread(target=self._automatic, args=(goal, stop), name="sray_auto_fine_tune",
                                      daemon=True)
            self._auto_thread, self._auto_stop = thread, stop
        thread.start()
        return True

    def wait_automatic(self, timeout: float | None = None) -> bool:
        """Wait for the automatic run in progress (if any) to end; True when none is running."""
        with self._lock:
            thread = self._auto_thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def _automatic(self, goal: FineTuneGoal, stop: threading.Event) -> None:
        try:
            with self._run_lock:
                outcome = self._execute(goal, "", None, stop.is_set, automatic=True, stop=stop)
            self._log("info" if outcome.status != FAILED else "error", f"automatic fine-tuning: {outcome.message}")
        except Exception as exc:  # noqa: BLE001 - a thread of ours must not die silently
            self._log("error", f"automatic fine-tuning failed: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._auto_thread = self._auto_stop = None

    # -------------------------------------------------------------------------------------- closing
    def close(self, timeout: float = 30.0) -> None:
        """Refuse new runs, cancel the one in progress (it stops at its next step; its outcome says the node is
        shutting down and nothing is saved), join the automatic run's thread and wait for a requested run to
        return (each up to ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._closed = True
            thread = self._auto_thread
            for stop in (self._auto_stop, self._current_stop):
                if stop is not None:
                    stop.set()
            self._lock.notify_all()
        if thread is not None:
            thread.join(timeout)
        with self._lock:
            while self._requested_active and time.monotonic() < deadline:
                self._lock.wait(min(deadline - time.monotonic(), 0.1))

    # ---------------------------------------------------------------------------------------- a run
    def _set_state(self, state: str, step: int | None = None, automatic: bool | None = None) -> None:
        with self._lock:
            current = self._state
            self._state = FineTuneState(state, current.step if step is None else step,
                                        current.automatic if automatic is None else automatic)

    def _end(self, outcome: FineTuneOutcome) -> FineTuneOutcome:
        self._set_state(outcome.status)
        return outcome

    def _execute(self, goal: FineTuneGoal, checkpoint_path: str, on_step, cancel_requested, automatic: bool,
                 stop: threading.Event | None = None) -> FineTuneOutcome:
        stop = stop or threading.Event()
        with self._lock:
            self._current_stop = stop
            if self._closed:
                stop.set()
        try:
            return self._train(goal, checkpoint_path, on_step, cancel_requested, automatic, stop)
        finally:
            with self._lock:
                self._current_stop = None

    def _train(self, goal: FineTuneGoal, checkpoint_path: str, on_step, cancel_requested, automatic: bool,
               stop: threading.Event) -> FineTuneOutcome:
        if stop.is_set() or cancel_requested():
            with self._lock:
                closed = self._closed
            why = f"not started: {SHUTTING_DOWN}" if closed and not cancel_requested() else "canceled before it started"
            return self._end(FineTuneOutcome.failed(f"{why}; weights unchanged", status=CANCELED))
        try:
            self._resolve_path(checkpoint_path)
        except ValueError as exc:  # refused before minutes of training are spent
            return self._end(FineTuneOutcome.failed(f"not started: {exc}"))
        try:
            job = FineTuneJob(self.renderer, self._keyframes(), goal)
        except FineTuneError as exc:
            return self._end(FineTuneOutcome.failed(str(exc)))
        self._set_state(RUNNING, 0, automatic)
        diverged: list[StepStats] = []

        def step(stats: StepStats) -> None:
            with self._lock:
                self._state = FineTuneState(RUNNING, stats.step, automatic)
            if not math.isfinite(stats.loss):
                diverged.append(stats)
                job.stop.set()
            if stop.is_set() or cancel_requested():
                job.stop.set()
            if on_step is not None:
                on_step(stats)

        try:
            outcome = job.run(step)
        except Exception as exc:  # noqa: BLE001 - the node and the weights in use survive a failed run
            return self._end(FineTuneOutcome.failed(f"fine-tuning failed: {type(exc).__name__}: {exc}"))
        bad_weights = non_finite_tensors(outcome.model.state_dict())
        if diverged or not math.isfinite(outcome.final_loss) or bad_weights:
            where = (f"loss {diverged[0].loss} at step {diverged[0].step}" if diverged else
                     f"final loss {outcome.final_loss}" if not math.isfinite(outcome.final_loss) else
                     f"non-finite weights {bad_weights[:3]}")
            return self._end(FineTuneOutcome.failed(
                f"fine-tuning diverged ({where}, learning_rate {goal.learning_rate or 'default'}); the weights in "
                "use are unchanged and nothing was saved", outcome.steps_done, outcome.final_loss))
        if job.stop.is_set() or stop.is_set() or cancel_requested():
            with self._lock:
                closed = self._closed
            why = f"stopped because {SHUTTING_DOWN}" if closed and not cancel_requested() else "canceled"
            return self._end(FineTuneOutcome.failed(
                f"{why} after {outcome.steps_done} steps; the weights in use and the checkpoint file are unchanged",
                outcome.steps_done, outcome.final_loss, status=CANCELED))
        handle = job.handle
        try:
            self.renderer.swap(outcome.model, handle.label_set, f"fine-tuned from {handle.source}", handle.extra,
                               if_generation=handle.generation)
        except StaleModelError as exc:
            return self._end(FineTuneOutcome.failed(
                f"the model was replaced while fine-tuning ran ({exc}); the fine-tuned weights are discarded and "
                "the model in use stays", outcome.steps_done, outcome.final_loss))
        not_saved = ""
        try:
            path = self._resolve_path(checkpoint_path)  # again: the file may have changed while training ran
            save_checkpoint(path, outcome.model, handle.label_set.to_dict(),
                            {**handle.extra, "fine_tuned_steps": outcome.steps_done,
                             "holdout_miou": outcome.holdout_miou})
            outcome.checkpoint_path = str(path)
        except (OSError, RuntimeError, ValueError) as exc:
            not_saved = f"; in use but not saved: {exc}"
            self._log("error", f"fine-tuned weights in use but not saved: {exc}")
        outcome.status = SUCCEEDED
        outcome.message = (f"fine-tuned {outcome.steps_done} steps on {len(job.train)} keyframes "
                           f"(held out {len(job.held)})" + not_saved)
        return self._end(outcome)


def _safe_flag(flag: Callable[[], bool]) -> bool:
    try:
        return bool(flag())
    except Exception:  # noqa: BLE001 - a goal handle already destroyed: treat it as stopping
        return True
