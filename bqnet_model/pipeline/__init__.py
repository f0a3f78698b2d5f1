"""``Segmenter``: a point-cloud map in, the object a sentence names out.

``prepare`` runs once per map version and returns a ``SceneCache``; ``query`` answers sentences over
it. The CLI, the ROS node and evaluation all go through here. Files:

* ``segmenter.py``: ``Segmenter`` (prepare / query, devices, CUDA graphs, turned views);
* ``results.py``: ``Result``, ``TargetObject``, ``SceneCache``;
* ``incremental.py`` / ``change_region.py``: ``Segmenter.update``, a grown map re-encoded where it
  changed;
* ``superpoint_table.py``: the superpoints of a map and the superpoint -> point tables;
* ``summary.py``: the decoder's answer packed for one device -> host copy;
* ``selection.py``: the one rule from queries to answers (one map = the one-view case);
* ``views.py``: the turned copies of test-time augmentation;
* ``device.py``: device names -> devices.
"""

from .device import resolve_device
from .incremental import IncrementalCache, IncrementalParams
from .results import Result, SceneCache, TargetObject
from .segmenter import Segmenter
from .selection import Candidate, answer, group_queries
from .views import rotation_z, turn_about_z

__all__ = ["Segmenter", "SceneCache", "Result", "TargetObject", "Candidate", "group_queries", "answer",
           "resolve_device", "rotation_z", "turn_about_z", "IncrementalCache", "IncrementalParams"]
