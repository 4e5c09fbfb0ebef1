"""The render service's ROS edge: a ``RenderSemanticView`` request -> one target :class:`~sray_ros.camera.Camera`
-> :class:`~sray_ros.online.renderer.RenderRequest`; a :class:`RenderResult` -> the response's images and the
published topics (labels, colourised labels, camera_info, rendered colour and depth, point cloud;
:class:`RenderPublishers`). The rendering itself is the
:class:`~sray_ros.online.renderer.Renderer`'s.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header

from sray_ros import geometry
from sray_ros.camera import Camera, CameraError
from sray_ros.online.renderer import RenderError, RenderRequest, RenderResult, surface_points
from sray_ros.ros.image_conversion import (ImageConversionError, camera_model_from_info, float_to_image,
                                           labels_to_image, make_camera_info, rgb_to_image)
from sray_ros.ros.pose_conversion import matrix_to_transform, pose_to_matrix
from sray_ros.ros.tf_buffer import TransformError, to_nanoseconds


def point_cloud(points: np.ndarray, colors: np.ndarray, labels: np.ndarray, header: Header) -> PointCloud2:
    """x y z (float32), rgb (float32-packed 0x00RRGGBB, as RViz reads it), label (uint32)."""
    n = len(points)
    dtype = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4"), ("label", "<u4")])
    data = np.empty(n, dtype)
    data["x"], data["y"], data["z"] = points[:, 0], points[:, 1], points[:, 2]
    c = colors.astype(np.uint32)
    data["rgb"] = (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]
    data["label"] = labels
    msg = PointCloud2(header=header, height=1, width=n, is_bigendian=False, point_step=dtype.itemsize,
                      row_step=dtype.itemsize * n, is_dense=True)
    msg.fields = [PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
                  PointField(name="y", offset=4, datatype=PointField.FLOAT32, count=1),
                  PointField(name="z", offset=8, datatype=PointField.FLOAT32, count=1),
                  PointField(name="rgb", offset=12, datatype=PointField.FLOAT32, count=1),
                  PointField(name="label", offset=16, datatype=PointField.UINT32, count=1)]
    msg.data = data.tobytes()
    return msg


def semantic_point_cloud(result: RenderResult, render_request: RenderRequest, header: Header) -> PointCloud2:
    """The rendered surface's known pixels as a cloud in ``header.frame_id`` (the world frame)."""
    points, flat = surface_points(result, render_request)
    return point_cloud(points, result.color.reshape(-1, 3)[flat], result.labels.reshape(-1)[flat].astype(np.uint32),
                       header)


def target_camera(request, world_frame: str, lookup: Callable[[str, str, int], np.ndarray],
                  default_size: tuple[int, int], latest_keyframe) -> Camera:
    """The posed camera a request asks for, validated once: the pose in ``world_frame`` (through ``lookup``
    when the request names another frame); the request's camera_info (every field checked as for input cameras;
    ROI / binning give the size), or with a zero camera_info the newest keyframe's camera scaled to
    ``default_size`` (or the request's width x height when given). Raises :class:`RenderError` with the reason."""
    pose = request.target_pose
    frame = pose.header.frame_id or world_frame
    try:
        local = pose_to_matrix(pose.pose)
    except ValueError as exc:
        raise RenderError(f"target pose: {exc}") from exc
    try:
        world_from_frame = (np.eye(4) if frame.lstrip("/") == world_frame.lstrip("/") else
                            lookup(world_frame, frame, to_nanoseconds(pose.header.stamp)))
    except TransformError as exc:
        raise RenderError(f"cannot transform the target pose from '{frame}' to '{world_frame}': {exc}") from None
    info = request.camera_info
    width, height = info.width or default_size[0], info.height or default_size[1]
    try:
        if info.width and info.height and np.any(np.asarray(info.k)):
            try:
                camera = camera_model_from_info(info)
            except ImageConversionError as exc:
                raise RenderError(f"request {exc}") from None
        else:
            if latest_keyframe is None:
                raise RenderError("keyframe buffer is empty: no keyframes received yet, nothing to render from")
            h0, w0 = latest_keyframe.rgb.shape[:2]
            camera = Camera(geometry.scale_intrinsics(np.asarray(latest_keyframe.K, np.float64), width / w0,
                                                      height / h0), int(width), int(height))
        return camera.with_pose(world_from_frame @ local)
    except CameraError as exc:
        raise RenderError(f"target camera: {exc}") from None


