"""The sray_ros node: thin ROS wiring over the plain Python objects of :mod:`sray_ros.online`.

Intake (colour + camera_info, optional depth, labels and the labels' confidence, paired by stamp; label ids
through the ``label_map``, :class:`~sray_ros.online.label_intake.LabelIntake`) -> pose from the node's own TF
buffer (or a PoseStamped topic) -> :class:`KeyframeBuffer` (features encoded once by the
:class:`Renderer`). ``~/render_semantic_view`` renders on an executor thread of its own callback group,
``~/fine_tune`` trains in another, so image intake never waits for either. Fine-tuning (requested and
automatic) is orchestrated by :class:`~sray_ros.online.fine_tune_runner.FineTuneRunner`.
"""

from __future__ import annotations

import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType, JumpThreshold
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from sray_ros.msg import LabelInfo, NodeStatus
from sray_ros.online.checkpoint_paths import CheckpointDirectory, CheckpointPathError
from sray_ros.online.fine_tune_runner import FineTuneRunner
from sray_ros.online.render_queue import RenderQueue
from sray_ros.online.intake import REJECT_REASONS as INTAKE_POLICY_REASONS, stamp_problem
from sray_ros.online.label_intake import LabelIntake, LabelMapError
from sray_ros.online.renderer import RenderError, RenderRequest
from sray_ros.online.sync import MatchedSet, StampSynchronizer
from sray_ros.online.time_jump import TimeJumpDetector
from sray_ros.ros.fine_tune_edge import FineTuneActionEdge
from sray_ros.ros.image_conversion import ImageConversionError, serialized_header
from sray_ros.ros.intake_edge import OPTIONAL_STREAMS, RawImage
from sray_ros.ros.keyframe_intake import KEYFRAME_QUEUE_LIVE, KEYFRAME_QUEUE_RELIABLE, KeyframeIntake
from sray_ros.ros.parameters import (ParameterError, check_choices, declare_parameters, default_checkpoint, make_keyframe_buffer,
                                     make_renderer, renderer_changes)
from sray_ros.ros.pose_conversion import pose_stamped_to_transform
from sray_ros.ros.render_edge import RenderPublishers, fill_response, target_camera
from sray_ros.ros.status import IntakeStats, diagnostics, label_info, node_status
from sray_ros.ros.serving import REQUEST_QOS, create_render_service, spin_until_signalled
from sray_ros.ros.tf_buffer import TransformBuffer, to_nanoseconds
from sray_ros.srv import LoadCheckpoint, RenderSemanticView, SaveCheckpoint
from sray_ros.train.checkpoint import CheckpointError

try:
    from tf2_msgs.msg import TFMessage
except ImportError:  # pragma: no cover - scripts/setup.sh builds a stand-in when no distro provides it
    TFMessage = None

