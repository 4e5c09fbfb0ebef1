"""FineTuneRunner without ROS: diverged runs fail and keep the weights, a model loaded meanwhile is never
overwritten, automatic runs are cancellable, yield to requested runs and are joined at close."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from sray_ros.online.fine_tune_runner import IDLE, FineTuneRunner, default_fine_tune_path
from sray_ros.online.fine_tuner import CANCELED, FAILED, SUCCEEDED, FineTuneGoal
from sray_ros.online.keyframes import Frame, Keyframe
from sray_ros.online.renderer import Renderer, StaleModelError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny():
    from sray_ros.data.label_sets import load_label_set
    from sray_ros.model.config import SRayConfig
    from sray_ros.model.sray import SRay

    torch.manual_seed(0)
    label_set = load_label_set("scannet20")
    return SRay(SRayConfig.tiny(num_classes=label_set.num_classes)).eval(), label_set.to_dict()


def keyframes(n: int = 4, label_value: int | None = None) -> tuple[Keyframe, ...]:
    """A camera sliding sideways past a textured wall 2 m away, 32x24, labelled with random classes."""
    rng = np.random.default_rng(0)
    K = np.array([[30.0, 0, 15.5], [0, 30.0, 11.5], [0, 0, 1]])
    out = []
    for i in range(n):
        c2w = np.eye(4)
        c2w[0, 3] = 0.1 * i
        labels = rng.integers(0, 20, (24, 32)).astype(np.uint8) if label_value is None else \
            np.full((24, 32), label_value, np.uint8)
        frame = Frame(int(1e9 * (i + 1)), c2w, K, rng.integers(0, 255, (24, 32, 3), dtype=np.uint8),
                      np.full((24, 32), 2.0, np.float32), labels, "camera")
        out.append(Keyframe(i, frame, None))
    return tuple(out)


def make_runner(tiny, tmp_path, kfs=None):
    renderer = Renderer(device="cpu", num_source_views=2)
    renderer.swap(*tiny, "tiny")
    kfs = keyframes() if kfs is None else kfs
    logs: list[tuple[str, str]] = []
    runner = FineTuneRunner(renderer, lambda: kfs, lambda: str(tmp_path / "tuned.pt"),
                            lambda level, message: logs.append((level, message)))
    return runner, renderer, logs


GOAL = dict(num_rays=32, num_sources=2, max_holdout=0)


def test_success_swaps_saves_and_reports(tiny, tmp_path):
    runner, renderer, _ = make_runner(tiny, tmp_path)
    before = renderer.handle.generation
    outcome = runner.run(FineTuneGoal(max_steps=2, **GOAL))
    assert outcome.status == SUCCEEDED and outcome.success and outcome.steps_done == 2, outcome.message
    assert outcome.checkpoint_path == str(tmp_path / "tuned.pt") and (tmp_path / "tuned.pt").exists()
    assert renderer.handle.generation == before + 1 and renderer.handle.model is outcome.model
    assert runner.state().state == SUCCEEDED and runner.state().step == 2


def test_diverged_run_fails_keeps_the_weights_and_saves_nothing(tiny, tmp_path):
    model, label_set = tiny
    broken = type(model)(model.cfg)
    broken.load_state_dict(model.state_dict())
    with torch.no_grad():
        next(broken.parameters()).fill_(float("inf"))  # what a diverged step leaves: the loss becomes NaN
    runner, renderer, _ = make_runner((broken.eval(), label_set), tmp_path)
    handle = renderer.handle
    outcome = runner.run(FineTuneGoal(max_steps=5, **GOAL))
    assert outcome.status == FAILED and "diverged" in outcome.message and outcome.model is None
    assert outcome.steps_done == 1  # stopped at the first non-finite loss
    assert renderer.handle is handle  # nothing swapped in
    assert not (tmp_path / "tuned.pt").exists()
    assert runner.state().state == FAILED


@pytest.mark.parametrize("lr", [1e6, -1e-4, float("nan"), float("inf")])
def test_learning_rate_out_of_bounds_is_refused(tiny, tmp_path, lr):
    runner, renderer, _ = make_runner(tiny, tmp_path)
    handle = renderer.handle
    outcome = runner.run(FineTuneGoal(max_steps=2, learning_rate=lr, **GOAL))
    assert outcome.status == FAILED and "learning_rate" in outcome.message and outcome.steps_done == 0
    assert renderer.handle is handle and not (tmp_path / "tuned.pt").exists()


def test_labels_outside_the_label_set_are_refused_before_training(tiny, tmp_path):
    runner, _, _ = make_runner(tiny, tmp_path, keyframes(label_value=30))
    outcome = runner.run(FineTuneGoal(max_steps=2, **GOAL))
    assert outcome.status == FAILED and "[30]" in outcome.message and "label set" in outcome.message


def test_a_model_loaded_meanwhile_is_not_overwritten(tiny, tmp_path):
    runner, renderer, _ = make_runner(tiny, tmp_path)
    loaded = []

    def load_during_training(stats):
        if stats.step == 1:  # ~/load_checkpoint while the run trains on the previous generation
            loaded.append(renderer.swap(*tiny, "loaded meanwhile"))

    outcome = runner.run(FineTuneGoal(max_steps=3, **GOAL), on_step=load_during_training)
    assert outcome.status == FAILED and "replaced" in outcome.message
    assert renderer.handle is loaded[0] and renderer.handle.source == "loaded meanwhile"
    assert not (tmp_path / "tuned.pt").exists()


def test_swap_if_generation_is_atomic_in_the_renderer(tiny):
    renderer = Renderer(device="cpu")
    first = renderer.swap(*tiny, "a")
    renderer.swap(*tiny, "b")
    with pytest.raises(StaleModelError, match=f"generation {first.generation}"):
        renderer.swap(*tiny, "c", if_generation=first.generation)
    assert renderer.handle.source == "b"


def test_second_requested_run_is_refused_while_one_runs(tiny, tmp_path):
    runner, _, _ = make_runner(tiny, tmp_path)
    started, release = threading.Event(), threading.Event()
    results = []

    def hold(stats):
        started.set()
        release.wait(30)

    thread = threading.Thread(target=lambda: results.append(runner.run(FineTuneGoal(max_steps=2, **GOAL),
                                                                       on_step=hold)))
    thread.start()
    assert started.wait(60)
    assert runner.state().state == "running" and runner.requested_run_active
    second = runner.run(FineTuneGoal(max_steps=2, **GOAL))
    assert second.status == FAILED
    assert second.message == "another fine-tuning goal is running (step 1); cancel it or send this goal after it ends"
    release.set()
    thread.join(60)
    assert results[0].status == SUCCEEDED


def test_requested_run_preempts_the_automatic_one(tiny, tmp_path):
    runner, renderer, logs = make_runner(tiny, tmp_path)
    before = renderer.handle.generation
    assert runner.start_automatic(FineTuneGoal(max_steps=100_000, **GOAL))
    assert runner.automatic_run_active and not runner.start_automatic(FineTuneGoal(**GOAL))
    outcome = runner.run(FineTuneGoal(max_steps=2, **GOAL))  # would wait forever if the automatic run kept going
    assert outcome.status == SUCCEEDED, outcome.message
    assert runner.wait_automatic(30) and not runner.automatic_run_active
    assert renderer.handle.generation == before + 1  # only the requested run's weights
    assert any("automatic fine-tuning: canceled" in m for _, m in logs), logs


def test_automatic_trigger_counts_labelled_keyframes(tiny, tmp_path):
    runner, renderer, logs = make_runner(tiny, tmp_path)
    goal = lambda: FineTuneGoal(max_steps=2, **GOAL)  # noqa: E731
    assert not runner.labelled_keyframe_added(3, goal) and not runner.labelled_keyframe_added(3, goal)
    assert runner.labelled_keyframe_added(3, goal)
    assert runner.wait_automatic(120)
    assert runner.state().state == SUCCEEDED and runner.state().automatic, logs
    assert not runner.labelled_keyframe_added(0, goal)  # 0 = off


def test_close_cancels_and_joins_the_automatic_run(tiny, tmp_path):
    runner, renderer, _ = make_runner(tiny, tmp_path)
    handle = renderer.handle
    running = threading.Event()
    assert runner.start_automatic(FineTuneGoal(max_steps=100_000, **GOAL))
    while runner.state().state == IDLE or runner.state().step < 1:
        running.wait(0.05)
    thread = runner._auto_thread
    runner.close(timeout=60)
    assert not thread.is_alive()
    assert runner.state().state == CANCELED and renderer.handle is handle
    assert runner.run(FineTuneGoal(max_steps=2, **GOAL)).status == FAILED  # closed: no new runs


def test_default_path(monkeypatch, tmp_path):
    monkeypatch.setenv("ROS_HOME", str(tmp_path))
    assert default_fine_tune_path() == tmp_path / "sray_ros" / "checkpoints" / "fine_tuned.pt"
    assert str(default_fine_tune_path("", "/x/c.pt")) == "/x/c.pt"
    assert str(default_fine_tune_path("/y/g.pt", "/x/c.pt")) == "/y/g.pt"


def test_a_goal_sent_right_after_a_cancel_waits_for_the_cancelled_run_and_runs(tiny, tmp_path):
    """It used to be rejected with no reason the client could see (and worked 0.2 s later)."""
    runner, _, _ = make_runner(tiny, tmp_path)
    started, release, cancel = threading.Event(), threading.Event(), threading.Event()
    results = {}

    def hold(stats):
        started.set()
        release.wait(30)

    first = threading.Thread(target=lambda: results.__setitem__("first", runner.run(
        FineTuneGoal(max_steps=100_000, **GOAL), on_step=hold, cancel_requested=cancel.is_set)))
    first.start()
    assert started.wait(60)
    cancel.set()  # the client cancelled; the run stops at its next step
    second = threading.Thread(target=lambda: results.__setitem__("second", runner.run(FineTuneGoal(max_steps=2, **GOAL))))
    second.start()
    time.sleep(0.3)
    assert "second" not in results  # waiting for the cancelled run, not refused
    release.set()
    first.join(60)
    second.join(120)
    assert results["first"].status == CANCELED and results["first"].message.startswith("canceled after ")
    assert results["second"].status == SUCCEEDED and results["second"].steps_done == 2


def test_closing_stops_a_requested_run_with_the_reason_and_waits_for_it(tiny, tmp_path):
    runner, renderer, _ = make_runner(tiny, tmp_path)
    handle = renderer.handle
    started = threading.Event()
    results = []
    thread = threading.Thread(target=lambda: results.append(runner.run(FineTuneGoal(max_steps=100_000, **GOAL),
                                                                       on_step=lambda stats: started.set())))
    thread.start()
    assert started.wait(60)
    runner.close(timeout=60)
    assert results, "close returned before the requested run did"
    outcome = results[0]
    assert outcome.status == CANCELED
    assert outcome.message.startswith("stopped because the node is shutting down after ")
    assert outcome.message.endswith("steps; the weights in use and the checkpoint file are unchanged")
    assert renderer.handle is handle and not list(tmp_path.glob("*.pt"))
    thread.join(10)
    late = runner.run(FineTuneGoal(max_steps=2, **GOAL))
    assert late.status == FAILED and late.message == "not started: the node is shutting down"
