"""The node's intake edge: a matched set of ROS messages -> decoded arrays and :class:`~sray_ros.camera.Camera`
values -> :func:`sray_ros.online.intake.build_frame`. Only decoding and message fields live here; the policy
(registration, rejections) is :mod:`sray_ros.online.intake`'s, that of label ids and their confidence
:mod:`sray_ros.online.label_intake`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image

from sray_ros.camera import Camera, CameraError
from sray_ros.data.label_sets import LabelSet
from sray_ros.online.intake import IntakeRejection, Lookup, PerPixelImage, build_frame
from sray_ros.online.label_intake import LabelIntake
from sray_ros.online.keyframes import Frame
from sray_ros.online.sync import MatchedSet
from sray_ros.ros.image_conversion import (ImageConversionError, camera_model_from_info, image_to_confidence,
                                           image_to_depth, image_to_label_ids, image_to_rgb)

# Optional streams of the synchroniser: per-pixel images, their own camera_infos, the labels' confidence.
OPTIONAL_STREAMS = ("depth", "depth_info", "labels", "labels_info", "confidence")


@dataclass(frozen=True)
class RawImage:
    """A serialized sensor_msgs/Image with its header's frame_id (decoded only when needed)."""

    data: bytes
    frame_id: str


def camera_from_info(info, what: str, reason: str) -> Camera:
    """The :class:`Camera` of a CameraInfo message; :class:`IntakeRejection` with ``reason`` when it is unusable."""
    try:
        return camera_model_from_info(info)
    except (ImageConversionError, CameraError) as exc:
        raise IntakeRejection(reason, f"{what}: {exc}") from None


def frame_from_matched(matched: MatchedSet, c2w: np.ndarray, labels: LabelIntake, label_set: LabelSet | None,
                       lookup: Lookup, note: Callable[[tuple[str, ...]], None] = lambda notes: None) -> Frame:
    """Decode a matched set (colour + camera_info, optional depth / labels with their camera_infos and the labels'
    confidence) posed at ``c2w`` into a keyframe candidate; label ids are converted into ``label_set`` (the
    model's; None without a model) by ``labels`` (its label map, unknown ids counted, the confidence checked).
    Raises :class:`IntakeRejection`; ``note`` receives camera_info notes."""
    color_msg = deserialize_message(matched["color"].data, Image)
    try:
        rgb = image_to_rgb(color_msg)
    except ImageConversionError as exc:
        raise IntakeRejection("bad_encoding", str(exc)) from None
    color = camera_from_info(matched["camera_info"], "color camera_info", "bad_camera_info")
    note(color.notes)
    streams: dict[str, PerPixelImage] = {}
    for stream, decode in (("depth", image_to_depth), ("labels", image_to_label_ids)):
        raw = matched.get(stream)
        if raw is None:
            continue
        try:
            msg = deserialize_message(raw.data, Image)
            values = decode(msg)
        except ImageConversionError as exc:
            raise IntakeRejection(f"bad_{stream}", str(exc)) from None
        info = matched.get(f"{stream}_info")
        camera = None if info is None else camera_from_info(info, f"{stream} camera_info", f"bad_{stream}")
        if camera is not None:
            note(camera.notes)
        elif stream == "depth" and (msg.width, msg.height) == color.size and not _other_frame(raw.frame_id,
                                                                                                color_msg):
            note(("no depth/camera_info received: depth of the colour image's size in the colour optical frame is "
                  "taken as registered to the colour camera",))
        if stream == "labels":
            shape = values.shape
            values = labels.convert(values, label_set)
        streams[stream] = PerPixelImage(values, raw.frame_id, camera)
    confidence = None
    raw = matched.get("confidence")
    if raw is not None and "labels" in streams:
        values = problem = None
        try:
            values = image_to_confidence(deserialize_message(raw.data, Image))
        except ImageConversionError as exc:
            problem = str(exc)
        same = (raw.frame_id or color_msg.header.frame_id).lstrip("/") == (
            streams["labels"].frame_id or color_msg.header.frame_id).lstrip("/")
        confidence = labels.check_confidence(values, problem, shape, same)
    elif raw is not None:
        note(("labels/confidence received without a label image of its stamp: nothing to weight, ignored",))
    return build_frame(matched.stamp_ns, c2w, rgb, color, color_msg.header.frame_id, streams.get("depth"),
                       streams.get("labels"), confidence, lookup)


def _other_frame(frame_id: str, color_msg) -> bool:
    return bool(frame_id) and frame_id.lstrip("/") != color_msg.header.frame_id.lstrip("/")


__all__ = ["OPTIONAL_STREAMS", "RawImage", "camera_from_info", "frame_from_matched"]
