"""KeyframeBuffer policy: thresholds, eviction, encode-once, invalid poses, time jumps, threading."""

from __future__ import annotations

import math
import threading
import time

import cv2
import numpy as np
import pytest

from sray_ros.online.keyframes import Frame, KeyframeBuffer, variance_of_laplacian

S = 1_000_000_000
K = np.array([[100.0, 0, 31.5], [0, 100.0, 23.5], [0, 0, 1]])
RGB = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)  # sharp (noise)


def _pose(x: float = 0.0, yaw_deg: float = 0.0) -> np.ndarray:
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    m = np.eye(4)
    m[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    m[0, 3] = x
    return m


def _frame(t_s: float, x: float = 0.0, yaw_deg: float = 0.0, rgb=RGB, **kwargs) -> Frame:
    return Frame(stamp_ns=int(round(t_s * S)), c2w=_pose(x, yaw_deg), K=K, rgb=rgb, **kwargs)


class CountingEncoder:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, frame: Frame) -> dict:
        self.calls.append(frame.stamp_ns)
        return {"stamp": frame.stamp_ns}


def _buffer(**kwargs) -> tuple[KeyframeBuffer, CountingEncoder]:
    enc = CountingEncoder()
    params = dict(max_keyframes=8, min_translation_m=0.1, min_rotation_deg=10.0, min_interval_s=math.inf,
                  blur_threshold=0.0, encode_fn=enc)
    params.update(kwargs)
    return KeyframeBuffer(**params), enc


def test_translation_threshold() -> None:
    buf, _ = _buffer()
    assert buf.consider(_frame(0.0, x=0.0)) == (True, "first")
    assert buf.consider(_frame(0.1, x=0.05)) == (False, "too_close")
    assert buf.consider(_frame(0.2, x=0.099)) == (False, "too_close")  # measured from the last KEYFRAME (x=0)
    assert buf.consider(_frame(0.3, x=0.1)) == (True, "moved")
    assert buf.consider(_frame(0.4, x=0.15)) == (False, "too_close")
    assert [kf.c2w[0, 3] for kf in buf.snapshot()] == [0.0, 0.1]


def test_rotation_threshold() -> None:
    buf, _ = _buffer()
    buf.consider(_frame(0.0))
    assert buf.consider(_frame(0.1, yaw_deg=9.0)) == (False, "too_close")
    assert buf.consider(_frame(0.2, yaw_deg=-10.5)) == (True, "rotated")
    assert buf.consider(_frame(0.3, yaw_deg=-1.0)) == (False, "too_close")  # 9.5 deg from the last keyframe


def test_time_threshold_and_default_disabled() -> None:
    buf, _ = _buffer(min_interval_s=1.0)
    buf.consider(_frame(0.0))
    assert buf.consider(_frame(0.9)) == (False, "too_close")
    assert buf.consider(_frame(1.0)) == (True, "interval")
    assert buf.consider(_frame(1.5)) == (False, "too_close")
    parked, _ = _buffer()  # min_interval_s = inf: a parked robot adds nothing
    parked.consider(_frame(0.0))
    assert parked.consider(_frame(1000.0)) == (False, "too_close")


def test_eviction_order_and_ids() -> None:
    # keyframes 1 m apart on a line, ring of 3: at x=3 the interior ones (gap 2 m if removed) tie and the
    # older, x=1, goes; at x=4, x=3 (gap 2 m) goes before x=2 (3 m) and the start x=0 (5 m)
    buf, enc = _buffer(max_keyframes=3)
    for i in range(5):
        assert buf.consider(_frame(i * 0.1, x=i * 1.0))[0]
    snap = buf.snapshot()
    assert [kf.id for kf in snap] == [0, 2, 4]
    assert [kf.stamp_ns for kf in snap] == [int(round(i * 0.1 * S)) for i in (0, 2, 4)]
    assert buf.counters()["evicted"] == 2
    buf.clear()
    assert buf.snapshot() == ()
    buf.consider(_frame(1.0, x=10.0))
    assert buf.snapshot()[0].id == 5  # ids keep increasing across clear()


