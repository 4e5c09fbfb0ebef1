"""The launch files start the right executable with the parameters file and remaps (checked against
stand-ins of launch / launch_ros, which have no wheels here)."""

from __future__ import annotations

import pathlib

import yaml

from conftest import BUILD_TREE, REPO
from launch_standins import Node, load_launch_file

SHARE = BUILD_TREE / "install" / "sray_ros" / "share" / "sray_ros"


def _only_node(started) -> Node:
    nodes = [a for a in started if isinstance(a, Node)]
    assert len(nodes) == 1, started
    return nodes[0]


def test_sray_launch_defaults():
    description = load_launch_file(REPO / "launch" / "sray.launch.py", str(SHARE))
    node = _only_node(description.resolve({}))
    assert node.kwargs["package"] == "sray_ros" and node.kwargs["executable"] == "sray-node"
    assert (SHARE / "launch" / "sray.launch.py").exists(), "launch file not installed"
    params_file, overrides = node.kwargs["parameters"]
    assert pathlib.Path(params_file) == SHARE / "config" / "sray.yaml"
    assert "/**" in yaml.safe_load(pathlib.Path(params_file).read_text())  # any namespace / node name
    assert overrides == {"use_sim_time": False}
    remaps = dict(node.kwargs["remappings"])
    assert remaps["color/image"] == "/camera/color/image_raw"
    assert remaps["color/camera_info"] == "/camera/color/camera_info"
    assert remaps["labels/confidence"] == "/camera/labels/confidence"
    assert "label_map" not in overrides  # the params file's (no map) unless given


def test_sray_launch_arguments_override():
    description = load_launch_file(REPO / "launch" / "sray.launch.py", str(SHARE))
    node = _only_node(description.resolve({
        "namespace": "robot1", "params_file": "/tmp/p.yaml", "use_sim_time": "true",
        "checkpoint": "/tmp/m.pt", "device": "cuda", "color_topic": "/cam/rgb",
        "label_map": "ade20k150_to_scannet20", "labels_confidence_topic": "/seg/confidence",
    }))
    assert node.kwargs["namespace"] == "robot1"
    params_file, overrides = node.kwargs["parameters"]
    assert params_file == "/tmp/p.yaml"
    assert overrides == {"use_sim_time": True, "checkpoint": "/tmp/m.pt", "device": "cuda",
                         "label_map": "ade20k150_to_scannet20"}
    assert dict(node.kwargs["remappings"])["color/image"] == "/cam/rgb"
    assert dict(node.kwargs["remappings"])["labels/confidence"] == "/seg/confidence"


def _replay(arguments: dict[str, str]):
    from launch_standins import ExecuteProcess, IncludeLaunchDescription

    description = load_launch_file(REPO / "launch" / "replay.launch.py", str(SHARE))
    assert (SHARE / "launch" / "replay.launch.py").exists(), "launch file not installed"
    started = description.resolve(arguments)
    plays = [a for a in started if isinstance(a, ExecuteProcess)]
    includes = [a for a in started if isinstance(a, IncludeLaunchDescription)]
    assert len(plays) == 1 and len(includes) == 1, started
    return plays[0].kwargs["cmd"], includes[0], _only_node(started)


def test_replay_launch_defaults():
    from sray_ros.ros.scannet_to_bag import topic_names

    cmd, include, node = _replay({"bag": "/data/scene_bag"})
    assert cmd[:4] == ["ros2", "bag", "play", "/data/scene_bag"]
    assert "--clock" in cmd and "--loop" not in cmd and "--delay" not in cmd
    assert float(cmd[cmd.index("--rate") + 1]) == 1.0
    # the node is sray.launch.py's (included from the installed share directory), on sim time
    assert pathlib.Path(include.source.path) == SHARE / "launch" / "sray.launch.py"
    assert node.kwargs["package"] == "sray_ros" and node.kwargs["executable"] == "sray-node"
    params_file, overrides = node.kwargs["parameters"]
    assert pathlib.Path(params_file) == SHARE / "config" / "sray.yaml"
    assert overrides == {"use_sim_time": True, "sensor_data_qos": False}  # replay: reliable subscriptions
    topics = topic_names()  # the converter's defaults
    assert dict(node.kwargs["remappings"]) == {
        "color/image": topics["color"], "color/camera_info": topics["camera_info"],
        "depth/image": topics["depth"], "depth/camera_info": topics["depth_info"], "labels/image": topics["labels"],
        "labels/camera_info": "/camera/labels/camera_info",  # sray.launch's default: the converter writes none
        "labels/confidence": "/camera/labels/confidence",  # likewise
    }


def test_replay_launch_arguments():
    cmd, _, node = _replay({"bag": "/b", "rate": "0.5", "loop": "true", "delay": "2", "topic_prefix": "robot/cam",
                            "checkpoint": "/tmp/m.pt", "namespace": "r1"})
    assert cmd[3] == "/b" and "--clock" in cmd and "--loop" in cmd
    assert float(cmd[cmd.index("--rate") + 1]) == 0.5 and float(cmd[cmd.index("--delay") + 1]) == 2.0
    assert node.kwargs["namespace"] == "r1"  # sray.launch.py's own arguments pass through
    assert node.kwargs["parameters"][1] == {"use_sim_time": True, "sensor_data_qos": False, "checkpoint": "/tmp/m.pt"}
    assert dict(node.kwargs["remappings"])["color/image"] == "/robot/cam/color/image_raw"


def test_replay_launch_requires_bag():
    import pytest

    description = load_launch_file(REPO / "launch" / "replay.launch.py", str(SHARE))
    with pytest.raises(KeyError, match="bag"):
        description.resolve({})
