"""Image / CameraInfo conversion: round trips per encoding, padding, endianness, every error case."""

from __future__ import annotations

import array
import math

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from sray_ros.ros import image_conversion as ic
from sray_ros.ros.image_conversion import ImageConversionError


def _header(frame: str = "cam", sec: int = 12, nanosec: int = 345) -> Header:
    h = Header()
    h.frame_id = frame
    h.stamp.sec, h.stamp.nanosec = sec, nanosec
    return h


def _raw_image(encoding: str, width: int, height: int, step: int, data: bytes, big: bool = False) -> Image:
    msg = Image()
    msg.encoding, msg.width, msg.height, msg.step = encoding, width, height, step
    msg.is_bigendian = int(big)
    msg.data = array.array("B", data)
    return msg


RNG = np.random.default_rng(0)


@pytest.mark.parametrize("padding", [0, 3])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_round_trip_to_rgb(encoding: str, padding: int) -> None:
    rgb = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    if encoding == "rgb8":
        wire = rgb
    elif encoding == "bgr8":
        wire = rgb[..., ::-1]
    else:
        alpha = np.full((5, 7, 1), 77, np.uint8)
        wire = np.concatenate([rgb if encoding == "rgba8" else rgb[..., ::-1], alpha], axis=-1)
    msg = ic.numpy_to_image(wire, encoding, _header(), row_padding=padding)
    assert msg.step == 7 * wire.shape[2] + padding
    out = ic.image_to_rgb(msg)
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


def test_bgr_byte_layout_on_the_wire() -> None:
    # One red pixel as bgr8 is bytes (0, 0, 255): check against a hand-written buffer, not our writer.
    msg = _raw_image("bgr8", 1, 1, 3, bytes([0, 0, 255]))
    np.testing.assert_array_equal(ic.image_to_rgb(msg), [[[255, 0, 0]]])


def test_rgb_builder_keeps_header_and_fields() -> None:
    rgb = RNG.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    msg = ic.rgb_to_image(rgb, _header("optical", 3, 4))
    assert (msg.encoding, msg.width, msg.height, msg.step, msg.is_bigendian) == ("rgb8", 6, 4, 18, 0)
    assert msg.header.frame_id == "optical" and (msg.header.stamp.sec, msg.header.stamp.nanosec) == (3, 4)
    assert bytes(msg.data) == rgb.tobytes()


@pytest.mark.parametrize("padding", [0, 2])
def test_mono8_labels_round_trip(padding: int) -> None:
    labels = RNG.integers(0, 256, (6, 5), dtype=np.uint8)
    msg = ic.numpy_to_image(labels, "mono8", row_padding=padding)
    np.testing.assert_array_equal(ic.image_to_labels(msg), labels)
    np.testing.assert_array_equal(ic.image_to_numpy(ic.labels_to_image(labels, _header())), labels)


def test_mono16_labels_saturate_to_ignore() -> None:
    ids = np.array([[0, 19, 254], [255, 256, 65535]], np.uint16)
    out = ic.image_to_labels(ic.numpy_to_image(ids, "mono16"))
    np.testing.assert_array_equal(out, [[0, 19, 254], [255, 255, 255]])
    assert out.dtype == np.uint8


@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize("encoding", ["16UC1", "mono16"])
def test_16bit_depth_mm_to_metres_with_padding_and_endianness(encoding: str, big: bool) -> None:
    mm = np.array([[0, 1, 1500], [65535, 250, 4000]], np.uint16)
    msg = ic.numpy_to_image(mm, encoding, is_bigendian=big, row_padding=4)
    assert msg.step == 3 * 2 + 4
    np.testing.assert_array_equal(ic.image_to_numpy(msg), mm)
    depth = ic.image_to_depth(msg)
    assert depth.dtype == np.float32
    expected = mm.astype(np.float32) / 1000.0
    expected[1, 0] = 0.0  # 65535 mm is the sensor's "no return": invalid, not 65.5 m
    np.testing.assert_allclose(depth, expected)
    assert depth[0, 0] == 0.0  # 0 mm stays 0 = invalid


def test_16uc1_big_endian_hand_written_bytes() -> None:
    # 1500 mm = 0x05DC; big-endian bytes 05 DC, then 2 bytes padding.
    msg = _raw_image("16UC1", 1, 2, 4, bytes([0x05, 0xDC, 9, 9, 0x00, 0x01, 9, 9]), big=True)
    np.testing.assert_allclose(ic.image_to_depth(msg), [[1.5], [0.001]], rtol=1e-6)
    little = _raw_image("16UC1", 1, 1, 2, bytes([0xDC, 0x05]), big=False)
    assert ic.image_to_depth(little)[0, 0] == pytest.approx(1.5)


