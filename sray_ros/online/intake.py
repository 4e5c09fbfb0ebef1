"""Intake policy: decoded images and cameras in, a :class:`~sray_ros.online.keyframes.Frame` or a counted reject
reason out. Plain Python (no rclpy): the node's edge decodes messages and calls :func:`build_frame`.

Every per-pixel stream (depth, labels, and any future one such as a per-pixel confidence) must land on the
colour camera's pixels. It is **registered from its own camera_info or rejected**, never stretched:

* With its own camera (from ``<stream>/camera_info``) the image must have that camera's size
  (``bad_<stream>`` otherwise) and is re-expressed in the colour camera: another resolution, a crop (ROI), a
  wider or narrower view are all exact because the pixels of two cameras with one optical centre map onto each
  other without depth (:func:`geometry.resample_same_centre`; pixels the stream does not see become its
  *unknown* value, 0 for depth, 255 for labels). A stream in another optical frame needs the transform between
  the frames (``lookup``, from TF): depth is reprojected through its own values
  (:func:`geometry.register_depth`); other streams only when the frames share their centre (a rotation, e.g. a
  camera mounted on its side), else ``<stream>_not_registered``.
* Without its own camera the image is taken as registered only when it is already the colour image's size *and*
  in the colour image's optical frame (header frame_id equal or empty); otherwise ``<stream>_not_registered``:
  half-resolution labels, a 16:9 crop, a wider view or a rotated image cannot be told apart without the
  camera_info, so none is guessed.

Label ids are converted before (:mod:`sray_ros.online.label_intake`: a label map, unknown ids -> 255 counted,
never a reason to reject; ``bad_label_map`` only when the configured map does not fit a newly loaded model's
label set). A per-pixel confidence of the labels is registered with the label image's camera. The colour
camera_info must describe the colour image's size (``camera_info_mismatch``).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sray_ros import geometry
from sray_ros.camera import Camera
from sray_ros.data.label_sets import IGNORE_INDEX
from sray_ros.online.keyframes import Frame

PER_PIXEL_STREAMS = ("depth", "labels", "confidence")
# Value a registered stream holds where it has no data (pixels it does not see).
UNKNOWN_VALUE = {"depth": 0.0, "labels": IGNORE_INDEX, "confidence": 0.0}
REJECT_REASONS = ("bad_encoding", "bad_camera_info", "camera_info_mismatch", "bad_depth", "bad_labels",
                  "bad_label_map", "depth_not_registered", "labels_not_registered")
# Largest camera-centre offset (metres) between two optical frames treated as sharing their centre.
SAME_CENTRE_M = 1e-6


class IntakeRejection(Exception):
    """A frame that cannot become a keyframe: ``reason`` (one of :data:`REJECT_REASONS`, counted by the node)
    and ``detail`` (what was wrong and what is expected)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class PerPixelImage:
    """A decoded per-pixel image: ``values`` ``[H, W]`` (depth float32 metres with 0 = invalid, labels uint8 class
    ids with 255 = unknown), the optical ``frame_id`` of its header (empty = the colour image's) and its own
    ``camera`` from its camera_info (None when none arrived)."""

    values: np.ndarray
    frame_id: str = ""
    camera: Camera | None = None


# lookup(target_frame, source_frame) -> T_target_source [4, 4] at the frame's stamp; raises on failure.
Lookup = Callable[[str, str], np.ndarray]


def _same_frame(a: str, b: str) -> bool:
    return not a or a.lstrip("/") == b.lstrip("/")


