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

# slow: the module's node process starts in 30-60 s on a loaded 2-core machine; the whole file took 251 s.
pytestmark = [pytest.mark.ros, pytest.mark.slow]
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
    params["/**"]["ros__parameters"].update(overrides)
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
                      pose=None, labels=None, depth=True):
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
        if depth:
            self.pub["depth"].publish(numpy_to_image((room.depths[i] * 1000).astype(np.uint16), "16UC1", header))
        self.pub["labels"].publish(labels_to_image(room.labels[i] if labels is None else labels, header))
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
                          keyframe_height=60, min_translation_m=0, min_rotation_deg=0, default_width=40,
                          default_height=30, num_source_views=4, fine_tune_num_rays=128,
                          checkpoint_dir=str(tmp), fine_tune_checkpoint=str(tmp / "fine_tuned.pt"),
                          sensor_data_qos=False,
                          confidence_threshold=0.0, opacity_threshold=0.0, tf_timeout_s=5)  # ints for floats
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


def offline_render(room, checkpoint, source_ids, target, width, height, depth=True):
    """The same render with the core library: same weights, same source frames (ids = publish order)."""
    from sray_ros.online.keyframes import Frame, KeyframeBuffer
    from sray_ros.online.renderer import RenderRequest, Renderer

    renderer = Renderer(device="cpu", num_source_views=len(source_ids), confidence_threshold=0.0,
                        opacity_threshold=0.0)
    renderer.load(checkpoint)
    published = [i for i in range(room.num_frames) if i != HELD_OUT]
    buffer = KeyframeBuffer(max_keyframes=64, min_translation_m=0.0, min_rotation_deg=0.0, encode_fn=renderer.encode)
    for n, i in enumerate(published):
        wire_depth = (room.depths[i] * 1000).astype(np.uint16).astype(np.float32) / 1000  # 16UC1 mm on the wire
        buffer.consider(Frame(int((100.0 + 0.2 * n) * 1e9), room.poses[i].astype(np.float64),
                              room.intrinsics.astype(np.float64), room.colors[i], wire_depth if depth else None,
                              room.labels[i]))
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
    # RGB-D keyframes: depth-guided sampling (sampling: auto), labels fused from the labelled keyframes
    assert "(depth_guided sampling)" in response.message and "labels fused" in response.message, response.message
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


def test_every_simultaneous_render_request_is_answered(running, room):
    """25 simultaneous requests (5 clients x 5, e.g. planners) with max_queued_renders = 2: each is answered,
    3 served (1 renders, 2 wait) and 22 refused at once with the reason (they used to wait forever)."""
    from rcl_interfaces.msg import Parameter as ParameterMsg, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    from sray_ros.srv import RenderSemanticView

    client = running["client"]
    setter = client.node.create_client(SetParameters, f"{NODE}/set_parameters")

    def set_queue(n):
        value = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=n)
        results = client.call(setter, SetParameters.Request(parameters=[ParameterMsg(name="max_queued_renders",
                                                                                     value=value)])).results
        assert all(r.successful for r in results), [r.reason for r in results]

    from rclpy.qos import QoSProfile, ReliabilityPolicy

    # Fast DDS delivers every response of a service to every client's response reader (each keeps its own):
    # with rclpy's default depth of 10, a burst of 22 refusals overwrote another client's answer. Clients that
    # may see many answers at once need a deeper response queue (msg/RenderSemanticView.srv says so).
    deep = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    planners = [client.node.create_client(RenderSemanticView, f"{NODE}/render_semantic_view", qos_profile=deep)
                for _ in range(5)]
    for planner in planners:
        # A first call answered end to end: wait_for_service sees the request path only, and Fast DDS drops a
        # response (waiting 100 ms at most) to a client whose response reader the node has not discovered yet;
        # on a loaded machine an immediate refusal to a brand-new client was lost that way.
        answer = client.call(planner, render_request(room, HELD_OUT, frame_id="warm_up_nowhere"))
        assert not answer.success and "warm_up_nowhere" in answer.message
    set_queue(2)
    try:
        # 320x240 renders take over 0.5 s (test_intake_continues_during_a_slow_render): all 25 arrive meanwhile.
        request = render_request(room, HELD_OUT, width=320, height=240)
        start = time.monotonic()
        futures = [planner.call_async(request) for planner in planners for _ in range(5)]
        answered_at = [None] * len(futures)
        for i, future in enumerate(futures):
            future.add_done_callback(lambda _, i=i: answered_at.__setitem__(i, time.monotonic() - start))
        deadline = time.monotonic() + 240.0
        while not all(f.done() for f in futures) and time.monotonic() < deadline:
            time.sleep(0.05)
        unanswered = [i for i, f in enumerate(futures) if not f.done()]
        assert not unanswered, (unanswered, [(f.result().success, f.result().message[:60]) for f in futures
                                             if f.done()], running["group"].log(running["proc"])[-3000:])
        answers = [future.result() for future in futures]
    finally:
        set_queue(4)
        for planner in planners:
            client.node.destroy_client(planner)
    served = [a for a in answers if a.success]
    refused = [a for a in answers if not a.success]
    assert len(answers) == 25
    assert len(served) == 3, [a.message for a in answers]
    assert len(refused) == 22
    for answer in refused:
        assert answer.message.startswith("render refused: the render queue is full (2 waiting and 1 rendering, "
                                         "max_queued_renders=2; "), answer.message
        assert "retry later" in answer.message
    # A refusal is immediate: every one arrives before the first render is done.
    time.sleep(0.5)  # done callbacks run on the client's executor
    refused_times = [t for a, t in zip(answers, answered_at) if not a.success]
    served_times = [t for a, t in zip(answers, answered_at) if a.success]
    assert max(refused_times) < min(served_times), (refused_times, served_times)


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024


class NotWeights:
    """Only a full (unsafe) unpickling could rebuild this."""


def test_crafted_and_foreign_checkpoints_are_refused_over_dds_without_allocating(running, room, tiny_checkpoint,
                                                                                 tmp_path):
    """A 2.9 KB file whose config asks for a 20-million-wide layer took the node from 311 MB to 2.9 GB before it
    was refused; now it is refused from its config (peak memory grows < 100 MB) and the model stays."""
    from sray_ros.srv import LoadCheckpoint

    client, pid = running["client"], running["proc"].pid
    crafted = tmp_path / "crafted.pt"
    payload = torch.load(tiny_checkpoint, weights_only=True)
    payload["config"]["ffn_hidden"], payload["state_dict"] = 20_000_000, {}
    torch.save(payload, crafted)
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": NotWeights()}, pickled)
    peak = _peak_rss_mb(pid)
    response = client.call(client.load, LoadCheckpoint.Request(path=str(crafted)))
    assert not response.success
    assert response.message == (f"checkpoint {crafted}: invalid model config: ffn_hidden = 20000000 is outside "
                                "[1, 4096] (the current model stays in place)")
    assert _peak_rss_mb(pid) - peak < 100
    response = client.call(client.load, LoadCheckpoint.Request(path=str(pickled)))
    assert not response.success and "not an sray_ros weights file" in response.message
    assert "weights_only" not in response.message
    still = client.call(client.render, render_request(room, HELD_OUT))
    assert still.success, still.message


