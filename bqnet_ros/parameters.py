"""segment_node's parameters: the one table of names, defaults, descriptions and ranges.

``PARAMS`` is declared on the node as is (descriptors with ranges and read-only flags, so
``ros2 param describe`` tells the same story), documented from the same table
(``tools/gen_ros_params_doc.py`` writes docs/ros_interface.md's parameter table) and checked
against ``config/segment_node.yaml`` by the tests. ``NodeParams`` holds the validated values; a
value that rclpy's descriptors cannot check (a choice among strings, two topics that must
differ) is checked there, once, for start-up and for run-time changes alike.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node

__all__ = ["StartupError", "ParamSpec", "PARAMS", "SPEC", "NodeParams", "declare_parameters", "DEFAULT_CHECKPOINT",
           "DEFAULT_MODEL_CONFIG", "DEVICE_IN_USE", "ros_arguments", "check_ros_arguments"]

DEFAULT_CHECKPOINT = "models/bqnet_tiny.pth"
DEFAULT_MODEL_CONFIG = "config/tiny.yaml"
DEVICE_IN_USE = "device_in_use"  # read-only parameter the node declares once the model is loaded
_INT_MAX = 2**31 - 1


class StartupError(RuntimeError):
    """The node cannot start (bad parameter, missing or unloadable checkpoint); main() logs
    ``cannot start: <this message>`` and exits with code 1."""


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter: default, description, whether it may change at run time."""

    name: str
    default: Any
    description: str
    dynamic: bool = False
    int_range: tuple[int, int] | None = None
    float_range: tuple[float, float] | None = None
    choices: tuple[str, ...] = ()

    @property
    def type_name(self) -> str:
        return {bool: "bool", int: "integer", float: "double", str: "string"}[type(self.default)]

    def descriptor(self) -> ParameterDescriptor:
        desc = ParameterDescriptor(description=self.description, read_only=not self.dynamic)
        if self.choices:
            desc.additional_constraints = "one of: " + ", ".join(self.choices)
        if self.int_range is not None:
            desc.integer_range = [IntegerRange(from_value=self.int_range[0], to_value=self.int_range[1], step=0)]
        if self.float_range is not None:
            desc.floating_point_range = [
                FloatingPointRange(from_value=self.float_range[0], to_value=self.float_range[1], step=0.0)
            ]
        return desc

    def expected(self) -> str:
        """What a valid value looks like, for error messages."""
        if self.choices:
            return f"one of {', '.join(repr(c) for c in self.choices)}"
        if self.int_range is not None:
            return f"an integer in [{self.int_range[0]}, {self.int_range[1]}]"
        if self.float_range is not None:
            return f"a number in [{self.float_range[0]:g}, {self.float_range[1]:g}]"
        return f"a {self.type_name}"


PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("map_topic", "/map_cloud", "PointCloud2 map to segment (x, y, z required; rgb optional; "
              "an optional float32 field 'image_features' of count C carries per-point 2D features)."),
    ParamSpec("text_topic", "/referring_text", "std_msgs/String: one referring sentence per message (answers carry "
              "request_id 'topic:<n>'; the ~/segment service takes the caller's own ids)."),
    ParamSpec("device", "cuda", "torch device asked for; 'cuda' falls back to 'cpu' with a warning when no GPU is "
              f"present. The device really used is the read-only parameter {DEVICE_IN_USE} and in /diagnostics."),
    ParamSpec("checkpoint", "", "Model checkpoint (.pth). Empty: models/bqnet_tiny.pth when present, "
              "else a random-init model from model_config if allow_untrained, else a fatal error."),
    ParamSpec("model_config", DEFAULT_MODEL_CONFIG, "Model config YAML for the untrained (random-init) model."),
    ParamSpec("official_config", "config/res.yaml", "Network config for an official CFNet/BQNet checkpoint, which "
              "carries none (the authors': config/res.yaml for 3D-RES, config/gres.yaml for 3D-GRES); "
              "ignored for our own checkpoints."),
    ParamSpec("tokenizer", "", "Folder with the text encoder's tokenizer files for official checkpoints "
              "(roberta-base: vocab.json + merges.txt); empty: the encoder's own."),
    ParamSpec("allow_untrained", False, "Allow a randomly initialised model when no checkpoint is found "
              "(answers are meaningless; for tests and plumbing only)."),
    ParamSpec("seed", 0, "Seed of the random init (untrained model).",
              int_range=(0, _INT_MAX)),
    ParamSpec("task", "res", "'res': the one best object; 'gres': zero, one or several objects.", dynamic=True,
              choices=("res", "gres")),
    ParamSpec("score_threshold", 0.0, "Objects scoring below this are dropped; none left means found=false (the "
              "result's score field still holds the best score). Scores are not calibrated.",
              dynamic=True, float_range=(0.0, 1.0)),
    ParamSpec("voxel_size", 0.0, "Voxel edge in metres; 0 = the one the model was trained with (its "
              "checkpoint's config). Another value overrides it, with a warning.", float_range=(0.0, 1.0)),
    ParamSpec("tta_rotations", 0, "Test-time augmentation: answer from this many copies of the map turned "
              "about the vertical axis (prepare and query cost about that many times more); 0 = the model's "
              "own setting, 1 = off.", int_range=(0, 64)),
    ParamSpec("max_points", 1_000_000, "Maps with more finite points are thinned to at most this many by the "
              "library (with a warning, also in each answer's warnings); 0 = no limit.", int_range=(0, _INT_MAX)),
    ParamSpec("incremental_maps", False, "A new map that shares most points with the current one is prepared by "
              "re-segmenting and re-encoding only the changed region (Segmenter.update; a full prepare, with "
              "the reason logged, when too much changed). Off by default: with online superpoints its "
              "answers can differ from a full prepare's."),
    ParamSpec("text_queue_size", 32, "Sentences waiting for the worker; beyond this the oldest is dropped "
              "(counted, logged, answered with found=false).", int_range=(1, 100_000)),
    ParamSpec("max_batch", 8, "Queued sentences answered together in one query.", int_range=(1, 1024)),
    ParamSpec("map_wait_timeout", 10.0, "Seconds a sentence waits for a usable map (none yet, only rejected maps, "
              "a failed prepare) before it is answered found=false with reason 'no usable map: ...'; "
              "0 = answer at once.", dynamic=True, float_range=(0.0, 3600.0)),
    ParamSpec("qos_depth", 10, "History depth of the publishers (the text subscription keeps all: "
              "overflow is handled by text_queue_size).", int_range=(1, 10_000)),
    ParamSpec("map_qos_durability", "transient_local", "Map subscription durability: 'transient_local' "
              "(receives a latched map; needs a transient_local publisher) or 'volatile' (matches any "
              "publisher, receives only maps published after it connected).",
              choices=("transient_local", "volatile")),
    ParamSpec("map_qos_reliability", "reliable", "Map subscription reliability: 'reliable' (needs a reliable "
              "publisher) or 'best_effort' (matches any publisher).", choices=("reliable", "best_effort")),
    ParamSpec("publish_markers", True, "Publish RViz markers on ~/markers.", dynamic=True),
    ParamSpec("marker_lifetime", 0.0, "Marker lifetime in seconds (0: until the next result).",
              dynamic=True, float_range=(0.0, 3600.0)),
    ParamSpec("diagnostics_period", 1.0, "Seconds between diagnostic_msgs/DiagnosticArray messages on "
              "/diagnostics (readiness, map, queue, drops, latencies, device); 0 = none.",
              float_range=(0.0, 3600.0)),
)
SPEC: dict[str, ParamSpec] = {p.name: p for p in PARAMS}


@dataclass(frozen=True)
class NodeParams:
    """The node's parameters, validated; see PARAMS for their meaning and defaults."""

    map_topic: str
    text_topic: str
    device: str
    checkpoint: str
    model_config: str
    official_config: str
    tokenizer: str
    allow_untrained: bool
    seed: int
    task: str
    score_threshold: float
    voxel_size: float
    tta_rotations: int
    max_points: int
    incremental_maps: bool
    text_queue_size: int
    max_batch: int
    map_wait_timeout: float
    qos_depth: int
    map_qos_durability: str
    map_qos_reliability: str
    publish_markers: bool
    marker_lifetime: float
    diagnostics_period: float

    @classmethod
    def defaults(cls, **changes: Any) -> "NodeParams":
        return cls(**{**{p.name: p.default for p in PARAMS}, **changes})

    def replace(self, **changes: Any) -> "NodeParams":
        return dataclasses.replace(self, **changes)

    def __post_init__(self) -> None:
        for spec in PARAMS:
            _check(spec, getattr(self, spec.name))
        for name in ("map_topic", "text_topic"):
            if not getattr(self, name).strip():
                raise ValueError(f"parameter {name} must not be empty")
        if self.map_topic == self.text_topic:
            raise ValueError(f"map_topic and text_topic are the same topic {self.map_topic!r}")


