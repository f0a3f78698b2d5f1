"""Answer -> the messages segment_node publishes for it.

Every answer, found or not, produces a result, a target cloud (empty when nothing was found) and
a marker array (DELETEALL first, so RViz clears the previous answer); a centroid only when
something was found. Point indices come from the library as they are: rows of the map message.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from geometry_msgs.msg import Point, PointStamped
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header, String
from visualization_msgs.msg import MarkerArray

from bqnet_ros.conversions import numpy_to_pointcloud2
from bqnet_ros.markers import MarkerStyle, result_markers
from bqnet_ros.worker import Answer

__all__ = ["answer_header", "result_message", "result_json", "target_cloud", "target_centroid", "answer_markers"]


def _point(v: Any) -> Point:
    a = np.asarray(v, np.float64).reshape(3)
    return Point(x=float(a[0]), y=float(a[1]), z=float(a[2]))


def answer_header(answer: Answer, fallback_frame: str) -> Header:
    """The header of the map the answer used; without one, an empty stamp in ``fallback_frame``
    (the last map's frame, so RViz clears the right display)."""
    if answer.map is not None:
        h = answer.map.header
        return Header(frame_id=h.frame_id, stamp=h.stamp)
    return Header(frame_id=fallback_frame)


def result_message(iface: Any, answer: Answer, header: Header, total_ms: float) -> Any:
    """bqnet_ros_interfaces/ReferringSegmentation of one answer."""
    req = answer.request
    msg = iface.ReferringSegmentation()
    msg.header = header
    msg.text = req.text
    msg.task = answer.task
    msg.request_id = req.request_id
    msg.found = answer.found
    msg.score = float(answer.score)
    msg.reason = answer.reason
    msg.warnings = list(answer.warnings)
    for o in answer.objects:
        ro = iface.ReferredObject()
        ro.score = float(o.score)
        ro.centroid, ro.box_min, ro.box_max = _point(o.centroid), _point(o.box_min), _point(o.box_max)
        idx = np.asarray(o.point_indices, np.int64)
        ro.num_points = int(idx.size)
        ro.point_indices = idx.astype(np.uint32)
        msg.objects.append(ro)
    msg.point_indices = np.asarray(answer.point_indices, np.int64).astype(np.uint32)
    msg.map_num_points = int(answer.map.num_points) if answer.map is not None else 0
    msg.map_version = int(answer.map.version) if answer.map is not None else 0
    msg.text_stamp = req.stamp
    lat = answer.latencies_ms
    msg.prepare_ms = float(lat.get("prepare_ms", 0.0))
    msg.queue_ms = float(lat.get("queue_ms", 0.0))
    msg.text_ms = float(lat.get("text_ms", 0.0))
    msg.decoder_ms = float(lat.get("decoder_ms", 0.0))
    msg.post_ms = float(lat.get("post_ms", 0.0))
    msg.total_ms = float(total_ms)
    return msg


def result_json(answer: Answer, header: Header, total_ms: float) -> String:
    """The same answer as JSON, for a node running without the generated messages: the library's
    form (``bqnet_model.pipeline.results.answer_to_dict``, with ``reason`` and the latencies as
    ``timings_ms``) plus what the message adds: header, request id, best score, warnings, the
    union of the points, the map's size and version, and ``total_ms``."""
    # Imported here: bqnet_model.pipeline pulls in torch, which the node loads with the model, not
    # at import (a parameter error is reported before any of it).
    from bqnet_model.pipeline.results import answer_to_dict

    req = answer.request
    timings = {k.removesuffix("_ms"): v for k, v in answer.latencies_ms.items()}
    data = answer_to_dict(req.text, answer.task, answer.found, answer.objects, answer.point_indices,
                          {**timings, "total": total_ms}, reason=answer.reason)
    data.update(
        frame_id=header.frame_id, stamp=[header.stamp.sec, header.stamp.nanosec], request_id=req.request_id,
        score=float(answer.score), warnings=list(answer.warnings),
        point_indices=np.asarray(answer.point_indices, np.int64).tolist(),
        map_num_points=int(answer.map.num_points) if answer.map else 0,
        map_version=int(answer.map.version) if answer.map else 0,
        total_ms=float(total_ms),
    )
    return String(data=json.dumps(data))


def target_cloud(answer: Answer, header: Header) -> PointCloud2:
    """The answer's points (x, y, z, rgb when the map had colour, ``instance`` = index of the best
    object holding the point); an empty cloud when nothing was found."""
    idx = np.asarray(answer.point_indices, np.int64)
    m = answer.map
    inst = np.full(idx.size, 0, np.int32)
    for k in range(len(answer.objects) - 1, -1, -1):  # the best object last: it wins shared points
        rows = np.searchsorted(idx, np.asarray(answer.objects[k].point_indices, np.int64))
        inst[rows] = k
    if m is None or idx.size == 0:
        xyz, rgb = np.zeros((0, 3), np.float32), None
    else:
        xyz, rgb = m.xyz[idx], (m.rgb[idx] if m.rgb is not None else None)
    return numpy_to_pointcloud2(xyz, rgb, frame_id=header.frame_id, stamp=header.stamp,
                                extra_fields={"instance": inst})


def target_centroid(answer: Answer, header: Header) -> PointStamped | None:
    if not answer.found or not answer.objects:
        return None
    return PointStamped(header=header, point=_point(answer.objects[0].centroid))


def answer_markers(answer: Answer, header: Header, lifetime_s: float) -> MarkerArray:
    """DELETEALL, then a box, a sphere and a label per object (only the DELETEALL when not found)."""
    style = MarkerStyle(lifetime_s=lifetime_s)
    return result_markers(answer.objects, frame_id=header.frame_id, stamp=header.stamp,
                          text=answer.request.text, style=style)