def test_callers_cannot_write_outside_the_checkpoint_folder_or_over_other_files(running, tmp_path):
    """~/save_checkpoint, a fine-tune goal's checkpoint_path and the parameter fine_tune_checkpoint used to write
    anywhere (replacing files, '..', new folders); now only checkpoints inside checkpoint_dir are written."""
    from action_msgs.msg import GoalStatus
    from rcl_interfaces.msg import Parameter as ParameterMsg, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    from sray_ros.action import FineTune
    from sray_ros.online.checkpoint_paths import is_sray_checkpoint
    from sray_ros.srv import SaveCheckpoint

    client, folder = running["client"], running["tmp"]
    save = client.node.create_client(SaveCheckpoint, f"{NODE}/save_checkpoint")
    notes = folder / "notes.pt"
    notes.write_text("not a checkpoint")
    params = folder / "params.yaml"
    params_text = params.read_text()
    outside = tmp_path / "outside"
    outside.mkdir()
    (folder / "escape_link").symlink_to(outside, target_is_directory=True)
    refused = {
        str(notes): "exists and is not an sray_ros checkpoint; it is never replaced",
        str(params): "the file name must end in .pt or .pth",
        "../escape.pt": "'..' is not allowed",
        str(outside / "abs.pt"): "is outside the checkpoint folder",
        "new/nested/x.pt": "does not exist (new folders are not created",
        "escape_link/x.pt": "leads outside the checkpoint folder",
    }
    for path, reason in refused.items():
        response = client.call(save, SaveCheckpoint.Request(path=path))
        assert not response.success and response.message.startswith("not saved: checkpoint path ") \
            and reason in response.message, (path, response.message)
    assert notes.read_text() == "not a checkpoint" and params.read_text() == params_text
    assert not (folder.parent / "escape.pt").exists() and not (folder / "new").exists() and not list(outside.iterdir())

    ok = client.call(save, SaveCheckpoint.Request(path="snapshot.pt"))
    assert ok.success and ok.message == f"saved {folder.resolve() / 'snapshot.pt'}", ok.message
    again = client.call(save, SaveCheckpoint.Request(path=str(folder / "snapshot.pt")))  # our own: replaced
    assert again.success and is_sray_checkpoint(folder / "snapshot.pt")
    assert not list(folder.glob(".snapshot.pt.*"))  # atomic write: no temporary file left

    # A goal naming a refused path fails before training, with the reason in its result.
    handle = client.wait(client.fine_tune.send_goal_async(FineTune.Goal(max_steps=3, checkpoint_path="../x.pt")))
    result = client.wait(handle.get_result_async(), timeout=60)
    assert result.status == GoalStatus.STATUS_ABORTED and result.result.steps_done == 0
    assert result.result.message.startswith("not started: checkpoint path '../x.pt': '..' is not allowed"), \
        result.result.message

    setter = client.node.create_client(SetParameters, f"{NODE}/set_parameters")
    for value, reason in (("/etc/sray.pt", "is outside the checkpoint folder"), ("../up.pt", "'..' is not allowed"),
                          ("notes.pt", "is never replaced")):
        param = ParameterMsg(name="fine_tune_checkpoint",
                             value=ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value))
        results = client.call(setter, SetParameters.Request(parameters=[param])).results
        assert not results[0].successful and reason in results[0].reason, (value, results[0].reason)


def test_goals_end_with_a_reason_and_sigterm_during_fine_tuning_answers_the_client(room, tiny_checkpoint,
                                                                                  tmp_path):
    """A goal sent right after a cancel used to be rejected with no reason (it worked 0.2 s later); SIGTERM during
    fine-tuning left the client without a result and logged a traceback. Now: the goal after the cancel runs;
    SIGTERM ends the running goal with an aborted result saying why, the node exits 0 within 5 s with no
    traceback, and the checkpoint file is unchanged."""
    import os
    import signal

    import rclpy
    from action_msgs.msg import GoalStatus

    from conftest import ROS_DOMAIN_ID, ProcessGroup
    from sray_ros.action import FineTune
    from sray_ros.online.checkpoint_paths import is_sray_checkpoint
    from sray_ros.srv import SaveCheckpoint

    params = write_params(tmp_path / "params.yaml", checkpoint=str(tiny_checkpoint), keyframe_width=80,
                          keyframe_height=60, min_translation_m=0, min_rotation_deg=0, num_source_views=4,
                          fine_tune_num_rays=64, checkpoint_dir=str(tmp_path), sensor_data_qos=False)
    # A domain of its own (as the depth-registration test below, offset from it): the module's `running` node
    # has the same name and topics.
    domain = 215 + (ROS_DOMAIN_ID + 9) % 18
    group = ProcessGroup(tmp_path)
    proc = group.start(installed_executable("sray-node") + ["--ros-args", "--params-file", str(params)], "sray_node",
                       env={**os.environ, "ROS_DOMAIN_ID": str(domain)})
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    client = Client(context)
    try:
        assert client.render.wait_for_service(timeout_sec=60.0), group.log(proc)
        client.latest_status(timeout=30.0)
        for n in range(6):
            client.publish_frame(room, n, 100.0 + 0.2 * n)
            time.sleep(0.05)
        client.latest_status(lambda s: s.keyframe_count >= 6 and s.labelled_keyframe_count >= 4, timeout=60.0)
        save = client.node.create_client(SaveCheckpoint, f"{NODE}/save_checkpoint")
        assert client.call(save, SaveCheckpoint.Request(path="")).success
        checkpoint = tmp_path / "fine_tuned.pt"
        before = checkpoint.read_bytes()

        feedback = []
        first = client.wait(client.fine_tune.send_goal_async(FineTune.Goal(max_steps=100000),
                                                             feedback_callback=feedback.append))
        deadline = time.monotonic() + 60
        while not feedback and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.accepted and feedback
        client.wait(first.cancel_goal_async())
        second_feedback = []
        second = client.wait(client.fine_tune.send_goal_async(FineTune.Goal(max_steps=100000),
                                                              feedback_callback=second_feedback.append))
        assert second.accepted  # right after the cancel: accepted, and it runs once the first has stopped
        first_result = client.wait(first.get_result_async(), timeout=60)
        assert first_result.status == GoalStatus.STATUS_CANCELED
        assert first_result.result.message.startswith("canceled after "), first_result.result.message
        second_result = second.get_result_async()
        deadline = time.monotonic() + 60
        while not second_feedback and time.monotonic() < deadline:
            time.sleep(0.05)
        assert second_feedback, "the goal sent after the cancel never ran"

        os.kill(proc.pid, signal.SIGTERM)
        signalled = time.monotonic()
        result = client.wait(second_result, timeout=10)
        assert time.monotonic() - signalled < 5.0
        assert result.status == GoalStatus.STATUS_ABORTED and not result.result.success
        assert result.result.message.startswith("stopped because the node is shutting down after "), \
            result.result.message
        assert result.result.message.endswith("the weights in use and the checkpoint file are unchanged")
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - signalled < 5.0
        log = group.log(proc)
        assert "Traceback" not in log and "shutting down" in log, log[-3000:]
        assert checkpoint.read_bytes() == before and is_sray_checkpoint(checkpoint)
    finally:
        client.close()
        rclpy.shutdown(context=context)
        group.stop_all()