def register(stream: str, image: PerPixelImage, color: Camera, color_frame: str,
             lookup: Lookup | None = None) -> np.ndarray:
    """``image`` on the colour camera's pixels, ``[color.height, color.width]`` of the image's dtype (policy in the
    module docstring). Raises :class:`IntakeRejection` (``bad_<stream>`` / ``<stream>_not_registered``); a failed
    ``lookup`` is re-raised as ``<stream>_not_registered`` naming the frames."""
    values = np.asarray(image.values)
    h, w = values.shape[:2]
    frame = image.frame_id or color_frame
    same_frame = _same_frame(image.frame_id, color_frame)
    if image.camera is None:
        if not same_frame:
            raise IntakeRejection(f"{stream}_not_registered",
                                  f"{stream} image is in optical frame '{frame}', the colour image in '{color_frame}', "
                                  f"and no {stream}/camera_info arrived to register it into the colour camera")
        if (w, h) != color.size:
            raise IntakeRejection(f"{stream}_not_registered",
                                  f"{stream} image is {w}x{h}, the colour image {color.width}x{color.height}, and no "
                                  f"{stream}/camera_info arrived to register it: a lower resolution, a crop, a wider "
                                  f"view or a rotated image cannot be told apart, and stretching it would put values "
                                  f"at the wrong pixels; publish {stream}/camera_info with the same stamp")
        return values
    camera = image.camera
    if camera.size != (w, h):
        raise IntakeRejection(f"bad_{stream}", f"{stream} camera_info describes a {camera.width}x{camera.height} "
                                               f"image, the {stream} image is {w}x{h}")
    fill = UNKNOWN_VALUE.get(stream, 0)
    if same_frame:
        if stream == "depth":
            return geometry.register_depth(values, camera.K, color.K, color.size)
        return geometry.resample_same_centre(values, camera.K, color.K, color.size, fill)
    if lookup is None:
        raise IntakeRejection(f"{stream}_not_registered", f"{stream} image is in optical frame '{frame}', the colour "
                                                          f"image in '{color_frame}', and no transform is available")
    try:
        color_from_stream = np.asarray(lookup(color_frame, frame), np.float64)
    except Exception as exc:  # noqa: BLE001 - any lookup failure: the stream cannot be placed
        raise IntakeRejection(f"{stream}_not_registered", f"no transform from the {stream} optical frame '{frame}' to "
                                                          f"the colour optical frame '{color_frame}': {exc}") from exc
    if stream == "depth":
        return geometry.register_depth(values, camera.K, color.K, color.size, color_from_stream)
    offset = float(np.linalg.norm(color_from_stream[:3, 3]))
    if offset > SAME_CENTRE_M:
        raise IntakeRejection(f"{stream}_not_registered",
                              f"{stream} optical frame '{frame}' is {offset:.3f} m from the colour optical frame "
                              f"'{color_frame}': without depth for the {stream} pixels they cannot be placed in the "
                              f"colour camera; publish {stream} in the colour camera's optical frame")
    return geometry.resample_same_centre(values, camera.K, color.K, color.size, fill, color_from_stream[:3, :3])


def stamp_problem(stream: str, stamp_ns: int, repeated: bool = False) -> str | None:
    """Why a message's stamp cannot be used (None when it can): stamp 0 (an unset ``header.stamp``: to a TF lookup
    it means "latest", so the frame would get whatever pose came last), or a colour image repeating the previous
    one's stamp (two captures cannot share a time: a driver stamping with a constant or a stale clock)."""
    if stamp_ns <= 0:
        if stream == "color":
            return ("color image stamped 0 (an unset header.stamp): its pose cannot be looked up; stamp images with "
                    "their capture time")
        return f"{stream} message stamped 0 ignored (an unset header.stamp)"
    if repeated:
        return (f"{stream} image has the same stamp as the previous one ({stamp_ns / 1e9:.9f} s); stamp images with "
                "their capture time")
    return None


