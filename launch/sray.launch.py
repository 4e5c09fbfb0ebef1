"""Launch the sray_ros node.

    ros2 launch sray_ros sray.launch.py [namespace:=robot1] [params_file:=/path/sray.yaml]
        [use_sim_time:=true] [checkpoint:=/path/model.pt] [device:=cuda] [sensor_data_qos:=false]
        [color_topic:=/camera/color/image_raw] [camera_info_topic:=/camera/color/camera_info]
        [depth_topic:=...] [depth_info_topic:=...] [labels_topic:=...]
"""

import os

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
}


def _node(context):
    value = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    overrides = {"use_sim_time": value("use_sim_time").lower() in ("true", "1")}
    # checkpoint / device override the params file only when given.
    for name in ("checkpoint", "device"):
        if value(name):
            overrides[name] = value(name)
    if value("sensor_data_qos"):
        overrides["sensor_data_qos"] = value("sensor_data_qos").lower() in ("true", "1")
    return [
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
    default_params = os.path.join(get_package_share_directory("sray_ros"), "config", "sray.yaml")
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
        DeclareLaunchArgument("sensor_data_qos", default_value="",
                              description="Best-effort image subscriptions (true, camera drivers) or reliable "
                                          "(false, bag replay); empty = the params file's"),
    ]
    arguments += [
        DeclareLaunchArgument(arg, default_value=default, description=f"Topic remapped to {topic}")
        for topic, (arg, default) in TOPIC_ARGUMENTS.items()
    ]
    return LaunchDescription(arguments + [OpaqueFunction(function=_node)])