def test_eviction_keeps_coverage_of_a_long_trajectory() -> None:
    # 200 keyframes 0.12 m apart on a 23.9 m path into a 32-keyframe ring. Evicting the oldest kept only
    # x >= 168 * 0.12 = 20.2 m (a pose at the start rendered from keyframes 20 m away); evicting the most
    # redundant keeps the start, the end, and every path pose within 0.5 m of a keyframe.
    buf, _ = _buffer(max_keyframes=32)
    path = np.arange(200) * 0.12
    assert all(buf.consider(_frame(i * 0.1, x=float(x)))[0] for i, x in enumerate(path))
    kept = np.array([kf.c2w[0, 3] for kf in buf.snapshot()])
    assert len(kept) == 32 and buf.counters()["evicted"] == 168
    assert kept.min() == 0.0 and kept.max() == path[-1]
    assert np.abs(path[:, None] - kept[None]).min(axis=1).max() <= 0.5


def test_eviction_replaces_the_keyframe_of_a_revisited_place() -> None:
    buf, _ = _buffer(max_keyframes=4)
    for i in range(4):
        buf.consider(_frame(i * 0.1, x=i * 1.0))
    assert buf.consider(_frame(1.0, x=2.05))[0]  # back near x=2: that keyframe goes, not the oldest (x=0)
    snap = buf.snapshot()
    assert [kf.id for kf in snap] == [0, 1, 3, 4]
    assert [kf.c2w[0, 3] for kf in snap] == [0.0, 1.0, 3.0, 2.05]


def test_encode_called_exactly_once_per_accepted_frame() -> None:
    buf, enc = _buffer()
    results = [buf.consider(_frame(i * 0.1, x=0.06 * i)) for i in range(10)]
    accepted = [r for r in results if r[0]]
    assert len(enc.calls) == len(accepted) == 5  # every second frame moves >= 0.1 m (0, 0.12, 0.24, ...)
    for _ in range(3):
        snap = buf.snapshot()
    assert len(enc.calls) == 5
    assert [kf.features["stamp"] for kf in snap] == enc.calls


def test_invalid_pose_rejected_with_reason() -> None:
    buf, enc = _buffer()
    bad = _pose()
    bad[0, 3] = -np.inf  # as in ScanNet pose files
    frame = Frame(stamp_ns=0, c2w=bad, K=K, rgb=RGB)
    assert buf.consider(frame) == (False, "invalid_pose")
    not_rigid = _pose()
    not_rigid[:3, :3] *= 2
    assert buf.consider(Frame(1, not_rigid, K, RGB)) == (False, "invalid_pose")
    assert buf.consider(Frame(2, _pose(), np.zeros((3, 3)), RGB)) == (False, "invalid_intrinsics")
    assert buf.consider(Frame(3, _pose(), K, RGB[..., 0])) == (False, "invalid_image")
    assert buf.consider(_frame(0.0, depth=np.zeros((10, 10), np.float32))) == (False, "invalid_image")
    assert enc.calls == [] and len(buf) == 0
    rejected = buf.counters()["rejected"]
    assert (rejected["invalid_pose"], rejected["invalid_intrinsics"], rejected["invalid_image"]) == (2, 1, 2)


def test_any_step_back_is_out_of_order_and_clear_starts_a_timeline() -> None:
    buf, _ = _buffer()
    for i in range(3):
        buf.consider(_frame(10.0 + i, x=float(i)))
    assert len(buf) == 3
    assert buf.consider(_frame(11.5, x=5.0)) == (False, "out_of_order")  # 0.5 s back
    # A bag loop (12 s back) is the owner's TimeJumpDetector's to see: the buffer alone keeps its keyframes.
    assert buf.consider(_frame(0.0, x=0.0)) == (False, "out_of_order") and len(buf) == 3
    buf.clear()  # what the owner does on a jump
    assert buf.consider(_frame(0.0, x=0.0)) == (True, "first")
    assert len(buf) == 1 and buf.counters()["clears"] == 1


