"""The launch files start the right executable with the parameters file and remaps (checked against
stand-ins of launch / launch_ros, which have no wheels here)."""

from __future__ import annotations

import pathlib

import yaml

from conftest import REPO
from launch_standins import Node, load_launch_file

SHARE = REPO / ".ros_ws" / "install" / "sray_ros" / "share" / "sray_ros"


def _only_node(started) -> Node:
    nodes = [a for a in started if isinstance(a, Node)]
    assert len(nodes) == 1, started
    return nodes[0]


def test_sray_launch_defaults():
    description = load_launch_file(REPO / "launch" / "sray.launch.py", str(SHARE))
    node = _only_node(description.resolve({}))
    assert node.kwargs["package"] == "sray_ros" and node.kwargs["executable"] == "sray_node"
    assert (SHARE / "launch" / "sray.launch.py").exists(), "launch file not installed"
    params_file, overrides = node.kwargs["parameters"]
    assert pathlib.Path(params_file) == SHARE / "config" / "sray.yaml"
    assert "sray_node" in yaml.safe_load(pathlib.Path(params_file).read_text())
    assert overrides == {"use_sim_time": False}
    remaps = dict(node.kwargs["remappings"])
    assert remaps["color/image"] == "/camera/color/image_raw"
    assert remaps["color/camera_info"] == "/camera/color/camera_info"


def test_sray_launch_arguments_override():
    description = load_launch_file(REPO / "launch" / "sray.launch.py", str(SHARE))
    node = _only_node(description.resolve({
        "namespace": "robot1", "params_file": "/tmp/p.yaml", "use_sim_time": "true",
        "checkpoint": "/tmp/m.pt", "device": "cuda", "color_topic": "/cam/rgb",
    }))
    assert node.kwargs["namespace"] == "robot1"
    params_file, overrides = node.kwargs["parameters"]
    assert params_file == "/tmp/p.yaml"
    assert overrides == {"use_sim_time": True, "checkpoint": "/tmp/m.pt", "device": "cuda"}
    assert dict(node.kwargs["remappings"])["color/image"] == "/cam/rgb"