def counts(status) -> dict[str, int]:
    return dict(zip(status.reject_reasons, status.reject_counts))


def settled(client, timeout=60.0):
    """The latest status once the node has handled every frame published so far (three statuses alike)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = client.status[-3:]
        if len(last) == 3 and len({(s.frames_received, s.frames_accepted, s.frames_rejected, tuple(s.keyframe_ids))
                                   for s in last}) == 1:
            return last[-1]
        time.sleep(0.5)
    raise TimeoutError("the node never settled")


def test_stamp_zero_is_its_own_rejection(running, room):
    # Stamp 0 means "latest" to a TF lookup: these frames used to get another frame's pose (or clear the
    # buffer as a backwards time jump).
    client = running["client"]
    before = settled(client)
    for i in range(3):
        client.publish_frame(room, i, 0.0, tf=False)
        time.sleep(0.05)
    # A stamp repeated by the next colour image (a driver stamping with a constant) is as implausible.
    client.publish_frame(room, 3, 339.0, frame_id="camera_without_tf", tf=False)  # missing_tf after tf_timeout_s
    time.sleep(0.05)
    client.publish_frame(room, 4, 339.0, frame_id="camera_without_tf", tf=False)
    status = client.latest_status(lambda s: counts(s).get("bad_stamp", 0) >= counts(before).get("bad_stamp", 0) + 4)
    assert list(status.keyframe_ids) == list(before.keyframe_ids)
    assert status.frames_accepted == before.frames_accepted


def test_labels_outside_the_label_set_are_counted_and_the_frame_kept(running, room):
    client = running["client"]
    before = settled(client)
    # Labels pair with colour by stamp with a short wait, so a keyframe may (rarely) lack them.
    assert 0 < before.labelled_keyframe_count <= before.keyframe_count
    bad = room.labels[0].copy()
    bad[:5, :5] = 30  # scannet20 has ids 0..19 (255 = unknown)
    client.publish_frame(room, 0, 340.0, labels=bad)
    # Before: the whole frame was rejected (labels_out_of_set). Now those 25 pixels are unknown (255) and counted,
    # and the frame is a keyframe like any other.
    status = client.latest_status(lambda s: s.frames_accepted == before.frames_accepted + 1)
    assert status.label_unknown_pixels == before.label_unknown_pixels + 25
    assert status.label_unknown_frames == before.label_unknown_frames + 1
    assert status.frames_rejected == before.frames_rejected and status.label_map == ""
    # (test_fine_tune_action_feedback_cancel_success then fine-tunes on the buffer: it used to fail with an
    # IndexError once such ids reached a keyframe.)


def test_label_map_is_set_at_runtime_and_a_bad_map_is_refused_with_the_reason(running, room, tmp_path):
    from rcl_interfaces.msg import Parameter as ParameterMsg, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    client = running["client"]
    setter = client.node.create_client(SetParameters, f"{NODE}/set_parameters")

    def set_map(value: str):
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
        return client.call(setter, SetParameters.Request(parameters=[ParameterMsg(name="label_map", value=value)]
                                                         )).results[0]

    before = settled(client)
    missing = str(tmp_path / "missing.yaml")
    refused = set_map(missing)
    assert not refused.successful
    assert refused.reason == f"parameter 'label_map' = '{missing}': label map file '{missing}' does not exist"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"source_classes": {0: "a"}, "map": {"a": "spaceship"}}))
    refused = set_map(str(bad))
    assert not refused.successful and "target 'spaceship' of 'a' is not a class of the label set" in refused.reason
    assert set_map("nyu40_to_scannet20").successful  # a shipped map by name, from the installed share folder
    try:
        from sray_ros.data.label_sets import load_label_set

        # the room's labels as a NYU40 segmenter publishes them (the map takes them back to the same classes)
        to_nyu40 = np.full(256, 255, np.uint8)
        to_nyu40[:20] = load_label_set("scannet20").nyu40_ids
        nyu40 = to_nyu40[room.labels[2]]
        nyu40[:, :20] = 0  # NYU40 0 is no class of the map: unknown, counted
        unknown = 20 * room.height
        client.publish_frame(room, 2, 345.0, labels=nyu40)
        status = client.latest_status(lambda s: s.frames_accepted == before.frames_accepted + 1)
        assert status.label_map == "nyu40_to_scannet20"
        assert status.label_unknown_pixels == before.label_unknown_pixels + unknown
        assert status.label_unknown_frames == before.label_unknown_frames + 1
        assert len(set(before.keyframe_ids) - set(status.keyframe_ids)) <= 1  # at most one evicted for the new one
    finally:
        assert set_map("").successful
    assert running["proc"].poll() is None
    client.node.destroy_client(setter)


def test_writable_parameters_apply_at_runtime(running, room):
    from rcl_interfaces.msg import Parameter as ParameterMsg, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    from sray_ros.ros.image_conversion import image_to_labels

    client = running["client"]
    setter = client.node.create_client(SetParameters, f"{NODE}/set_parameters")

    def set_params(**values):
        params = []
        for name, value in values.items():
            v = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value) if isinstance(value, float) \
                else ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value) if isinstance(value, bool) \
                else ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
            params.append(ParameterMsg(name=name, value=v))
        results = client.call(setter, SetParameters.Request(parameters=params)).results
        assert all(r.successful for r in results), [r.reason for r in results]

    # S-Ray alone (label transfer off at runtime): where keyframe labels agree the fused probability is
    # 1.0 in float32, so a threshold of 1.0 would let those pixels through.
    set_params(confidence_threshold=1.0, num_source_views=2, use_keyframe_labels=False)
    try:
        strict = client.call(client.render, render_request(room, HELD_OUT, num=0))
        assert strict.success, strict.message
        assert "labels fused" not in strict.message, strict.message
        assert (image_to_labels(strict.labels) == 255).all()  # no pixel is certain
        assert len(strict.source_keyframe_ids) == 2
        set_params(max_render_pixels=100)
        refused = client.call(client.render, render_request(room, HELD_OUT))
        assert not refused.success and "max_render_pixels=100" in refused.message
    finally:
        set_params(confidence_threshold=0.0, num_source_views=4, max_render_pixels=640 * 480, use_keyframe_labels=True)
    again = client.call(client.render, render_request(room, HELD_OUT))
    assert again.success and (image_to_labels(again.labels) != 255).any()


def test_rendered_images_frame_is_broadcast(running, room):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from tf2_msgs.msg import TFMessage

    from sensor_msgs.msg import Image

    client = running["client"]
    static = []
    client.node.create_subscription(TFMessage, "/tf_static", static.append, QoSProfile(
        depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    # the render's colour and depth as topics (what rviz/sray.rviz shows), besides the service response
    published = {"color": [], "depth": []}
    for kind, images in published.items():
        client.node.create_subscription(Image, f"{NODE}/render/{kind}/image_raw", images.append, 10)
    time.sleep(1.0)  # discovery of the new subscriptions
    response = client.call(client.render, render_request(room, HELD_OUT))
    assert response.success, response.message
    frame = response.labels.header.frame_id
    assert frame == "sray_node/render_optical_frame"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (published["color"] and published["depth"]):
        time.sleep(0.05)
    # every node topic rviz/sray.rviz shows exists, with the display's message type
    from test_rviz_config import MSG_TYPE, rviz_topics

    types = dict(client.node.get_publisher_names_and_types_by_node("sray_node", "/"))
    for cls, topic in rviz_topics().values():
        if topic.startswith(f"{NODE}/"):
            assert types.get(topic) == [f"sensor_msgs/msg/{MSG_TYPE[cls]}"], (topic, sorted(types))
    color, depth = published["color"][-1], published["depth"][-1]
    assert (color.encoding, depth.encoding) == ("rgb8", "32FC1")
    assert color.header.frame_id == depth.header.frame_id == frame
    assert (depth.width, depth.height) == (response.labels.width, response.labels.height)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(t.child_frame_id == frame for m in static for t in m.transforms):
        time.sleep(0.05)
    transform = [t for m in static for t in m.transforms if t.child_frame_id == frame][-1]
    assert transform.header.frame_id == "map"
    position = transform.transform.translation
    assert np.allclose([position.x, position.y, position.z], room.poses[HELD_OUT][:3, 3], atol=1e-5)


def test_clear_keyframes_drops_a_frame_being_handled(running, room):
    from geometry_msgs.msg import TransformStamped
    from std_msgs.msg import Header
    from std_srvs.srv import Trigger
    from tf2_msgs.msg import TFMessage

    from sray_ros import geometry

    client = running["client"]
    clear = client.node.create_client(Trigger, f"{NODE}/clear_keyframes")
    # This frame waits (up to tf_timeout_s) for its transform, i.e. it is being handled during the clear.
    client.publish_frame(room, 0, 350.0, frame_id="late_camera", tf=False)
    time.sleep(1.0)
    assert client.call(clear, Trigger.Request()).success
    t = TransformStamped(header=Header(frame_id="map"), child_frame_id="late_camera")
    t.header.stamp.sec = 350
    c2w = room.poses[0]
    t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = map(float, c2w[:3, 3])
    q = geometry.matrix_to_quaternion(torch.from_numpy(np.ascontiguousarray(c2w[:3, :3], np.float64))).numpy()
    t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z, t.transform.rotation.w = map(float, q)
    client.tf_pub.publish(TFMessage(transforms=[t]))
    time.sleep(3.0)  # the worker finishes the frame; statuses come every second
    cleared = client.latest_status()
    assert cleared.keyframe_count == 0, "a frame handled during the clear landed after it"
    assert cleared.labelled_keyframe_count == 0
    # refill for the tests that follow
    for n, i in enumerate(i for i in range(room.num_frames) if i != HELD_OUT):
        client.publish_frame(room, i, 351.0 + 0.2 * n)
        time.sleep(0.05)
    client.latest_status(lambda s: s.keyframe_count == room.num_frames - 1, timeout=60.0)


def test_diverging_fine_tune_goal_is_refused_and_the_model_stays(running, room):
    from action_msgs.msg import GoalStatus

    from sray_ros.action import FineTune

    client = running["client"]
    assert client.fine_tune.wait_for_server(timeout_sec=30.0)
    handle = client.wait(client.fine_tune.send_goal_async(FineTune.Goal(max_steps=5, learning_rate=1e6)))
    result = client.wait(handle.get_result_async(), timeout=120)
    assert result.status == GoalStatus.STATUS_ABORTED and not result.result.success
    assert "learning_rate" in result.result.message and result.result.steps_done == 0
    assert not (running["tmp"] / "fine_tuned.pt").exists()
    client.latest_status(lambda s: s.fine_tune_state == "failed")
    after = client.call(client.render, render_request(room, HELD_OUT))
    assert after.success


def test_a_goal_preempts_the_automatic_fine_tune(running, room):
    from action_msgs.msg import GoalStatus
    from rcl_interfaces.msg import Parameter as ParameterMsg, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    from sray_ros.action import FineTune

    client = running["client"]
    setter = client.node.create_client(SetParameters, f"{NODE}/set_parameters")

    def set_ints(**values):
        params = [ParameterMsg(name=k, value=ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=v))
                  for k, v in values.items()]
        assert all(r.successful for r in client.call(setter, SetParameters.Request(parameters=params)).results)

    set_ints(auto_fine_tune_every=1, fine_tune_default_steps=100000)  # a long automatic run
    try:
        client.publish_frame(room, 0, 370.0)  # one new labelled keyframe starts it
        client.latest_status(lambda s: s.fine_tune_state == "running", timeout=60)
    finally:
        set_ints(auto_fine_tune_every=0, fine_tune_default_steps=300)
    handle = client.wait(client.fine_tune.send_goal_async(FineTune.Goal(max_steps=2)))
    assert handle.accepted, "the automatic run blocked the goal"
    result = client.wait(handle.get_result_async(), timeout=300)
    assert result.status == GoalStatus.STATUS_SUCCEEDED, result.result.message
    assert result.result.steps_done == 2
    status = client.latest_status(lambda s: s.fine_tune_state == "succeeded")
    assert status.fine_tune_step == 2  # the goal's run, not the automatic one


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

    from sray_ros.ros.parameters import PARAMETERS

    client = running["client"]
    getter = client.node.create_client(GetParameters, f"{NODE}/get_parameters")
    response = client.call(getter, GetParameters.Request(names=["keyframe_width", "num_source_views", "world_frame",
                                                                "fine_tune_num_rays", "tf_timeout_s"]))
    values = [v.integer_value if v.type == 2 else v.double_value if v.type == 3 else v.string_value
              for v in response.values]
    assert values == [80, 4, "map", 128, 5.0]  # tf_timeout_s: 5 in the file, an integer for a float parameter
    assert response.values[-1].type == 3
    declared = set(PARAMETERS)
    in_file = set(yaml.safe_load((REPO / "config" / "sray.yaml").read_text())["/**"]["ros__parameters"])
    assert declared == in_file, (declared ^ in_file)


def test_without_a_model_render_fails_with_the_reason(processes, rclpy_context, tmp_path):
    import rclpy

    from conftest import call_service, wait_for_service
    from sray_ros.srv import RenderSemanticView

    params = write_params(tmp_path / "p.yaml", checkpoint=str(tmp_path / "missing.pt"))
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


# ------------------------------------------------------------------ depth of another camera (issue item 3)
def _plane_depth(K, width, height, normal=(0.2, 0.1, 1.0), offset=2.0):
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    x, y = (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]
    return offset / (normal[0] * x + normal[1] * y + normal[2])


K_COLOR = np.array([[60.0, 0, 39.5], [0, 62.0, 30.2], [0, 0, 1]])  # 80x60 colour camera
K_DEPTH = np.array([[70.0, 0, 52.5], [0, 70.0, 29.5], [0, 0, 1]])  # 106x60 depth camera, other intrinsics


def _depth_frame_messages(stamp_s, depth_frame="camera", with_depth_info=True, depth_size=(106, 60)):
    """Colour 80x60 + camera_info, 16UC1 depth 106x60 (``depth_size``) of a tilted plane (+ its camera_info) at one
    stamp."""
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    from sray_ros.ros.image_conversion import make_camera_info, numpy_to_image

    stamp = Time(sec=int(stamp_s), nanosec=int(round((stamp_s % 1) * 1e9)))
    color_header, depth_header = Header(stamp=stamp, frame_id="camera"), Header(stamp=stamp, frame_id=depth_frame)
    rgb = np.random.default_rng(int(stamp_s * 10)).integers(0, 256, (60, 80, 3), np.uint8)
    depth_mm = np.rint(_plane_depth(K_DEPTH, *depth_size) * 1000).astype(np.uint16)
    return {"color": numpy_to_image(rgb, "rgb8", color_header),
            "camera_info": make_camera_info(K_COLOR, 80, 60, color_header),
            "depth": numpy_to_image(depth_mm, "16UC1", depth_header),
            "depth_info": make_camera_info(K_DEPTH, *depth_size, depth_header) if with_depth_info else None}, depth_mm


def test_node_registers_depth_of_another_camera_into_the_colour_camera(tiny_checkpoint, rclpy_context):
    """The node's intake path (in-process, messages as DDS delivers them): the keyframe holds the depth
    reprojected into the colour camera, not the depth image stretched to the colour size."""
    from geometry_msgs.msg import TransformStamped
    from rclpy.parameter import Parameter
    from rclpy.serialization import serialize_message
    from std_msgs.msg import Header

    from sray_ros import geometry
    from sray_ros.ros.node import RawImage, SrayNode
    from sray_ros.online.sync import MatchedSet

    overrides = [Parameter("checkpoint", value=str(tiny_checkpoint)), Parameter("device", value="cpu"),
                 Parameter("keyframe_width", value=80), Parameter("keyframe_height", value=60),
                 Parameter("min_translation_m", value=0.0), Parameter("min_rotation_deg", value=0.0)]
    node = SrayNode(context=rclpy_context, parameter_overrides=overrides)
    try:
        statics = []
        for child, x in (("camera", 0.0), ("depth_camera", None)):
            t = TransformStamped(header=Header(frame_id="map" if child == "camera" else "camera"), child_frame_id=child)
            t.transform.rotation.w = 1.0
            t.transform.translation.x = 0.06 if x is None else x  # depth camera 6 cm right of the colour one
            statics.append(t)
        assert node.tf.set_transforms(statics, authority="test", is_static=True) == []

        def feed(stamp_s, color_info=None, **kwargs):
            messages, depth_mm = _depth_frame_messages(stamp_s, **kwargs)
            if color_info is not None:
                color_info.header = messages["camera_info"].header
                messages["camera_info"] = color_info
            stamp_ns = int(round(stamp_s * 1e9))
            raw = {k: RawImage(serialize_message(messages[k]), messages[k].header.frame_id) for k in ("color", "depth")}
            node.intake._on_matched(MatchedSet(stamp_ns, {**messages, **raw, "labels": None},
                                               {k: stamp_ns for k in messages}))
            node.intake.resolve_waiting()  # what the keyframe worker runs after each matched set
            return depth_mm.astype(np.float32) / 1000.0

        depth_m = feed(1.0)
        kf = node.keyframes.snapshot()[-1].frame
        np.testing.assert_array_equal(kf.depth, geometry.register_depth(depth_m, K_DEPTH, K_COLOR, (80, 60)))
        truth = _plane_depth(K_COLOR, 80, 60)
        valid = kf.depth > 0
        assert 0.6 < valid.mean() < 1.0  # the colour camera sees wider vertically than the depth camera
        assert np.abs(kf.depth[valid] - truth[valid]).max() < 0.01  # the surface along each colour pixel's ray
        assert np.abs(geometry.resize_nearest(depth_m, 80, 60) - truth).max() > 0.05  # stretching is wrong

        # depth in another optical frame: TF gives the extrinsics
        depth_m = feed(2.0, depth_frame="depth_camera")
        T = np.eye(4)
        T[0, 3] = 0.06
        np.testing.assert_array_equal(node.keyframes.snapshot()[-1].frame.depth,
                                      geometry.register_depth(depth_m, K_DEPTH, K_COLOR, (80, 60), T))

        # no depth camera_info and another size: rejected with the reason, the keyframes unchanged
        ids = [k.id for k in node.keyframes.snapshot()]
        feed(3.0, with_depth_info=False)
        assert node.stats.rejected["depth_not_registered"] == 1 and [k.id for k in node.keyframes.snapshot()] == ids
        # no depth camera_info, the colour size, but another optical frame: not stored as aligned
        feed(3.5, with_depth_info=False, depth_frame="depth_camera", depth_size=(80, 60))
        assert node.stats.rejected["depth_not_registered"] == 2 and [k.id for k in node.keyframes.snapshot()] == ids

        # a distorted colour camera: not silently used as pinhole K; the rectified P is, with a warning once
        from sray_ros.ros.image_conversion import make_camera_info

        distorted = make_camera_info(K_COLOR, 80, 60)
        distorted.d = [0.1, -0.05, 0.0, 0.0, 0.0]
        P = np.array([[55.0, 0, 40.0, 0], [0, 57.0, 30.0, 0], [0, 0, 1, 0]])
        distorted.p = P.reshape(-1).tolist()
        feed(4.0, color_info=distorted)
        np.testing.assert_array_equal(node.keyframes.snapshot()[-1].frame.K, P[:, :3])
        assert any("expects rectified images" in note for note in node._warned)
    finally:
        node.destroy_node()


def test_depth_of_another_size_without_its_camera_info_is_rejected_over_dds(running):
    """Over DDS: 106x60 depth with an 80x60 colour image and no depth/camera_info counts as depth_not_registered
    (before: stretched and accepted); with its camera_info the same frame becomes a keyframe."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo
    from tf2_msgs.msg import TFMessage

    client = running["client"]
    depth_info_pub = client.node.create_publisher(CameraInfo, "/depth/camera_info",
                                                  QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
    time.sleep(1.0)  # discovery

    def counts(status):
        return dict(zip(status.reject_reasons, status.reject_counts))

    def publish(stamp_s, with_depth_info):
        from geometry_msgs.msg import TransformStamped
        from std_msgs.msg import Header

        messages, _ = _depth_frame_messages(stamp_s, with_depth_info=with_depth_info)
        t = TransformStamped(header=Header(stamp=messages["color"].header.stamp, frame_id="map"),
                             child_frame_id="camera")
        t.transform.rotation.w = 1.0
        client.tf_pub.publish(TFMessage(transforms=[t]))
        time.sleep(0.01)
        client.pub["depth"].publish(messages["depth"])
        if with_depth_info:
            depth_info_pub.publish(messages["depth_info"])
        client.info_pub.publish(messages["camera_info"])
        client.pub["color"].publish(messages["color"])
        # a later stamp on a synchronised stream ends the wait for optional streams (labels) of this frame
        time.sleep(0.05)
        client.info_pub.publish(_depth_frame_messages(stamp_s + 1.0)[0]["camera_info"])

    before = client.latest_status()
    publish(600.0, with_depth_info=False)
    reason = "depth_not_registered"
    status = client.latest_status(lambda s: counts(s).get(reason, 0) > counts(before).get(reason, 0), timeout=30.0)
    assert status.frames_accepted == before.frames_accepted
    publish(602.0, with_depth_info=True)
    status = client.latest_status(lambda s: s.frames_accepted >= before.frames_accepted + 1, timeout=30.0)
    assert counts(status)[reason] == counts(before).get(reason, 0) + 1
    client.node.destroy_publisher(depth_info_pub)


def test_render_reports_source_coverage_and_checks_the_request_camera_info(running, room):
    client = running["client"]
    response = client.call(client.render, render_request(room, HELD_OUT, width=40, height=30))
    assert response.success, response.message
    assert 0.0 <= response.source_overlap <= 1.0 and np.isfinite(response.source_distance_m)
    assert response.source_distance_m >= 0.0
    assert ("barely see the target" in response.message) == (response.source_overlap < 0.5)
    request = render_request(room, HELD_OUT, width=40, height=30)
    request.camera_info.r = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0]  # a stereo rectification rotation
    bad = client.call(client.render, request)
    assert not bad.success and "rectification rotation" in bad.message