def build_frame(stamp_ns: int, c2w: np.ndarray, rgb: np.ndarray, color: Camera, color_frame: str,
                depth: PerPixelImage | None = None, labels: PerPixelImage | None = None,
                label_confidence: np.ndarray | None = None, lookup: Lookup | None = None) -> Frame:
    """One keyframe candidate from decoded images: ``rgb`` ``uint8 [H, W, 3]`` of the ``color`` camera (pose
    ``c2w`` ``[4, 4]`` at ``stamp_ns``), optional depth and labels registered into it (:func:`register`).
    ``labels.values`` are class ids of the node's label set already (a label map applied,
    :class:`~sray_ros.online.label_intake.LabelIntake`); ``label_confidence`` ``float32`` of the label image's
    size and optical frame, in [0, 1], is registered with the labels' camera (0 where the label image does not
    see). Raises :class:`IntakeRejection`."""
    if (rgb.shape[1], rgb.shape[0]) != color.size:
        raise IntakeRejection("camera_info_mismatch", f"camera_info describes a {color.width}x{color.height} image, "
                                                      f"the colour image is {rgb.shape[1]}x{rgb.shape[0]}")
    registered = {}
    for stream, image in (("depth", depth), ("labels", labels)):
        if image is not None:
            registered[stream] = register(stream, image, color, color_frame, lookup)
    confidence = None
    if labels is not None and label_confidence is not None:
        confidence = register("confidence", PerPixelImage(np.asarray(label_confidence, np.float32), labels.frame_id,
                                                          labels.camera), color, color_frame, lookup)
    return Frame(int(stamp_ns), c2w, color.K, rgb, registered.get("depth"), registered.get("labels"), color_frame,
                 confidence)


class TransformWait:
    """Frames waiting for their pose, each until its own deadline, without holding up the frames behind it.

    tf2's message filter makes each frame wait for its transform; waiting in line (as this node did) let one
    frame whose transform never comes (an unknown frame, a loop, a TF publisher that stopped) delay every
    frame behind it by the whole timeout. Here a frame whose pose cannot be looked up yet stays in this list
    and is tried again whenever transforms arrive (:meth:`resolve`); a later frame whose pose is there is
    handled at once. A frame is given up at its deadline (or at once for an error that waiting cannot fix,
    ``permanent(exc)``). At most ``capacity`` frames wait: the oldest is shed beyond that (counted in ``shed``).
    Thread-safe.
    """

    def __init__(self, capacity: int, permanent: Callable[[BaseException], bool] = lambda exc: False) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.permanent = permanent
        self.shed = 0
        self._waiting: deque[tuple[float, Any]] = deque()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._waiting)

    def add(self, item: Any, deadline: float) -> None:
        """Queue ``item`` until ``deadline`` (any monotonic clock, the one given to :meth:`resolve`)."""
        with self._lock:
            self._waiting.append((deadline, item))
            if len(self._waiting) > self.capacity:
                self._waiting.popleft()
                self.shed += 1

    def clear(self) -> None:
        with self._lock:
            self._waiting.clear()

    def resolve(self, lookup: Callable[[Any], Any], now: float
                ) -> tuple[list[tuple[Any, Any]], list[tuple[Any, BaseException]], float | None]:
        """Try every waiting item in arrival order: ``(resolved [(item, lookup(item))], given_up [(item, error)],
        seconds until the next deadline or None)``. An item whose lookup raises waits on unless its deadline
        has passed or the error is permanent."""
        with self._lock:
            waiting = list(self._waiting)
        resolved, given_up, done = [], [], set()
        for deadline, item in waiting:
            try:
                resolved.append((item, lookup(item)))
            except Exception as exc:  # noqa: BLE001 - the lookup's error is the reason given
                if now >= deadline or self.permanent(exc):
                    given_up.append((item, exc))
                else:
                    continue
            done.add(id(item))
        with self._lock:
            self._waiting = deque(entry for entry in self._waiting if id(entry[1]) not in done)
            next_deadline = min((d for d, _ in self._waiting), default=None)
        return resolved, given_up, None if next_deadline is None else max(0.0, next_deadline - now)


__all__ = ["IntakeRejection", "PER_PIXEL_STREAMS", "PerPixelImage", "REJECT_REASONS", "TransformWait", "build_frame",
           "register", "stamp_problem"]
