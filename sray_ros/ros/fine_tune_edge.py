"""The ``~/fine_tune`` action's ROS edge: a ``FineTune`` goal -> a
:class:`~sray_ros.online.fine_tuner.FineTuneGoal` run by the
:class:`~sray_ros.online.fine_tune_runner.FineTuneRunner`, its steps -> throttled feedback, its outcome -> the
goal's result and terminal state. The training itself (one goal at a time, cancellation, checkpointing, refusing
a diverged run) is the runner's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from rclpy.action import ActionServer, CancelResponse, GoalResponse

from sray_ros.action import FineTune
from sray_ros.online.fine_tune_runner import FineTuneRunner
from sray_ros.online.fine_tuner import FineTuneGoal
from sray_ros.ros.serving import action_server_qos

FEEDBACK_PERIOD_S = 0.5  # at most one feedback message per this many seconds (and always the last step's)


class FineTuneActionEdge:
    """Serves ``FineTune`` goals on ``node``'s action ``name`` with ``runner``.

    ``goal_defaults()`` returns the node's current defaults (``max_steps``, ``num_rays``, ``num_sources``) for
    fields a goal leaves at 0. Every goal is accepted, so that it ends with a result whose message says why
    (a rejection carries no reason): the runner refuses one while another runs, waits for a cancelled one, and
    cancels an automatic run."""

    def __init__(self, node, name: str, runner: FineTuneRunner, goal_defaults: Callable[[], dict],
                 callback_group) -> None:
        self.runner = runner
        self.goal_defaults = goal_defaults
        self.log = node.get_logger()
        self._lock = threading.Lock()
        self._executing = 0
        self.server = ActionServer(
            node, FineTune, name, execute_callback=self._execute, goal_callback=lambda goal: GoalResponse.ACCEPT,
            cancel_callback=lambda goal: CancelResponse.ACCEPT, callback_group=callback_group, **action_server_qos())

    def goal(self, max_steps: int = 0, **fields) -> FineTuneGoal:
        """A goal with the node's defaults where ``max_steps`` is 0 (also used for automatic fine-tuning)."""
        defaults = self.goal_defaults()
        return FineTuneGoal(max_steps=max_steps or defaults["max_steps"], num_rays=defaults["num_rays"],
                            num_sources=defaults["num_sources"], **fields)

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no goal is executing (their results sent to the executor); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if self._executing == 0:
                    return True
            time.sleep(0.02)
        return False

    def _execute(self, goal_handle):
        with self._lock:
            self._executing += 1
        try:
            return self._run(goal_handle)
        finally:
            with self._lock:
                self._executing -= 1

    def _run(self, goal_handle):
        request = goal_handle.request
        goal = self.goal(int(request.max_steps), max_duration_s=float(request.max_duration_s),
                         learning_rate=float(request.learning_rate),
                         keyframe_ids=[int(i) for i in request.keyframe_ids])
        start = time.monotonic()
        last_feedback = [0.0]

        def on_step(stats) -> None:
            now = time.monotonic()
            if now - last_feedback[0] < FEEDBACK_PERIOD_S and stats.step < goal.max_steps:
                return
            last_feedback[0] = now
            feedback = FineTune.Feedback(step=stats.step, loss=stats.loss, semantic_loss=stats.semantic_loss,
                                         color_loss=stats.color_loss, elapsed_s=now - start)
            rate = (now - start) / max(stats.step, 1)
            feedback.eta_s = float(rate * (goal.max_steps - stats.step))
            goal_handle.publish_feedback(feedback)

        outcome = self.runner.run(goal, request.checkpoint_path, on_step, lambda: goal_handle.is_cancel_requested)
        if outcome.status == "failed":
            self.log.error(f"fine-tuning: {outcome.message}")
        result = FineTune.Result(success=outcome.success, message=outcome.message, steps_done=int(outcome.steps_done),
                                 final_loss=float(outcome.final_loss), holdout_miou=float(outcome.holdout_miou),
                                 checkpoint_path=outcome.checkpoint_path)
        if outcome.status == "canceled" and goal_handle.is_cancel_requested:
            goal_handle.canceled()
        elif outcome.success:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return result