# `python -m sray_ros.ros.node` is the node, as the README says (run outside the source tree, whose sray_ros
# lacks the generated interfaces of the installed one)
NODE_MODULE = ["-m", "sray_ros.ros.node"]


def test_a_bad_parameter_value_is_one_line_naming_it(processes, tmp_path):
    import sys

    proc = processes.start([sys.executable, *NODE_MODULE, "--ros-args", "-r", "__node:=sray_bad_param",
                            "-p", "max_keyframes:=abc", "-p", f"checkpoint:={tmp_path / 'missing.pt'}"],
                           name="bad_param", cwd=tmp_path)
    assert proc.wait(timeout=120) == 1
    log = processes.log(proc)
    assert "Traceback" not in log, log
    lines = [line for line in log.splitlines() if "max_keyframes" in line]
    assert len(lines) == 1 and "'abc'" in lines[0] and "integer" in lines[0], log


def test_status_runs_on_wall_time_and_integers_are_accepted_for_floats(processes, rclpy_context, tmp_path):
    """On sim time with no /clock (a replayed bag that ended) the status keeps coming; `-p x:=5` for a float."""
    import sys

    import rclpy
    from rcl_interfaces.srv import GetParameters
    from rclpy.executors import SingleThreadedExecutor

    from conftest import call_service, wait_for_service
    from sray_ros.msg import NodeStatus

    proc = processes.start([sys.executable, *NODE_MODULE, "--ros-args", "-r", "__node:=sray_sim",
                            "-p", "use_sim_time:=true", "-p", "tf_timeout_s:=5", "-p", "min_rotation_deg:=10",
                            "-p", f"checkpoint:={tmp_path / 'missing.pt'}"], name="sray_sim", cwd=tmp_path)
    node = rclpy.create_node("status_client", context=rclpy_context)
    statuses = []
    node.create_subscription(NodeStatus, "/sray_sim/status", statuses.append, 10)
    try:
        getter = node.create_client(GetParameters, "/sray_sim/get_parameters")
        wait_for_service(node, getter, timeout=90)
        values = call_service(node, getter, GetParameters.Request(names=["tf_timeout_s", "min_rotation_deg"])).values
        assert [(v.type, v.double_value) for v in values] == [(3, 5.0), (3, 10.0)]
        executor = SingleThreadedExecutor(context=rclpy_context)
        executor.add_node(node)
        deadline = time.monotonic() + 30
        while len(statuses) < 2 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.2)
        executor.shutdown()
    finally:
        node.destroy_node()
    assert proc.poll() is None, processes.log(proc)
    assert len(statuses) >= 2, "no status on sim time without /clock"
    assert statuses[-1].header.stamp.sec == 0  # stamped with the (unset) sim time