@pytest.mark.parametrize("big", [False, True])
def test_32fc1_depth_non_finite_to_zero(big: bool) -> None:
    metres = np.array([[1.25, np.nan, np.inf], [-np.inf, 0.0, -2.0]], np.float32)
    msg = ic.numpy_to_image(metres, "32FC1", is_bigendian=big, row_padding=8)
    raw = ic.image_to_numpy(msg)
    np.testing.assert_array_equal(np.isnan(raw), np.isnan(metres))
    depth = ic.image_to_depth(msg)
    np.testing.assert_array_equal(depth, [[1.25, 0, 0], [0, 0, 0]])
    assert np.all(np.isfinite(depth))


def test_float_builder_round_trip() -> None:
    values = RNG.random((3, 4)).astype(np.float32)
    msg = ic.float_to_image(values, _header())
    assert msg.encoding == "32FC1" and msg.step == 16
    np.testing.assert_array_equal(ic.image_to_depth(msg), values)
    np.testing.assert_array_equal(ic.image_to_numpy(ic.depth_to_image(values.astype(np.float64))), values)


@pytest.mark.parametrize(
    "encoding, reader",
    [("mono8", ic.image_to_numpy), ("mono8", ic.image_to_labels), ("rgb8", ic.image_to_rgb),
     ("bgr8", ic.image_to_rgb), ("32FC1", ic.image_to_depth), ("16UC1", ic.image_to_depth)],
)
def test_readers_do_not_alias_message_buffer(encoding, reader) -> None:
    channels = 3 if encoding in ("rgb8", "bgr8") else 1
    shape = (2, 2, 3) if channels == 3 else (2, 2)
    msg = ic.numpy_to_image(np.zeros(shape, np.float32 if encoding == "32FC1" else np.uint16 if encoding == "16UC1"
                                      else np.uint8), encoding)
    before = bytes(msg.data)
    out = reader(msg)
    out[...] = 9
    assert bytes(msg.data) == before


# ---------------------------------------------------------------------------------------- errors
def test_unknown_encoding_is_named() -> None:
    msg = _raw_image("yuv422", 2, 2, 4, bytes(8))
    with pytest.raises(ImageConversionError, match=r"yuv422.*expected one of.*rgb8"):
        ic.image_to_numpy(msg)
    with pytest.raises(ImageConversionError, match="yuv422"):
        ic.numpy_to_image(np.zeros((2, 2), np.uint8), "yuv422")


def test_data_size_mismatch_names_sizes() -> None:
    msg = _raw_image("rgb8", 4, 3, 12, bytes(35))
    with pytest.raises(ImageConversionError, match=r"rgb8 image 4x3: data holds 35 bytes, expected step \* height = 12 \* 3 = 36"):
        ic.image_to_rgb(msg)


def test_step_smaller_than_row_names_sizes() -> None:
    msg = _raw_image("16UC1", 4, 2, 6, bytes(12))
    with pytest.raises(ImageConversionError, match=r"step 6 is smaller than width \* bytes per pixel = 4 \* 2 = 8"):
        ic.image_to_depth(msg)


def test_wrong_encoding_for_role() -> None:
    mono = ic.numpy_to_image(np.zeros((2, 2), np.uint8), "mono8")
    with pytest.raises(ImageConversionError, match=r"colour image has encoding 'mono8'"):
        ic.image_to_rgb(mono)
    with pytest.raises(ImageConversionError, match=r"depth image has encoding 'mono8'.*16UC1"):
        ic.image_to_depth(mono)
    rgb = ic.numpy_to_image(np.zeros((2, 2, 3), np.uint8), "rgb8")
    with pytest.raises(ImageConversionError, match=r"label image has encoding 'rgb8'"):
        ic.image_to_labels(rgb)


def test_builder_rejects_bad_arrays() -> None:
    with pytest.raises(ImageConversionError, match=r"rgb8 image needs a uint8 array \[H, W, 3\], got uint8 \(2, 2\)"):
        ic.rgb_to_image(np.zeros((2, 2), np.uint8))
    with pytest.raises(ImageConversionError, match="mono8"):
        ic.labels_to_image(np.zeros((2, 2), np.int64))
    with pytest.raises(ImageConversionError, match="32FC1"):
        ic.float_to_image(np.zeros((2, 2), np.uint8))
    with pytest.raises(ImageConversionError, match=r"values must lie in \[0, 65535\]"):
        ic.numpy_to_image(np.array([[70000]]), "16UC1")
    with pytest.raises(ImageConversionError, match=r"shape \[H, W, 4\]"):
        ic.numpy_to_image(np.zeros((2, 2, 3), np.uint8), "rgba8")


