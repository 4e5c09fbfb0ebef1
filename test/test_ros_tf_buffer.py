"""TransformBuffer: interpolation vs hand-computed values, chaining, static, time 0, errors, waiting."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
from builtin_interfaces.msg import Time as TimeMsg
from geometry_msgs.msg import TransformStamped

from sray_ros.ros.tf_buffer import (
    ConnectivityError,
    ExtrapolationError,
    FrameNotFoundError,
    InvalidTransformError,
    LoopError,
    TransformBuffer,
    to_nanoseconds,
)

S = 1_000_000_000


def _tf(parent: str, child: str, stamp_ns: int, xyz=(0.0, 0.0, 0.0), yaw_deg: float = 0.0, quat=None) -> TransformStamped:
    msg = TransformStamped()
    msg.header.frame_id, msg.child_frame_id = parent, child
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, S)
    msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = map(float, xyz)
    if quat is None:
        half = math.radians(yaw_deg) / 2
        quat = (0.0, 0.0, math.sin(half), math.cos(half))
    r = msg.transform.rotation
    r.x, r.y, r.z, r.w = map(float, quat)
    return msg


def _yaw_matrix(xyz, yaw_deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    m = np.eye(4)
    m[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    m[:3, 3] = xyz
    return m


def test_interpolation_matches_hand_computed_value() -> None:
    buf = TransformBuffer()
    buf.set_transform(_tf("world", "base", 1 * S, (0, 0, 0), 0.0), "test")
    buf.set_transform(_tf("world", "base", 3 * S, (2, 4, -8), 90.0), "test")
    # t = 1.5 s is a quarter of the way: translation (0.5, 1, -2), yaw 22.5 deg (slerp is uniform in angle).
    c, s = math.cos(math.radians(22.5)), math.sin(math.radians(22.5))
    expected = np.array([[c, -s, 0, 0.5], [s, c, 0, 1.0], [0, 0, 1, -2.0], [0, 0, 0, 1]])
    np.testing.assert_allclose(buf.lookup_transform("world", "base", int(1.5 * S)), expected, atol=1e-9)
    # Exact stamps come back as stored; the inverse direction is the matrix inverse.
    np.testing.assert_allclose(buf.lookup_transform("world", "base", 3 * S), _yaw_matrix((2, 4, -8), 90), atol=1e-12)
    np.testing.assert_allclose(buf.lookup_transform("base", "world", int(1.5 * S)), np.linalg.inv(expected), atol=1e-9)


def test_slerp_takes_short_arc_across_sign_flip() -> None:
    buf = TransformBuffer()
    half = math.radians(170) / 2
    buf.set_transform(_tf("w", "a", 0 * S + 1, quat=(0, 0, math.sin(half), math.cos(half))))
    half = math.radians(-170) / 2  # same axis, 20 deg away through 180
    buf.set_transform(_tf("w", "a", 2 * S + 1, quat=(0, 0, -math.sin(half), -math.cos(half))))
    np.testing.assert_allclose(buf.lookup_transform("w", "a", 1 * S + 1), _yaw_matrix((0, 0, 0), 180), atol=1e-9)


def test_chaining_through_common_ancestor_and_static_links() -> None:
    buf = TransformBuffer()
    # world <- odom (static), odom <- base (dynamic), base <- camera (static), world <- marker (static)
    buf.set_transform(_tf("world", "odom", 0, (1, 0, 0), 90), "tf_static", is_static=True)
    buf.set_transform(_tf("odom", "base", 10 * S, (0, 2, 0), 0), "odom")
    buf.set_transform(_tf("odom", "base", 12 * S, (0, 4, 0), 0), "odom")
    buf.set_transform(_tf("base", "camera", 0, (0, 0, 1), -90), "tf_static", is_static=True)
    buf.set_transform(_tf("world", "marker", 0, (5, 5, 5), 30), "tf_static", is_static=True)
    w_o, w_m = _yaw_matrix((1, 0, 0), 90), _yaw_matrix((5, 5, 5), 30)
    o_b, b_c = _yaw_matrix((0, 3, 0), 0), _yaw_matrix((0, 0, 1), -90)
    w_c = w_o @ o_b @ b_c
    np.testing.assert_allclose(buf.lookup_transform("world", "camera", 11 * S), w_c, atol=1e-12)
    # Across branches: marker <- camera = inv(world <- marker) @ (world <- camera).
    np.testing.assert_allclose(buf.lookup_transform("marker", "camera", 11 * S), np.linalg.inv(w_m) @ w_c, atol=1e-12)
    # Down the tree: camera <- odom.
    np.testing.assert_allclose(buf.lookup_transform("camera", "odom", 11 * S), np.linalg.inv(o_b @ b_c), atol=1e-12)
    np.testing.assert_array_equal(buf.lookup_transform("camera", "camera", 5), np.eye(4))
    assert buf.known_frames() == ["base", "camera", "marker", "odom", "world"]


def test_static_valid_at_all_times_and_time_zero() -> None:
    buf = TransformBuffer()
    buf.set_transform(_tf("base", "camera", 5 * S, (0, 0, 1)), is_static=True)
    for t in (0, 1, 5 * S, 10**18):
        np.testing.assert_array_equal(buf.lookup_transform("base", "camera", t)[:3, 3], [0, 0, 1])
    assert to_nanoseconds(buf.lookup_transform_stamped("base", "camera", 0).header.stamp) == 0


def test_time_zero_is_latest_common_time() -> None:
    buf = TransformBuffer()
    for t, x in ((1, 0.0), (2, 1.0), (3, 2.0)):
        buf.set_transform(_tf("world", "base", t * S, (x, 0, 0)))
    for t, y in ((1, 0.0), (2, 10.0)):
        buf.set_transform(_tf("base", "camera", t * S, (0, y, 0)))
    stamped = buf.lookup_transform_stamped("world", "camera", 0)
    assert to_nanoseconds(stamped.header.stamp) == 2 * S  # min of the newest stamps (3 s, 2 s)
    assert (stamped.header.frame_id, stamped.child_frame_id) == ("world", "camera")
    tr = stamped.transform.translation
    assert (tr.x, tr.y, tr.z) == (1.0, 10.0, 0.0)
    assert stamped.transform.rotation.w == pytest.approx(1.0)
    # A single frame: latest is its newest stamp.
    np.testing.assert_array_equal(buf.lookup_transform("world", "base", 0)[:3, 3], [2, 0, 0])


def test_no_common_time_is_an_extrapolation_error() -> None:
    buf = TransformBuffer()
    buf.set_transform(_tf("world", "base", 1 * S))
    buf.set_transform(_tf("base", "camera", 5 * S))
    with pytest.raises(ExtrapolationError, match="no common time"):
        buf.lookup_transform("world", "camera", 0)


def test_extrapolation_errors_give_available_interval() -> None:
    buf = TransformBuffer()
    buf.set_transform(_tf("world", "base", 2 * S))
    buf.set_transform(_tf("world", "base", 4 * S))
    with pytest.raises(ExtrapolationError, match=r"into the future: requested time 5\.0+ .*\[2\.0+, 4\.0+\]"):
        buf.lookup_transform("world", "base", 5 * S)
    with pytest.raises(ExtrapolationError, match=r"into the past: requested time 1\.0+ .*\[2\.0+, 4\.0+\]"):
        buf.lookup_transform("world", "base", 1 * S)
    single = TransformBuffer()
    single.set_transform(_tf("world", "base", 2 * S))
    single.lookup_transform("world", "base", 2 * S)  # exactly its stamp is fine
    with pytest.raises(ExtrapolationError):
        single.lookup_transform("world", "base", 2 * S + 1)


def test_unknown_frame_lists_known_frames() -> None:
    buf = TransformBuffer()
    with pytest.raises(FrameNotFoundError, match="no transforms received yet"):
        buf.lookup_transform("world", "camera", 0)
    buf.set_transform(_tf("world", "base", S))
    with pytest.raises(FrameNotFoundError, match=r"source frame 'camera' does not exist; known frames: base, world"):
        buf.lookup_transform("world", "camera", 0)
    with pytest.raises(FrameNotFoundError, match=r"target frame 'map'"):
        buf.lookup_transform("/map", "/base", 0)


def test_disconnected_trees_name_roots() -> None:
    buf = TransformBuffer()
    buf.set_transform(_tf("world", "base", S))
    buf.set_transform(_tf("map", "robot2", S))
    with pytest.raises(ConnectivityError, match=r"root of 'base' is 'world', root of 'robot2' is 'map'"):
        buf.lookup_transform("robot2", "base", S)


def test_cache_window_prunes_and_drops_old_data() -> None:
    buf = TransformBuffer(cache_time_s=10.0)
    for t in range(0, 21):
        assert buf.set_transform(_tf("world", "base", t * S, (t, 0, 0)))
    with pytest.raises(ExtrapolationError, match=r"\[10\.0+, 20\.0+\]"):
        buf.lookup_transform("world", "base", 5 * S)
    assert not buf.set_transform(_tf("world", "base", 3 * S))  # older than newest - cache: dropped
    assert buf.set_transform(_tf("world", "base", 15 * S + S // 2, (99, 0, 0)))  # late but inside: kept
    assert buf.lookup_transform("world", "base", 15 * S + S // 2)[0, 3] == 99


def test_clear_keeps_static_for_backwards_time_jump() -> None:
    buf = TransformBuffer()
    buf.set_transform(_tf("base", "camera", 0, (0, 0, 1)), is_static=True)
    buf.set_transform(_tf("world", "base", 100 * S))
    buf.clear()
    with pytest.raises(FrameNotFoundError):
        buf.lookup_transform("world", "camera", 0)
    buf.set_transform(_tf("world", "base", 1 * S))  # after the jump, old data would otherwise be dropped
    np.testing.assert_array_equal(buf.lookup_transform("world", "camera", S)[:3, 3], [0, 0, 1])
    buf.clear(include_static=True)
    assert buf.known_frames() == []


def test_invalid_transforms_rejected() -> None:
    buf = TransformBuffer()
    with pytest.raises(InvalidTransformError, match="empty frame id"):
        buf.set_transform(_tf("", "base", S))
    with pytest.raises(InvalidTransformError, match="parent == child"):
        buf.set_transform(_tf("a", "a", S))
    with pytest.raises(InvalidTransformError, match="not finite"):
        buf.set_transform(_tf("a", "b", S, (float("nan"), 0, 0)))
    with pytest.raises(InvalidTransformError, match="zero"):
        buf.set_transform(_tf("a", "b", S, quat=(0, 0, 0, 0)))
    errors = buf.set_transforms([_tf("a", "a", S), _tf("a", "b", S)], "x")
    assert len(errors) == 1 and buf.known_frames() == ["a", "b"]


def test_time_argument_types() -> None:
    t = TimeMsg()
    t.sec, t.nanosec = 3, 7
    assert to_nanoseconds(t) == 3 * S + 7
    assert to_nanoseconds(1.5) == 1_500_000_000
    assert to_nanoseconds(np.int64(5)) == 5
    with pytest.raises(TypeError, match="cannot interpret"):
        to_nanoseconds("now")
    from rclpy.duration import Duration
    from rclpy.time import Time

    assert to_nanoseconds(Time(seconds=2, nanoseconds=5)) == 2 * S + 5
    buf = TransformBuffer()
    buf.set_transform(_tf("w", "a", 2 * S + 5))
    assert buf.can_transform("w", "a", Time(seconds=2, nanoseconds=5), timeout=Duration(seconds=0.05))
    assert not buf.can_transform("w", "a", Time(seconds=3), timeout=Duration(seconds=0.05))


def test_wait_for_transform_with_timeout() -> None:
    buf = TransformBuffer()
    buf.set_transform(_tf("world", "base", 1 * S))

    def late_insert() -> None:
        time.sleep(0.15)
        buf.set_transform(_tf("world", "base", 2 * S, (7, 0, 0)))

    thread = threading.Thread(target=late_insert)
    thread.start()
    start = time.monotonic()
    m = buf.lookup_transform("world", "base", 2 * S, timeout=5.0)
    assert m[0, 3] == 7 and time.monotonic() - start < 4.0
    thread.join()
    start = time.monotonic()
    with pytest.raises(ExtrapolationError):
        buf.lookup_transform("world", "base", 3 * S, timeout=0.1)
    assert time.monotonic() - start >= 0.09
    assert not buf.can_transform("world", "base", 3 * S)
    assert buf.can_transform("world", "base", 0)


def test_concurrent_inserts_and_lookups() -> None:
    buf = TransformBuffer(cache_time_s=1.0)
    buf.set_transform(_tf("base", "camera", 0, (0, 0, 1)), is_static=True)
    buf.set_transform(_tf("world", "base", 0))
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer() -> None:
        for i in range(1, 400):
            buf.set_transform(_tf("world", "base", i * S // 100, (i, 0, 0), yaw_deg=i))
        stop.set()

    def reader() -> None:
        try:
            while not stop.is_set():
                m = buf.lookup_transform("world", "camera", 0)
                assert np.allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader), threading.Thread(target=reader)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    assert not errors
    assert buf.lookup_transform("world", "base", 0)[0, 3] == 399


def test_stamped_lookup_rotation_round_trip() -> None:
    from sray_ros.ros.tf_buffer import nanoseconds_to_msg

    buf = TransformBuffer()
    axis = np.array([1.0, -2.0, 0.5]) / np.linalg.norm([1.0, -2.0, 0.5])
    half = math.radians(70) / 2
    quat = (*(axis * math.sin(half)), math.cos(half))
    buf.set_transform(_tf("world", "camera", 5 * S, (1, 2, 3), quat=quat))
    stamped = buf.lookup_transform_stamped("world", "camera", 5 * S)
    r = stamped.transform.rotation
    got = np.array([r.x, r.y, r.z, r.w])
    assert np.allclose(got, quat, atol=1e-9) or np.allclose(got, -np.array(quat), atol=1e-9)
    assert stamped.header.stamp == nanoseconds_to_msg(5 * S)
    # The 4x4 maps a point in the camera frame into the world frame (target <- source).
    point_cam = np.array([0.0, 0.0, 2.0, 1.0])
    m = buf.lookup_transform("world", "camera", 5 * S)
    assert np.allclose(np.linalg.inv(m) @ (m @ point_cam), point_cam)
    assert np.allclose((m @ point_cam)[:3], m[:3, :3] @ point_cam[:3] + [1, 2, 3])


def test_a_frame_with_two_parents_keeps_both_histories_and_names_the_conflict_once() -> None:
    """SLAM publishes map -> camera, odometry odom -> camera, interleaved (one message per stamp each). Before: every
    re-parenting wiped the camera's history and lookups failed with "extrapolation into the past"."""
    buf = TransformBuffer()
    for i in range(10):
        buf.set_transform(_tf("map", "camera", (10 + i) * S, (i, 0, 0)), "slam")
        buf.set_transform(_tf("odom", "camera", (10 + i) * S + S // 2, (0, i, 0)), "odometry")
    conflicts = buf.take_conflicts()
    assert len(conflicts) == 1 and "'camera' has 2 parents" in conflicts[0]
    assert "'map' (authority 'slam')" in conflicts[0] and "'odom' (authority 'odometry')" in conflicts[0]
    assert buf.take_conflicts() == []  # named once
    # Each parent's history is whole: map <- camera interpolates between SLAM's stamps, odom's likewise.
    np.testing.assert_allclose(buf.lookup_transform("map", "camera", int(14.5 * S))[:3, 3], [4.5, 0, 0], atol=1e-9)
    np.testing.assert_allclose(buf.lookup_transform("odom", "camera", 15 * S)[:3, 3], [0, 4.5, 0], atol=1e-9)
    # With map -> odom as well, both chains connect map and camera: the last updated parent (odom) is used.
    buf.set_transform(_tf("map", "odom", 0, (100, 0, 0)), "static", is_static=True)
    np.testing.assert_allclose(buf.lookup_transform("map", "camera", 15 * S)[:3, 3], [100, 4.5, 0], atol=1e-9)


def test_a_loop_is_named_at_once_even_with_a_timeout() -> None:
    buf = TransformBuffer()
    buf.set_transform(_tf("a", "b", 1 * S), "test")
    buf.set_transform(_tf("b", "c", 1 * S), "test")
    buf.set_transform(_tf("c", "a", 1 * S), "test")
    start = time.monotonic()
    with pytest.raises(LoopError, match="loops: .*a -> .*a"):
        buf.lookup_transform("a", "c", 1 * S, timeout=5.0)
    assert time.monotonic() - start < 0.5  # before: the 5 s timeout was waited out
