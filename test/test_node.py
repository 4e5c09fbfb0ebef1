"""The sray_ros node as a process, over DDS: intake, render service, bad input, fine-tune action,
checkpoint services, parameters. A tiny random-weight checkpoint stands in for the model here: these
tests check the node's behaviour, not the model's accuracy (test_e2e does that with the default model)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
import yaml

from conftest import REPO, installed_executable

pytestmark = pytest.mark.ros
NODE = "/sray_node"
HELD_OUT = 8


@pytest.fixture(scope="module")
def room(synthetic_mini_set):
    from sray_ros.data.scannet import load_scannet_scene

    folder = next((synthetic_mini_set / "test").glob("test_*"))
    return load_scannet_scene(folder, 80, 60).preload()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from sray_ros.data.label_sets import load_label_set
    from sray_ros.model.config import SRayConfig
    from sray_ros.model.sray import SRay
    from sray_ros.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    label_set = load_label_set("scannet20")
    model = SRay(SRayConfig.tiny(num_classes=label_set.num_classes))
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", model, label_set.to_dict())


def write_params(path, **overrides):
    params = yaml.safe_load((REPO / "config" / "sray.yaml").read_text())
    params["sray_node"]["ros__parameters"].update(overrides)
    path.write_text(yaml.safe_dump(params))
    return path


class Client:
    """Test-side ROS node: publishes a sequence, calls the node's services and action, reads its status."""

    def __init__(self, context):
        import rclpy
        from rclpy.action import ActionClient
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image
        from tf2_msgs.msg import TFMessage

        from sray_ros.action import FineTune
        from sray_ros.msg import NodeStatus
        from sray_ros.srv import LoadCheckpoint, RenderSemanticView

        self.node = rclpy.create_node("sray_test_client", context=context)
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.pub = {name: self.node.create_publisher(Image, f"/{name}/image", qos) for name in ("color", "depth", "labels")}
        self.info_pub = self.node.create_publisher(CameraInfo, "/color/camera_info", qos)
        self.tf_pub = self.node.create_publisher(TFMessage, "/tf", QoSProfile(depth=100))
        self.status: list = []
        self.node.create_subscription(NodeStatus, f"{NODE}/status", self.status.append, 10)
        self.render = self.node.create_client(RenderSemanticView, f"{NODE}/render_semantic_view")
        self.load = self.node.create_client(LoadCheckpoint, f"{NODE}/load_checkpoint")
        self.fine_tune = ActionClient(self.node, FineTune, f"{NODE}/fine_tune")
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self._spin = threading.Thread(target=self.executor.spin, daemon=True)
        self._spin.start()

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()

    def wait(self, future, timeout=120.0):
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise TimeoutError("no answer in time")
            time.sleep(0.02)
        return future.result()

    def call(self, client, request, timeout=120.0):
        assert client.wait_for_service(timeout_sec=30.0), f"{client.srv_name} not available"
        return self.wait(client.call_async(request), timeout)

    def latest_status(self, predicate=lambda s: True, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.status and predicate(self.status[-1]):
                return self.status[-1]
            time.sleep(0.05)
        raise TimeoutError(f"status never matched; last: {self.status[-1] if self.status else None}")

    def publish_frame(self, room, i, stamp_s, frame_id="camera", encoding="rgb8", info=True, tf=True,
                      pose=None):
        from builtin_interfaces.msg import Time
        from geometry_msgs.msg import TransformStamped
        from std_msgs.msg import Header
        from tf2_msgs.msg import TFMessage

        from sray_ros import geometry
        from sray_ros.ros.image_conversion import labels_to_image, make_camera_info, numpy_to_image

        stamp = Time(sec=int(stamp_s), nanosec=int(round((stamp_s % 1) * 1e9)))
        header = Header(stamp=stamp, frame_id=frame_id)
        c2w = room.poses[i] if pose is None else pose
        if tf:
            t = TransformStamped(header=Header(stamp=stamp, frame_id="map"), child_frame_id=frame_id)
            t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = map(float, c2w[:3, 3])
            q = geometry.matrix_to_quaternion(torch.from_numpy(np.ascontiguousarray(c2w[:3, :3], np.float64))).numpy()
            t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z, t.transform.rotation.w = map(float, q)
            self.tf_pub.publish(TFMessage(transforms=[t]))
            time.sleep(0.01)
        # Depth and labels (optional streams) before colour, the synchroniser's pivot: the node pairs a
        # colour frame with what has arrived, and waits only briefly for late optional streams.
        self.pub["depth"].publish(numpy_to_image((room.depths[i] * 1000).astype(np.uint16), "16UC1", header))
        self.pub["labels"].publish(labels_to_image(room.labels[i], header))
        if info:
            self.info_pub.publish(make_camera_info(room.intrinsics, room.width, room.height, header))
        if encoding == "rgb8":
            self.pub["color"].publish(numpy_to_image(room.colors[i], "rgb8", header))
        else:  # a wrong encoding: same bytes, unsupported name
            image = numpy_to_image(room.colors[i], "rgb8", header)
            image.encoding = encoding
            self.pub["color"].publish(image)


def render_request(room, i, frame_id="map", width=None, height=None, num=4, **flags):
    from geometry_msgs.msg import Pose

    from sray_ros import geometry
    from sray_ros.ros.image_conversion import make_camera_info
    from sray_ros.srv import RenderSemanticView

    request = RenderSemanticView.Request()
    request.target_pose.header.frame_id = frame_id
    c2w = room.poses[i]
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = map(float, c2w[:3, 3])
    q = geometry.matrix_to_quaternion(torch.from_numpy(np.ascontiguousarray(c2w[:3, :3], np.float64))).numpy()
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = map(float, q)
    request.target_pose.pose = pose
    if width is not None:
        K = room.intrinsics.astype(np.float64).copy()
        K[:2] *= width / room.width
        request.camera_info = make_camera_info(K, width, height)
    request.num_source_views = num
    for name, value in flags.items():
        setattr(request, name, value)
    return request


@pytest.fixture(scope="module")
def running(room, tiny_checkpoint, tmp_path_factory):
    """A node process fed with the room's frames (all but HELD_OUT), and a client."""
    import rclpy

    from conftest import ProcessGroup

    tmp = tmp_path_factory.mktemp("node")
    params = write_params(tmp / "params.yaml", checkpoint=str(tiny_checkpoint), keyframe_width=80,
                          keyframe_height=60, min_translation_m=0.0, min_rotation_deg=0.0, default_width=40,
                          default_height=30, num_source_views=4, fine_tune_num_rays=128,
                          fine_tune_checkpoint=str(tmp / "fine_tuned.pt"), sensor_data_qos=False,
                          confidence_threshold=0.0, opacity_threshold=0.0)
    group = ProcessGroup(tmp)
    proc = group.start(installed_executable("sray-node") + ["--ros-args", "--params-file", str(params)], "sray_node")
    context = rclpy.Context()
    rclpy.init(context=context)
    client = Client(context)
    try:
        assert client.render.wait_for_service(timeout_sec=60.0), group.log(proc)
        client.latest_status(timeout=30.0)
        for n, i in enumerate(i for i in range(room.num_frames) if i != HELD_OUT):
            client.publish_frame(room, i, 100.0 + 0.2 * n)
            time.sleep(0.05)
        client.latest_status(lambda s: s.keyframe_count == room.num_frames - 1, timeout=60.0)
        yield {"proc": proc, "group": group, "client": client, "tmp": tmp}
    finally:
        client.close()
        rclpy.shutdown(context=context)
        group.stop_all()


def offline_render(room, checkpoint, source_ids, target, width, height):
    """The same render with the core library: same weights, same source frames (ids = publish order)."""
    from sray_ros.ros.keyframes import Frame, KeyframeBuffer
    from sray_ros.ros.renderer import RenderRequest, Renderer

    renderer = Renderer(device="cpu", num_source_views=len(source_ids), confidence_threshold=0.0,
                        opacity_threshold=0.0)
    renderer.load(checkpoint)
    published = [i for i in range(room.num_frames) if i != HELD_OUT]
    buffer = KeyframeBuffer(max_keyframes=64, min_translation_m=0.0, min_rotation_deg=0.0, encode_fn=renderer.encode)
    for n, i in enumerate(published):
        wire_depth = (room.depths[i] * 1000).astype(np.uint16).astype(np.float32) / 1000  # 16UC1 mm on the wire
        buffer.consider(Frame(int((100.0 + 0.2 * n) * 1e9), room.poses[i].astype(np.float64),
                              room.intrinsics.astype(np.float64), room.colors[i], wire_depth, room.labels[i]))
    snapshot = {kf.id: kf for kf in buffer.snapshot()}
    K = room.intrinsics.astype(np.float64).copy()
    K[:2] *= width / room.width
    return renderer.render(tuple(snapshot[i] for i in source_ids), RenderRequest(room.poses[target], K, width, height,
                                                                                  len(source_ids)))


def test_render_at_held_out_pose_matches_offline(running, room, tiny_checkpoint):
    from sray_ros.ros.image_conversion import image_to_depth, image_to_labels, image_to_rgb

    client = running["client"]
    response = client.call(client.render, render_request(room, HELD_OUT, width=80, height=60, return_color=True,
                                                         return_depth=True, return_confidence=True))
    assert response.success, response.message
    labels = image_to_labels(response.labels)
    assert labels.shape == (60, 80) and response.labels.encoding == "mono8"
    assert response.color.encoding == "rgb8" and response.depth.encoding == "32FC1"
    assert response.confidence.encoding == "32FC1" and response.render_time_s > 0
    assert len(response.source_keyframe_ids) == 4
    offline = offline_render(room, tiny_checkpoint, list(response.source_keyframe_ids), HELD_OUT, 80, 60)
    assert np.array_equal(labels, offline.labels)
    # Same labels; colour equal up to the uint8 rounding of float sums whose order differs between
    # processes (seen: 2 of 4800 pixels off by one level).
    diff = np.abs(image_to_rgb(response.color).astype(int) - offline.color.astype(int))
    assert diff.max() <= 1 and (diff > 0).any(-1).mean() < 0.01
    depth = image_to_depth(response.depth)
    assert np.allclose(depth, np.nan_to_num(offline.depth), atol=1e-4)


def test_render_defaults_and_failures(running, room):
    client = running["client"]
    response = client.call(client.render, render_request(room, HELD_OUT))  # zero camera_info: node defaults
    assert response.success and (response.labels.width, response.labels.height) == (40, 30)
    assert len(response.color.data) == 0  # not asked for
    bad = client.call(client.render, render_request(room, HELD_OUT, frame_id="nowhere"))
    assert not bad.success and "nowhere" in bad.message and len(bad.labels.data) == 0
    big = client.call(client.render, render_request(room, HELD_OUT, width=800, height=600))
    assert not big.success and "max_render_pixels" in big.message


def test_bad_input_is_rejected_and_nothing_is_lost(running, room, tmp_path):
    from geometry_msgs.msg import TransformStamped
    from std_msgs.msg import Header
    from tf2_msgs.msg import TFMessage

    from sray_ros.srv import LoadCheckpoint

    client = running["client"]
    before = client.latest_status()
    kept = list(before.keyframe_ids)
    t0 = 200.0
    client.publish_frame(room, 0, t0, encoding="yuv422")  # unsupported encoding
    client.publish_frame(room, 1, t0 + 0.2, frame_id="ghost", tf=False)  # frame unknown to TF
    client.publish_frame(room, 2, t0 + 0.4, info=False)  # no camera_info for this image
    nan_tf = TransformStamped(header=Header(frame_id="map"), child_frame_id="nan_camera")
    nan_tf.header.stamp.sec = int(t0 + 0.6)
    nan_tf.transform.rotation.w = float("nan")
    client.tf_pub.publish(TFMessage(transforms=[nan_tf]))
    client.publish_frame(room, 3, t0 + 0.6, frame_id="nan_camera", tf=False)  # non-finite pose
    client.publish_frame(room, 4, t0 + 0.8, frame_id="camera", tf=False, info=True)  # pairs; flushes the sync

    def counts(status):
        return dict(zip(status.reject_reasons, status.reject_counts))

    status = client.latest_status(lambda s: counts(s).get("bad_encoding", 0) >= 1
                                  and counts(s).get("missing_tf", 0) >= 2
                                  and counts(s).get("missing_camera_info", 0) >= 1, timeout=30.0)
    assert list(status.keyframe_ids) == kept, "a bad frame changed the keyframes"
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00not a checkpoint")
    response = client.call(client.load, LoadCheckpoint.Request(path=str(corrupt)))
    assert not response.success and "corrupt.pt" in response.message and "stays" in response.message
    assert running["proc"].poll() is None, running["group"].log(running["proc"])
    still = client.call(client.render, render_request(room, HELD_OUT))
    assert still.success, still.message


def test_intake_continues_during_a_slow_render(running, room):
    client = running["client"]
    start_status = client.latest_status()
    future = client.render.call_async(render_request(room, HELD_OUT, width=320, height=240, return_color=True))
    received = []
    n = 0
    while not future.done() and n < 400:
        client.publish_frame(room, n % room.num_frames, 300.0 + 0.05 * n)
        n += 1
        time.sleep(0.05)
        if not future.done():
            received.append(client.status[-1].frames_received)
    response = client.wait(future)
    assert response.success, response.message
    assert response.render_time_s > 0.5, "render too fast to show concurrency"
    assert len(received) >= 3 and received[-1] > start_status.frames_received, (start_status.frames_received, received)


def test_fine_tune_action_feedback_cancel_success(running, room):
    from action_msgs.msg import GoalStatus

    from sray_ros.action import FineTune

    client = running["client"]
    assert client.fine_tune.wait_for_server(timeout_sec=30.0)
    # Cancel: a long goal stops within 2 s of the cancel request, weights unchanged.
    feedback = []
    handle = client.wait(client.fine_tune.send_goal_async(FineTune.Goal(max_steps=100000),
                                                          feedback_callback=feedback.append))
    assert handle.accepted
    deadline = time.monotonic() + 60
    while not feedback and time.monotonic() < deadline:
        time.sleep(0.05)
    assert feedback, "no feedback"
    # Intake keeps running while fine-tuning: new frames are received and new keyframes accepted.
    before = client.latest_status()
    for n in range(6):
        client.publish_frame(room, n, 400.0 + 0.2 * n)
        time.sleep(0.1)
    during_status = client.latest_status(lambda s: s.frames_accepted >= before.frames_accepted + 3, timeout=30.0)
    assert during_status.fine_tune_state == "running"
    # A render while fine-tuning runs returns a valid result (old weights).
    during = client.call(client.render, render_request(room, HELD_OUT))
    assert during.success, during.message
    cancel_requested = time.monotonic()
    client.wait(handle.cancel_goal_async())
    result = client.wait(handle.get_result_async())
    assert time.monotonic() - cancel_requested < 2.0
    assert result.status == GoalStatus.STATUS_CANCELED and not result.result.success

    # Success: a short goal finishes, with feedback, held-out mIoU and a saved checkpoint.
    feedback.clear()
    handle = client.wait(client.fine_tune.send_goal_async(FineTune.Goal(max_steps=6), feedback_callback=feedback.append))
    result = client.wait(handle.get_result_async(), timeout=300)
    assert result.status == GoalStatus.STATUS_SUCCEEDED, result.result.message
    assert result.result.success and result.result.steps_done == 6 and feedback
    assert feedback[-1].feedback.step == 6
    assert 0.0 <= result.result.holdout_miou <= 1.0
    assert result.result.checkpoint_path and (running["tmp"] / "fine_tuned.pt").exists()
    after = client.call(client.render, render_request(room, HELD_OUT))
    assert after.success


def test_parameters_from_the_params_file_are_in_effect(running):
    from rcl_interfaces.srv import GetParameters

    from sray_ros.ros.node import PARAMETERS

    client = running["client"]
    getter = client.node.create_client(GetParameters, f"{NODE}/get_parameters")
    response = client.call(getter, GetParameters.Request(names=["keyframe_width", "num_source_views", "world_frame",
                                                                "fine_tune_num_rays"]))
    values = [v.integer_value if v.type == 2 else v.string_value for v in response.values]
    assert values == [80, 4, "map", 128]
    declared = set(PARAMETERS)
    in_file = set(yaml.safe_load((REPO / "config" / "sray.yaml").read_text())["sray_node"]["ros__parameters"])
    assert declared == in_file, (declared ^ in_file)


def test_without_a_model_render_fails_with_the_reason(processes, rclpy_context, tmp_path):
    import rclpy

    from conftest import call_service, wait_for_service
    from sray_ros.srv import RenderSemanticView

    params = write_params(tmp_path / "p.yaml", checkpoint=str(tmp_path / "missing.pt"))
    params.write_text(params.read_text().replace("sray_node:", "sray_no_model:", 1))
    proc = processes.start(installed_executable("sray-node") + ["--ros-args", "-r", "__node:=sray_no_model",
                                                                "--params-file", str(params)],
                           name="sray_node_no_model")
    node = rclpy.create_node("render_client", context=rclpy_context)
    try:
        client = node.create_client(RenderSemanticView, "/sray_no_model/render_semantic_view")
        wait_for_service(node, client, timeout=60)
        response = call_service(node, client, RenderSemanticView.Request())
    finally:
        node.destroy_node()
    assert proc.poll() is None, processes.log(proc)
    assert not response.success and "no model loaded" in response.message
    assert len(response.labels.data) == 0
