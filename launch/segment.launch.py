"""Launch bqnet_ros' segment_node with config/segment_node.yaml from the package share.

    ros2 launch bqnet_ros segment.launch.py
    ros2 launch bqnet_ros segment.launch.py map_topic:=/rtabmap/cloud_map device:=cpu \
        checkpoint:=/path/to/bqnet.pth
    ros2 launch bqnet_ros segment.launch.py params_file:=/path/to/my_params.yaml

map_topic, text_topic, device and checkpoint override the file's value only when given
(empty = keep the file's), so editing the parameter file keeps working.
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

# Launch arguments that override a parameter of the file when non-empty.
OVERRIDES = ("map_topic", "text_topic", "device", "checkpoint")


def _node(context: LaunchContext) -> list[Node]:
    """Build the node once the arguments are known, adding only the overrides that were given."""
    overrides = {}
    for name in OVERRIDES:
        value = LaunchConfiguration(name).perform(context).strip()
        if value:
            overrides[name] = value
    params_file = LaunchConfiguration("params_file").perform(context)
    log_level = LaunchConfiguration("log_level").perform(context)
    return [
        Node(
            package="bqnet_ros",
            executable="segment_node",
            name="segment_node",
            output="screen",
            emulate_tty=True,
            parameters=[params_file, overrides] if overrides else [params_file],
            arguments=["--ros-args", "--log-level", log_level],
        )
    ]


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory("bqnet_ros"), "config", "segment_node.yaml")
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "params_file", default_value=default_params, description="Parameter file of segment_node."
            ),
            DeclareLaunchArgument(
                "map_topic", default_value="", description="PointCloud2 map topic (empty: the file's, /map_cloud)."
            ),
            DeclareLaunchArgument(
                "text_topic", default_value="", description="std_msgs/String sentence topic (empty: the file's)."
            ),
            DeclareLaunchArgument(
                "device", default_value="", description="torch device, cuda or cpu (empty: the file's)."
            ),
            DeclareLaunchArgument(
                "checkpoint", default_value="", description="Model checkpoint .pth (empty: the file's)."
            ),
            DeclareLaunchArgument(
                "log_level", default_value="info", description="Logging level: debug shows per-stage latencies."
            ),
            OpaqueFunction(function=_node),
        ]
    )
