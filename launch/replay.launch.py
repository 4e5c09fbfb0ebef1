"""Replay a bag written by the converter (sray_ros.ros.scannet_to_bag) into the sray_ros node.

    ros2 launch sray_ros replay.launch.py bag:=/path/scene0000_00_bag [rate:=1.0] [loop:=false]
        [delay:=0.0] [topic_prefix:=/camera] [any argument of sray.launch.py: checkpoint:=..., device:=...,
        params_file:=..., namespace:=..., label_map:=..., rviz:=true]

Starts ``ros2 bag play --clock BAG --rate RATE [--loop] [--delay D]`` and includes ``sray.launch.py`` (the
node exactly as it is launched live) with ``use_sim_time:=true`` and its input topics remapped to the
converter's topics under ``topic_prefix`` (``/camera`` = the converter's default, which is also
sray.launch.py's default). ``delay`` gives the node time to load its model before the first frame.

Machines without ``ros2 bag`` (pip-only ROS, no ``ros2 launch`` either) run
``python -m sray_ros.ros.bag_player BAG --clock`` and the node with the parameter ``use_sim_time:=true``.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription, OpaqueFunction
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

# sray.launch.py's topic arguments -> the converter's topic under the prefix.
CONVERTER_TOPICS = {
    "color_topic": "color/image_raw",
    "camera_info_topic": "color/camera_info",
    "depth_topic": "depth/image_raw",
    "depth_info_topic": "depth/camera_info",
    "labels_topic": "labels/image_raw",
}

TRUE = ("true", "1", "yes")


def _replay(context):
    value = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    bag = value("bag")
    if not bag:
        raise RuntimeError("replay.launch.py needs bag:=/path/to/bag (a rosbag2 directory)")
    rate = float(value("rate"))
    delay = float(value("delay"))
    if rate <= 0 or delay < 0:
        raise RuntimeError(f"replay.launch.py: rate must be > 0 and delay >= 0, got rate={rate}, delay={delay}")
    cmd = ["ros2", "bag", "play", bag, "--clock", "--rate", str(rate)]
    if value("loop").lower() in TRUE:
        cmd.append("--loop")
    if delay > 0:
        cmd += ["--delay", str(delay)]
    prefix = value("topic_prefix").strip("/")
    prefix = f"/{prefix}" if prefix else ""
    sray_launch = os.path.join(get_package_share_directory("sray_ros"), "launch", "sray.launch.py")
    # The bag's publishers are reliable; a reliable subscription loses no frame to a busy intake.
    node_arguments = {"use_sim_time": "true", "sensor_data_qos": "false"}
    node_arguments.update({arg: f"{prefix}/{topic}" for arg, topic in CONVERTER_TOPICS.items()})
    return [
        IncludeLaunchDescription(PythonLaunchDescriptionSource(sray_launch),
                                 launch_arguments=node_arguments.items()),
        ExecuteProcess(cmd=cmd, name="bag_play", output="screen"),
    ]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="rosbag2 directory to play (required)"),
        DeclareLaunchArgument("rate", default_value="1.0", description="Playback rate (ros2 bag play --rate)"),
        DeclareLaunchArgument("loop", default_value="false", description="Loop playback (ros2 bag play --loop)"),
        DeclareLaunchArgument("delay", default_value="0.0",
                              description="Seconds before playback starts (ros2 bag play --delay)"),
        DeclareLaunchArgument("topic_prefix", default_value="/camera",
                              description="Topic prefix the bag was written with (converter's --topic-prefix)"),
        OpaqueFunction(function=_replay),
    ])