def test_namespace_keeps_the_shipped_parameters_file(processes, rclpy_context, tmp_path):
    """`namespace:=robot1` with the launch file's parameters file (its key must match /robot1/sray_node)."""
    import sys

    import rclpy
    from rcl_interfaces.srv import GetParameters

    from conftest import call_service, wait_for_service
    from launch_standins import Node, load_launch_file

    share = REPO / ".ros_ws" / "install" / "sray_ros" / "share" / "sray_ros"
    started = load_launch_file(REPO / "launch" / "sray.launch.py", str(share)).resolve({"namespace": "robot1"})
    launched = next(a for a in started if isinstance(a, Node)).kwargs
    params_file, _ = launched["parameters"]
    text = (REPO / "config" / "sray.yaml").read_text()
    assert "max_keyframes: 32" in text
    changed = tmp_path / "sray.yaml"  # the shipped file with one value changed, so that its effect shows
    changed.write_text(__import__("pathlib").Path(params_file).read_text().replace("max_keyframes: 32",
                                                                                   "max_keyframes: 7"))
    proc = processes.start([sys.executable, *NODE_MODULE, "--ros-args", "-r", f"__ns:=/{launched['namespace']}",
                            "-r", f"__node:={launched['name']}", "--params-file", str(changed),
                            "-p", f"checkpoint:={tmp_path / 'missing.pt'}"], name="sray_ns", cwd=tmp_path)
    node = rclpy.create_node("ns_client", context=rclpy_context)
    try:
        getter = node.create_client(GetParameters, "/robot1/sray_node/get_parameters")
        wait_for_service(node, getter, timeout=90)
        values = call_service(node, getter, GetParameters.Request(names=["max_keyframes"])).values
    finally:
        node.destroy_node()
    assert proc.poll() is None, processes.log(proc)
    assert values[0].integer_value == 7


