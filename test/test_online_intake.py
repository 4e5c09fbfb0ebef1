"""Intake policy without ROS: per-pixel streams registered from their own camera or rejected with the reason."""

from __future__ import annotations

import numpy as np
import pytest

from sray_ros import geometry
from sray_ros.camera import Camera
from sray_ros.online.intake import REJECT_REASONS, IntakeRejection, PerPixelImage, build_frame, register

W, H = 64, 48
K = np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])
COLOR = Camera(K, W, H)


def _labels() -> np.ndarray:
    """Labels that say where a pixel is: class = 4 * (row // 12) + col // 16 (16 classes, blocks of 16x12)."""
    v, u = np.mgrid[0:H, 0:W]
    return (4 * (v // 12) + u // 16).astype(np.uint8)


def _rgb() -> np.ndarray:
    return np.zeros((H, W, 3), np.uint8)


def _reject(fn, *args, **kwargs) -> IntakeRejection:
    with pytest.raises(IntakeRejection) as info:
        fn(*args, **kwargs)
    return info.value


@pytest.mark.parametrize("case", ["half_resolution", "crop_16_9", "wider_view", "rotated_90"])
def test_label_images_that_do_not_match_the_colour_camera_are_rejected_without_their_camera_info(case):
    labels = _labels()
    image = {"half_resolution": labels[::2, ::2],
             "crop_16_9": labels[6:42],  # 64x36: 16:9 rows of the 4:3 image
             "wider_view": np.pad(labels, ((6, 6), (8, 8)), constant_values=255)[::1, ::1][:H + 12, :W + 16],
             "rotated_90": np.rot90(labels).copy()}[case]
    error = _reject(register, "labels", PerPixelImage(image, "camera"), COLOR, "camera")
    assert error.reason == "labels_not_registered"
    assert "labels/camera_info" in error.detail


def test_labels_of_the_colour_size_and_frame_are_taken_as_they_are():
    labels = _labels()
    assert register("labels", PerPixelImage(labels, ""), COLOR, "camera") is labels
    assert register("labels", PerPixelImage(labels, "/camera"), COLOR, "camera") is labels


def test_half_resolution_crop_and_wider_view_are_registered_from_their_camera_info():
    labels = _labels()
    # Half resolution: every colour pixel gets the label of the half-resolution pixel that covers it.
    half = Camera(geometry.scale_intrinsics(K, 0.5, 0.5), W // 2, H // 2)
    out = register("labels", PerPixelImage(labels[::2, ::2], "camera", half), COLOR, "camera")
    np.testing.assert_array_equal(out, labels[::2, ::2].repeat(2, 0).repeat(2, 1))
    assert (out == labels).mean() == 1.0  # blocks are multiples of 2 pixels
    # A 16:9 crop (rows 6..41; ROI shifts cy by 6): rows outside it are unknown (255), the rest exact.
    crop_K = K.copy()
    crop_K[1, 2] -= 6
    out = register("labels", PerPixelImage(labels[6:42], "camera", Camera(crop_K, W, 36)), COLOR, "camera")
    np.testing.assert_array_equal(out[6:42], labels[6:42])
    assert (out[:6] == 255).all() and (out[42:] == 255).all()
    # A wider view: the labels camera sees 8 more columns and 6 more rows on each side.
    wide = np.pad(labels, ((6, 6), (8, 8)), constant_values=7)
    wide_K = K.copy()
    wide_K[0, 2] += 8
    wide_K[1, 2] += 6
    out = register("labels", PerPixelImage(wide, "camera", Camera(wide_K, W + 16, H + 12)), COLOR, "camera")
    np.testing.assert_array_equal(out, labels)


def test_a_rotated_label_camera_is_registered_through_the_transform():
    labels = _labels()
    # Labels from a camera rolled 90 degrees about the optical axis (a camera on its side): same centre.
    rotated = np.rot90(labels, k=-1).copy()  # [W, H]: row r, col c holds labels[H - 1 - c, r]
    Kr = np.array([[50.0, 0, 23.5], [0, 50.0, 31.5], [0, 0, 1]])
    R = np.array([[0.0, 1, 0], [-1, 0, 0], [0, 0, 1]])  # colour_from_labels rotation
    def lookup(target, source):
        assert (target, source) == ("camera", "labels_frame")
        T = np.eye(4)
        T[:3, :3] = R
        return T
    image = PerPixelImage(rotated, "labels_frame", Camera(Kr, H, W))
    np.testing.assert_array_equal(register("labels", image, COLOR, "camera", lookup), labels)
    # A label camera 5 cm away cannot be registered without depth: rejected with the distance.
    def shifted(target, source):
        T = np.eye(4)
        T[0, 3] = 0.05
        return T
    error = _reject(register, "labels", PerPixelImage(labels, "other", Camera(K, W, H)), COLOR, "camera", shifted)
    assert error.reason == "labels_not_registered" and "0.050 m" in error.detail


def test_depth_in_another_optical_frame_without_its_camera_info_is_not_stored_as_aligned():
    depth = np.full((H, W), 2.0, np.float32)
    error = _reject(register, "depth", PerPixelImage(depth, "depth_optical_frame"), COLOR, "camera_optical_frame")
    assert error.reason == "depth_not_registered" and "depth_optical_frame" in error.detail
    # The same depth in the colour frame is taken as registered.
    assert register("depth", PerPixelImage(depth, "camera_optical_frame"), COLOR, "camera_optical_frame") is depth
    # With its camera_info it is reprojected through TF; a missing transform is a counted rejection.
    def missing(target, source):
        raise LookupError("frame 'depth_optical_frame' does not exist")
    error = _reject(register, "depth", PerPixelImage(depth, "depth_optical_frame", COLOR), COLOR,
                    "camera_optical_frame", missing)
    assert error.reason == "depth_not_registered" and "does not exist" in error.detail


def test_stream_camera_info_of_another_size_is_bad_stream():
    error = _reject(register, "labels", PerPixelImage(_labels()[::2, ::2], "camera", COLOR), COLOR, "camera")
    assert error.reason == "bad_labels" and "32x24" in error.detail


def test_any_per_pixel_stream_follows_the_same_rule():
    confidence = np.ones((H // 2, W // 2), np.float32)
    error = _reject(register, "confidence", PerPixelImage(confidence, ""), COLOR, "camera")
    assert error.reason == "confidence_not_registered"
    half = Camera(geometry.scale_intrinsics(K, 0.5, 0.5), W // 2, H // 2)
    assert register("confidence", PerPixelImage(confidence, "", half), COLOR, "camera").shape == (H, W)


def test_build_frame_checks_the_colour_camera_and_registers_the_label_confidence_with_the_labels():
    labels = _labels()
    frame = build_frame(5, np.eye(4), _rgb(), COLOR, "camera", labels=PerPixelImage(labels, "camera"))
    assert frame.labels is labels and frame.K is COLOR.K and frame.stamp_ns == 5 and frame.frame_id == "camera"
    assert frame.label_confidence is None
    error = _reject(build_frame, 5, np.eye(4), _rgb()[:, :32], COLOR, "camera")
    assert error.reason == "camera_info_mismatch" and "32x48" in error.detail
    # Ids outside the label set are no rejection any more (before: labels_out_of_set): LabelIntake converts them
    # to 255 and counts them before build_frame (test_label_intake).
    assert "labels_out_of_set" not in REJECT_REASONS and "bad_label_map" in REJECT_REASONS
    # Half-resolution labels with their camera: the confidence (of the label image's size) lands on the same
    # colour pixels as the labels, 0 where the label image does not see.
    half = Camera(geometry.scale_intrinsics(K, 0.5, 0.5), W // 2, H // 2)
    confidence = (labels[::2, ::2] / 15.0).astype(np.float32)
    frame = build_frame(5, np.eye(4), _rgb(), COLOR, "camera", labels=PerPixelImage(labels[::2, ::2], "camera", half),
                        label_confidence=confidence)
    np.testing.assert_array_equal(frame.label_confidence, (frame.labels / 15.0).astype(np.float32))
    assert frame.label_confidence.dtype == np.float32
    crop_K = K.copy()
    crop_K[1, 2] -= 6
    crop = Camera(crop_K, W, 36)
    frame = build_frame(5, np.eye(4), _rgb(), COLOR, "camera", labels=PerPixelImage(labels[6:42], "camera", crop),
                        label_confidence=np.ones((36, W), np.float32))
    assert (frame.label_confidence[6:42] == 1).all() and (frame.label_confidence[:6] == 0).all()
    assert (frame.labels[:6] == 255).all()
    # no label image: nothing to weight
    assert build_frame(5, np.eye(4), _rgb(), COLOR, "camera", label_confidence=confidence).label_confidence is None


def test_a_frame_waiting_for_its_transform_holds_up_none_behind_it():
    from sray_ros.online.intake import TransformWait

    poses = {"b": "pose_b", "c": "pose_c"}  # "a" never gets one, "loop" can never get one

    def lookup(name):
        if name == "loop":
            raise RecursionError("loop")
        return poses[name]

    wait = TransformWait(capacity=3, permanent=lambda exc: isinstance(exc, RecursionError))
    for name, deadline in (("a", 5.0), ("loop", 5.0), ("b", 5.1)):
        wait.add(name, deadline)
    resolved, given_up, next_wait = wait.resolve(lookup, now=0.0)
    assert resolved == [("b", "pose_b")]  # handled at once, behind an unresolvable frame
    assert [(item, type(exc)) for item, exc in given_up] == [("loop", RecursionError)]  # permanent: at once
    assert next_wait == 5.0 and len(wait) == 1
    poses["a"] = "pose_a"  # its transform arrives before the deadline: handled in arrival order
    wait.add("c", 9.0)
    assert wait.resolve(lookup, now=1.0)[0] == [("a", "pose_a"), ("c", "pose_c")]
    wait.add("z", 2.0)
    resolved, given_up, next_wait = wait.resolve(lookup, now=2.0)  # deadline passed: given up with the error
    assert resolved == [] and [item for item, _ in given_up] == ["z"] and next_wait is None
    for name in "abcd":
        wait.add(name, 10.0)
    assert len(wait) == 3 and wait.shed == 1  # the oldest is shed beyond capacity
