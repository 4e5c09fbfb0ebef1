"""RenderQueue: every request is served or refused at once with a reason; nothing waits forever (no ROS)."""

from __future__ import annotations

import threading
import time

import pytest

from sray_ros.online.render_queue import RenderQueue, RenderRefused


def _collector():
    results, lock = [], threading.Lock()

    def done(result):
        with lock:
            results.append(result)
    return results, done


def test_a_full_queue_refuses_at_once_and_every_admitted_request_is_served():
    gate = threading.Event()
    queue = RenderQueue(max_queued=2)
    results, done = _collector()
    try:
        refusals = []
        for i in range(25):  # 25 simultaneous requests, the first blocks the worker
            refusal = queue.submit(lambda i=i: (gate.wait(10), i)[1], done)
            if refusal is not None:
                refusals.append(refusal)
            if i == 0:  # let the worker pick the first one up, so 1 renders + 2 wait
                deadline = time.monotonic() + 5
                while queue.counts()["running"] == 0 and time.monotonic() < deadline:
                    time.sleep(0.005)
        # 1 rendering + max_queued=2 waiting are admitted; the other 22 are refused with the reason.
        assert len(refusals) == 22
        assert all(isinstance(r, RenderRefused) for r in refusals)
        assert "render queue is full (2 waiting and 1 rendering, max_queued_renders=2" in str(refusals[0])
        assert "no render has finished yet" in str(refusals[0])
        gate.set()
        deadline = time.monotonic() + 10
        while len(results) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(results) == [0, 1, 2]  # served in order, each exactly once
        assert queue.counts() == {"waiting": 0, "running": 0, "served": 3, "refused": 22}
    finally:
        gate.set()
        queue.close(5)


def test_the_refusal_states_the_estimated_wait_from_recent_renders():
    now = [0.0]
    queue = RenderQueue(max_queued=1, clock=lambda: now[0])
    gate, started = threading.Event(), threading.Event()
    results, done = _collector()

    def render(duration):
        def work():
            started.set()
            gate.wait(10)
            now[0] += duration
            return duration
        return work
    try:
        assert queue.submit(render(4.0), done) is None  # one finished render of 4 s sets the estimate
        gate.set()
        while len(results) < 1:
            time.sleep(0.005)
        gate.clear()
        started.clear()
        assert queue.submit(render(4.0), done) is None
        started.wait(5)
        now[0] += 1.0  # 1 s into a render: 3 s left of the 4 s mean
        assert queue.submit(render(4.0), done) is None
        assert queue.estimated_wait_s() == pytest.approx(3.0 + 4.0)
        refusal = queue.submit(render(4.0), done)
        assert "estimated wait 7.0 s, 4.0 s per render" in str(refusal)
    finally:
        gate.set()
        queue.close(5)


def test_zero_queue_refuses_while_busy_and_errors_reach_the_caller():
    gate = threading.Event()
    queue = RenderQueue(max_queued=0)
    results, done = _collector()
    try:
        assert queue.submit(lambda: gate.wait(10), done) is None
        refusal = queue.submit(lambda: 1, done)
        assert "busy rendering another request and max_queued_renders is 0" in str(refusal)
        gate.set()
        while len(results) < 1:
            time.sleep(0.005)

        def broken():
            raise ValueError("bad pose")
        assert queue.submit(broken, done) is None
        while len(results) < 2:
            time.sleep(0.005)
        assert isinstance(results[1], ValueError) and str(results[1]) == "bad pose"
    finally:
        gate.set()
        queue.close(5)


def test_close_answers_the_waiting_requests_and_refuses_new_ones():
    gate = threading.Event()
    queue = RenderQueue(max_queued=3)
    results, done = _collector()
    assert queue.submit(lambda: (gate.wait(10), "first")[1], done) is None
    while queue.counts()["running"] == 0:
        time.sleep(0.005)
    for _ in range(3):
        assert queue.submit(lambda: "never", done) is None
    closer = threading.Thread(target=queue.close, args=(10,))
    closer.start()
    time.sleep(0.1)
    gate.set()
    closer.join(10)
    # The running render finishes with its result; the 3 waiting are answered with the shutdown reason.
    assert "first" in results and len(results) == 4
    assert [str(r) for r in results if r != "first"] == ["render refused: the node is shutting down"] * 3
    assert str(queue.submit(lambda: 1, done)) == "render refused: the node is shutting down"


def test_configure_changes_the_bound_and_rejects_negative():
    queue = RenderQueue(max_queued=1)
    try:
        queue.configure(5)
        assert queue.max_queued == 5
        with pytest.raises(ValueError, match="max_queued must be >= 0"):
            queue.configure(-1)
        with pytest.raises(ValueError):
            RenderQueue(max_queued=-2)
    finally:
        queue.close(5)


def test_close_can_answer_the_running_render_at_once():
    gate = threading.Event()
    queue = RenderQueue(max_queued=1)
    results, done = _collector()
    assert queue.submit(lambda: (gate.wait(10), "late")[1], done) is None
    while queue.counts()["running"] == 0:
        time.sleep(0.005)
    assert queue.submit(lambda: "never", done) is None
    queue.close(timeout=0, abandon_running=True)
    # Both answered at once, without waiting for the render; its late result is dropped.
    assert sorted(str(r) for r in results) == [
        "render refused: the node is shutting down",
        "render refused: the node is shutting down before this render finished"]
    gate.set()
    time.sleep(0.2)
    assert len(results) == 2 and "late" not in results
