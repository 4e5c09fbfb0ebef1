"""StampSynchronizer: pairing within slop, closest choice, required vs optional streams, bounds, counters."""

from __future__ import annotations

import threading
import time

import pytest

from sray_ros.online.sync import MatchedSet, StampSynchronizer

MS = 1_000_000


def _sync(**kwargs) -> tuple[StampSynchronizer, list[MatchedSet]]:
    out: list[MatchedSet] = []
    kwargs.setdefault("slop_s", 0.010)
    sync = StampSynchronizer(["color", "info"], ["depth", "labels"], out.append, **kwargs)
    return sync, out


def test_exact_pairs_in_order_and_message_identity() -> None:
    sync, out = _sync()
    msgs = {}
    for i in range(5):
        t = i * 33 * MS
        msgs[i] = (object(), object())
        sync.add("color", t, msgs[i][0])
        assert len(out) == i  # waits for the required camera_info
        sync.add("info", t, msgs[i][1])
        assert len(out) == i + 1
    assert [m.stamp_ns for m in out] == [i * 33 * MS for i in range(5)]
    for i, m in enumerate(out):
        assert m["color"] is msgs[i][0] and m["info"] is msgs[i][1]
        assert m["depth"] is None and m["labels"] is None  # never-seen optional streams do not block
    assert sync.counters()["optional_missing"] == {"depth": 0, "labels": 0}


def test_slop_and_closest_candidate() -> None:
    sync, out = _sync()
    sync.add("depth", 92 * MS, "d-8")
    sync.add("depth", 103 * MS, "d+3")
    sync.add("info", 100 * MS, "i")
    sync.add("color", 100 * MS, "c")  # depth already final (103 >= 100): decided at once
    assert len(out) == 1
    assert out[0]["depth"] == "d+3" and out[0].stamps["depth"] == 103 * MS
    assert sync.counters()["dropped"]["depth"] == {}  # 92 ms is still within slop of a 100 ms pivot
    sync.add("info", 133 * MS, "i")
    sync.add("color", 133 * MS, "c")
    sync.add("depth", 134 * MS, "d134")
    # d-8 is older than t - slop for every pivot after 133 ms: dropped as unmatched
    assert sync.counters()["dropped"]["depth"] == {"unmatched": 1}
    assert out[1]["depth"] == "d134"


def test_required_stream_outside_slop_drops_pivot() -> None:
    sync, out = _sync()
    sync.add("color", 0, "c0")
    sync.add("info", 15 * MS, "i15")  # final (15 >= 0) but 15 ms > 10 ms slop
    assert out == []
    assert sync.counters()["dropped"]["color"] == {"no_match": 1}
    sync.add("color", 20 * MS, "c20")
    assert out == []  # info's newest (15 ms) < 20 ms: a closer one may still come
    sync.add("info", 40 * MS, "i40")  # now final: i15 (5 ms away) is the closest
    assert [m["info"] for m in out] == ["i15"]


def test_optional_outside_slop_emits_none_and_counts() -> None:
    sync, out = _sync()
    sync.add("depth", 50 * MS, "d50")
    sync.add("info", 0, "i0")
    sync.add("color", 0, "c0")  # depth final (50 >= 0), 50 ms away: missing
    assert len(out) == 1 and out[0]["depth"] is None
    assert sync.counters()["optional_missing"]["depth"] == 1
    sync.add("info", 48 * MS, "i48")
    sync.add("color", 48 * MS, "c48")
    assert out[1]["depth"] == "d50"


def test_seen_optional_waits_bounded_message_time() -> None:
    sync, out = _sync(optional_wait_s=0.1)
    sync.add("depth", 0, "d0")
    sync.add("info", 0, "i0")
    sync.add("color", 0, "c0")
    assert out[0]["depth"] == "d0"
    # depth stops; colour 33 ms waits for it until message time passes 33 + 100 ms
    for t in (33, 66, 99, 132):
        sync.add("info", t * MS, f"i{t}")
        sync.add("color", t * MS, f"c{t}")
    assert len(out) == 1
    sync.add("info", 134 * MS, "i134")  # now = 134 ms > 33 + 100
    assert [m["color"] for m in out] == ["c0", "c33"] and out[1]["depth"] is None
    assert sync.counters()["optional_missing"]["depth"] == 1


def test_low_rate_optional_does_not_overflow_pivots() -> None:
    sync, out = _sync(queue_size=4, optional_wait_s=10.0)
    sync.add("labels", 0, "l0")
    for i in range(12):
        sync.add("info", i * 33 * MS, i)
        sync.add("color", i * 33 * MS, i)
    counters = sync.counters()
    assert "queue_overflow" not in counters["dropped"]["color"]
    assert [m["color"] for m in out] == list(range(12 - 3))  # pivot queue full -> stop waiting for labels
    assert out[0]["labels"] == "l0" and all(m["labels"] is None for m in out[1:])


def test_missing_required_stream_bounded_by_queue() -> None:
    sync, out = _sync(queue_size=3)
    for i in range(5):
        sync.add("color", i * MS * 33, i)
    assert out == []
    counters = sync.counters()
    assert counters["dropped"]["color"] == {"queue_overflow": 2}
    assert counters["queued"]["color"] == 3
    sync.add("info", 70 * MS, "i70")  # pivot 66 ms matches; 99 and 132 ms wait for newer info
    assert [m["color"] for m in out] == [2]
    sync.add("info", 140 * MS, "i140")  # pivot 99 ms: nothing within slop -> dropped; 132 ms matches
    assert [m["color"] for m in out] == [2, 4]
    assert sync.counters()["dropped"]["color"] == {"queue_overflow": 2, "no_match": 1}


