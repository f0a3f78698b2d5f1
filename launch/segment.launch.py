"""Launch bqnet_ros' segment_node with config/segment_node.yaml from the package share.

    ros2 launch bqnet_ros segment.launch.py
    ros2 launch bqnet_ros segment.launch.py map_topic:=/rtabmap/cloud_map device:=cpu \
        checkpoint:=/path/to/bqnet.pth log_level:=debug
    ros2 launch bqnet_ros segment.launch.py params_file:=/path/to/my_params.yaml

map_topic, text_topic, device and checkpoint override the file's value only when given (empty =
keep the file's). log_level applies to the node's own logger only (not to rcl, rmw or DDS).
When the node exits (a fatal start: "cannot start: ...", or a crash), the whole launch shuts
down with it instead of idling.
"""

from __future__ import annotations

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from bqnet_ros.launch_args import NODE_NAME, OVERRIDES, default_params_file, log_level_arguments, parameter_overrides


def _node(context: LaunchContext) -> list[Node]:
    """Build the node once the arguments are known, adding only the overrides that were given."""
    given = {name: LaunchConfiguration(name).perform(context) for name in OVERRIDES}
    overrides = parameter_overrides(given)
    params_file = LaunchConfiguration("params_file").perform(context)
    namespace = LaunchConfiguration("namespace").perform(context)
    log_level = LaunchConfiguration("log_level").perform(context)
    return [
        Node(
            package="bqnet_ros",
            executable="segment_node",
            name=NODE_NAME,
            namespace=namespace,
            output="screen",
            emulate_tty=True,
            parameters=[params_file, overrides] if overrides else [params_file],
            arguments=log_level_arguments(log_level, namespace),
            on_exit=[Shutdown(reason="segment_node exited")],
        )
    ]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            DeclareLaunchArgument("params_file", default_value=default_params_file(),
                                  description="Parameter file of segment_node (default: the installed one)."),
            DeclareLaunchArgument("map_topic", default_value="",
                                  description="PointCloud2 map topic (empty: the file's, /map_cloud)."),
            DeclareLaunchArgument("text_topic", default_value="",
                                  description="std_msgs/String sentence topic (empty: the file's)."),
            DeclareLaunchArgument("device", default_value="", description="torch device, cuda or cpu (empty: the file's)."),
            DeclareLaunchArgument("checkpoint", default_value="", description="Model checkpoint .pth (empty: the file's)."),
            DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node."),
            DeclareLaunchArgument("log_level", default_value="info",
                                  description="Level of segment_node's own logger: debug shows per-stage latencies."),
            OpaqueFunction(function=_node),
        ]
    )
