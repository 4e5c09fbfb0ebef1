"""``sensor_msgs/Image`` and ``sensor_msgs/CameraInfo`` <-> numpy, without cv_bridge.

The node never uses cv_bridge, even where a distro provides it, so that there is a single code path
and it is the one tested here (the ROS 1 ``cv-bridge`` on PyPI corrupts 16UC1 under ROS 2).

Supported encodings (ROS ``sensor_msgs/image_encodings`` names):

====================  =======  ====================================================================
encoding              bytes/px what the readers return
====================  =======  ====================================================================
rgb8, bgr8            3        :func:`image_to_rgb`: ``uint8 [H, W, 3]`` in RGB order
rgba8, bgra8          4        :func:`image_to_rgb`: alpha dropped, RGB order
mono8                 1        :func:`image_to_numpy` / :func:`image_to_labels`: ``uint8 [H, W]``
mono16, 16UC1         2        :func:`image_to_numpy`: ``uint16 [H, W]``; :func:`image_to_depth`:
                               millimetres -> ``float32`` metres, 0 = invalid
32FC1                 4        :func:`image_to_numpy`: ``float32 [H, W]``; :func:`image_to_depth`:
                               metres with NaN/inf replaced by 0 (= invalid)
====================  =======  ====================================================================

Every reader honours ``step`` (row padding is skipped) and ``is_bigendian`` (multi-byte pixels are
byte-swapped to native order). The returned arrays never alias the message buffer, so a message
can be dropped or reused safely. Malformed input raises :class:`ImageConversionError` whose message
names the encoding, the sizes found and what was expected.

The module imports only message classes (no rclpy node), so tests drive it without a running node.
"""

from __future__ import annotations

import array
import struct
from collections.abc import Sequence

import cv2
import numpy as np
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from sray_ros import geometry
from sray_ros.camera import Camera
from sray_ros.data.label_sets import IGNORE_INDEX

# encoding -> (numpy dtype of one channel, number of channels)
_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}
_COLOUR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8")
_DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")
_LABEL_ENCODINGS = ("mono8", "8UC1", "mono16", "16UC1")
MM_PER_M = 1000.0


class ImageConversionError(ValueError):
    """An image or camera-info message cannot be converted; the message says why and what is expected."""


def supported_encodings() -> tuple[str, ...]:
    return tuple(_ENCODINGS)


def bytes_per_pixel(encoding: str) -> int:
    dtype, channels = _lookup(encoding)
    return dtype.itemsize * channels


def _lookup(encoding: str) -> tuple[np.dtype, int]:
    try:
        return _ENCODINGS[encoding]
    except KeyError:
        raise ImageConversionError(
            f"unsupported image encoding {encoding!r}; expected one of {', '.join(_ENCODINGS)}"
        ) from None


# --------------------------------------------------------------------------------------------------
# Image -> numpy
# --------------------------------------------------------------------------------------------------
def image_to_numpy(msg: Image) -> np.ndarray:
    """Pixels of ``msg`` in native byte order: ``[H, W]`` for one channel, ``[H, W, C]`` otherwise.

    Colour channels keep the message's order (use :func:`image_to_rgb` for RGB).
    """
    return _pixels(msg, copy=True)


