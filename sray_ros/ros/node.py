"""The sray_ros node: thin ROS wiring over the plain Python objects of :mod:`sray_ros.online`.

Intake (colour + camera_info, optional depth and labels, paired by stamp) -> pose from the node's own TF
buffer (or a PoseStamped topic) -> :class:`KeyframeBuffer` (features encoded once by the
:class:`Renderer`). ``~/render_semantic_view`` renders on an executor thread of its own callback group,
``~/fine_tune`` trains in another, so image intake never waits for either. Fine-tuning (requested and
automatic) is orchestrated by :class:`~sray_ros.online.fine_tune_runner.FineTuneRunner`.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rcl_interfaces.msg import SetParametersResult
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.serialization import deserialize_message
from rclpy.signals import SignalHandlerOptions
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data)
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from std_srvs.srv import Trigger

from sray_ros import geometry
from sray_ros.action import FineTune
from sray_ros.msg import LabelInfo, NodeStatus
from sray_ros.data.label_sets import IGNORE_INDEX, colorize_ids
from sray_ros.online.checkpoint_paths import CheckpointDirectory, CheckpointPathError
from sray_ros.online.fine_tune_runner import FineTuneRunner
from sray_ros.online.time_jump import TimeJumpDetector
from sray_ros.online.fine_tuner import FineTuneGoal
from sray_ros.ros.image_conversion import (ImageConversionError, camera_model_from_info,
                                           float_to_image, image_to_depth, image_to_labels, image_to_numpy,
                                           image_to_rgb, labels_to_image, make_camera_info, rgb_to_image,
                                           serialized_header)
from sray_ros.online.keyframes import Frame, KeyframeBuffer
from sray_ros.ros.pose_conversion import matrix_to_transform, pose_stamped_to_transform, pose_to_matrix
from sray_ros.online.render_queue import RenderQueue
from sray_ros.online.renderer import UNKNOWN_LABEL, RenderError, RenderRequest, Renderer
from sray_ros.online.sync import MatchedSet, SheddingWorker, StampSynchronizer
from sray_ros.ros.serving import REQUEST_QOS, action_server_qos, create_render_service, spin_until_signalled
from sray_ros.ros.tf_buffer import TransformBuffer, TransformError, to_nanoseconds
from sray_ros.srv import LoadCheckpoint, RenderSemanticView, SaveCheckpoint
from sray_ros.train.checkpoint import CheckpointError

try:
    from tf2_msgs.msg import TFMessage
except ImportError:  # pragma: no cover - scripts/setup.sh builds a stand-in when no distro provides it
    TFMessage = None

POSE_TOPIC_FRAME = "sray_pose_topic_camera"  # child frame the pose topic's poses are stored under
# Matched frame sets that may wait for the keyframe worker before the oldest is shed. A live camera
# (SensorDataQoS) gets a short queue: the freshest frames matter and older ones are stale. Reliable
# subscriptions (bag replay) mean every frame is wanted, so the queue only bounds memory.
KEYFRAME_QUEUE_LIVE = 4
KEYFRAME_QUEUE_RELIABLE = 64
INTAKE_REJECT_REASONS = ("bad_message", "bad_stamp", "bad_encoding", "bad_camera_info", "camera_info_mismatch",
                         "missing_tf", "missing_camera_info", "bad_depth", "bad_labels", "labels_out_of_set")
# Child frame (under the node's name) of the rendered images' optical frame; broadcast on /tf_static at each
# render so RViz can place the images.
RENDER_FRAME_SUFFIX = "render_optical_frame"
# Writable parameters the renderer reads at render time (applied by the parameter callback).
RENDERER_PARAMETERS = {"num_source_views": "num_source_views", "confidence_threshold": "confidence_threshold",
                       "opacity_threshold": "opacity_threshold", "max_render_pixels": "max_pixels",
                       "render_chunk": "chunk"}


class ParameterError(ValueError):
    """A parameter value the node cannot run with; the message names the parameter, the value and what is expected."""


@dataclass(frozen=True)
class RawImage:
    """A serialized sensor_msgs/Image with its header's frame_id (decoded only when needed)."""

    data: bytes
    frame_id: str


def default_checkpoint() -> str:
    """The shipped default model: share/sray_ros/models/sray_default.pt (or the source tree's models/)."""
    try:
        from ament_index_python.packages import get_package_share_directory

        candidate = Path(get_package_share_directory("sray_ros")) / "models" / "sray_default.pt"
        if candidate.exists():
            return str(candidate)
    except Exception:  # noqa: BLE001 - not installed through ament: fall back to the source tree
        pass
    return str(Path(__file__).resolve().parents[2] / "models" / "sray_default.pt")


