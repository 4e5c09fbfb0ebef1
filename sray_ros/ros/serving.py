"""Service and action plumbing of the node: every request gets an answer.

* :data:`REQUEST_QOS`: the request (and action goal / cancel / result) queues are deep enough that DDS keeps
  every request a burst of clients sends; with rclpy's default depth of 10 the requests behind the tenth were
  overwritten unanswered while a render ran.
* :func:`create_render_service`: ``~/render_semantic_view`` goes through a
  :class:`~sray_ros.online.render_queue.RenderQueue`. The callback is a coroutine: it admits or refuses the
  request at once (a refusal is answered immediately with the reason: queue full with the estimated wait, or
  the node shutting down) and then awaits the queue's worker, so waiting requests do not hold executor threads.
"""

from __future__ import annotations

from typing import Any, Callable

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.task import Future

from sray_ros.online.render_queue import RenderQueue

# Requests a service or action keeps before DDS overwrites the oldest (rclpy's default profile keeps 10).
REQUEST_QUEUE_DEPTH = 1000
REQUEST_QOS = QoSProfile(depth=REQUEST_QUEUE_DEPTH, history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


def action_server_qos() -> dict[str, QoSProfile]:
    """Keyword arguments for ``rclpy.action.ActionServer``: deep goal, cancel and result request queues."""
    return {"goal_service_qos_profile": REQUEST_QOS, "cancel_service_qos_profile": REQUEST_QOS,
            "result_service_qos_profile": REQUEST_QOS}


def create_render_service(node, srv_type, name: str, render: Callable[[Any, Any], Any], queue: RenderQueue,
                          callback_group, on_refused: Callable[[str], None] = lambda message: None):
    """Serve ``name`` with ``render(request, response) -> response`` run on ``queue``'s worker thread.

    A request the queue refuses is answered at once with ``success = False`` and the refusal's reason
    (``on_refused`` gets it too, e.g. to log it); an exception ``render`` raises is answered as an internal
    error. ``callback_group`` must let callbacks run concurrently (a ``ReentrantCallbackGroup``): a waiting
    request is a suspended coroutine, and a mutually exclusive group would hold later requests back until the
    earlier ones are served.
    """

    async def callback(request, response):
        future: Future = Future(executor=node.executor)
        # A done callback makes set_result (called on the queue's thread) wake the executor, which resumes
        # this coroutine; without one it would resume only on the executor's next unrelated event.
        future.add_done_callback(lambda _: None)
        refusal = queue.submit(lambda: render(request, response), future.set_result)
        if refusal is not None:
            on_refused(str(refusal))
            response.success, response.message = False, str(refusal)
            return response
        result = await future
        if isinstance(result, BaseException):
            response.success = False
            response.message = f"internal error: {type(result).__name__}: {result}"
            return response
        return result

    return node.create_service(srv_type, name, callback, qos_profile=REQUEST_QOS, callback_group=callback_group)


def spin_until_signalled(executor, on_stop: Callable[[], None], poll_s: float = 0.2) -> int | None:
    """Spin ``executor`` on a thread until SIGINT or SIGTERM, then call ``on_stop()`` while it still spins (so the
    answers ``on_stop`` causes, e.g. a stopped fine-tuning goal's result, reach their clients), then shut the
    executor down. Call it from the main thread, with rclpy's own signal handlers off
    (``rclpy.init(signal_handler_options=SignalHandlerOptions.NO)``): rclpy's would shut the context down at
    once, and a goal running then never sends its result. A second signal while stopping raises
    KeyboardInterrupt. Returns the signal number (None when the executor stopped by itself)."""
    import signal
    import threading

    received: list[int] = []
    stopped = threading.Event()

    def handler(signum, frame):
        if received:
            raise KeyboardInterrupt
        received.append(signum)
        stopped.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def spin() -> None:
        try:
            executor.spin()
        except Exception:  # noqa: BLE001 - the context went away (e.g. rclpy.shutdown elsewhere)
            pass
        finally:
            stopped.set()

    spinner = threading.Thread(target=spin, name="sray_executor", daemon=True)
    spinner.start()
    try:
        while not stopped.wait(poll_s):
            pass
        if received:
            on_stop()
    finally:
        executor.shutdown(timeout_sec=2.0)
        for sig, old in previous.items():
            signal.signal(sig, old)
    return received[0] if received else None