# ------------------------------------------------------------------------------------ camera info
def test_camera_info_round_trip() -> None:
    K = np.array([[320.0, 0.0, 319.5], [0.0, 321.0, 239.5], [0.0, 0.0, 1.0]])
    info = ic.make_camera_info(K, 640, 480, _header("optical"))
    assert isinstance(info, CameraInfo)
    assert (info.width, info.height, info.header.frame_id) == (640, 480, "optical")
    np.testing.assert_array_equal(np.asarray(info.p).reshape(3, 4)[:, :3], K)
    np.testing.assert_array_equal(np.asarray(info.r).reshape(3, 3), np.eye(3))
    out = ic.camera_info_to_K(info)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, K)


@pytest.mark.parametrize(
    "k, match",
    [
        ([0.0] * 9, "positive focal lengths.*fx=0.0"),
        ([-300.0, 0, 10, 0, 300, 10, 0, 0, 1], "positive focal lengths.*fx=-300.0"),
        ([300.0, 0, 10, 0, -1, 10, 0, 0, 1], "fy=-1.0"),
        ([300.0, 0, float("nan"), 0, 300, 10, 0, 0, 1], "non-finite"),
        ([float("inf"), 0, 10, 0, 300, 10, 0, 0, 1], "non-finite"),
        ([300.0, 0, 10, 0, 300, 10, 0, 0, 2], r"last row \[0, 0, 1\]"),
    ],
)
def test_camera_info_validation(k, match) -> None:
    info = CameraInfo()
    info.width, info.height = 64, 48
    info.k = k
    with pytest.raises(ImageConversionError, match=match):
        ic.camera_info_to_K(info)
    with pytest.raises(ImageConversionError, match=match):
        ic.make_camera_info(np.asarray(k).reshape(3, 3), 64, 48)


def test_camera_info_size_and_shape_validation() -> None:
    K = np.array([[100.0, 0, 5], [0, 100, 5], [0, 0, 1]])
    with pytest.raises(ImageConversionError, match="positive image size, got 0x48"):
        ic.make_camera_info(K, 0, 48)
    with pytest.raises(ImageConversionError, match=r"3x3, got shape \(2, 3\)"):
        ic.make_camera_info(K[:2], 10, 10)


def test_serialized_header_reads_stamp_and_frame_without_deserialising():
    from rclpy.serialization import serialize_message

    from sray_ros.ros.image_conversion import serialized_header

    msg = Image(height=2, width=3, encoding="rgb8", step=9, data=bytes(range(18)))
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1_700_000_123, 456_789
    msg.header.frame_id = "camera_color_optical_frame"
    assert serialized_header(serialize_message(msg)) == (1_700_000_123_000_456_789, "camera_color_optical_frame")
    empty_frame = Image()
    assert serialized_header(serialize_message(empty_frame)) == (0, "")
    with pytest.raises(ImageConversionError, match="CDR"):
        serialized_header(b"\x07" * 40)
    with pytest.raises(ImageConversionError, match="malformed"):
        serialized_header(b"\x00\x01\x00\x00" + b"\x00" * 8 + b"\xff\xff\x00\x00" + b"x" * 8)


# ------------------------------------------------------------------------- camera_info: every field
def _info(width=64, height=48, **fields) -> CameraInfo:
    info = ic.make_camera_info(np.array([[100.0, 0, 31.5], [0, 100.0, 23.5], [0, 0, 1]]), width, height)
    for name, value in fields.items():
        setattr(info, name, value)
    return info


def test_camera_model_plain_camera_has_no_notes() -> None:
    model = ic.camera_model_from_info(_info())
    assert (model.width, model.height, model.notes) == (64, 48, ())
    np.testing.assert_array_equal(model.K, np.asarray(_info().k).reshape(3, 3))


def test_camera_model_distortion_uses_rectified_P_with_a_note() -> None:
    P = np.array([[90.0, 0, 30.0, 0], [0, 91.0, 22.0, 0], [0, 0, 1, 0]])
    model = ic.camera_model_from_info(_info(d=[0.1, -0.02, 0.0, 0.0, 0.0], p=P.reshape(-1).tolist()))
    np.testing.assert_array_equal(model.K, P[:, :3])
    assert any("rectified" in note for note in model.notes)
    with pytest.raises(ImageConversionError, match="distortion.*no valid projection P"):
        ic.camera_model_from_info(_info(d=[0.1, 0, 0, 0, 0], p=[0.0] * 12))
    with pytest.raises(ImageConversionError, match="non-finite"):
        ic.camera_model_from_info(_info(d=[float("nan"), 0, 0, 0, 0]))