# name -> (default, description, extra descriptor fields)
PARAMETERS: dict[str, tuple] = {
    "world_frame": ("map", "Fixed frame keyframe poses and renders are expressed in.", {"read_only": True}),
    "pose_source": ("tf", "'tf': pose of image.header.frame_id in world_frame from /tf at the image stamp; "
                    "'topic': from the PoseStamped topic 'pose' (camera optical frame).", {"read_only": True}),
    "tf_timeout_s": (5.0, "How long the keyframe worker waits for the transform at an image stamp (as tf2 "
                          "message filters do); newer frames queue meanwhile (TF arrives in stamp order).",
                     {"floating_point_range": (0.0, 30.0)}),
    "checkpoint": ("", "Model checkpoint to load at start; empty = the shipped default model.", {"read_only": True}),
    "device": ("", "Torch device: cpu, cuda, cuda:1; empty = cuda when available, else cpu.", {"read_only": True}),
    "sensor_data_qos": (True, "Subscribe to images with SensorDataQoS (best effort); false = reliable.",
                        {"read_only": True}),
    "sync_slop_s": (0.02, "Max stamp difference when pairing colour, camera_info, depth and labels.",
                    {"floating_point_range": (0.0, 1.0), "read_only": True}),
    "max_keyframes": (32, "Keyframe ring size (oldest evicted).", {"integer_range": (2, 1024), "read_only": True}),
    "min_translation_m": (0.10, "A frame becomes a keyframe when it moved this far since the last one ...",
                          {"floating_point_range": (0.0, 10.0), "read_only": True}),
    "min_rotation_deg": (10.0, "... or turned this much ...", {"floating_point_range": (0.0, 180.0), "read_only": True}),
    "min_interval_s": (0.0, "... or this long passed (0 = time alone never makes a keyframe).",
                       {"floating_point_range": (0.0, 3600.0), "read_only": True}),
    "blur_threshold": (0.0, "Reject frames whose variance of Laplacian is below this (0 = off).",
                       {"floating_point_range": (0.0, 10000.0), "read_only": True}),
    "keyframe_width": (160, "Keyframes are resized to this width (the model's working resolution).",
                       {"integer_range": (32, 4096), "read_only": True}),
    "keyframe_height": (120, "Keyframe height.", {"integer_range": (32, 4096), "read_only": True}),
    "time_jump_s": (1.0, "A stamp this much older than the last one is a backwards time jump (bag loop): "
                    "keyframes and transforms are cleared.", {"floating_point_range": (0.01, 3600.0), "read_only": True}),
    "num_source_views": (8, "Source keyframes per render when a request asks for 0.", {"integer_range": (1, 64)}),
    "default_width": (160, "Render width when a request's camera_info has zero size.", {"integer_range": (1, 4096)}),
    "default_height": (120, "Render height when a request's camera_info has zero size.", {"integer_range": (1, 4096)}),
    "max_render_pixels": (640 * 480, "Larger requests are refused.", {"integer_range": (1, 16_777_216)}),
    "max_queued_renders": (4, "Render requests that may wait while one renders; more are refused at once with the "
                           "reason and the estimated wait (0 = refuse whenever a render runs).",
                           {"integer_range": (0, 1000)}),
    "confidence_threshold": (0.3, "Pixels whose max class probability is below this are labelled 255.",
                             {"floating_point_range": (0.0, 1.0)}),
    "opacity_threshold": (0.5, "Pixels whose accumulated opacity is below this are labelled 255.",
                          {"floating_point_range": (0.0, 1.0)}),
    "render_chunk": (0, "Rays per model call (0 = automatic, cache-sized chunks; memory bound).",
                     {"integer_range": (0, 1_048_576)}),
    "render_num_coarse": (0, "Coarse samples per ray (0 = the model's).", {"integer_range": (0, 512), "read_only": True}),
    "render_num_fine": (-1, "Fine samples per ray (-1 = the model's).", {"integer_range": (-1, 512), "read_only": True}),
    "sampling": ("auto", "Ray sampling: 'auto' (depth-guided around the keyframes' fused depth where the chosen "
                 "keyframes carry depth, else hierarchical), 'depth_guided' (RGB-only keyframes: around the coarse "
                 "pass's depth) or 'hierarchical' (coarse + fine, GSNeRF off).", {"read_only": True}),
    "num_surface_samples": (0, "Depth-guided samples per ray around the depth (0 = the model's; at least 2).",
                            {"integer_range": (0, 512), "read_only": True}),
    "surface_semantics": ("", "Depth-guided semantics: 'volume' (weights-rendered logits), 'surface' (the "
                          "max-weight sample's, GSNeRF) or empty = the model's.", {"read_only": True}),
    "render_threads": (1, "Torch CPU threads for renders (0 = torch's default). 1: renders are many small ops "
                       "and slowed 3-17x at 2 threads when other processes loaded the cores; raise it only on "
                       "cores reserved for the node.", {"integer_range": (0, 256), "read_only": True}),
    "publish_point_cloud": (True, "Publish ~/semantic/points for each render.", {}),
    "fine_tune_default_steps": (300, "Steps of a fine_tune goal with max_steps 0.", {"integer_range": (1, 1_000_000)}),
    "fine_tune_num_rays": (256, "Rays per fine-tuning step.", {"integer_range": (16, 65536)}),
    "checkpoint_dir": ("", "Folder the node writes checkpoints to (~/save_checkpoint, fine-tune goals, "
                       "fine_tune_checkpoint); paths outside it are refused. Empty = $ROS_HOME/sray_ros/checkpoints.",
                       {"read_only": True}),
    "fine_tune_checkpoint": ("", "File fine-tuned weights (and ~/save_checkpoint without a path) are written to: a "
                             "name inside checkpoint_dir, or an absolute path inside it (empty = fine_tuned.pt).", {}),
    "use_keyframe_labels": (True, "Render with the label images of keyframes that carry one (labels/image: mono8 or "
                            "mono16 class ids of the node's label set, 255 = unknown) besides the model's "
                            "semantics; false = the model's semantics only.", {}),
    "auto_fine_tune_every": (0, "Start fine-tuning after this many new labelled keyframes (0 = off).",
                             {"integer_range": (0, 100_000)}),
    "status_period_s": (1.0, "Period of NodeStatus and /diagnostics.", {"floating_point_range": (0.05, 60.0),
                                                                         "read_only": True}),
}


_TYPE_NAMES = {bool: "a boolean (true/false)", int: "an integer", float: "a number (float; integers are accepted)",
               str: "a string"}


def _expected(default: Any, extra: dict) -> str:
    text = _TYPE_NAMES[type(default)]
    for key in ("floating_point_range", "integer_range"):
        if key in extra:
            text += f" in [{extra[key][0]}, {extra[key][1]}]"
    return text


