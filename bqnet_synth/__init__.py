"""Synthetic indoor rooms with referring expressions: the development data generator.

Procedural rooms (``generate_room``, ``demo_room``, ``minimal_room``), furnished with parametric
ScanNet-like furniture, sampled like a fused RGB-D scan, labelled per point, and described by
referring expressions whose every claim is checked geometrically (``generate_expressions``);
``generate_dataset`` / ``python -m bqnet_synth`` (``bqnet-synth``) write them as ScanRefer and
Multi3DRefer data sets. Everything is deterministic for a given seed.

Packaging: this is a development package, not part of the robot install. ``setup.py`` lists only
``bqnet_model`` and ``bqnet_ros``, so ``colcon build`` never installs it; it runs from the
checkout, where the repository root is on ``sys.path`` (``pytest`` and ``python -m`` from the root;
``pip install -e .`` points the editable install at the checkout, so ``make demo`` and the
``bqnet-synth`` console script find it too; so does ``colcon build --symlink-install``). It has no
dependencies beyond the product's. Dependencies point one way:
``bqnet_synth`` imports ``bqnet_model`` (the class vocabulary, the superpoints), and
``bqnet_model`` imports ``bqnet_synth`` only inside the functions that need a synthetic room
(``tools/check_imports.py`` checks that no import-time cycle exists).

Modules: ``scene`` (data types), ``minimal`` (the fixed test room), ``parts`` / ``furniture`` /
``fixtures`` (parametric objects), ``layout`` / ``furnish`` (floor plans and placement per room
type), ``render`` (scan-like sampling), ``rooms`` (the generators), ``relations`` / ``grammar`` /
``expressions`` (referring expressions), ``dataset`` (files on disk and the command line).
"""

from bqnet_model.data.classes import CLASS_ID, CLASSES
from bqnet_synth.dataset import DatasetSummary, generate_dataset, main, room_with_expressions, save_scene
from bqnet_synth.expressions import (
    Expression, ExpressionConfig, demo_expressions, generate_expressions,
)
from bqnet_synth.grammar import NOUNS, class_nouns, pluralize
from bqnet_synth.minimal import minimal_room, sample_box_surface
from bqnet_synth.relations import EVAL_TYPES, FALSE, RELATIONS, TRUE, UNSURE, Descriptor, SceneGeometry, evaluate
from bqnet_synth.rooms import demo_room, generate_room
from bqnet_synth.scene import ROOM_TYPES, Room, RoomConfig, SceneObject, SyntheticScene, Wall

__all__ = [
    "CLASSES", "CLASS_ID", "ROOM_TYPES", "Room", "RoomConfig", "SceneObject", "SyntheticScene", "Wall",
    "minimal_room", "sample_box_surface", "generate_room", "demo_room", "room_with_expressions",
    "generate_dataset", "save_scene", "DatasetSummary", "main",
    "TRUE", "FALSE", "UNSURE", "RELATIONS", "EVAL_TYPES", "NOUNS", "Descriptor", "Expression",
    "ExpressionConfig", "SceneGeometry", "evaluate", "generate_expressions", "demo_expressions",
    "class_nouns", "pluralize",
]
