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
import time
from collections import deque

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
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
from sray_ros.online.intake import REJECT_REASONS as INTAKE_POLICY_REASONS, IntakeRejection, TransformWait
from sray_ros.online.keyframes import KeyframeBuffer
from sray_ros.ros.parameters import (ParameterError, check_choices, declare_parameters, default_checkpoint,
                                     renderer_changes)
from sray_ros.ros.intake_edge import OPTIONAL_STREAMS, RawImage, frame_from_matched
from sray_ros.ros.pose_conversion import matrix_to_transform, pose_stamped_to_transform, pose_to_matrix
from sray_ros.online.render_queue import RenderQueue
from sray_ros.online.renderer import UNKNOWN_LABEL, RenderError, RenderRequest, Renderer
from sray_ros.online.sync import MatchedSet, SheddingWorker, StampSynchronizer
from sray_ros.ros.serving import REQUEST_QOS, action_server_qos, create_render_service, spin_until_signalled
from sray_ros.ros.tf_buffer import LoopError, TransformBuffer, TransformError, to_nanoseconds
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
INTAKE_REJECT_REASONS = ("bad_message", "bad_stamp", "missing_tf", "missing_camera_info") + INTAKE_POLICY_REASONS
# Child frame (under the node's name) of the rendered images' optical frame; broadcast on /tf_static at each
# render so RViz can place the images.
RENDER_FRAME_SUFFIX = "render_optical_frame"


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
        declare_parameters(self)
        p = lambda name: self.get_parameter(name).value  # noqa: E731
        check_choices(p)
        self.world_frame = p("world_frame")
        self.pose_from_topic = p("pose_source") == "topic"
        if TFMessage is None and not self.pose_from_topic:
            raise ValueError("tf2_msgs is not importable, so the node cannot subscribe to /tf and every frame would "
                             "be rejected as missing_tf: source a ROS distro that has tf2_msgs, or run "
                             "scripts/setup.sh (it builds a stand-in), or set pose_source:=topic")
        if TFMessage is None:
            self.get_logger().error("tf2_msgs is not importable: no /tf subscription (target poses must be given in "
                                    f"'{self.world_frame}') and rendered images' frame is not broadcast")
        self.use_keyframe_labels = bool(p("use_keyframe_labels"))

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
        # Frames whose transform is not there yet wait in a TransformWait (retried as /tf arrives, each until
        # its own tf_timeout_s), so one unresolvable frame never holds up the frames behind it.
        capacity = KEYFRAME_QUEUE_LIVE if p("sensor_data_qos") else KEYFRAME_QUEUE_RELIABLE
        self._tf_wait = TransformWait(capacity, permanent=lambda exc: isinstance(exc, LoopError))
        self._keyframe_worker = SheddingWorker(
            self._on_matched, capacity,
            on_error=lambda exc: self.get_logger().error(f"frame handling failed: {type(exc).__name__}: {exc}",
                                                         throttle_duration_sec=5.0),
            name="sray_keyframes", on_wake=self._resolve_waiting)
        self.sync = StampSynchronizer(["color", "camera_info"], OPTIONAL_STREAMS,
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
        for topic, stream in (("depth/camera_info", "depth_info"), ("labels/camera_info", "labels_info")):
            self.create_subscription(CameraInfo, topic, self._make_intake(stream), sensor_qos,
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
    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """Runtime changes (``ros2 param set``): rclpy has checked type, range and read-only; the renderer's
        settings take effect for the renders that start afterwards."""
        for param in parameters:  # validated first: a refused value changes nothing
            if param.name == "fine_tune_checkpoint":
                try:
                    self.checkpoints.resolve("", param.value)
                except CheckpointPathError as exc:
                    return SetParametersResult(successful=False, reason=str(exc))
        for param in parameters:
            if param.name == "max_queued_renders":
                self.render_queue.configure(int(param.value))
        changes = renderer_changes(parameters)
        if "use_keyframe_labels" in changes:
            self.use_keyframe_labels = changes["use_keyframe_labels"]
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
        for conflict in self.tf.take_conflicts():
            self.get_logger().warning(conflict)
        if len(self._tf_wait):
            self._keyframe_worker.poke()

    def _on_pose(self, msg: PoseStamped) -> None:
        t = pose_stamped_to_transform(msg.header, msg.pose, POSE_TOPIC_FRAME)
        for error in self.tf.set_transforms([t], authority="pose"):
            self.get_logger().warning(f"pose ignored: {error}", throttle_duration_sec=5.0)
        if len(self._tf_wait):
            self._keyframe_worker.poke()

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
        """Keyframe worker: a new matched set waits for its pose with the others (handled in _resolve_waiting)."""
        self._tf_wait.add(matched, time.monotonic() + self.get_parameter("tf_timeout_s").value)

    def _pose_of(self, matched: MatchedSet) -> np.ndarray:
        frame_id = POSE_TOPIC_FRAME if self.pose_from_topic else matched["color"].frame_id
        return self.tf.lookup_transform(self.world_frame, frame_id, matched.stamp_ns)

    def _resolve_waiting(self) -> float | None:
        """Handle every waiting frame whose pose is there, give up those past their deadline; returns the
        seconds until the next deadline (the worker wakes then, or when a transform arrives)."""
        with self._clear_lock:
            epoch = self._clear_epoch
        resolved, given_up, wait = self._tf_wait.resolve(self._pose_of, time.monotonic())
        for _, exc in given_up:
            self._reject("missing_tf", str(exc))
        for matched, c2w in resolved:
            self._on_posed(matched, c2w, epoch)
        return wait

    def _on_posed(self, matched: MatchedSet, c2w: np.ndarray, epoch: int) -> None:
        # Pose, time and motion first: most frames of a slow camera are not keyframe candidates, and
        # decoding a full image for them would dominate intake.
        candidate, _ = self.keyframes.precheck(matched.stamp_ns, c2w)
        if not candidate:
            return None
        try:
            frame = frame_from_matched(matched, c2w, self._num_classes(), self._stream_lookup(matched.stamp_ns),
                                       self._warn_once)
        except IntakeRejection as exc:
            return self._reject(exc.reason, exc.detail)
        with self._clear_lock:  # ~/clear_keyframes waits for this frame, or this frame sees the clear
            if epoch != self._clear_epoch:
                return None
            accepted, reason = self.keyframes.consider(frame)
        if not accepted and reason == "encode_failed":
            self.get_logger().error(f"keyframe encoding failed: {self.keyframes.last_encode_error}",
                                    throttle_duration_sec=5.0)
        if accepted and frame.labels is not None:
            self.fine_tuner.labelled_keyframe_added(self.get_parameter("auto_fine_tune_every").value,
                                                    self._fine_tune_goal)

    def _num_classes(self) -> int | None:
        handle = self.renderer.handle
        return None if handle is None else len(handle.label_set["class_names"])

    def _warn_once(self, notes) -> None:
        for note in notes:
            if note not in self._warned:
                self._warned.add(note)
                self.get_logger().warning(note)

    def _stream_lookup(self, stamp_ns: int):
        """T_target_source at a frame's stamp, for per-pixel streams in another optical frame (no wait: the
        frame's own pose resolved at this stamp)."""
        return lambda target, source: self.tf.lookup_transform(target, source, stamp_ns)

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
            self._tf_wait.clear()
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
            self._keyframe_worker.shed + self._tf_wait.shed
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
