"""rviz/sray.rviz: parses, shows what it says, and names topics and frames the node and the launch file use
with their defaults (the node's own publishers are also checked over DDS in test_node.py)."""

from __future__ import annotations

import re

import yaml

from conftest import BUILD_TREE, REPO
from launch_standins import Node, load_launch_file

SHARE = BUILD_TREE / "install" / "sray_ros" / "share" / "sray_ros"
CONFIG = REPO / "rviz" / "sray.rviz"
NODE_NAME = "sray_node"  # the launch file's node name
MSG_TYPE = {"rviz_default_plugins/Image": "Image", "rviz_default_plugins/PointCloud2": "PointCloud2"}


def _displays() -> list[dict]:
    config = yaml.safe_load(CONFIG.read_text())
    return config["Visualization Manager"]["Displays"]


def _node_publishers() -> dict[str, str]:
    """Topic (absolute, node name sray_node, no namespace) -> message type, read from the node's source and
    its render edge's (``RenderPublishers``, where ``pub`` is the node's ``create_publisher``)."""
    source = "".join((REPO / "sray_ros" / "ros" / name).read_text() for name in ("node.py", "render_edge.py"))
    found = {}
    for msg_type, topic in re.findall(r'(?:create_publisher|pub)\(\s*(\w+),\s*"([^"]+)"', source):
        found[topic.replace("~", f"/{NODE_NAME}", 1) if topic.startswith("~") else topic] = msg_type
    return found


def rviz_topics() -> dict[str, tuple[str, str]]:
    """Display name -> (class, topic) of every display with a topic."""
    return {d["Name"]: (d["Class"], d["Topic"]["Value"]) for d in _displays() if "Topic" in d}


def test_config_parses_and_shows_what_the_readme_promises():
    config = yaml.safe_load(CONFIG.read_text())
    assert config["Visualization Manager"]["Global Options"]["Fixed Frame"] == "map"
    classes = [d["Class"] for d in _displays()]
    assert {"rviz_default_plugins/TF", "rviz_default_plugins/Axes", "rviz_default_plugins/PointCloud2"} <= set(classes)
    assert classes.count("rviz_default_plugins/Image") == 4  # keyframe camera, labels, colour, depth
    assert all(c.startswith("rviz_default_plugins/") for c in classes), classes  # no extra plugin needed
    topics = {topic for _, topic in rviz_topics().values()}
    assert topics == {"/camera/color/image_raw", f"/{NODE_NAME}/semantic_color/image_raw",
                      f"/{NODE_NAME}/render/color/image_raw", f"/{NODE_NAME}/render/depth/image_raw",
                      f"/{NODE_NAME}/semantic/points"}


def test_frames_are_the_node_defaults():
    from sray_ros.ros.node import RENDER_FRAME_SUFFIX

    params = yaml.safe_load((REPO / "config" / "sray.yaml").read_text())["/**"]["ros__parameters"]
    config = yaml.safe_load(CONFIG.read_text())
    assert config["Visualization Manager"]["Global Options"]["Fixed Frame"] == params["world_frame"]
    axes = [d for d in _displays() if d["Class"] == "rviz_default_plugins/Axes"]
    assert [a["Reference Frame"] for a in axes] == [f"{NODE_NAME}/{RENDER_FRAME_SUFFIX}"]


def test_node_topics_exist_with_the_display_type():
    publishers = _node_publishers()
    for name, (cls, topic) in rviz_topics().items():
        if topic.startswith(f"/{NODE_NAME}/"):
            assert topic in publishers, f"{name}: the node publishes no {topic} ({sorted(publishers)})"
            assert publishers[topic] == MSG_TYPE[cls], (name, topic, publishers[topic])


def test_keyframe_camera_is_the_launch_files_colour_input():
    launch = (REPO / "launch" / "sray.launch.py").read_text()
    assert '"color/image": ("color_topic", "/camera/color/image_raw")' in launch
    camera = [t for c, t in rviz_topics().values() if t == "/camera/color/image_raw"]
    assert len(camera) == 1
    # a camera driver publishes best effort: a reliable subscription would receive nothing
    display = [d for d in _displays() if d.get("Topic", {}).get("Value") == camera[0]][0]
    assert display["Topic"]["Reliability Policy"] == "Best Effort"


def _rviz_node(started) -> Node:
    nodes = [a for a in started if isinstance(a, Node) and a.kwargs["package"] == "rviz2"]
    assert len(nodes) == 1, started
    return nodes[0]


def test_launch_rviz_true_starts_rviz_with_the_installed_config():
    description = load_launch_file(REPO / "launch" / "sray.launch.py", str(SHARE))
    assert not [a for a in description.resolve({}) if isinstance(a, Node) and a.kwargs["package"] == "rviz2"]
    rviz = _rviz_node(description.resolve({"rviz": "true"}))
    assert rviz.kwargs["executable"] == "rviz2"
    path = rviz.kwargs["arguments"][rviz.kwargs["arguments"].index("-d") + 1]
    assert path == str(SHARE / "rviz" / "sray.rviz")
    assert (SHARE / "rviz" / "sray.rviz").read_text() == CONFIG.read_text(), "rviz/ not installed (run setup.sh)"
    assert rviz.kwargs["parameters"] == [{"use_sim_time": False}]


def test_launch_rviz_follows_namespace_and_colour_topic():
    description = load_launch_file(REPO / "launch" / "sray.launch.py", str(SHARE))
    rviz = _rviz_node(description.resolve({"rviz": "true", "namespace": "robot1", "color_topic": "/cam/rgb",
                                           "use_sim_time": "true"}))
    path = rviz.kwargs["arguments"][rviz.kwargs["arguments"].index("-d") + 1]
    text = open(path, encoding="utf-8").read()
    config = yaml.safe_load(text)
    displays = config["Visualization Manager"]["Displays"]
    topics = {d["Topic"]["Value"] for d in displays if "Topic" in d}
    assert "/cam/rgb" in topics and "/camera/color/image_raw" not in topics
    assert "/robot1/sray_node/semantic/points" in topics
    assert not [t for t in topics if t.startswith("/sray_node/")]
    frames = [d["Reference Frame"] for d in displays if d["Class"] == "rviz_default_plugins/Axes"]
    assert frames == ["robot1/sray_node/render_optical_frame"]  # the node's fully qualified name + suffix
    assert rviz.kwargs["parameters"] == [{"use_sim_time": True}]


def test_replay_passes_rviz_through():
    description = load_launch_file(REPO / "launch" / "replay.launch.py", str(SHARE))
    rviz = _rviz_node(description.resolve({"bag": "/b", "rviz": "true"}))
    assert rviz.kwargs["parameters"] == [{"use_sim_time": True}]  # replay: /clock
    text = open(rviz.kwargs["arguments"][1], encoding="utf-8").read()
    assert "Value: /camera/color/image_raw\n" in text  # the converter's colour topic
