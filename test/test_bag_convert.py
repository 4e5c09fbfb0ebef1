"""Scene folder -> rosbag2 converter: read back with rosbags + rclpy deserialisation, images bit-exact as
the scene reader returns them, intrinsics, poses (/tf composed with /tf_static), stamps, metadata v8 with
offered QoS, mcap, a round trip through the BagPlayer, the CLI and its errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO, installed_executable

HOLOLENS = REPO.parent / "shared" / "data" / "hololens_000"
S = 1_000_000_000


@pytest.fixture(scope="module")
def room(synthetic_mini_set) -> Path:
    return next((synthetic_mini_set / "test").glob("test_*"))


def read_bag(path: Path) -> dict[str, list[tuple[int, object]]]:
    """topic -> [(bag timestamp ns, deserialised message)], in bag order."""
    from rclpy.serialization import deserialize_message
    from rosbags.rosbag2 import Reader

    from sray_ros.ros.bag_player import resolve_message_class

    out: dict[str, list] = {}
    with Reader(path) as reader:
        for connection, stamp, raw in reader.messages():
            msg = deserialize_message(bytes(raw), resolve_message_class(connection.msgtype))
            out.setdefault(connection.topic, []).append((stamp, msg))
    return out


def _stamp_ns(header) -> int:
    return header.stamp.sec * S + header.stamp.nanosec


def _matrix(transform) -> np.ndarray:
    import torch

    from sray_ros.geometry import quaternion_to_matrix

    r, t = transform.rotation, transform.translation
    m = np.eye(4)
    m[:3, :3] = quaternion_to_matrix(torch.tensor([r.x, r.y, r.z, r.w], dtype=torch.float64)).numpy()
    m[:3, 3] = (t.x, t.y, t.z)
    return m


def check_bag(bag: Path, scene, indices: list[int], fps: float, *, encoding: str = "rgb8",
              world_frame: str = "map", labels: bool = True, depth: bool = True) -> dict:
    """Everything in the bag equals what the scene reader returns for ``indices`` (depth / labels are
    expected when the scene has them and ``depth`` / ``labels``)."""
    from sray_ros.ros.image_conversion import image_to_numpy, image_to_rgb
    from sray_ros.ros.scannet_to_bag import START_TIME_S, topic_names

    topics = topic_names()
    messages = read_bag(bag)
    has_depth, has_labels = scene.has_depth and depth, scene.has_labels and labels
    stamps = [round(START_TIME_S * S) + round(k * S / fps) for k in range(len(indices))]

    (static_stamp, static), = messages["/tf_static"]
    assert static_stamp == stamps[0] and len(static.transforms) == 1
    link_optical = static.transforms[0]
    assert (link_optical.header.frame_id, link_optical.child_frame_id) == ("camera_link", "camera_color_optical_frame")
    T_link_optical = _matrix(link_optical.transform)
    # REP-103 body (x forward, y left, z up) -> optical (x right, y down, z forward), no offset
    np.testing.assert_allclose(T_link_optical[:3, :3], [[0, 0, 1], [-1, 0, 0], [0, -1, 0]], atol=1e-12)
    np.testing.assert_array_equal(T_link_optical[:3, 3], 0.0)
    assert stamps[0] == 1 * S  # documented start time

    expected_topics = {"/tf", "/tf_static", topics["color"], topics["camera_info"]}
    if has_depth:
        expected_topics |= {topics["depth"], topics["depth_info"]}
    if has_labels:
        expected_topics |= {topics["labels"]}
    assert set(messages) == expected_topics
    for topic in expected_topics - {"/tf_static"}:
        assert [s for s, _ in messages[topic]] == stamps, topic  # bag time = frame time, at fps
        assert [_stamp_ns(m.transforms[0].header if topic == "/tf" else m.header) for _, m in messages[topic]] == stamps

    for k, idx in enumerate(indices):
        (tf,) = messages["/tf"][k][1].transforms
        assert (tf.header.frame_id, tf.child_frame_id) == (world_frame, "camera_link")
        c2w = _matrix(tf.transform) @ T_link_optical
        np.testing.assert_allclose(c2w[:3, 3], scene.poses[idx][:3, 3], atol=1e-9, rtol=0)
        # A quaternion holds a rotation; text poses (6 decimals) are orthonormal only to ~1e-6, so the exact
        # comparison is with the nearest rotation, and the raw matrix agrees to its own rounding.
        u, _, vt = np.linalg.svd(scene.poses[idx][:3, :3])
        np.testing.assert_allclose(c2w[:3, :3], u @ vt, atol=1e-9, rtol=0)
        np.testing.assert_allclose(c2w, scene.poses[idx], atol=5e-6, rtol=0)

        color = messages[topics["color"]][k][1]
        assert color.encoding == encoding and color.header.frame_id == "camera_color_optical_frame"
        assert (color.width, color.height) == (scene.width, scene.height)
        np.testing.assert_array_equal(image_to_rgb(color), scene.load_color(idx))
        info = messages[topics["camera_info"]][k][1]
        assert (info.width, info.height) == (scene.width, scene.height)
        np.testing.assert_array_equal(np.asarray(info.k).reshape(3, 3), scene.intrinsics)
        if has_depth:
            depth_msg = messages[topics["depth"]][k][1]
            assert depth_msg.encoding == "16UC1" and depth_msg.header.frame_id == "camera_color_optical_frame"
            mm = image_to_numpy(depth_msg)
            np.testing.assert_array_equal(mm.astype(np.float32) / np.float32(1000.0), scene.load_depth(idx))
            depth_info = messages[topics["depth_info"]][k][1]
            assert (depth_info.width, depth_info.height) == (scene.width, scene.height)
            np.testing.assert_array_equal(np.asarray(depth_info.k).reshape(3, 3), scene.intrinsics_depth)
        if has_labels:
            label_msg = messages[topics["labels"]][k][1]
            assert label_msg.encoding == "mono8"
            np.testing.assert_array_equal(image_to_numpy(label_msg), scene.load_labels(idx))
    return messages


def _metadata(bag: Path) -> dict:
    return yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]


def _offered(metadata: dict) -> dict[str, list[dict]]:
    """topic -> offered QoS dicts (version 8 stores them as a YAML string)."""
    out = {}
    for entry in metadata["topics_with_message_count"]:
        qos = entry["topic_metadata"]["offered_qos_profiles"]
        out[entry["topic_metadata"]["name"]] = yaml.safe_load(qos) if isinstance(qos, str) else qos
    return out


# ------------------------------------------------------------------------------------------ tests
def test_synthetic_room_round_trip(room, tmp_path):
    from sray_ros.data.scannet import load_scannet_scene
    from sray_ros.ros.scannet_to_bag import convert

    summary = convert(room, tmp_path / "bag", fps=5.0, progress=False)
    scene = load_scannet_scene(room, None, None)
    assert scene.has_depth and scene.has_labels
    indices = list(range(len(scene)))
    assert summary.frames == len(indices) and summary.path == tmp_path / "bag"
    assert summary.duration_s == pytest.approx((len(indices) - 1) / 5.0)
    check_bag(tmp_path / "bag", scene, indices, 5.0)
    assert summary.topics == {"/tf_static": 1, **{t: len(indices) for t in (
        "/tf", "/camera/color/image_raw", "/camera/color/camera_info", "/camera/depth/image_raw",
        "/camera/depth/camera_info", "/camera/labels/image_raw")}}

    metadata = _metadata(tmp_path / "bag")
    assert metadata["version"] == 8 and metadata["storage_identifier"] == "sqlite3"
    offered = _offered(metadata)
    (static_qos,) = offered["/tf_static"]
    assert static_qos["durability"] == 1 and static_qos["reliability"] == 1  # transient local, reliable
    for topic, profiles in offered.items():
        assert profiles and all(p["history"] == 1 and p["depth"] >= 1 for p in profiles), topic
        if topic != "/tf_static":
            assert [(p["reliability"], p["durability"]) for p in profiles] == [(1, 2)], topic  # reliable, volatile
    counts = {e["topic_metadata"]["name"]: e["message_count"] for e in metadata["topics_with_message_count"]}
    assert counts == summary.topics


def test_selection_resize_bgr_mcap_and_options(room, tmp_path):
    from sray_ros.data.scannet import load_scannet_scene
    from sray_ros.ros.scannet_to_bag import convert

    summary = convert(room, tmp_path / "bag", fps=4.0, width=40, every=3, start=1, end=12, encoding="bgr8",
                      with_labels=False, storage="mcap", world_frame="odom", progress=False)
    scene = load_scannet_scene(room, 40, 30)  # height follows the 80x60 aspect ratio
    indices = list(range(len(scene)))[1:12:3]
    assert summary.frames == len(indices) == 4
    check_bag(tmp_path / "bag", scene, indices, 4.0, encoding="bgr8", world_frame="odom", labels=False)
    assert _metadata(tmp_path / "bag")["storage_identifier"] == "mcap"


def test_hololens_first_frames(tmp_path):
    from sray_ros.data.scannet import load_scannet_scene
    from sray_ros.ros.scannet_to_bag import convert

    if not HOLOLENS.is_dir():
        pytest.skip(f"needs the real sequence at {HOLOLENS} (shared/ beside the repository); absent here")
    summary = convert(HOLOLENS, tmp_path / "bag", fps=30.0, width=96, height=64, end=10, progress=False)
    scene = load_scannet_scene(HOLOLENS, 96, 64)
    assert scene.has_depth and not scene.has_labels
    assert summary.frames == 10 and "/camera/labels/image_raw" not in summary.topics
    check_bag(tmp_path / "bag", scene, list(range(10)), 30.0)


def test_replica_scene_auto_detected(tmp_path):
    from test_data_replica import write_replica

    from sray_ros.data.replica import load_replica_scene
    from sray_ros.ros.scannet_to_bag import convert

    root = write_replica(tmp_path / "room0", n=3)
    summary = convert(root, tmp_path / "bag", width=64, height=48, label_set="nyu40", progress=False)
    scene = load_replica_scene(root, 64, 48, label_set="nyu40")
    assert summary.frames == 3 and scene.has_labels
    check_bag(tmp_path / "bag", scene, [0, 1, 2], 10.0)


def test_node_tf_buffer_gives_scene_poses(room, tmp_path):
    """The node's own TF buffer, fed the bag's /tf and /tf_static, finds each image's optical-frame pose."""
    from sray_ros.data.scannet import load_scannet_scene
    from sray_ros.ros.scannet_to_bag import convert
    from sray_ros.ros.tf_buffer import TransformBuffer

    convert(room, tmp_path / "bag", end=4, progress=False)
    scene = load_scannet_scene(room, None, None)
    messages = read_bag(tmp_path / "bag")
    buffer = TransformBuffer()
    buffer.set_transforms(messages["/tf_static"][0][1].transforms, is_static=True)
    for _, tf in messages["/tf"]:
        buffer.set_transforms(tf.transforms)
    for k, (_, image) in enumerate(messages["/camera/color/image_raw"]):
        c2w = buffer.lookup_transform("map", image.header.frame_id, _stamp_ns(image.header))
        np.testing.assert_allclose(c2w, scene.poses[k], atol=1e-6, rtol=0)