def _pixels(msg: Image, copy: bool) -> np.ndarray:
    """Validated pixel array; with ``copy=False`` it may be a read-only view of the message buffer."""
    dtype, channels = _lookup(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageConversionError(
            f"{msg.encoding} image {width}x{height}: step {step} is smaller than width * bytes per pixel "
            f"= {width} * {channels * dtype.itemsize} = {row_bytes}"
        )
    data = np.frombuffer(msg.data, dtype=np.uint8) if len(msg.data) else np.zeros(0, np.uint8)
    if data.size != step * height:
        raise ImageConversionError(
            f"{msg.encoding} image {width}x{height}: data holds {data.size} bytes, expected "
            f"step * height = {step} * {height} = {step * height}"
        )
    rows = data.reshape(height, step)[:, :row_bytes]
    wire_dtype = dtype.newbyteorder(">" if msg.is_bigendian else "<") if dtype.itemsize > 1 else dtype
    pixels = np.ascontiguousarray(rows).view(wire_dtype).astype(dtype, copy=copy)
    shape = (height, width) if channels == 1 else (height, width, channels)
    return pixels.reshape(shape)


_TO_RGB = {"bgr8": cv2.COLOR_BGR2RGB, "rgba8": cv2.COLOR_RGBA2RGB, "bgra8": cv2.COLOR_BGRA2RGB}


def image_to_rgb(msg: Image) -> np.ndarray:
    """``uint8 [H, W, 3]`` RGB from an rgb8 / bgr8 / rgba8 / bgra8 image (alpha dropped)."""
    if msg.encoding not in _COLOUR_ENCODINGS:
        raise ImageConversionError(
            f"colour image has encoding {msg.encoding!r}; expected one of {', '.join(_COLOUR_ENCODINGS)}"
        )
    pixels = _pixels(msg, copy=False)
    if msg.encoding == "rgb8":
        return pixels.copy()
    return cv2.cvtColor(pixels, _TO_RGB[msg.encoding])  # a new array; ~10x faster than a strided copy


def image_to_depth(msg: Image) -> np.ndarray:
    """``float32 [H, W]`` depth in metres; 0 marks invalid pixels.

    16UC1 / mono16 hold millimetres (0 and 65535 = no return); 32FC1 holds metres, NaN and +-inf become 0,
    as do negative depths (no sensor reports them and the model treats <= 0 as invalid).
    """
    if msg.encoding not in _DEPTH_ENCODINGS:
        raise ImageConversionError(
            f"depth image has encoding {msg.encoding!r}; expected one of {', '.join(_DEPTH_ENCODINGS)} "
            "(16UC1 millimetres or 32FC1 metres)"
        )
    pixels = _pixels(msg, copy=False)
    return geometry.depth_from_raw(pixels, MM_PER_M if pixels.dtype == np.uint16 else 1.0)


def image_to_label_ids(msg: Image) -> np.ndarray:
    """Class ids ``[H, W]`` of a mono8 / mono16 label image as sent: ``uint8`` or ``uint16`` (a segmenter's ids,
    which a label map may convert; may be a read-only view of the message buffer)."""
    if msg.encoding not in _LABEL_ENCODINGS:
        raise ImageConversionError(
            f"label image has encoding {msg.encoding!r}; expected one of {', '.join(_LABEL_ENCODINGS)}"
        )
    return _pixels(msg, copy=False)


def image_to_labels(msg: Image) -> np.ndarray:
    """``uint8 [H, W]`` class ids from a mono8 / mono16 label image.

    mono16 ids >= 255 cannot be represented in the mono8 convention and become 255 (ignore).
    """
    pixels = image_to_label_ids(msg)
    if pixels.dtype == np.uint8:
        return pixels.copy()
    return np.minimum(pixels, IGNORE_INDEX).astype(np.uint8)


def image_to_confidence(msg: Image) -> np.ndarray:
    """``float32 [H, W]`` per-pixel confidence of a 32FC1 image, values as sent (the caller checks their range).
    Raises :class:`ImageConversionError` for any other encoding."""
    if msg.encoding != "32FC1":
        raise ImageConversionError(f"confidence image has encoding {msg.encoding!r}; expected 32FC1 (probabilities "
                                   "in [0, 1])")
    return np.array(_pixels(msg, copy=False), dtype=np.float32)


# --------------------------------------------------------------------------------------------------
# numpy -> Image
# --------------------------------------------------------------------------------------------------
def numpy_to_image(
    pixels: np.ndarray,
    encoding: str,
    header: Header | None = None,
    *,
    is_bigendian: bool = False,
    row_padding: int = 0,
) -> Image:
    """An Image holding ``pixels`` (``[H, W]`` or ``[H, W, C]``) with the given encoding.

    ``row_padding`` extra zero bytes per row and ``is_bigendian`` exist mainly to exercise readers;
    the builders below always write tightly packed little-endian rows.
    """
    dtype, channels = _lookup(encoding)
    pixels = np.asarray(pixels)
    expected_ndim = 2 if channels == 1 else 3
    if pixels.ndim == 3 and channels == 1 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim != expected_ndim or (channels > 1 and pixels.shape[2] != channels):
        want = "[H, W]" if channels == 1 else f"[H, W, {channels}]"
        raise ImageConversionError(f"{encoding} image needs an array of shape {want}, got {pixels.shape}")
    if pixels.dtype != dtype:
        if dtype.kind in "iu":
            if pixels.dtype.kind not in "biu":
                raise ImageConversionError(f"{encoding} image needs integer pixels ({dtype}), got {pixels.dtype}")
            info = np.iinfo(dtype)
            if pixels.size and (pixels.min() < info.min or pixels.max() > info.max):
                raise ImageConversionError(
                    f"{encoding} image values must lie in [{info.min}, {info.max}], got "
                    f"[{pixels.min()}, {pixels.max()}]"
                )
        elif pixels.dtype.kind not in "biuf":
            raise ImageConversionError(f"{encoding} image needs numeric pixels ({dtype}), got {pixels.dtype}")
    if row_padding < 0:
        raise ImageConversionError(f"row_padding must be >= 0, got {row_padding}")
    height, width = pixels.shape[:2]
    wire_dtype = dtype.newbyteorder(">" if is_bigendian else "<") if dtype.itemsize > 1 else dtype
    rows = np.ascontiguousarray(pixels.astype(wire_dtype)).view(np.uint8).reshape(height, -1)
    if row_padding:
        rows = np.concatenate([rows, np.zeros((height, row_padding), np.uint8)], axis=1)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(height), int(width)
    msg.encoding = encoding
    msg.is_bigendian = int(bool(is_bigendian))
    msg.step = int(rows.shape[1]) if height else int(width * dtype.itemsize * channels + row_padding)
    msg.data = array.array("B", rows.tobytes())  # array.array skips the per-element setter checks
    return msg


def rgb_to_image(rgb: np.ndarray, header: Header | None = None) -> Image:
    """rgb8 Image from ``uint8 [H, W, 3]``."""
    return numpy_to_image(_require(rgb, np.uint8, 3, "rgb8"), "rgb8", header)


def labels_to_image(labels: np.ndarray, header: Header | None = None) -> Image:
    """mono8 Image of class ids (255 = unknown) from ``uint8 [H, W]``."""
    return numpy_to_image(_require(labels, np.uint8, 2, "mono8"), "mono8", header)


def float_to_image(values: np.ndarray, header: Header | None = None) -> Image:
    """32FC1 Image (depth in metres, confidence, ...) from a float ``[H, W]`` array."""
    values = np.asarray(values)
    if values.ndim != 2 or values.dtype.kind != "f":
        raise ImageConversionError(f"32FC1 image needs a float array [H, W], got {values.dtype} {values.shape}")
    return numpy_to_image(values.astype(np.float32, copy=False), "32FC1", header)


depth_to_image = float_to_image


def _require(array_: np.ndarray, dtype, ndim: int, encoding: str) -> np.ndarray:
    array_ = np.asarray(array_)
    if array_.dtype != dtype or array_.ndim != ndim:
        want = "[H, W]" if ndim == 2 else "[H, W, 3]"
        raise ImageConversionError(
            f"{encoding} image needs a {np.dtype(dtype)} array {want}, got {array_.dtype} {array_.shape}"
        )
    return array_


# --------------------------------------------------------------------------------------------------
# CameraInfo
# --------------------------------------------------------------------------------------------------
KNOWN_DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant")


# What the node uses of a CameraInfo: the package's one camera type (intrinsics of the image as published, its
# size, notes on interpreted fields).
CameraModel = Camera


def camera_model_from_info(msg: CameraInfo) -> Camera:
    """Validate every CameraInfo field the node relies on or ignores; raise :class:`ImageConversionError`
    (naming the field and what is expected) for a camera it cannot use correctly.

    * ``width``, ``height``: the calibrated (full-sensor) size, > 0.
    * ``k``: :func:`sray_ros.geometry.intrinsics_problem` must find nothing wrong.
    * ``d``, ``distortion_model``: finite. All-zero (or empty) D: the image is its own rectification and
      K is used. Non-zero D: the node cannot undistort, so it expects the *rectified* image
      (``image_rect``) and uses the rectified intrinsics ``P[:3, :3]`` (a note says so); with no valid P
      it rejects the camera.
    * ``r``: identity or all zero (unset). A stereo rectification rotation is rejected: the rectified
      image's frame is then not the TF frame of the header.
    * ``p``: with zero D, ``P[:3, :3]`` should equal K; if it does not, K is used (note). A non-zero
      ``P[:, 3]`` (a stereo baseline) is ignored (note): poses come from TF.
    * ``binning_x/y`` (0 = 1) and ``roi``: the published image is the ROI of the full image, binned;
      K is shifted by the ROI offset and scaled by 1/binning (pixel-centre convention of
      :func:`sray_ros.geometry.scale_intrinsics`); the ROI must lie inside ``width x height``.
    """
    width, height = int(msg.width), int(msg.height)
    if width <= 0 or height <= 0:
        raise ImageConversionError(f"camera_info needs a positive image size, got {width}x{height}")
    k = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    problem = geometry.intrinsics_problem(k, width, height)
    if problem is not None:
        raise ImageConversionError(f"camera_info: {problem}")
    notes: list[str] = []
    d = np.asarray(msg.d, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(d)):
        raise ImageConversionError(f"camera_info distortion D holds non-finite values: {d.tolist()}")
    p = np.asarray(msg.p, dtype=np.float64).reshape(3, 4)
    r = np.asarray(msg.r, dtype=np.float64).reshape(3, 3)
    if np.any(r) and not np.allclose(r, np.eye(3), atol=1e-6):
        raise ImageConversionError(
            f"camera_info R is a rectification rotation {r.reshape(-1).round(6).tolist()}, not identity: the "
            "rectified image's frame differs from the header's frame (stereo); publish a monocular camera_info "
            "(R = identity) for the frame whose pose TF gives")
    p_valid = np.any(p) and geometry.intrinsics_problem(p[:, :3], width, height) is None
    if np.any(d):
        if not p_valid:
            raise ImageConversionError(
                f"camera_info has distortion ({msg.distortion_model or 'no model'}, D={d.round(6).tolist()}) and no "
                "valid projection P: the node cannot undistort; publish rectified images (image_rect) with their P")
        k = p[:, :3].copy()
        notes.append(f"camera_info has distortion ({msg.distortion_model or 'no model'}, non-zero D): the node does "
                     "not undistort; it expects rectified images (image_rect) and uses the rectified intrinsics P")
        if msg.distortion_model not in KNOWN_DISTORTION_MODELS:
            notes.append(f"camera_info distortion_model {msg.distortion_model!r} is not one of "
                         f"{', '.join(KNOWN_DISTORTION_MODELS)}")
    elif p_valid and not np.allclose(p[:, :3], k, rtol=1e-6, atol=1e-3):
        notes.append(f"camera_info P[:3, :3] {p[:, :3].reshape(-1).tolist()} differs from K "
                     f"{k.reshape(-1).tolist()} although D is zero; using K")
    if p_valid and np.any(p[:, 3]):
        notes.append(f"camera_info P has a stereo baseline column {p[:, 3].tolist()}: ignored (poses come from TF)")
    bx, by = max(int(msg.binning_x), 1), max(int(msg.binning_y), 1)
    roi = msg.roi
    rx, ry, rw, rh = int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height)
    if rw == 0 and rh == 0 and rx == 0 and ry == 0:
        rw, rh = width, height  # all zero: the full image
    if rw <= 0 or rh <= 0 or rx + rw > width or ry + rh > height:
        raise ImageConversionError(f"camera_info roi (x {rx}, y {ry}, {rw}x{rh}) does not lie inside the "
                                   f"{width}x{height} image")
    out_w, out_h = rw // bx, rh // by
    if out_w <= 0 or out_h <= 0:
        raise ImageConversionError(f"camera_info binning {bx}x{by} leaves no pixel of the {rw}x{rh} roi")
    if (rx, ry, rw, rh, bx, by) != (0, 0, width, height, 1, 1):
        k = k.copy()
        k[0, 2] -= rx
        k[1, 2] -= ry
        k = geometry.scale_intrinsics(k, 1.0 / bx, 1.0 / by)
    return Camera(k, out_w, out_h, notes=tuple(notes))


