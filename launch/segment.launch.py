"""Launch bqnet_ros' segment_node with config/segment_node.yaml from the package share.

    ros2 launch bqnet_ros segment.launch.py
    ros2 launch bqnet_ros segment.launch.py map_topic:=/rtabmap/cloud_map device:=cpu \
        checkpoint:=/path/to/bqnet.pth log_level:=debug
    ros2 launch bqnet_ros segment.launch.py params_file:=/path/to/my_params.yaml
    ros2 launch bqnet_ros segment.launch.py lifecycle:=true                 # managed, unconfigured
    ros2 launch bqnet_ros segment.launch.py lifecycle:=true autostart:=true # configure + activate

map_topic, text_topic, device and checkpoint override the file's value only when given (empty =
keep the file's). log_level applies to the node's own logger only (not to rcl, rmw or DDS).
lifecycle:=true starts the managed node (segment_lifecycle_node) for a lifecycle manager;
autostart:=true has this launch configure it and, once inactive, activate it. When the node
exits (a fatal start: "cannot start: ...", or a crash), the whole launch shuts down with it
instead of idling.
"""

from __future__ import annotations

from launch import LaunchContext, LaunchDescription
from launch.action import Action
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler, Shutdown
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

from bqnet_ros.launch_args import (LIFECYCLE_EXECUTABLE, NODE_NAME, OVERRIDES, default_params_file, launch_flag,
                                   log_level_arguments, parameter_overrides)


def _node(context: LaunchContext) -> list[Action]:
    """Build the node once the arguments are known, adding only the overrides that were given."""
    given = {name: LaunchConfiguration(name).perform(context) for name in OVERRIDES}
    overrides = parameter_overrides(given)
    params_file = LaunchConfiguration("params_file").perform(context)
    namespace = LaunchConfiguration("namespace").perform(context)
    log_level = LaunchConfiguration("log_level").perform(context)
    managed = launch_flag("lifecycle", LaunchConfiguration("lifecycle").perform(context))
    autostart = launch_flag("autostart", LaunchConfiguration("autostart").perform(context))
    if autostart and not managed:
        raise ValueError("autostart:=true needs lifecycle:=true (the plain node answers from the start anyway)")
    parameters = [params_file, overrides] if overrides else [params_file]
    if not managed:
        return [
            Node(
                package="bqnet_ros",
                executable="segment_node",
                name=NODE_NAME,
                namespace=namespace,
                output="screen",
                emulate_tty=True,
                parameters=parameters,
                arguments=log_level_arguments(log_level, namespace),
                on_exit=[Shutdown(reason="segment_node exited")],
            )
        ]
    node = LifecycleNode(package="bqnet_ros", executable=LIFECYCLE_EXECUTABLE, name=NODE_NAME, namespace=namespace,
                         output="screen", emulate_tty=True, parameters=parameters,
                         arguments=log_level_arguments(log_level, namespace),
                         on_exit=[Shutdown(reason=f"{LIFECYCLE_EXECUTABLE} exited")])
    if not autostart:
        return [node]
    # Activate only once configure has brought it to inactive (a failed configure stays unconfigured).
    activate = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=node, start_state="configuring", goal_state="inactive",
        entities=[EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                              transition_id=Transition.TRANSITION_ACTIVATE))]))
    configure = EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                            transition_id=Transition.TRANSITION_CONFIGURE))
    return [activate, node, configure]


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
            DeclareLaunchArgument("lifecycle", default_value="false",
                                  description="true: the managed (lifecycle) node, started unconfigured."),
            DeclareLaunchArgument("autostart", default_value="false",
                                  description="With lifecycle:=true: configure and activate it at launch."),
            OpaqueFunction(function=_node),
        ]
    )