@pytest.mark.ros
def test_round_trip_through_bag_player(room, tmp_path):
    import os

    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image

    from sray_ros.data.scannet import load_scannet_scene
    from sray_ros.ros.bag_player import BagPlayer
    from sray_ros.ros.image_conversion import image_to_rgb
    from ros_env import isolated_ros_env, xdist_domain_id
    from sray_ros.ros.scannet_to_bag import convert

    convert(room, tmp_path / "bag", fps=50.0, end=5, progress=False)
    scene = load_scannet_scene(room, None, None)
    os.environ.update(isolated_ros_env(xdist_domain_id(), tmp_path / "ros_log"))
    import rclpy
    from rclpy.serialization import deserialize_message
    from test_ros_bag_player import Collector

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=xdist_domain_id())
    collector = player = None
    try:
        topic = "/camera/color/image_raw"
        collector = Collector(context, {topic: (Image, QoSProfile(depth=10))})
        player = BagPlayer(tmp_path / "bag", topics=[topic], context=context)
        assert player.wait_for_subscribers(1, timeout_s=10.0)
        player.play()
        assert collector.wait_for(lambda r: len(r[topic]) >= 5), len(collector.received[topic])
        for k, raw in enumerate(collector.received[topic]):
            np.testing.assert_array_equal(image_to_rgb(deserialize_message(raw, Image)), scene.load_color(k))
    finally:
        if player is not None:
            player.close()
        if collector is not None:
            collector.close()
        rclpy.shutdown(context=context)


