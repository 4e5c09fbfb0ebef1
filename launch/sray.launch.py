"""Launch the sray_ros node.

    ros2 launch sray_ros sray.launch.py [namespace:=robot1] [params_file:=/path/sray.yaml]
        [use_sim_time:=true] [checkpoint:=/path/model.pt] [device:=cuda] [sensor_data_qos:=false]
        [label_map:=ade20k150_to_scannet20]
        [color_topic:=/camera/color/image_raw] [camera_info_topic:=/camera/color/camera_info]
        [depth_topic:=...] [depth_info_topic:=...] [labels_topic:=...] [labels_info_topic:=...]
        [labels_confidence_topic:=...]

``label_map`` converts the label image's ids (a 2D segmenter's, e.g. ADE20K-150) into the node's label set: a
shipped map's name (``config/label_maps``) or a YAML path; empty = the params file's.
        [rviz:=true] [rviz_config:=/path/x.rviz]

``rviz:=true`` also starts RViz 2 with ``rviz/sray.rviz`` (the keyframe camera, the rendered labels, colour
and depth, the labelled point cloud, the render's optical frame and TF); its topics and frames, written for
the node's defaults, are rewritten for ``namespace`` and ``color_topic``.
"""

import os
import tempfile

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

# Input topics of the node (relative names) -> (launch argument remapping it, its default).
TOPIC_ARGUMENTS = {
    "color/image": ("color_topic", "/camera/color/image_raw"),
    "color/camera_info": ("camera_info_topic", "/camera/color/camera_info"),
    "depth/image": ("depth_topic", "/camera/depth/image_raw"),
    "depth/camera_info": ("depth_info_topic", "/camera/depth/camera_info"),
    "labels/image": ("labels_topic", "/camera/labels/image_raw"),
    "labels/camera_info": ("labels_info_topic", "/camera/labels/camera_info"),
    "labels/confidence": ("labels_confidence_topic", "/camera/labels/confidence"),
}


TRUE = ("true", "1", "yes")
# What rviz/sray.rviz names for the node's defaults (no namespace, node name sray_node).
RVIZ_NODE_PREFIX = "/sray_node/"
RVIZ_RENDER_FRAME = "sray_node/render_optical_frame"
RVIZ_COLOR_TOPIC = "/camera/color/image_raw"


def rviz_config_text(text: str, namespace: str, color_topic: str) -> str:
    """rviz/sray.rviz's text with the node's topics and render frame under ``namespace`` and the keyframe
    camera on ``color_topic`` (the node's colour input)."""
    ns = namespace.strip("/")
    if ns:
        text = text.replace(RVIZ_NODE_PREFIX, f"/{ns}{RVIZ_NODE_PREFIX}")
        text = text.replace(f"Reference Frame: {RVIZ_RENDER_FRAME}", f"Reference Frame: {ns}/{RVIZ_RENDER_FRAME}")
    return text.replace(f"Value: {RVIZ_COLOR_TOPIC}\n", f"Value: {color_topic}\n")


def _rviz(context, value):
    path = value("rviz_config")
    text = open(path, encoding="utf-8").read()
    adapted = rviz_config_text(text, value("namespace"), value("color_topic"))
    if adapted != text:
        handle, path = tempfile.mkstemp(prefix="sray_", suffix=".rviz")
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write(adapted)
    return Node(package="rviz2", executable="rviz2", name="rviz2", namespace=value("namespace"), output="screen",
                arguments=["-d", path],
                parameters=[{"use_sim_time": value("use_sim_time").lower() in TRUE}])


def _node(context):
    value = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    overrides = {"use_sim_time": value("use_sim_time").lower() in TRUE}
    # checkpoint / device / label_map override the params file only when given.
    for name in ("checkpoint", "device", "label_map"):
        if value(name):
            overrides[name] = value(name)
    if value("sensor_data_qos"):
        overrides["sensor_data_qos"] = value("sensor_data_qos").lower() in TRUE
    rviz = [_rviz(context, value)] if value("rviz").lower() in TRUE else []
    return rviz + [
        Node(
            package="sray_ros",
            executable="sray-node",
            name="sray_node",
            namespace=value("namespace"),
            output="screen",
            emulate_tty=True,
            parameters=[value("params_file"), overrides],
            remappings=[(topic, value(arg)) for topic, (arg, _) in TOPIC_ARGUMENTS.items()],
        )
    ]


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("sray_ros")
    default_params = os.path.join(share, "config", "sray.yaml")
    arguments = [
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node"),
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="ROS parameters file (every parameter of the node)"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="Use /clock (true when replaying a bag with --clock)"),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="Model checkpoint; empty = the params file's (shipped default)"),
        DeclareLaunchArgument("device", default_value="",
                              description="Torch device (cpu, cuda, cuda:1); empty = the params file's"),
        DeclareLaunchArgument("label_map", default_value="",
                              description="Label map of labels_topic's ids into the node's label set: a shipped "
                                          "map's name (ade20k150_to_scannet20, coco_panoptic133_to_scannet20, "
                                          "nyu40_to_scannet20) or a YAML path; empty = the params file's"),
        DeclareLaunchArgument("sensor_data_qos", default_value="",
                              description="Best-effort image subscriptions (true, camera drivers) or reliable "
                                          "(false, bag replay); empty = the params file's"),
        DeclareLaunchArgument("rviz", default_value="false",
                              description="Also start RViz 2 with the node's outputs (rviz_config)"),
        DeclareLaunchArgument("rviz_config", default_value=os.path.join(share, "rviz", "sray.rviz"),
                              description="RViz 2 config; its topics and frames are rewritten for namespace "
                                          "and color_topic"),
    ]
    arguments += [
        DeclareLaunchArgument(arg, default_value=default, description=f"Topic remapped to {topic}")
        for topic, (arg, default) in TOPIC_ARGUMENTS.items()
    ]
    return LaunchDescription(arguments + [OpaqueFunction(function=_node)])