def test_camera_model_rejects_rectification_rotation_and_notes_P_mismatch_and_baseline() -> None:
    c, s = math.cos(0.1), math.sin(0.1)
    with pytest.raises(ImageConversionError, match="rectification rotation"):
        ic.camera_model_from_info(_info(r=[c, -s, 0, s, c, 0, 0, 0, 1]))
    model = ic.camera_model_from_info(_info(r=[0.0] * 9))  # unset R is fine
    assert model.notes == ()
    P = np.array([[120.0, 0, 31.5, -12.0], [0, 120.0, 23.5, 0], [0, 0, 1, 0]])
    model = ic.camera_model_from_info(_info(p=P.reshape(-1).tolist()))
    assert model.K[0, 0] == 100.0  # zero D: K is the image's own intrinsics
    assert any("differs from K" in n for n in model.notes) and any("baseline" in n for n in model.notes)


def test_camera_model_applies_roi_and_binning() -> None:
    from sensor_msgs.msg import RegionOfInterest

    # 64x48 calibration; the image is the ROI x 8..55, y 4..43 (48x40) binned 2x2 -> 24x20
    info = _info(binning_x=2, binning_y=2, roi=RegionOfInterest(x_offset=8, y_offset=4, width=48, height=40))
    model = ic.camera_model_from_info(info)
    assert (model.width, model.height) == (24, 20)
    # pixel centres: binned u = (u_roi + 0.5) / 2 - 0.5 with u_roi = u - 8
    np.testing.assert_allclose(model.K, [[50.0, 0, (31.5 - 8 + 0.5) / 2 - 0.5], [0, 50.0, (23.5 - 4 + 0.5) / 2 - 0.5],
                                         [0, 0, 1]])
    with pytest.raises(ImageConversionError, match="roi"):
        ic.camera_model_from_info(_info(roi=RegionOfInterest(x_offset=40, y_offset=0, width=48, height=40)))


# ------------------------------------------------------------------------------ pose messages
def test_pose_message_round_trip_and_errors() -> None:
    from geometry_msgs.msg import Pose
    from std_msgs.msg import Header

    from sray_ros.ros.pose_conversion import matrix_to_pose, matrix_to_transform, pose_to_matrix

    c, s = math.cos(0.3), math.sin(0.3)
    m = np.array([[c, -s, 0, 1.0], [s, c, 0, -2.0], [0, 0, 1, 0.5], [0, 0, 0, 1]])
    pose = matrix_to_pose(m)
    assert (pose.orientation.z, pose.orientation.w) == pytest.approx((math.sin(0.15), math.cos(0.15)))
    np.testing.assert_allclose(pose_to_matrix(pose), m, atol=1e-12)
    t = matrix_to_transform(m, Header(frame_id="map"), "camera")
    assert (t.header.frame_id, t.child_frame_id, t.transform.translation.y) == ("map", "camera", -2.0)
    bad = Pose()
    bad.orientation.w = 0.0
    with pytest.raises(ValueError, match="orientation is not a finite non-zero quaternion"):
        pose_to_matrix(bad)
    bad.orientation.w, bad.position.x = 1.0, float("nan")
    with pytest.raises(ValueError, match="position is not finite"):
        pose_to_matrix(bad)


def test_point_cloud_packs_xyz_rgb_label_at_the_declared_offsets() -> None:
    # The node's ~/semantic/points (what sensor_msgs_py would build): each field read back at its declared
    # offset and type must give the input; rgb is 0x00RRGGBB in the float32 slot RViz reads.
    from std_msgs.msg import Header

    from sray_ros.ros.render_edge import point_cloud

    points = np.array([[1.5, -2.0, 3.25], [0.0, 0.5, 7.0]], np.float32)
    colors = np.array([[255, 128, 1], [0, 0, 0]], np.uint8)
    labels = np.array([3, 255], np.uint32)
    msg = point_cloud(points, colors, labels, Header(frame_id="f"))
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 2, 20, 40)
    raw = bytes(msg.data)
    fields = {f.name: f for f in msg.fields}
    for i in range(2):
        row = raw[i * msg.point_step:(i + 1) * msg.point_step]
        xyz = [np.frombuffer(row, "<f4", 1, fields[k].offset)[0] for k in "xyz"]
        np.testing.assert_array_equal(xyz, points[i])
        rgb = np.frombuffer(row, "<u4", 1, fields["rgb"].offset)[0]
        assert rgb == (int(colors[i, 0]) << 16 | int(colors[i, 1]) << 8 | int(colors[i, 2]))
        assert np.frombuffer(row, "<u4", 1, fields["label"].offset)[0] == labels[i]