def test_segmenter_like_labels_in_another_label_space(room, tmp_path):
    """--label-noise segmenter --label-space ade20k150_to_scannet20: the labels topic carries per-frame segmenter
    errors in ADE20K-150 ids, which the shipped map (the node's label_map) turns back into exactly the corrupted
    ScanNet-20 labels."""
    from dataclasses import replace

    from sray_ros.data.label_map import load_label_map
    from sray_ros.data.label_noise import LABEL_TASKS
    from sray_ros.data.label_sets import load_label_set
    from sray_ros.data.scannet import load_scannet_scene
    from sray_ros.ros.image_conversion import image_to_label_ids
    from sray_ros.ros.scannet_to_bag import convert

    convert(room, tmp_path / "bag", fps=5.0, end=4, progress=False, label_noise="segmenter", label_noise_seed=2,
            label_space="ade20k150_to_scannet20")
    scene = load_scannet_scene(room, None, None)
    classes = load_label_set("scannet20")
    ade = load_label_map("ade20k150_to_scannet20", classes.class_names, "scannet20")
    clean = np.stack([scene.load_labels(i) for i in range(4)])
    noisy = replace(LABEL_TASKS["segmenter"], seed=2).apply(clean, 20)
    written = [image_to_label_ids(msg) for _, msg in read_bag(tmp_path / "bag")["/camera/labels/image_raw"]]
    assert len(written) == 4 and written[0].dtype == np.uint8  # ADE ids 0..149: mono8
    for k in range(4):
        assert not np.array_equal(written[k], noisy[k])  # another label space on the wire
        expected = noisy[k].copy()
        expected[expected == classes.class_names.index("shower curtain")] = 255  # ADE20K-150 has no such class
        assert np.array_equal(ade.apply(written[k]).labels, expected)
        assert ade.apply(written[k]).unknown_ids == 0
    assert (noisy != clean).any() and len({noisy[k].tobytes() for k in range(4)}) == 4  # noise that flickers