def test_blur_rejection() -> None:
    sharp = RGB
    blurred = cv2.GaussianBlur(sharp, (0, 0), 5.0)
    assert variance_of_laplacian(blurred) < 0.05 * variance_of_laplacian(sharp)
    threshold = 0.3 * variance_of_laplacian(sharp)
    buf, enc = _buffer(blur_threshold=threshold)
    assert buf.consider(_frame(0.0, rgb=blurred)) == (False, "blurred")
    assert buf.consider(_frame(0.1, rgb=sharp)) == (True, "first")
    assert enc.calls == [int(0.1 * S)]
    off, _ = _buffer(blur_threshold=0.0)
    assert off.consider(_frame(0.0, rgb=np.zeros_like(sharp)))[0]  # 0 disables the check


def test_encode_failure_is_a_rejection() -> None:
    def broken(frame: Frame):
        raise RuntimeError("out of memory")

    buf = KeyframeBuffer(encode_fn=broken)
    assert buf.consider(_frame(0.0)) == (False, "encode_failed")
    assert "out of memory" in str(buf.last_encode_error) and len(buf) == 0


def test_snapshot_is_immutable_and_independent() -> None:
    buf, _ = _buffer()
    rgb = RGB.copy()
    buf.consider(_frame(0.0, rgb=rgb, labels=np.zeros((48, 64), np.uint8)))
    snap = buf.snapshot()
    assert isinstance(snap, tuple)
    rgb[:] = 0  # the caller reusing its buffer does not change the keyframe
    assert snap[0].frame.rgb.any()
    with pytest.raises(ValueError):
        snap[0].frame.rgb[0, 0, 0] = 1
    with pytest.raises(AttributeError):
        snap[0].features = None  # frozen dataclass
    buf.consider(_frame(0.1, x=1.0))
    assert len(snap) == 1 and len(buf.snapshot()) == 2


def test_resize_to_model_resolution() -> None:
    labels = np.zeros((48, 64), np.uint8)
    labels[:, 32:] = 7
    buf, _ = _buffer(target_size=(32, 24))
    buf.consider(_frame(0.0, labels=labels, depth=np.full((48, 64), 2.0, np.float32)))
    frame = buf.snapshot()[0].frame
    assert frame.rgb.shape == (24, 32, 3) and frame.labels.shape == (24, 32) and frame.depth.shape == (24, 32)
    assert set(np.unique(frame.labels)) == {0, 7}  # nearest neighbour: no blended ids
    np.testing.assert_allclose(frame.K, [[50.0, 0, 15.5], [0, 50.0, 11.5], [0, 0, 1]])


def test_label_confidence_is_resized_with_its_labels_and_checked_like_them() -> None:
    labels = np.zeros((48, 64), np.uint8)
    labels[:, 32:] = 7
    confidence = np.where(labels == 7, 0.25, 1.0).astype(np.float32)
    buf, _ = _buffer(target_size=(32, 24))
    assert buf.consider(_frame(0.0, labels=labels, label_confidence=confidence))[0]
    frame = buf.snapshot()[0].frame
    assert frame.label_confidence.shape == (24, 32) and not frame.label_confidence.flags.writeable
    np.testing.assert_array_equal(frame.label_confidence, np.where(frame.labels == 7, 0.25, 1.0))  # pixel for pixel
    assert buf.consider(_frame(1.0, x=1.0, labels=labels, label_confidence=confidence[:, :32])) == (False,
                                                                                                    "invalid_image")
    assert buf.consider(_frame(2.0, x=2.0, label_confidence=confidence))[0]  # no labels: nothing to weight
    assert buf.snapshot()[-1].frame.label_confidence is None


