"""What launch/segment.launch.py computes from its arguments, as plain functions.

The launch file only wires these into launch actions, so the rules (which overrides apply,
which logger a log level reaches, where the installed parameter file is) are testable without
the launch packages.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

__all__ = ["NODE_NAME", "LIFECYCLE_EXECUTABLE", "OVERRIDES", "default_params_file", "parameter_overrides",
           "node_logger_name", "log_level_arguments", "launch_flag"]

NODE_NAME = "segment_node"
LIFECYCLE_EXECUTABLE = "segment_lifecycle_node"  # the managed node (bqnet_ros.lifecycle_node)
# Launch arguments that override a parameter of the file when non-empty.
OVERRIDES = ("map_topic", "text_topic", "device", "checkpoint")
_LEVELS = ("debug", "info", "warn", "warning", "error", "fatal", "unset")


def default_params_file() -> str:
    """config/segment_node.yaml of the installed package (share/bqnet_ros/config); the
    checkout's copy when the package is not installed (running from the repository)."""
    try:
        from ament_index_python.packages import get_package_share_directory

        installed = Path(get_package_share_directory("bqnet_ros")) / "config" / "segment_node.yaml"
        if installed.is_file():
            return str(installed)
    except (ImportError, LookupError, ValueError, OSError):
        pass
    return str(Path(__file__).resolve().parents[1] / "config" / "segment_node.yaml")


def parameter_overrides(given: Mapping[str, str]) -> dict[str, str]:
    """The launch arguments that were given (non-blank), as parameter overrides."""
    return {name: given[name].strip() for name in OVERRIDES if given.get(name, "").strip()}


def node_logger_name(namespace: str = "", name: str = NODE_NAME) -> str:
    """rclpy's logger name of the node: namespace parts and name joined by dots."""
    parts = [p for p in namespace.strip("/").split("/") if p]
    return ".".join(parts + [name])


def log_level_arguments(level: str, namespace: str = "", name: str = NODE_NAME) -> list[str]:
    """``--ros-args --log-level <logger>:=<level>``: only the node's logger changes level (a bare
    ``--log-level debug`` turns on every logger in the process: rcl, rmw, DDS)."""
    lv = level.strip().lower()
    if lv not in _LEVELS:
        raise ValueError(f"log_level must be one of {', '.join(_LEVELS)}, got {level!r}")
    return ["--ros-args", "--log-level", f"{node_logger_name(namespace, name)}:={lv}"]



def launch_flag(name: str, value: str) -> bool:
    """A true/false launch argument (``lifecycle:=true``); ValueError naming it for anything else."""
    v = value.strip().lower()
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off", ""):
        return False
    raise ValueError(f"launch argument {name} must be true or false, got {value!r}")
