"""The class vocabulary: ScanNet-like class names, index = semantic label.

It lives in the product package, not in the synthetic-room generator, because the real-data
loaders (ScanNet, ScanRefer / Multi3DRefer / ReferIt3D), the data set and the evaluation map
labels through it on a robot that has no generator installed; ``bqnet_synth`` builds its rooms on
the same vocabulary so a model trained on synthetic rooms reads real scans unchanged.
"""

from __future__ import annotations

CLASSES: tuple[str, ...] = (
    "floor", "wall", "chair", "table", "desk", "bed", "sofa", "cabinet", "bookshelf",
    "toilet", "sink", "bathtub", "refrigerator", "monitor", "lamp", "trash can", "box",
    "plant", "door", "window", "picture", "curtain",
)
CLASS_ID: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}