def _descriptor(description: str, extra: dict) -> ParameterDescriptor:
    d = ParameterDescriptor(description=description, read_only=extra.get("read_only", False))
    if "floating_point_range" in extra:
        lo, hi = extra["floating_point_range"]
        d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    if "integer_range" in extra:
        lo, hi = extra["integer_range"]
        d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
    return d


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


class SrayNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("sray_node", **kwargs)
        self._declare_parameters()
        p = lambda name: self.get_parameter(name).value  # noqa: E731
        self.world_frame = p("world_frame")
        if p("pose_source") not in ("tf", "topic"):
            raise ParameterError(f"parameter 'pose_source' = {p('pose_source')!r}: expected 'tf' or 'topic'")
        self.pose_from_topic = p("pose_source") == "topic"
        if TFMessage is None and not self.pose_from_topic:
            raise ValueError("tf2_msgs is not importable, so the node cannot subscribe to /tf and every frame would "
                             "be rejected as missing_tf: source a ROS distro that has tf2_msgs, or run "
                             "scripts/setup.sh (it builds a stand-in), or set pose_source:=topic")
        if TFMessage is None:
            self.get_logger().error("tf2_msgs is not importable: no /tf subscription (target poses must be given in "
                                    f"'{self.world_frame}') and rendered images' frame is not broadcast")
        self.use_keyframe_labels = bool(p("use_keyframe_labels"))
        for name, allowed in (("sampling", ("auto", "hierarchical", "depth_guided")),
                              ("surface_semantics", ("", "volume", "surface"))):
            if p(name) not in allowed:
                raise ParameterError(f"parameter '{name}' = {p(name)!r}: expected one of {allowed}")
        if p("num_surface_samples") == 1:
            raise ParameterError("parameter 'num_surface_samples' = 1: expected 0 (the model's) or at least 2")

        self.tf = TransformBuffer(cache_time_s=30.0)
        self.renderer = Renderer(device=p("device"), num_source_views=p("num_source_views"),
                                 confidence_threshold=p("confidence_threshold"),
                                 opacity_threshold=p("opacity_threshold"), max_pixels=p("max_render_pixels"),
                                 chunk=p("render_chunk") or None, num_coarse=p("render_num_coarse") or None,
                                 num_fine=None if p("render_num_fine") < 0 else p("render_num_fine"),
                                 sampling=p("sampling"), num_surface_samples=p("num_surface_samples") or None,
                                 surface_semantics=p("surface_semantics") or None, num_threads=p("render_threads"),
                                 use_keyframe_labels=self.use_keyframe_labels)
        self.keyframes = KeyframeBuffer(
            max_keyframes=p("max_keyframes"), min_translation_m=p("min_translation_m"),
            min_rotation_deg=p("min_rotation_deg"), min_interval_s=p("min_interval_s") or math.inf,
            blur_threshold=p("blur_threshold"), encode_fn=self.renderer.encode,
            target_size=(p("keyframe_width"), p("keyframe_height")), time_jump_s=p("time_jump_s"))
        self.time_jumps = TimeJumpDetector(p("time_jump_s"))
        # Matched sets go to a keyframe worker through a short queue: the subscription callbacks only read
        # headers and pair stamps, so a slow TF wait, decode or feature encoding never holds up the
        # camera_info / colour callbacks (whose DDS queues would otherwise overwrite their partners). When
        # the worker falls behind, the oldest waiting set is shed (counted as intake_overflow: overload).
        self._keyframe_worker = SheddingWorker(
            self._on_matched, KEYFRAME_QUEUE_LIVE if p("sensor_data_qos") else KEYFRAME_QUEUE_RELIABLE,
            on_error=lambda exc: self.get_logger().error(f"frame handling failed: {type(exc).__name__}: {exc}",
                                                         throttle_duration_sec=5.0),
            name="sray_keyframes")
        self.sync = StampSynchronizer(["color", "camera_info"], ["depth", "depth_info", "labels"],
                                      self._keyframe_worker.put,
                                      slop_s=p("sync_slop_s"), time_jump_s=p("time_jump_s"))
        self._stats_lock = threading.Lock()
        self._goals_executing = 0
        self.rejected = {reason: 0 for reason in INTAKE_REJECT_REASONS}
        self.frames_received = 0
        self._arrivals: deque[float] = deque(maxlen=200)
        self._last_color_stamp_ns: int | None = None
        self.renders_served = 0
        self.last_render_time_s = 0.0
        # ~/clear_keyframes bumps the epoch under this lock; a frame being handled meanwhile is dropped
        # instead of landing in the cleared buffer.
        self._clear_lock = threading.Lock()
        self._clear_epoch = 0
        try:
            self.checkpoints = CheckpointDirectory(p("checkpoint_dir"))
            self.checkpoints.resolve("", p("fine_tune_checkpoint"))
        except CheckpointPathError as exc:
            raise ParameterError(f"parameter 'checkpoint_dir' / 'fine_tune_checkpoint': {exc}") from None
        self.fine_tuner = FineTuneRunner(
            self.renderer, self.keyframes.snapshot, log=lambda level, message: getattr(self.get_logger(), level)(message),
            resolve_path=lambda requested: self.checkpoints.resolve(
                requested, self.get_parameter("fine_tune_checkpoint").value))

        checkpoint = p("checkpoint") or default_checkpoint()
        try:
            self.renderer.load(checkpoint)
            self.get_logger().info(f"loaded model {checkpoint} on {self.renderer.device}")
        except CheckpointError as exc:
            self.get_logger().error(f"no model loaded ({exc}); renders fail until ~/load_checkpoint succeeds")

        # Callback groups: intake, TF, rendering, fine-tuning and housekeeping run concurrently.
        self._intake_group = MutuallyExclusiveCallbackGroup()
        self._tf_group = MutuallyExclusiveCallbackGroup()
        # Reentrant: a render request waits as a suspended coroutine; the RenderQueue runs renders one at a time.
        self._render_group = ReentrantCallbackGroup()
        self.render_queue = RenderQueue(p("max_queued_renders"), name="sray_render")
        self._fine_tune_group = ReentrantCallbackGroup()
        self._service_group = MutuallyExclusiveCallbackGroup()

        # Reliable (bag replay): a deeper queue so that a busy intake delays frames instead of losing them.
        sensor_qos = qos_profile_sensor_data if p("sensor_data_qos") else QoSProfile(depth=30)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_subscription(CameraInfo, "color/camera_info", self._make_intake("camera_info"), sensor_qos,
                                 callback_group=self._intake_group)
        self.create_subscription(CameraInfo, "depth/camera_info", self._make_intake("depth_info"), sensor_qos,
                                 callback_group=self._intake_group)
        self._warned: set[str] = set()  # camera_info notes already logged (each once)
        # Images arrive serialized: pairing and the pose check need only their header, and turning a
        # 640x480 message into a Python object costs the executor more than most frames are worth.
        for topic, stream in (("color/image", "color"), ("depth/image", "depth"), ("labels/image", "labels")):
            self.create_subscription(Image, topic, self._make_intake(stream, raw=True), sensor_qos,
                                     callback_group=self._intake_group, raw=True)
        if TFMessage is not None:
            tf_qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
            static_qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                                    durability=DurabilityPolicy.TRANSIENT_LOCAL)
            self.create_subscription(TFMessage, "/tf", lambda m: self._on_tf(m, False), tf_qos,
                                     callback_group=self._tf_group)
            self.create_subscription(TFMessage, "/tf_static", lambda m: self._on_tf(m, True), static_qos,
                                     callback_group=self._tf_group)
        if self.pose_from_topic:
            self.create_subscription(PoseStamped, "pose", self._on_pose, QoSProfile(depth=100),
                                     callback_group=self._tf_group)

        self.semantic_pub = self.create_publisher(Image, "~/semantic/image_raw", 1)
        self.semantic_color_pub = self.create_publisher(Image, "~/semantic_color/image_raw", 1)
        self.semantic_info_pub = self.create_publisher(CameraInfo, "~/semantic/camera_info", 1)
        self.points_pub = self.create_publisher(PointCloud2, "~/semantic/points", 1)
        self.status_pub = self.create_publisher(NodeStatus, "~/status", 10)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        latched = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.label_info_pub = self.create_publisher(LabelInfo, "~/label_info", latched)
        self.render_frame = f"{self.get_fully_qualified_name().strip('/')}/{RENDER_FRAME_SUFFIX}"
        self.render_frame_pub = (None if TFMessage is None else
                                 self.create_publisher(TFMessage, "/tf_static", QoSProfile(
                                     depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                     durability=DurabilityPolicy.TRANSIENT_LOCAL)))
        self._publish_label_info()

        create_render_service(self, RenderSemanticView, "~/render_semantic_view", self._on_render, self.render_queue,
                              self._render_group, lambda message: self.get_logger().warning(
                                  message, throttle_duration_sec=5.0))
        for srv_type, name, callback in ((SaveCheckpoint, "~/save_checkpoint", self._on_save),
                                         (LoadCheckpoint, "~/load_checkpoint", self._on_load),
                                         (Trigger, "~/clear_keyframes", self._on_clear)):
            self.create_service(srv_type, name, callback, qos_profile=REQUEST_QOS, callback_group=self._service_group)
        self.fine_tune_server = ActionServer(
            self, FineTune, "~/fine_tune", execute_callback=self._execute_fine_tune,
            goal_callback=self._on_fine_tune_goal, cancel_callback=lambda goal: CancelResponse.ACCEPT,
            callback_group=self._fine_tune_group, **action_server_qos())
        # Wall (steady) time: on sim time the status would freeze when /clock stops (a replayed bag ended).
        self.create_timer(p("status_period_s"), self._publish_status, callback_group=self._service_group,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._keyframe_worker.start()

    # -------------------------------------------------------------------------------------- parameters
    def _declare_parameters(self) -> None:
        """Declare PARAMETERS. An integer given for a float parameter (``tf_timeout_s: 5``, ``-p x:=10``) is
        taken as that float; any other bad value raises :class:`ParameterError` naming the parameter, the value
        and the expected type."""
        for name, (default, description, extra) in PARAMETERS.items():
            override = self._parameter_overrides.get(name)
            if (override is not None and isinstance(default, float)
                    and override.type_ == Parameter.Type.INTEGER):
                self._parameter_overrides[name] = Parameter(name, value=float(override.value))
                override = self._parameter_overrides[name]
            try:
                self.declare_parameter(name, default, _descriptor(description, extra))
            except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
                value = override.value if override is not None else default
                raise ParameterError(f"parameter '{name}' = {value!r}: expected {_expected(default, extra)}") from exc

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """Runtime changes (``ros2 param set``): rclpy has checked type, range and read-only; the renderer's
        settings take effect for the renders that start afterwards."""
        changes = {}
        for param in parameters:
            if param.name == "fine_tune_checkpoint":
                try:
                    self.checkpoints.resolve("", param.value)
                except CheckpointPathError as exc:
                    return SetParametersResult(successful=False, reason=str(exc))
        for param in parameters:
            if param.name in RENDERER_PARAMETERS:
                value = param.value
                if param.name == "render_chunk":
                    value = int(value) or None
                changes[RENDERER_PARAMETERS[param.name]] = value
            elif param.name == "max_queued_renders":
                self.render_queue.configure(int(param.value))
            elif param.name == "use_keyframe_labels":
                self.use_keyframe_labels = bool(param.value)
                changes["use_keyframe_labels"] = self.use_keyframe_labels
        if changes:
            self.renderer.configure(**changes)
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------------------------------ intake
    def _reject(self, reason: str, detail: str) -> None:
        with self._stats_lock:
            self.rejected[reason] += 1
        self.get_logger().warning(f"frame rejected ({reason}): {detail}", throttle_duration_sec=5.0)

    def _make_intake(self, stream: str, raw: bool = False):
        def callback(msg) -> None:
            if raw:
                try:
                    stamp, frame_id = serialized_header(msg)
                except ImageConversionError as exc:
                    return self._reject("bad_message", f"{stream}: {exc}")
                msg = RawImage(bytes(msg), frame_id)
            else:
                stamp = to_nanoseconds(msg.header.stamp)
            if stream == "color":
                with self._stats_lock:
                    self.frames_received += 1
                    self._arrivals.append(time.monotonic())
                    repeated, self._last_color_stamp_ns = stamp == self._last_color_stamp_ns, stamp
                if repeated and stamp > 0:
                    # Two captures cannot share a time: a driver stamping with a constant (or a stale
                    # clock) would give every frame the pose of that one instant.
                    return self._reject("bad_stamp", f"color image has the same stamp as the previous one "
                                        f"({stamp / 1e9:.9f} s); stamp images with their capture time")
            if stamp <= 0:
                # Stamp 0 means "latest" to a TF lookup: the frame would get whatever pose came last.
                if stream == "color":
                    self._reject("bad_stamp", "color image stamped 0 (an unset header.stamp): its pose cannot be "
                                 "looked up; stamp images with their capture time")
                else:
                    self.get_logger().warning(f"{stream} message stamped 0 ignored (an unset header.stamp)",
                                              throttle_duration_sec=5.0)
                return
            if stream == "color":
                self._check_time_jump(stamp)
            self.sync.add(stream, stamp, msg)
        return callback

    def _check_time_jump(self, stamp_ns: int) -> None:
        if self.time_jumps.update(stamp_ns):
            # Bag loop or restarted clock: old poses would poison lookups; the buffer clears itself.
            self.tf.clear()
            self.get_logger().info("time jumped backwards: cleared keyframes and transforms")

    def _on_tf(self, msg, is_static: bool) -> None:
        for error in self.tf.set_transforms(msg.transforms, authority="tf", is_static=is_static):
            self.get_logger().warning(f"transform ignored: {error}", throttle_duration_sec=5.0)

    def _on_pose(self, msg: PoseStamped) -> None:
        t = pose_stamped_to_transform(msg.header, msg.pose, POSE_TOPIC_FRAME)
        for error in self.tf.set_transforms([t], authority="pose"):
            self.get_logger().warning(f"pose ignored: {error}", throttle_duration_sec=5.0)

    def shut_down(self, timeout_s: float = 4.0) -> None:
        """Answer everything in flight while the executor still spins (SIGINT / SIGTERM): waiting and running
        render requests are refused with the reason, a fine-tuning goal stops at its next step and ends with
        a result saying why (weights and checkpoint file unchanged)."""
        self.get_logger().info("shutting down: answering render requests and stopping fine-tuning")
        self.render_queue.close(timeout=0.0, abandon_running=True)
        deadline = time.monotonic() + timeout_s
        self.fine_tuner.close(timeout=timeout_s)
        while time.monotonic() < deadline:
            with self._stats_lock:
                if self._goals_executing == 0:
                    break
            time.sleep(0.02)
        time.sleep(0.3)  # the executor sends the results and responses just made

    def destroy_node(self) -> None:
        # Also reached for a node whose __init__ failed part-way (rclpy.shutdown destroys it).
        if hasattr(self, "render_queue"):
            self.render_queue.close(timeout=2.0, abandon_running=True)
        if hasattr(self, "fine_tuner"):
            self.fine_tuner.close()
        if hasattr(self, "_keyframe_worker"):
            self._keyframe_worker.close()
        super().destroy_node()

    def _on_matched(self, matched: MatchedSet) -> None:
        with self._clear_lock:
            epoch = self._clear_epoch
        color_raw, info = matched["color"], matched["camera_info"]
        frame_id = POSE_TOPIC_FRAME if self.pose_from_topic else color_raw.frame_id
        try:
            c2w = self.tf.lookup_transform(self.world_frame, frame_id, matched.stamp_ns,
                                           timeout=self.get_parameter("tf_timeout_s").value)
        except TransformError as exc:
            return self._reject("missing_tf", str(exc))
        # Pose, time and motion first: most frames of a slow camera are not keyframe candidates, and
        # decoding a full image for them would dominate intake.
        candidate, _ = self.keyframes.precheck(matched.stamp_ns, c2w)
        if not candidate:
            return None
        color_msg = deserialize_message(color_raw.data, Image)
        try:
            rgb = image_to_rgb(color_msg)
        except ImageConversionError as exc:
            return self._reject("bad_encoding", str(exc))
        try:
            camera = camera_model_from_info(info)
        except (ImageConversionError, ValueError) as exc:
            return self._reject("bad_camera_info", str(exc))
        self._warn_once(camera.notes)
        K = camera.K
        if (camera.width, camera.height) != (color_msg.width, color_msg.height):
            return self._reject("camera_info_mismatch", f"camera_info describes a {camera.width}x{camera.height} "
                                f"image, the colour image is {color_msg.width}x{color_msg.height}")
        depth = labels = None
        if matched.get("depth") is not None:
            try:
                depth = self._registered_depth(matched, camera, color_msg.header.frame_id)
            except (ImageConversionError, TransformError) as exc:
                return self._reject("bad_depth", str(exc))
        if matched.get("labels") is not None:
            try:
                labels_msg = deserialize_message(matched["labels"].data, Image)
                labels = image_to_labels(labels_msg)
            except ImageConversionError as exc:
                return self._reject("bad_labels", str(exc))
            outside = self._labels_outside_set(image_to_numpy(labels_msg))
            if outside:
                return self._reject("labels_out_of_set", f"label image has class ids {outside} outside the label "
                                    f"set (0..{self._num_classes() - 1}, {UNKNOWN_LABEL} = unknown)")
            labels = self._fit(labels, rgb.shape)
        with self._clear_lock:  # ~/clear_keyframes waits for this frame, or this frame sees the clear
            if epoch != self._clear_epoch:
                return None
            accepted, reason = self.keyframes.consider(
                Frame(matched.stamp_ns, c2w, K, rgb, depth, labels, color_msg.header.frame_id))
        if not accepted and reason == "encode_failed":
            self.get_logger().error(f"keyframe encoding failed: {self.keyframes.last_encode_error}",
                                    throttle_duration_sec=5.0)
        if accepted and labels is not None:
            self.fine_tuner.labelled_keyframe_added(self.get_parameter("auto_fine_tune_every").value,
                                                    self._fine_tune_goal)

    def _num_classes(self) -> int | None:
        handle = self.renderer.handle
        return None if handle is None else len(handle.label_set["class_names"])

    def _labels_outside_set(self, ids: np.ndarray) -> list[int]:
        """Class ids (at most 5) that are neither in the model's label set nor 255 (unknown); [] without a model
        (fine-tuning checks again before it trains)."""
        num_classes = self._num_classes()
        if num_classes is None:
            return []
        bad = (ids >= num_classes) & (ids != UNKNOWN_LABEL)
        return [int(v) for v in np.unique(ids[bad])[:5]] if bad.any() else []

    @staticmethod
    def _fit(image: np.ndarray, shape) -> np.ndarray:
        """Labels annotated on the colour image, possibly at another resolution: exact nearest resize."""
        return geometry.resize_nearest(image, shape[1], shape[0])

    def _warn_once(self, notes) -> None:
        for note in notes:
            if note not in self._warned:
                self._warned.add(note)
                self.get_logger().warning(note)

    def _registered_depth(self, matched: MatchedSet, color, color_frame: str) -> np.ndarray:
        """The depth image in the colour camera (``geometry.register_depth``), from the depth camera_info.

        The depth and colour optical frames are taken as identical when their frame ids are (or the depth
        one is empty); otherwise TF gives the transform between them at the frame's stamp. Without a depth
        camera_info, depth of the colour image's size is taken as registered (warned once) and depth of
        another size is rejected: stretching it would put depths at the wrong pixels.
        """
        raw = matched["depth"]
        depth_msg = deserialize_message(raw.data, Image)
        depth = image_to_depth(depth_msg)
        size = (int(depth_msg.width), int(depth_msg.height))
        info = matched.get("depth_info")
        if info is None:
            if size != (color.width, color.height):
                raise ImageConversionError(
                    f"depth image is {size[0]}x{size[1]}, the colour image {color.width}x{color.height}, and no "
                    "depth/camera_info arrived to register it into the colour camera")
            self._warn_once(["no depth/camera_info received: depth of the colour image's size is taken as "
                             "registered to the colour camera"])
            return depth
        depth_camera = camera_model_from_info(info)
        self._warn_once(depth_camera.notes)
        if (depth_camera.width, depth_camera.height) != size:
            raise ImageConversionError(f"depth camera_info describes a {depth_camera.width}x{depth_camera.height} "
                                       f"image, the depth image is {size[0]}x{size[1]}")
        depth_frame = raw.frame_id or color_frame
        color_from_depth = None
        if depth_frame.lstrip("/") != color_frame.lstrip("/"):
            color_from_depth = self.tf.lookup_transform(color_frame, depth_frame, matched.stamp_ns,
                                                        timeout=self.get_parameter("tf_timeout_s").value)
        return geometry.register_depth(depth, depth_camera.K, color.K, (color.width, color.height), color_from_depth)

    # ------------------------------------------------------------------------------------------ render
    def _target_request(self, request: RenderSemanticView.Request) -> RenderRequest:
        pose = request.target_pose
        frame = pose.header.frame_id or self.world_frame
        try:
            local = pose_to_matrix(pose.pose)
        except ValueError as exc:
            raise RenderError(f"target pose: {exc}") from exc
        try:
            world_from_frame = (np.eye(4) if frame.lstrip("/") == self.world_frame.lstrip("/") else
                                self.tf.lookup_transform(self.world_frame, frame, to_nanoseconds(pose.header.stamp)))
        except TransformError as exc:
            raise RenderError(f"cannot transform the target pose from '{frame}' to '{self.world_frame}': {exc}")
        info = request.camera_info
        width = info.width or self.get_parameter("default_width").value
        height = info.height or self.get_parameter("default_height").value
        K = np.array(info.k, np.float64).reshape(3, 3)
        notes: tuple[str, ...] = ()
        if info.width and info.height and np.any(K):
            try:  # every field checked as for the input cameras; ROI / binning give the rendered size
                camera = camera_model_from_info(info)
            except ImageConversionError as exc:
                raise RenderError(f"request {exc}") from None
            K, width, height, notes = camera.K, camera.width, camera.height, camera.notes
        else:
            # Default intrinsics: the newest keyframe's camera, scaled to the requested size.
            snapshot = self.keyframes.snapshot()
            if not snapshot:
                raise RenderError("keyframe buffer is empty: no keyframes received yet, nothing to render from")
            latest = snapshot[-1].frame
            h0, w0 = latest.rgb.shape[:2]
            K = geometry.scale_intrinsics(np.asarray(latest.K, np.float64), width / w0, height / h0)
        return RenderRequest(world_from_frame @ local, K, int(width), int(height), int(request.num_source_views),
                             notes)

    def _on_render(self, request: RenderSemanticView.Request, response: RenderSemanticView.Response):
        start = time.perf_counter()
        try:
            self.renderer.require_model()
            render_request = self._target_request(request)
            snapshot = self.keyframes.snapshot()
            self.renderer.forget({kf.id for kf in snapshot})
            result = self.renderer.render(snapshot, render_request)
        except RenderError as exc:
            response.success, response.message = False, str(exc)
            return response
        except Exception as exc:  # noqa: BLE001 - a failed render must never take the node down
            self.get_logger().error(f"render failed: {type(exc).__name__}: {exc}")
            response.success, response.message = False, f"internal error: {type(exc).__name__}: {exc}"
            return response
        header = Header(stamp=request.target_pose.header.stamp, frame_id=self.render_frame)
        self._broadcast_render_frame(render_request.c2w, header)
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
        response.render_time_s = float(time.perf_counter() - start)
        with self._stats_lock:
            self.renders_served += 1
            self.last_render_time_s = response.render_time_s
        self._publish_render(result, render_request, header)
        return response

    def _broadcast_render_frame(self, c2w: np.ndarray, header: Header) -> None:
        """world_frame -> the rendered images' optical frame on /tf_static (latched: the latest render's pose)."""
        if self.render_frame_pub is None:
            return
        t = matrix_to_transform(c2w, Header(stamp=header.stamp, frame_id=self.world_frame), header.frame_id)
        self.render_frame_pub.publish(TFMessage(transforms=[t]))

    def _publish_render(self, result, render_request: RenderRequest, header: Header) -> None:
        handle = self.renderer.handle
        self.semantic_pub.publish(labels_to_image(result.labels, header))
        if handle is not None:
            display = colorize_ids(result.labels, handle.label_set["colors"])
            self.semantic_color_pub.publish(rgb_to_image(display, header))
        self.semantic_info_pub.publish(make_camera_info(render_request.K, render_request.width,
                                                        render_request.height, header))
        if self.get_parameter("publish_point_cloud").value:
            import torch

            keep = result.known & np.isfinite(result.depth)
            K = torch.from_numpy(np.asarray(render_request.K, np.float32))
            c2w = torch.from_numpy(np.asarray(render_request.c2w, np.float32))
            depth = torch.from_numpy(np.nan_to_num(result.depth).astype(np.float32))
            points = geometry.backproject_depth(depth, K, c2w).numpy().reshape(-1, 3)
            flat = keep.reshape(-1)
            cloud_header = Header(stamp=header.stamp, frame_id=self.world_frame)
            self.points_pub.publish(point_cloud(points[flat], result.color.reshape(-1, 3)[flat],
                                                result.labels.reshape(-1)[flat].astype(np.uint32), cloud_header))

    # ---------------------------------------------------------------------------------------- fine-tune
    def _on_fine_tune_goal(self, goal) -> GoalResponse:
        # Every goal is accepted, so that it ends with a result whose message says why (a rejection carries
        # no reason): FineTuneRunner.run refuses it while another goal runs, waits for a cancelled one, and
        # cancels an automatic run.
        return GoalResponse.ACCEPT

    def _fine_tune_goal(self, max_steps: int = 0, **fields) -> FineTuneGoal:
        return FineTuneGoal(max_steps=max_steps or self.get_parameter("fine_tune_default_steps").value,
                            num_rays=self.get_parameter("fine_tune_num_rays").value,
                            num_sources=self.get_parameter("num_source_views").value, **fields)

    def _execute_fine_tune(self, goal_handle):
        with self._stats_lock:
            self._goals_executing += 1
        try:
            return self._run_fine_tune_goal(goal_handle)
        finally:
            with self._stats_lock:
                self._goals_executing -= 1

    def _run_fine_tune_goal(self, goal_handle):
        request = goal_handle.request
        goal = self._fine_tune_goal(int(request.max_steps), max_duration_s=float(request.max_duration_s),
                                    learning_rate=float(request.learning_rate),
                                    keyframe_ids=[int(i) for i in request.keyframe_ids])
        start = time.monotonic()
        last_feedback = [0.0]

        def on_step(stats) -> None:
            now = time.monotonic()
            if now - last_feedback[0] < 0.5 and stats.step < goal.max_steps:
                return
            last_feedback[0] = now
            feedback = FineTune.Feedback(step=stats.step, loss=stats.loss, semantic_loss=stats.semantic_loss,
                                         color_loss=stats.color_loss, elapsed_s=now - start)
            rate = (now - start) / max(stats.step, 1)
            feedback.eta_s = float(rate * (goal.max_steps - stats.step))
            goal_handle.publish_feedback(feedback)

        outcome = self.fine_tuner.run(goal, request.checkpoint_path, on_step, lambda: goal_handle.is_cancel_requested)
        if outcome.status == "failed":
            self.get_logger().error(f"fine-tuning: {outcome.message}")
        result = FineTune.Result(success=outcome.success, message=outcome.message, steps_done=int(outcome.steps_done),
                                 final_loss=float(outcome.final_loss), holdout_miou=float(outcome.holdout_miou),
                                 checkpoint_path=outcome.checkpoint_path)
        if outcome.status == "canceled" and goal_handle.is_cancel_requested:
            goal_handle.canceled()
        elif outcome.success:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return result

    # ----------------------------------------------------------------------------------------- services
    def _on_save(self, request, response):
        try:
            path = self.checkpoints.resolve(request.path, self.get_parameter("fine_tune_checkpoint").value)
        except CheckpointPathError as exc:
            response.success, response.message = False, f"not saved: {exc}"
            return response
        try:
            response.message = f"saved {self.renderer.save(path)}"
            response.success = True
        except (RenderError, OSError, RuntimeError) as exc:
            response.success, response.message = False, f"cannot save to {path}: {exc}"
        return response

    def _on_load(self, request, response):
        if not request.path:
            response.success, response.message = False, "path is empty: give the checkpoint file to load"
            return response
        try:
            handle = self.renderer.load(request.path)
        except (CheckpointError, ValueError) as exc:
            response.success, response.message = False, f"{exc} (the current model stays in place)"
            return response
        self._publish_label_info()
        response.success = True
        response.message = f"loaded {request.path} (model generation {handle.generation}); keyframe features are " \
                           "re-encoded on first use"
        return response

    def _on_clear(self, request, response):
        with self._clear_lock:  # frames received before the request must not refill the buffer
            self._clear_epoch += 1
            self._keyframe_worker.clear()
            count = len(self.keyframes)
            self.keyframes.clear()
        self.renderer.forget(set())
        response.success, response.message = True, f"cleared {count} keyframes"
        return response

    # ------------------------------------------------------------------------------------------- status
    def _publish_label_info(self) -> None:
        handle = self.renderer.handle
        if handle is None:
            return
        label_set = handle.label_set
        msg = LabelInfo(name=str(label_set.get("name", "")), class_names=list(label_set["class_names"]),
                        ignore_id=IGNORE_INDEX)
        msg.class_colors = [ColorRGBA(r=c[0] / 255.0, g=c[1] / 255.0, b=c[2] / 255.0, a=1.0)
                            for c in label_set["colors"]]
        self.label_info_pub.publish(msg)

    def status(self) -> NodeStatus:
        snapshot = self.keyframes.snapshot()
        counters = self.keyframes.counters()
        sync = self.sync.counters()
        reasons = dict(counters["rejected"])
        with self._stats_lock:
            for reason, count in self.rejected.items():
                reasons[reason] = count
            arrivals = list(self._arrivals)
            received, renders, last_render = self.frames_received, self.renders_served, self.last_render_time_s
        # A colour frame whose camera_info never came is an input error; queue overflow is overload.
        reasons["missing_camera_info"] = sync["dropped"].get("color", {}).get("no_match", 0)
        reasons["intake_overflow"] = sum(d.get("queue_overflow", 0) for d in sync["dropped"].values()) + \
            self._keyframe_worker.shed
        now = time.monotonic()
        recent = [t for t in arrivals if now - t <= 5.0]
        rate = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0
        handle = self.renderer.handle
        msg = NodeStatus()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.world_frame
        msg.keyframe_count = len(snapshot)
        msg.max_keyframes = self.keyframes.max_keyframes
        msg.keyframe_ids = [kf.id for kf in snapshot]
        msg.labelled_keyframe_count = sum(kf.frame.labels is not None for kf in snapshot)
        msg.frames_received = received
        msg.frames_accepted = sum(counters["accepted"].values())
        msg.reject_reasons = list(reasons)
        msg.reject_counts = [int(v) for v in reasons.values()]
        msg.frames_rejected = int(sum(reasons.values()))
        msg.input_rate_hz = float(rate)
        msg.checkpoint = handle.source if handle else ""
        msg.device = str(self.renderer.device)
        msg.label_set = str(handle.label_set.get("name", "")) if handle else ""
        fine_tune = self.fine_tuner.state()
        msg.fine_tune_state = fine_tune.state
        msg.fine_tune_step = int(fine_tune.step)
        msg.renders_served = renders
        msg.last_render_time_s = float(last_render)
        try:
            with open("/proc/self/statm") as fh:
                msg.resident_memory_mb = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except OSError:
            msg.resident_memory_mb = float("nan")
        return msg

    def _publish_status(self) -> None:
        msg = self.status()
        self.status_pub.publish(msg)
        level = DiagnosticStatus.OK
        summary = f"{msg.keyframe_count} keyframes, {msg.renders_served} renders"
        if not msg.checkpoint:
            level, summary = DiagnosticStatus.ERROR, "no model loaded"
        elif msg.keyframe_count == 0:
            level, summary = DiagnosticStatus.WARN, "no keyframes yet"
        values = {"keyframes": msg.keyframe_count, "labelled_keyframes": msg.labelled_keyframe_count,
                  "input_rate_hz": f"{msg.input_rate_hz:.2f}",
                  "frames_received": msg.frames_received, "frames_accepted": msg.frames_accepted,
                  "last_render_time_s": f"{msg.last_render_time_s:.3f}", "fine_tune_state": msg.fine_tune_state,
                  "device": msg.device, "checkpoint": msg.checkpoint,
                  "resident_memory_mb": f"{msg.resident_memory_mb:.0f}"}
        values.update({f"rejected/{r}": c for r, c in zip(msg.reject_reasons, msg.reject_counts)})
        status = DiagnosticStatus(level=level, name=f"{self.get_name()}: sray", message=summary,
                                  hardware_id=msg.device,
                                  values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        self.diagnostics_pub.publish(DiagnosticArray(header=msg.header, status=[status]))


def main(args=None) -> None:
    # rclpy's signal handlers would shut the context down at once; spin_until_signalled lets the node answer
    # what is in flight first (a fine-tuning goal's result, waiting render requests).
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    try:
        try:
            node = SrayNode()
        except ValueError as exc:  # a parameter the node cannot run with: say which, exit non-zero
            rclpy.logging.get_logger("sray_node").fatal(f"cannot start: {exc}")
            raise SystemExit(1) from None
        executor = MultiThreadedExecutor(num_threads=6)
        executor.add_node(node)
        spin_until_signalled(executor, node.shut_down)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":  # python -m sray_ros.ros.node
    main()