def camera_info_to_K(msg: CameraInfo) -> np.ndarray:
    """``float64 [3, 3]`` intrinsics of the published image, validated by :func:`camera_model_from_info`."""
    return camera_model_from_info(msg).K


def make_camera_info(
    K: np.ndarray | Sequence[Sequence[float]], width: int, height: int, header: Header | None = None
) -> CameraInfo:
    """A pinhole CameraInfo (no distortion, identity R, P = [K | 0]) for a rendered image."""
    k = np.asarray(K, dtype=np.float64)
    if k.shape != (3, 3):
        raise ImageConversionError(f"intrinsics K must be 3x3, got shape {k.shape}")
    _validate_K(k, int(width), int(height))
    msg = CameraInfo()
    if header is not None:
        msg.header = header
    msg.width, msg.height = int(width), int(height)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = k.reshape(-1).tolist()
    msg.r = np.eye(3).reshape(-1).tolist()
    p = np.zeros((3, 4))
    p[:, :3] = k
    msg.p = p.reshape(-1).tolist()
    return msg


def _validate_K(k: np.ndarray, width: int, height: int) -> None:
    problem = geometry.intrinsics_problem(k, width, height)
    if problem is not None:
        raise ImageConversionError(problem)


__all__ = [
    "CameraModel", "ImageConversionError", "bytes_per_pixel", "camera_info_to_K",
    "camera_model_from_info", "depth_to_image",
    "float_to_image", "image_to_confidence", "image_to_depth", "image_to_label_ids", "image_to_labels",
    "image_to_numpy", "image_to_rgb",
    "labels_to_image", "make_camera_info", "numpy_to_image", "rgb_to_image", "supported_encodings",
]