def test_reencode_all_replaces_features() -> None:
    buf, enc = _buffer()
    for i in range(3):
        buf.consider(_frame(i * 0.1, x=float(i)))
    ids = [kf.id for kf in buf.snapshot()]
    calls: list[int] = []

    def new_weights(frame: Frame) -> str:
        calls.append(frame.stamp_ns)
        return "v2"

    assert buf.reencode_all(new_weights) == 3
    assert [kf.features for kf in buf.snapshot()] == ["v2"] * 3 and [kf.id for kf in buf.snapshot()] == ids
    buf.consider(_frame(1.0, x=10.0))
    assert buf.snapshot()[-1].features == "v2" and len(calls) == 4 and len(enc.calls) == 3


def test_snapshot_does_not_wait_for_slow_encoder() -> None:
    started = threading.Event()

    def slow(frame: Frame) -> int:
        started.set()
        time.sleep(1.0)
        return 1

    buf = KeyframeBuffer(encode_fn=slow)
    thread = threading.Thread(target=buf.consider, args=(_frame(0.0),))
    thread.start()
    assert started.wait(5.0)
    t0 = time.monotonic()
    assert buf.snapshot() == ()
    assert time.monotonic() - t0 < 0.5  # the encoder holds intake for 1 s
    thread.join()
    assert len(buf.snapshot()) == 1


def test_precheck_decides_on_pose_alone_like_consider() -> None:
    buffer, encoder = _buffer(min_translation_m=0.5, min_rotation_deg=30.0)
    assert buffer.precheck(int(1e9), _pose(0.0)) == (True, "first")
    assert buffer.consider(_frame(1.0, 0.0))[0]
    # Not moved: rejected before any image exists, and counted like consider's rejection.
    assert buffer.precheck(int(2e9), _pose(0.1)) == (False, "too_close")
    assert buffer.counters()["rejected"]["too_close"] == 1
    assert buffer.precheck(int(3e9), _pose(0.6)) == (True, "moved")
    bad = _pose(0.0)
    bad[0, 3] = math.nan
    assert buffer.precheck(int(4e9), bad) == (False, "invalid_pose")
    assert len(buffer) == 1 and len(encoder.calls) == 1  # prechecks never encode or store


def test_keyframe_resize_of_depth_and_labels_is_the_readers_nearest_exact() -> None:
    # One resize for training and the online path: the readers' exact nearest neighbour. 63 -> 40 columns
    # (no column half-way between two source centres) is a scale where cv2.INTER_NEAREST, what intake
    # used, picks other source pixels.
    from sray_ros import geometry
    from sray_ros.data import scene

    assert scene.resize_nearest is geometry.resize_nearest
    labels = np.tile(np.arange(63, dtype=np.uint8), (48, 1))
    depth = labels.astype(np.float32) * 0.1 + 0.5
    buf, _ = _buffer(target_size=(40, 30))
    K63 = np.array([[100.0, 0, 31.0], [0, 100.0, 23.5], [0, 0, 1]])
    rgb = np.ascontiguousarray(RGB[:, :63])
    assert buf.consider(Frame(0, _pose(), K63, rgb, depth, labels))[0]
    frame = buf.snapshot()[0].frame
    np.testing.assert_array_equal(frame.labels, geometry.resize_nearest(labels, 40, 30))
    np.testing.assert_array_equal(frame.depth, geometry.resize_nearest(depth, 40, 30))
    # the right value, column by column: the source column whose centre is nearest, (u + 0.5) * 63 / 40 - 0.5
    np.testing.assert_array_equal(frame.labels[0], np.rint((np.arange(40) + 0.5) * 63 / 40 - 0.5).astype(np.uint8))
    assert not np.array_equal(frame.labels, cv2.resize(labels, (40, 30), interpolation=cv2.INTER_NEAREST))
