"""segment_node's state as one diagnostic_msgs/DiagnosticStatus on /diagnostics.

Level: OK when a map is in use; WARN while waiting for the first map, or when a newer map was
dropped (the older one still answers); ERROR when maps arrived but none could be used. The
message says which, in words; the values carry the numbers (all strings, as the message type
wants them). A lifecycle node adds its state (``lifecycle_state``): WARN while not active (no
answers: unconfigured, or inactive and refusing sentences), ERROR when its last configure failed.
"""

from __future__ import annotations

import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from bqnet_ros.worker import Worker

__all__ = ["node_status", "diagnostic_array"]


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)


def node_status(name: str, worker: Worker | None, *, device: str, device_requested: str, model: str,
                lifecycle_state: str = "", lifecycle_problem: str = "") -> DiagnosticStatus:
    """One status of the node. ``worker`` None: a lifecycle node with no model (unconfigured);
    ``lifecycle_state`` empty: the plain node."""
    title = f"{name}: referring segmentation"
    lifecycle = {"lifecycle_state": lifecycle_state} if lifecycle_state else {}
    if worker is None:
        values = dict(ready=False, **lifecycle, device=device, device_requested=device_requested, model=model)
        level, message = DiagnosticStatus.WARN, f"{lifecycle_state or 'not configured'}: no model loaded"
        if lifecycle_problem:
            level, message = DiagnosticStatus.ERROR, f"{message}; {lifecycle_problem}"
        return DiagnosticStatus(level=level, name=title, message=message, hardware_id=device,
                                values=[KeyValue(key=k, value=_fmt(v)) for k, v in values.items()])
    with worker.lock:
        st = worker.stats
        p = worker.prepared
        queued = worker.queue_length()
        values = dict(
            ready=p is not None and lifecycle_state in ("", "active"), **lifecycle, device=device,
            device_requested=device_requested, model=model,
            map_version=p.version if p else 0, map_points=p.num_points if p else 0,
            map_frame=p.header.frame_id if p else "", map_age_s=(time.monotonic() - p.t_ready) if p else 0.0,
            queue_length=queued, sentences_received=st.sentences_received, sentences_answered=st.sentences_answered,
            sentences_dropped=st.sentences_dropped, sentences_timed_out=st.sentences_timed_out,
            sentences_refused=st.sentences_refused,
            maps_received=st.maps_received, maps_replaced=st.maps_replaced, maps_rejected=st.maps_rejected,
            maps_failed=st.maps_failed, maps_thinned=st.maps_thinned, last_prepare_ms=st.last_prepare_ms,
            last_query_ms=st.last_query_ms, last_total_ms=st.last_total_ms,
        )
        dropped = st.maps_rejected + st.maps_failed
        why = worker.usable_map_why
        last_dropped = worker.last_drop
    if p is not None:
        level, message = DiagnosticStatus.OK, f"ready: map v{p.version}, {queued} sentence(s) queued, on {device}"
        if last_dropped:
            level, message = DiagnosticStatus.WARN, f"{message}; last map dropped: {last_dropped}"
    elif dropped:
        level, message = DiagnosticStatus.ERROR, f"no usable map: {why}"
    else:
        level, message = DiagnosticStatus.WARN, f"waiting for a map ({queued} sentence(s) queued), on {device}"
    if lifecycle_state not in ("", "active"):
        level, message = DiagnosticStatus.WARN, f"{lifecycle_state}: sentences answered found=false until activated"
    return DiagnosticStatus(level=level, name=title, message=message,
                            hardware_id=device, values=[KeyValue(key=k, value=_fmt(v)) for k, v in values.items()])


def diagnostic_array(stamp: Any, status: DiagnosticStatus) -> DiagnosticArray:
    arr = DiagnosticArray()
    arr.header.stamp = stamp
    arr.status = [status]
    return arr