def test_reset_starts_a_timeline_and_any_step_back_is_out_of_order() -> None:
    sync, out = _sync()
    sync.add("info", 10_000 * MS, "i")
    sync.add("color", 10_000 * MS, "c")
    sync.add("info", 9_990 * MS, "late")  # 10 ms backwards: dropped
    assert sync.counters()["dropped"]["info"] == {"out_of_order": 1}
    sync.add("depth", 10_033 * MS, "d")
    sync.add("color", 0, "c-loop")  # a bag loop is the owner's TimeJumpDetector's to see: dropped here
    assert sync.counters()["dropped"]["color"] == {"out_of_order": 1}
    sync.reset()  # what the owner does on a jump
    sync.add("color", 0, "c-loop")
    counters = sync.counters()
    assert counters["resets"] == 1 and counters["queued"] == {"color": 1, "info": 0, "depth": 0, "labels": 0}
    sync.add("info", 0, "i-loop")
    assert [m["color"] for m in out] == ["c", "c-loop"]
    assert out[1]["depth"] is None  # depth forgotten by the reset; it does not block


def test_validation_and_unknown_stream() -> None:
    with pytest.raises(ValueError, match="required"):
        StampSynchronizer([], ["depth"])
    with pytest.raises(ValueError, match="unique"):
        StampSynchronizer(["a", "b"], ["a"])
    sync = StampSynchronizer(["color"])
    with pytest.raises(KeyError, match="unknown stream 'depht'"):
        sync.add("depht", 0, None)
    assert len(sync.add("color", 5, "x")) == 1  # single required stream passes through


def test_concurrent_adds_emit_each_pair_once() -> None:
    sync, out = _sync(queue_size=1000)
    n = 300

    def feed(stream: str) -> None:
        for i in range(n):
            sync.add(stream, i * 10 * MS, (stream, i))

    threads = [threading.Thread(target=feed, args=(s,)) for s in ("color", "info")]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert [m["color"][1] for m in out] == list(range(n))
    assert all(m["info"][1] == m["color"][1] for m in out)


def test_callback_may_call_counters_and_add_without_deadlock() -> None:
    seen: list[int] = []
    nested: list = []

    def callback(matched: MatchedSet) -> None:
        seen.append(matched.stamp_ns)
        sync.counters()
        if matched.stamp_ns == 10 * MS:
            # re-entrant add completes the next set; it is delivered after this callback returns
            nested.extend(sync.add("info", 20 * MS, "i20"))
            assert seen == [10 * MS]

    sync = StampSynchronizer(["color", "info"], callback=callback, slop_s=0.001, queue_size=1000)
    sync.add("color", 10 * MS, "c10")
    sync.add("color", 20 * MS, "c20")
    sync.add("info", 10 * MS, "i10")
    assert seen == [10 * MS, 20 * MS] and [m.stamp_ns for m in nested] == [20 * MS]

    def feed(stream: str) -> None:
        for i in range(200):
            sync.add(stream, (100 + i) * MS, i)

    threads = [threading.Thread(target=feed, args=(stream,)) for stream in ("color", "info")]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
        assert not th.is_alive(), "deadlock"
    assert seen == [10 * MS, 20 * MS] + [(100 + i) * MS for i in range(200)]


# --------------------------------------------------------------------------------------------------
# SheddingWorker: the hand-off from the synchroniser to the node's keyframe worker
# --------------------------------------------------------------------------------------------------
def test_shedding_worker_keeps_the_freshest_and_counts_what_it_sheds():
    from sray_ros.online.sync import SheddingWorker

    release, started = threading.Event(), threading.Event()
    handled, errors = [], []

    def handler(item):
        started.set()
        release.wait(5)
        if item == "bad":
            raise RuntimeError("broken frame")
        handled.append(item)

    worker = SheddingWorker(handler, capacity=2, on_error=errors.append)
    worker.start()
    worker.put(0)
    assert started.wait(5)  # 0 is being handled; the producer is never blocked meanwhile
    for item in (1, 2, "bad", 4):
        worker.put(item)
    assert worker.shed == 2 and worker.pending() == 2  # 1 and 2 shed, "bad" and 4 wait
    release.set()
    deadline = time.monotonic() + 5
    while worker.pending() or len(handled) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert handled == [0, 4]  # in order; the failing item did not stop the worker
    assert len(errors) == 1 and "broken frame" in str(errors[0])
    worker.close()
    assert not worker._thread.is_alive()


def test_shedding_worker_clear_and_capacity_validation():
    from sray_ros.online.sync import SheddingWorker

    gate, started = threading.Event(), threading.Event()
    handled = []
    worker = SheddingWorker(lambda item: (started.set(), gate.wait(5), handled.append(item)), capacity=8,
                            on_error=print)
    worker.start()
    for item in range(5):
        worker.put(item)
    assert started.wait(5)
    worker.clear()  # what was waiting is dropped, not counted as shed
    gate.set()
    worker.close()
    assert worker.shed == 0 and handled == [0]
    with pytest.raises(ValueError, match="capacity"):
        SheddingWorker(print, capacity=0, on_error=print)