def _check(spec: ParamSpec, value: Any) -> None:
    """ValueError naming the parameter and what it accepts, for a value of the wrong type,
    outside its range or not among its choices."""
    want = type(spec.default)
    ok_type = isinstance(value, want) and not (want is int and isinstance(value, bool))
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        ok_type, value = True, float(value)
    if not ok_type:
        raise ValueError(f"parameter {spec.name} must be {spec.expected()}, got {type(value).__name__} {value!r}")
    bad = (
        (spec.choices and value not in spec.choices)
        or (spec.int_range is not None and not spec.int_range[0] <= value <= spec.int_range[1])
        or (spec.float_range is not None
            and not (math.isfinite(value) and spec.float_range[0] <= value <= spec.float_range[1]))
    )
    if bad:
        raise ValueError(f"parameter {spec.name} must be {spec.expected()}, got {value!r}")


def declare_parameters(node: Node) -> NodeParams:
    """Declare every parameter of PARAMS on ``node`` and return the validated values.

    A value rclpy refuses (``max_points:=lots``: wrong type; ``max_points:=-5``: out of range)
    or one NodeParams refuses becomes a StartupError that names the parameter, what it
    accepts and what it got, instead of rclpy's traceback.
    """
    values: dict[str, Any] = {}
    for spec in PARAMS:
        try:
            values[spec.name] = node.declare_parameter(spec.name, spec.default, spec.descriptor()).value
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
            given = _override(node, spec.name)
            raise StartupError(
                f"parameter {spec.name} must be {spec.expected()}, got {given} "
                "(fix it in the params file or the -p / launch override)"
            ) from exc
    try:
        return NodeParams(**values)
    except ValueError as exc:
        raise StartupError(str(exc)) from exc


def _override(node: Node, name: str) -> str:
    """The refused override as the user wrote it: 'lots' (string)."""
    overrides = getattr(node, "_parameter_overrides", {})  # rclpy keeps them on the node
    prm = overrides.get(name)
    if prm is None:
        return "an invalid value"
    return f"{prm.value!r} ({prm.type_.name.lower()})"


def ros_arguments(argv: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(``--params-file`` paths, ``-p name:=value`` pairs) of a command line's ROS arguments."""
    files, overrides, ros = [], [], False
    it = iter(argv)
    for a in it:
        if a == "--ros-args":
            ros = True
        elif a == "--":
            ros = False
        elif ros and a == "--params-file":
            files.append(next(it, ""))
        elif ros and a in ("-p", "--param"):
            name, sep, value = next(it, "").partition(":=")
            if sep:
                overrides.append((name, value))
    return [f for f in files if f], overrides


def _applies(key: str, fqn: str) -> bool:
    """Whether a params-file node key ('/**', 'segment_node', '/ns/segment_node', '/**/segment_node')
    names the node ``fqn`` ('/ns/segment_node')."""
    k = key.strip()
    if k in ("/**", "**"):
        return True
    name = fqn.rsplit("/", 1)[-1]
    return k.lstrip("/") == fqn.lstrip("/") or k == name or (k.startswith("/**/") and k[4:] == name)


def _check_given(name: str, value: Any, where: str) -> None:
    spec = SPEC.get(name)
    if spec is None:
        return
    try:
        _check(spec, value)
    except ValueError as exc:
        raise StartupError(f"{exc} ({where})") from exc


def check_ros_arguments(argv: Sequence[str], fqn: str) -> None:
    """StartupError for a parameter value of the wrong type on the command line.

    rcl merges parameter files and ``-p`` overrides before rclpy sees them, and where a later
    value has another type than an earlier one (the shipped file's ``max_points: 1000000``, then
    ``-p max_points:=lots`` or a second file) it keeps the earlier one without a word. Reading
    the arguments here turns that into the node's own ``cannot start`` message. Values rclpy
    sees itself are checked by ``declare_parameters``.
    """
    files, overrides = ros_arguments(argv)
    for path in files:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise StartupError(f"cannot read parameter file {path}: {exc}") from exc
        for key, section in (data.items() if isinstance(data, dict) else ()):
            if not (isinstance(section, dict) and _applies(str(key), fqn)):
                continue
            values = section.get("ros__parameters") or {}
            for name, value in (values.items() if isinstance(values, dict) else ()):
                _check_given(name, value, f"in {path}, under {key!r}")
    for name, raw in overrides:
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        _check_given(name, value, f"-p {name}:={raw}")