@pytest.mark.parametrize("case", ["missing_folder", "existing_output", "bad_encoding", "bad_fps", "no_pose",
                                  "no_frames", "bad_label_noise", "bad_label_space"])
def test_errors(case, room, tmp_path):
    from sray_ros.ros.scannet_to_bag import BagConversionError, convert

    scene_dir, out, kwargs, match = room, tmp_path / "bag", {}, None
    if case == "missing_folder":
        scene_dir, match = tmp_path / "nowhere", "does not exist"
    elif case == "existing_output":
        out.mkdir()
        match = "exists already"
    elif case == "bad_encoding":
        kwargs, match = {"encoding": "rgba16"}, "encoding 'rgba16'"
    elif case == "bad_fps":
        kwargs, match = {"fps": 0.0}, "fps"
    elif case == "no_pose":
        scene_dir = tmp_path / "scene"
        (scene_dir / "color").mkdir(parents=True)
        match = "pose/"
    elif case == "no_frames":
        kwargs, match = {"start": 1000}, "no frames selected"
    elif case == "bad_label_noise":  # keep10 needs the whole sequence; labels are written frame by frame
        kwargs, match = {"label_noise": "keep10"}, "label_noise must be one of .*segmenter"
    elif case == "bad_label_space":
        kwargs, match = {"label_space": "pascal_to_scannet"}, "label_space: .*shipped maps"
    with pytest.raises(BagConversionError, match=match):
        convert(scene_dir, out, progress=False, **kwargs)
    assert out.exists() == (case == "existing_output")  # nothing (partial) left behind


def test_cli(room, tmp_path):
    ok = subprocess.run(installed_executable("sray-scannet-to-bag") + [str(room), str(tmp_path / "bag"),
                         "--end", "2", "--no-progress"], capture_output=True, text=True, timeout=120, check=False)
    assert ok.returncode == 0, ok.stderr
    assert _metadata(tmp_path / "bag")["message_count"] == 1 + 2 * 6
    bad = subprocess.run([sys.executable, "-m", "sray_ros.ros.scannet_to_bag", str(room), str(tmp_path / "bag")],
                         capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)
    assert bad.returncode == 2 and "exists already" in bad.stderr, bad.stderr


def test_cli_8bit_depth_is_a_one_line_error_naming_the_file(room, tmp_path):
    # A dataset whose depth PNGs are 8-bit (2 m would read as 0.2 m): exit 2, one line naming the file
    # and what it holds, no traceback, no bag.
    import shutil

    import cv2

    from sray_ros.data.label_sets import write_nyu40_label_table

    scene = tmp_path / "scene"
    shutil.copytree(room, scene)
    if not (scene / "scannetv2-labels.combined.tsv").exists():  # the mini set keeps it beside its scenes
        write_nyu40_label_table(scene / "scannetv2-labels.combined.tsv")  # synthetic labels are NYU40 ids
    depth_file = sorted((scene / "depth").glob("*.png"), key=lambda p: int(p.stem))[3]
    h, w = cv2.imread(str(depth_file), cv2.IMREAD_UNCHANGED).shape
    cv2.imwrite(str(depth_file), np.full((h, w), 200, np.uint8))
    bad = subprocess.run([sys.executable, "-m", "sray_ros.ros.scannet_to_bag", str(scene), str(tmp_path / "bag"),
                          "--no-progress"], capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 2 and len(lines) == 1, bad.stderr
    assert f"depth/{depth_file.name}" in lines[0] and f"found 1-channel uint8 {w}x{h}" in lines[0], lines[0]
    assert not (tmp_path / "bag").exists()