def test_missing_tf2_msgs_is_a_loud_start_error(processes, tmp_path):
    import sys

    code = ("import sys; sys.modules['tf2_msgs'] = sys.modules['tf2_msgs.msg'] = None; "
            "from sray_ros.ros.node import main; main()")
    proc = processes.start([sys.executable, "-c", code, "--ros-args", "-r", "__node:=sray_no_tf2",
                            "-p", f"checkpoint:={tmp_path / 'missing.pt'}"], name="no_tf2", cwd=tmp_path)
    assert proc.wait(timeout=120) == 1, processes.log(proc)
    assert "tf2_msgs is not importable" in processes.log(proc)


def test_render_with_keyframes_without_depth(room, tiny_checkpoint, tmp_path):
    """RGB-only keyframes over DDS: 'auto' falls back to hierarchical sampling and the render equals the
    core library's on the same depth-less frames (the RGB-D case: test_render_at_held_out_pose_matches_offline)."""
    import os

    import rclpy

    from conftest import ROS_DOMAIN_ID, ProcessGroup
    from sray_ros.ros.image_conversion import image_to_labels

    # A domain of its own (215-232: the other range free of port clashes on Linux): the module's `running`
    # node listens on the same topics and would take these frames (and their reused stamps) too.
    domain = 215 + ROS_DOMAIN_ID % 18
    params = write_params(tmp_path / "params.yaml", checkpoint=str(tiny_checkpoint), keyframe_width=80,
                          keyframe_height=60, min_translation_m=0.0, min_rotation_deg=0.0, sensor_data_qos=False,
                          confidence_threshold=0.0, opacity_threshold=0.0)
    group = ProcessGroup(tmp_path)
    proc = group.start(installed_executable("sray-node") + ["--ros-args", "--params-file", str(params)], "sray_node",
                       env={**os.environ, "ROS_DOMAIN_ID": str(domain)})
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    client = Client(context)
    try:
        assert client.render.wait_for_service(timeout_sec=60.0), group.log(proc)
        client.latest_status(timeout=30.0)
        published = [i for i in range(room.num_frames) if i != HELD_OUT]
        for n, i in enumerate(published):
            client.publish_frame(room, i, 100.0 + 0.2 * n, depth=False)
            time.sleep(0.05)
        client.latest_status(lambda s: s.keyframe_count == len(published), timeout=60.0)
        response = client.call(client.render, render_request(room, HELD_OUT, width=40, height=30))
        assert response.success, response.message
        assert "(hierarchical sampling)" in response.message, response.message
        offline = offline_render(room, tiny_checkpoint, list(response.source_keyframe_ids), HELD_OUT, 40, 30,
                                 depth=False)
        assert offline.sampling == "hierarchical"
        assert np.array_equal(image_to_labels(response.labels), offline.labels)
    finally:
        client.close()
        rclpy.shutdown(context=context)
        group.stop_all()