def serialized_header(data: bytes) -> tuple[int, str]:
    """(stamp in ns, frame_id) of a serialized (CDR) message that starts with a ``std_msgs/Header``.

    Lets intake pair and pose-check raw image messages without deserialising their pixels. Layout: a
    4-byte encapsulation header (``00 01``: little-endian CDR, ``00 00``: big-endian), ``int32 sec``,
    ``uint32 nanosec``, then ``frame_id`` as a ``uint32`` length (including the terminating NUL) and bytes.
    """
    data = bytes(data[:4096]) if not isinstance(data, bytes) else data
    if len(data) < 16 or data[0] != 0 or data[1] not in (0, 1):
        raise ImageConversionError(f"not a CDR-serialized message with a header ({len(data)} bytes, "
                                   f"encapsulation {data[:2].hex() if len(data) >= 2 else '?'})")
    order = "<" if data[1] == 1 else ">"
    sec, nanosec, length = struct.unpack_from(order + "iII", data, 4)
    if length == 0 or 16 + length > len(data) or nanosec >= 1_000_000_000:
        raise ImageConversionError(f"malformed header in a serialized message (frame_id length {length}, "
                                   f"nanosec {nanosec}, {len(data)} bytes)")
    frame_id = data[16:16 + length - 1].decode("utf-8", errors="replace")
    return sec * 1_000_000_000 + nanosec, frame_id