POSE_TOPIC_FRAME = "sray_pose_topic_camera"  # child frame the pose topic's poses are stored under
INTAKE_REJECT_REASONS = ("bad_message", "bad_stamp", "missing_tf", "missing_camera_info") + INTAKE_POLICY_REASONS
# Child frame (under the node's name) of the rendered images' optical frame; broadcast on /tf_static at each
# render so RViz can place the images.
RENDER_FRAME_SUFFIX = "render_optical_frame"


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

        self.tf = TransformBuffer(cache_time_s=30.0)
        self.renderer = make_renderer(p)
        self.keyframes = make_keyframe_buffer(p, self.renderer.encode)
        self.time_jumps = TimeJumpDetector(p("time_jump_s"))
        # Matched sets go to a keyframe worker through a short queue: the subscription callbacks only read
        # headers and pair stamps, so a slow decode or feature encoding never holds up the camera_info / colour
        # callbacks (whose DDS queues would otherwise overwrite their partners). When the worker falls behind,
        # the oldest waiting set is shed (counted as intake_overflow: overload).
        self.labels = LabelIntake(lambda message: self.get_logger().warning(message))  # throttled per kind
        self.intake = KeyframeIntake(
            self.tf, self.keyframes, KEYFRAME_QUEUE_LIVE if p("sensor_data_qos") else KEYFRAME_QUEUE_RELIABLE,
            self._pose_of, self._reject, self.labels, self._label_set, self._warn_once, self._keyframe_added,
            lambda: self.get_parameter("tf_timeout_s").value,
            lambda stamp: self.time_jumps.classify(stamp) != "stale",  # decided before a jump: dropped
            lambda exc: self.get_logger().error(f"frame handling failed: {type(exc).__name__}: {exc}",
                                                throttle_duration_sec=5.0))
        self.sync = StampSynchronizer(["color", "camera_info"], OPTIONAL_STREAMS, self.intake.submit,
                                      slop_s=p("sync_slop_s"))
        self.stats = IntakeStats(INTAKE_REJECT_REASONS)
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
        self.labels.use(LabelIntake.prepare(p("label_map"), self._label_set()))  # LabelMapError: cannot start

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
        for topic, stream in (("color/image", "color"), ("depth/image", "depth"), ("labels/image", "labels"),
                              ("labels/confidence", "confidence")):
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

        self.status_pub = self.create_publisher(NodeStatus, "~/status", 10)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        latched = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.label_info_pub = self.create_publisher(LabelInfo, "~/label_info", latched)
        self.render_frame = f"{self.get_fully_qualified_name().strip('/')}/{RENDER_FRAME_SUFFIX}"
        self.render_pubs = RenderPublishers(self, TFMessage)
        self._publish_label_info()

        create_render_service(self, RenderSemanticView, "~/render_semantic_view", self._on_render, self.render_queue,
                              self._render_group, lambda message: self.get_logger().warning(
                                  message, throttle_duration_sec=5.0))
        for srv_type, name, callback in ((SaveCheckpoint, "~/save_checkpoint", self._on_save),
                                         (LoadCheckpoint, "~/load_checkpoint", self._on_load),
                                         (Trigger, "~/clear_keyframes", self._on_clear)):
            self.create_service(srv_type, name, callback, qos_profile=REQUEST_QOS, callback_group=self._service_group)
        self.fine_tune_edge = FineTuneActionEdge(self, "~/fine_tune", self.fine_tuner, lambda: dict(
            max_steps=p("fine_tune_default_steps"), num_rays=p("fine_tune_num_rays"),
            num_sources=p("num_source_views")), self._fine_tune_group)
        # Wall (steady) time: on sim time the status would freeze when /clock stops (a replayed bag ended).
        if self.get_parameter("use_sim_time").value:  # /clock going backwards is a time jump too
            self._clock_jumps = self.get_clock().create_jump_callback(
                JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-self.time_jumps.threshold_ns)),
                post_callback=self._on_clock_jump)
        self.create_timer(p("status_period_s"), self._publish_status, callback_group=self._service_group,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.intake.start()

    # -------------------------------------------------------------------------------------- parameters
    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """Runtime changes (``ros2 param set``): rclpy has checked type, range and read-only; the renderer's
        settings take effect for the renders that start afterwards."""
        try:  # validated first: a refused value changes nothing
            maps = [LabelIntake.prepare(q.value, self._label_set()) for q in parameters if q.name == "label_map"]
        except LabelMapError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        for param in parameters:
            if param.name == "fine_tune_checkpoint":
                try:
                    self.checkpoints.resolve("", param.value)
                except CheckpointPathError as exc:
                    return SetParametersResult(successful=False, reason=str(exc))
        for bound in maps:
            self.labels.use(bound)
        for param in parameters:
            if param.name == "max_queued_renders":
                self.render_queue.configure(int(param.value))
        changes = renderer_changes(parameters)
        if changes:
            self.renderer.configure(**changes)
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------------------------------ intake
    def _reject(self, reason: str, detail: str) -> None:
        self.stats.reject(reason)
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
            problem = stamp_problem(stream, stamp, stream == "color" and self.stats.color_received(stamp))
            if problem is not None:
                if stream == "color":
                    return self._reject("bad_stamp", problem)
                return self.get_logger().warning(problem, throttle_duration_sec=5.0)
            if self._observe_time(stamp, stream):
                self.sync.add(stream, stamp, msg)
        return callback

    def _observe_time(self, stamp_ns: int, source: str) -> bool:
        """The one time-jump detector sees every stamp before it is stored: on a backwards jump every holder of
        the old timeline is cleared first (so the message that shows the jump is the new timeline's first);
        a late message of the old timeline is dropped (False)."""
        verdict = self.time_jumps.observe(stamp_ns)
        if verdict == "jump":
            self._clear_timeline()
        if verdict != "ok":
            self.get_logger().info(f"time jumped backwards (seen on {source}, to {stamp_ns / 1e9:.3f} s): cleared "
                                   "keyframes, transforms and frames in flight" if verdict == "jump" else
                                   f"{source} message of the timeline before the jump dropped", throttle_duration_sec=1.0)
        return verdict != "stale"

    def _clear_timeline(self) -> None:
        def old_timeline() -> None:
            self.sync.reset()
            self.tf.clear()
            self.stats.forget_last_stamp()
        self.intake.clear(also=old_timeline)
        self.renderer.forget(set())

    def _on_clock_jump(self, jump) -> None:
        """/clock went backwards (use_sim_time): the same detector, with the clock's new time."""
        self._observe_time(self.get_clock().now().nanoseconds, "/clock")

    def _on_tf(self, msg, is_static: bool) -> None:
        if not is_static and msg.transforms:
            newest = max(to_nanoseconds(t.header.stamp) for t in msg.transforms)
            if newest > 0 and not self._observe_time(newest, "/tf"):
                return
        for error in self.tf.set_transforms(msg.transforms, authority="tf", is_static=is_static):
            self.get_logger().warning(f"transform ignored: {error}", throttle_duration_sec=5.0)
        for conflict in self.tf.take_conflicts():
            self.get_logger().warning(conflict)
        self.intake.transforms_arrived()

    def _on_pose(self, msg: PoseStamped) -> None:
        t = pose_stamped_to_transform(msg.header, msg.pose, POSE_TOPIC_FRAME)
        for error in self.tf.set_transforms([t], authority="pose"):
            self.get_logger().warning(f"pose ignored: {error}", throttle_duration_sec=5.0)
        self.intake.transforms_arrived()

    def shut_down(self, timeout_s: float = 4.0) -> None:
        """Answer everything in flight while the executor still spins (SIGINT / SIGTERM): waiting and running
        render requests are refused with the reason, a fine-tuning goal stops at its next step and ends with
        a result saying why (weights and checkpoint file unchanged)."""
        self.get_logger().info("shutting down: answering render requests and stopping fine-tuning")
        self.render_queue.close(timeout=0.0, abandon_running=True)
        deadline = time.monotonic() + timeout_s
        self.fine_tuner.close(timeout=timeout_s)
        if hasattr(self, "fine_tune_edge"):
            self.fine_tune_edge.wait_idle(max(0.0, deadline - time.monotonic()))
        time.sleep(0.3)  # the executor sends the results and responses just made

    def destroy_node(self) -> None:
        # Also reached for a node whose __init__ failed part-way (rclpy.shutdown destroys it).
        if hasattr(self, "render_queue"):
            self.render_queue.close(timeout=2.0, abandon_running=True)
        if hasattr(self, "fine_tuner"):
            self.fine_tuner.close()
        if hasattr(self, "intake"):
            self.intake.close()
        super().destroy_node()

    def _pose_of(self, matched: MatchedSet) -> np.ndarray:
        frame_id = POSE_TOPIC_FRAME if self.pose_from_topic else matched["color"].frame_id
        return self.tf.lookup_transform(self.world_frame, frame_id, matched.stamp_ns)

    def _keyframe_added(self, frame) -> None:
        if frame.labels is not None:
            self.fine_tuner.labelled_keyframe_added(self.get_parameter("auto_fine_tune_every").value,
                                                    self.fine_tune_edge.goal)

    def _label_set(self):
        handle = self.renderer.handle
        return None if handle is None else handle.label_set

    def _warn_once(self, notes) -> None:
        for note in notes:
            if note not in self._warned:
                self._warned.add(note)
                self.get_logger().warning(note)

    # ------------------------------------------------------------------------------------------ render
    def _on_render(self, request: RenderSemanticView.Request, response: RenderSemanticView.Response):
        start = time.perf_counter()
        try:
            self.renderer.require_model()
            snapshot = self.keyframes.snapshot()
            camera = target_camera(request, self.world_frame, self.tf.lookup_transform,
                                   (self.get_parameter("default_width").value,
                                    self.get_parameter("default_height").value),
                                   snapshot[-1].frame if snapshot else None)
            render_request = RenderRequest.from_camera(camera, request.num_source_views)
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
        self.render_pubs.broadcast_frame(render_request.c2w, header, self.world_frame)
        fill_response(response, request, result, render_request, header)
        response.render_time_s = float(time.perf_counter() - start)
        self.stats.render_served(response.render_time_s)
        handle = self.renderer.handle
        self.render_pubs.publish(result, render_request, header, None if handle is None else handle.label_set,
                                 self.world_frame if self.get_parameter("publish_point_cloud").value else None)
        return response

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
        count = self.intake.clear()  # frames received before the request must not refill the buffer
        self.renderer.forget(set())
        response.success, response.message = True, f"cleared {count} keyframes"
        return response

    # ------------------------------------------------------------------------------------------- status
    def _publish_label_info(self) -> None:
        handle = self.renderer.handle
        if handle is not None:
            self.label_info_pub.publish(label_info(handle.label_set))

    def status(self) -> NodeStatus:
        msg = node_status(self.stats.snapshot(), self.keyframes.snapshot(), self.keyframes.counters(),
                          self.sync.counters(), self.intake.shed,
                          self.fine_tuner.state(), self.renderer.handle, str(self.renderer.device),
                          self.labels.counters())
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.world_frame
        msg.max_keyframes = self.keyframes.max_keyframes
        return msg

    def _publish_status(self) -> None:
        msg = self.status()
        self.status_pub.publish(msg)
        self.diagnostics_pub.publish(diagnostics(msg, self.get_name()))


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