# Once in four CI runs (Jazzy, after the module's earlier tests, load ~1.8) the running node decided no frame for
# over 30 s in these two tests (the intake resumed afterwards: the rest of the module passed). A wedged intake
# fails the rerun too; a transient stall does not fail CI. The stall itself is not understood yet.
@pytest.mark.flaky(reruns=1, reruns_delay=5)
def test_label_images_that_do_not_match_the_colour_camera_are_rejected_over_dds(running, room):
    """Over DDS, without labels/camera_info: half-resolution labels, a 16:9 crop, a wider view and a rotated label
    image (before: stretched into labelled keyframes) are each counted as labels_not_registered and add no
    keyframe; half-resolution labels with their labels/camera_info become a labelled keyframe (the registered
    values are checked exactly in test_online_intake)."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo

    from sray_ros import geometry
    from sray_ros.ros.image_conversion import make_camera_info

    client = running["client"]
    labels_info_pub = client.node.create_publisher(CameraInfo, "/labels/camera_info",
                                                   QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))

    def counts(status):
        return dict(zip(status.reject_reasons, status.reject_counts))

    def flush(stamp_s):
        """A later stamp on a synchronised stream ends the wait for optional streams (seen in earlier tests)."""
        time.sleep(0.05)
        info = make_camera_info(room.intrinsics, room.width, room.height)
        info.header.stamp.sec = int(stamp_s)
        client.info_pub.publish(info)

    before = client.latest_status()
    truth = room.labels[0]  # 80x60
    cases = [truth[::2, ::2], truth[7:52], np.pad(truth, ((6, 6), (8, 8))), np.rot90(truth)]
    for n, labels in enumerate(cases):
        client.publish_frame(room, n, 700.0 + 0.2 * n, labels=np.ascontiguousarray(labels))
        time.sleep(0.05)
    client.publish_frame(room, 4, 701.0)  # a matching frame: accepted
    flush(703.0)
    status = client.latest_status(lambda s: s.frames_accepted > before.frames_accepted, timeout=30.0)
    assert counts(status)["labels_not_registered"] == counts(before).get("labels_not_registered", 0) + 4
    assert status.frames_accepted == before.frames_accepted + 1
    assert running["proc"].poll() is None

    time.sleep(1.0)  # discovery of the labels/camera_info publisher
    half_K = geometry.scale_intrinsics(room.intrinsics.astype(np.float64), 0.5, 0.5)
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header
    header = Header(stamp=Time(sec=704, nanosec=0), frame_id="camera")
    labels_info_pub.publish(make_camera_info(half_K, 40, 30, header))
    time.sleep(0.05)
    client.publish_frame(room, 5, 704.0, labels=np.ascontiguousarray(truth[::2, ::2]))
    client.publish_frame(room, 6, 704.2)
    flush(706.0)
    status = client.latest_status(lambda s: s.frames_accepted >= before.frames_accepted + 3, timeout=30.0)
    assert counts(status)["labels_not_registered"] == counts(before).get("labels_not_registered", 0) + 4
    client.node.destroy_publisher(labels_info_pub)


# Once in four CI runs (Jazzy, after the module's earlier tests, load ~1.8) the running node decided no frame for
# over 30 s in these two tests (the intake resumed afterwards: the rest of the module passed). A wedged intake
# fails the rerun too; a transient stall does not fail CI. The stall itself is not understood yet.
@pytest.mark.flaky(reruns=1, reruns_delay=5)
def test_tf_trees_of_real_robots_over_dds(running, room):
    """Over DDS, with tf_timeout_s 5: (a) a camera frame with two parents (SLAM's map -> cam, odometry's
    odom -> cam, interleaved one message per stamp): every frame becomes a keyframe (before: none, "extrapolation
    into the past"); (b) two frames whose transform never comes hold up none of the 3 frames behind them: those
    are keyframes within 3 s (before: 2 x 5 s), the two are counted missing_tf after their own 5 s; (c) a frame in
    a TF loop is counted missing_tf at once (before: after a 5 s wait)."""
    from geometry_msgs.msg import TransformStamped
    from std_msgs.msg import Header
    from tf2_msgs.msg import TFMessage

    client = running["client"]

    def counts(status):
        return dict(zip(status.reject_reasons, status.reject_counts))

    def tf(parent, child, stamp_s, x=0.0):
        t = TransformStamped(header=Header(frame_id=parent), child_frame_id=child)
        t.header.stamp.sec, t.header.stamp.nanosec = int(stamp_s), int(round((stamp_s % 1) * 1e9))
        t.transform.translation.x = x
        t.transform.rotation.w = 1.0
        return t

    # (a) two parents
    before = client.latest_status()
    for n in range(4):
        stamp = 800.0 + 0.2 * n
        client.tf_pub.publish(TFMessage(transforms=[tf("odom", "robot_camera", stamp - 0.1, 0.5 * n)]))
        client.publish_frame(room, n, stamp, frame_id="robot_camera")  # map -> robot_camera at the stamp
        time.sleep(0.05)
    client.tf_pub.publish(TFMessage(transforms=[tf("odom", "robot_camera", 801.0)]))
    client.info_pub.publish(_flush_info(room, 802.0))
    status = client.latest_status(lambda s: s.frames_accepted >= before.frames_accepted + 4, timeout=30.0)
    assert counts(status)["missing_tf"] == counts(before)["missing_tf"]

    # (b) unresolvable frames do not hold up the frames behind them
    before = client.latest_status()
    start = time.monotonic()
    client.publish_frame(room, 0, 803.0, frame_id="ghost_a", tf=False)
    client.publish_frame(room, 1, 803.2, frame_id="ghost_b", tf=False)
    for n in range(3):
        client.publish_frame(room, 2 + n, 803.4 + 0.2 * n)
    client.info_pub.publish(_flush_info(room, 805.0))
    client.latest_status(lambda s: s.frames_accepted >= before.frames_accepted + 3, timeout=30.0)
    assert time.monotonic() - start < 3.0
    status = client.latest_status(lambda s: counts(s)["missing_tf"] >= counts(before)["missing_tf"] + 2, timeout=30.0)
    assert time.monotonic() - start >= 4.5  # each waited its own tf_timeout_s
    assert status.frames_accepted == before.frames_accepted + 3

    # (c) a loop is named at once
    before = client.latest_status()
    client.tf_pub.publish(TFMessage(transforms=[tf("loop_a", "loop_cam", 806.0), tf("loop_cam", "loop_b", 806.0),
                                                tf("loop_b", "loop_a", 806.0)]))
    time.sleep(0.05)
    start = time.monotonic()
    client.publish_frame(room, 0, 806.0, frame_id="loop_cam", tf=False)
    client.info_pub.publish(_flush_info(room, 807.5))
    client.latest_status(lambda s: counts(s)["missing_tf"] == counts(before)["missing_tf"] + 1, timeout=30.0)
    assert time.monotonic() - start < 3.0
    assert running["proc"].poll() is None


def _flush_info(room, stamp_s):
    """A colour camera_info at a later stamp: ends the synchroniser's wait for optional streams of earlier frames."""
    from sray_ros.ros.image_conversion import make_camera_info

    info = make_camera_info(room.intrinsics, room.width, room.height)
    info.header.stamp.sec, info.header.stamp.nanosec = int(stamp_s), int(round((stamp_s % 1) * 1e9))
    info.header.frame_id = "camera"
    return info


@pytest.mark.parametrize("order", ["images_first", "tf_first", "clock_first"])
def test_time_going_backwards_clears_the_old_timeline_in_every_arrival_order(order, tiny_checkpoint, rclpy_context):
    """In-process node fed message by message as DDS delivers them (sim time): after 3 keyframes at 200 s the
    timeline restarts at 100 s, the jump seen first on the images, on /tf or on /clock; late messages of the old
    timeline (a /tf and a frame at 200.6 s) come after the jump. Right value: the keyframes are exactly the new
    timeline's 3 frames (100.0, 100.2, 100.4 s), none lost and none of the old timeline kept."""
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import TransformStamped
    from rclpy.parameter import Parameter
    from rclpy.serialization import serialize_message
    from rclpy.time import Time as RclTime
    from std_msgs.msg import Header
    from tf2_msgs.msg import TFMessage

    from sray_ros.ros.image_conversion import make_camera_info, numpy_to_image
    from sray_ros.ros.node import SrayNode

    overrides = [Parameter("checkpoint", value=str(tiny_checkpoint)), Parameter("device", value="cpu"),
                 Parameter("keyframe_width", value=80), Parameter("keyframe_height", value=60),
                 Parameter("min_translation_m", value=0.0), Parameter("min_rotation_deg", value=0.0),
                 Parameter("use_sim_time", value=True), Parameter("tf_timeout_s", value=5.0)]
    node = SrayNode(context=rclpy_context, parameter_overrides=overrides)
    K = np.array([[60.0, 0, 39.5], [0, 60.0, 29.5], [0, 0, 1]])
    info_cb, color_cb = node._make_intake("camera_info"), node._make_intake("color", raw=True)

    def stamp(t):
        return Time(sec=int(t), nanosec=int(round((t % 1) * 1e9)))

    def tf(t):
        msg = TransformStamped(header=Header(stamp=stamp(t), frame_id="map"), child_frame_id="camera")
        msg.transform.translation.x = t % 10
        msg.transform.rotation.w = 1.0
        node._on_tf(TFMessage(transforms=[msg]), False)

    def image(t):
        header = Header(stamp=stamp(t), frame_id="camera")
        info_cb(make_camera_info(K, 80, 60, header))
        rgb = np.random.default_rng(int(t * 10)).integers(0, 256, (60, 80, 3), np.uint8)
        color_cb(serialize_message(numpy_to_image(rgb, "rgb8", header)))

    def clock(t):
        node.get_clock().set_ros_time_override(RclTime(nanoseconds=int(round(t * 1e9))))

    def stamps(expected_count):
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline:
            kept = [kf.stamp_ns / 1e9 for kf in node.keyframes.snapshot()]
            if len(kept) >= expected_count and not len(node.intake.waiting) and not node.intake.worker.pending():
                time.sleep(0.3)
                return [kf.stamp_ns / 1e9 for kf in node.keyframes.snapshot()]
            time.sleep(0.05)
        return [kf.stamp_ns / 1e9 for kf in node.keyframes.snapshot()]

    try:
        for t in (200.0, 200.2, 200.4):
            clock(t)
            tf(t)
            image(t)
        assert stamps(3) == pytest.approx([200.0, 200.2, 200.4])
        for n, t in enumerate((100.0, 100.2, 100.4)):
            if order == "clock_first" or n:
                clock(t)
            if order == "images_first" and n == 0:
                image(t)
                tf(t)
            else:
                tf(t)
                image(t)
            if n == 0:  # the old timeline's late messages, after the jump
                tf(200.6)
                image(200.6)
        assert stamps(3) == pytest.approx([100.0, 100.2, 100.4])
        assert node.time_jumps.jumps == 1 and node.time_jumps.stale == 3  # the late /tf, camera_info and colour
    finally:
        node.destroy_node()