def fill_response(response, request, result: RenderResult, render_request: RenderRequest, header: Header) -> None:
    """A successful response: message (size, sources, sampling, label fusion, notes), coverage, images."""
    response.success = True
    response.message = (f"rendered {render_request.width}x{render_request.height} from {len(result.source_ids)} "
                        f"keyframes ({result.sampling} sampling)")
    if result.label_source_ids:
        response.message += f"; labels fused with {len(result.label_source_ids)} labelled keyframes' labels"
    for note in (*render_request.notes, result.coverage_warning):
        if note:
            response.message += f"; {note}"
    response.source_distance_m = float(result.source_distance_m)
    response.source_overlap = float(result.source_overlap)
    response.labels = labels_to_image(result.labels, header)
    if request.return_color:
        response.color = rgb_to_image(result.color, header)
    if request.return_depth:
        response.depth = float_to_image(result.depth.astype(np.float32), header)
    if request.return_confidence:
        response.confidence = float_to_image(result.confidence.astype(np.float32), header)
    response.source_keyframe_ids = [int(i) for i in result.source_ids]


__all__ = ["fill_response", "point_cloud", "semantic_point_cloud", "target_camera"]


class RenderPublishers:
    """The node's render topics (``~/semantic/image_raw`` mono8 labels, ``~/semantic_color/image_raw``,
    ``~/semantic/camera_info``, ``~/render/color/image_raw``, ``~/render/depth/image_raw`` 32FC1 metres,
    ``~/semantic/points``) and the rendered images' optical frame on ``/tf_static`` (``tf_message_type`` is
    ``tf2_msgs/TFMessage``, or None where it is not importable: no frame is broadcast)."""

    def __init__(self, node, tf_message_type=None) -> None:
        pub = node.create_publisher
        self.labels = pub(Image, "~/semantic/image_raw", 1)
        self.colour_labels = pub(Image, "~/semantic_color/image_raw", 1)
        self.info, self.points = pub(CameraInfo, "~/semantic/camera_info", 1), pub(PointCloud2, "~/semantic/points", 1)
        self.color, self.depth = pub(Image, "~/render/color/image_raw", 1), pub(Image, "~/render/depth/image_raw", 1)
        self.tf_message_type = tf_message_type
        self.frame = None if tf_message_type is None else pub(tf_message_type, "/tf_static", QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))

    def broadcast_frame(self, c2w: np.ndarray, header: Header, world_frame: str) -> None:
        """``world_frame`` -> ``header.frame_id`` (the rendered images' optical frame, pose ``c2w`` [4, 4]) on
        /tf_static, latched: the latest render's pose."""
        if self.frame is not None:
            t = matrix_to_transform(c2w, Header(stamp=header.stamp, frame_id=world_frame), header.frame_id)
            self.frame.publish(self.tf_message_type(transforms=[t]))

    def publish(self, result: RenderResult, render_request: RenderRequest, header: Header, label_set=None,
                cloud_frame: str | None = None) -> None:
        """Publish a render; colourised labels when ``label_set`` is given, the point cloud (in ``cloud_frame``)
        when that is given."""
        self.labels.publish(labels_to_image(result.labels, header))
        if label_set is not None:
            self.colour_labels.publish(rgb_to_image(label_set.colorize(result.labels), header))
        self.info.publish(make_camera_info(render_request.K, render_request.width, render_request.height, header))
        self.color.publish(rgb_to_image(result.color, header))
        self.depth.publish(float_to_image(result.depth.astype(np.float32), header))
        if cloud_frame is not None:
            self.points.publish(semantic_point_cloud(result, render_request, Header(stamp=header.stamp,
                                                                                    frame_id=cloud_frame)))
