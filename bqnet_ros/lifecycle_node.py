"""segment_node as a ROS 2 managed (lifecycle) node: a manager decides when it loads and answers.

    segment_lifecycle_node --ros-args --params-file config/segment_node.yaml
    ros2 lifecycle set /segment_node configure      # loads the model      -> inactive
    ros2 lifecycle set /segment_node activate       # subscribes, answers  -> active

The node is ``SegmentNode`` with its two set-up steps moved onto the transitions; parameters,
callbacks and answers are the same code. What each state holds and does:

* unconfigured: parameters (declared and checked at construction, so a bad value is still
  ``cannot start``) and ``/diagnostics``; no model, no answer publishers, no sentence input.
* configure: loads the model (a missing checkpoint fails the transition, with the reason in the
  log and in /diagnostics; the node stays unconfigured), creates the worker, the answer
  publishers, the text subscription and ``~/segment``.
* inactive: every sentence (topic or service) is answered found=false with ``INACTIVE_REASON``,
  on ``~/result`` like any answer; no map subscription, no prepared map.
* activate: answers again; subscribes to the map (a latched map is delivered again, prepared
  as the next map version).
* deactivate: refuses what is queued, drops the map subscription and the prepared map, and
  frees the map's cached memory (CUDA graph pools, torch's cached GPU blocks). The model stays
  loaded, so activate is quick.
* cleanup: answers what is left ('node shutting down'), ends the worker, destroys the
  publishers, the text subscription and the service, and drops the model.
* shutdown (from any state) does what deactivate and cleanup do, quickly: nothing waits on the
  model beyond ``SHUTDOWN_GRACE_S``.

The answer publishers are plain publishers, not lifecycle ones: an inactive node still answers
(with a refusal), and every answer clears RViz like any other not-found one.
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Sequence
from typing import Any

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNodeMixin, LifecycleState, TransitionCallbackReturn

from bqnet_ros.parameters import StartupError
from bqnet_ros.segment_node import SHUTDOWN_GRACE_S, SegmentNode
from bqnet_ros.segment_node import main as run_node
from bqnet_ros.worker import SegmenterLike

__all__ = ["SegmentLifecycleNode", "INACTIVE_REASON", "release_device_memory", "main"]

INACTIVE_REASON = "node inactive (lifecycle state 'inactive'): activate it, then ask again"


def release_device_memory(device: str) -> None:
    """Give memory of dropped maps or models back: torch keeps freed CUDA blocks cached for
    reuse, so without this the GPU looks as full as before to other processes."""
    gc.collect()  # the cache's tensors may sit in reference cycles
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()


class SegmentLifecycleNode(LifecycleNodeMixin, SegmentNode):
    """SegmentNode whose configure and activate steps run on the lifecycle transitions."""

    def __init__(self, *, node_name: str = "segment_node", segmenter: SegmenterLike | None = None,
                 ros_args: Sequence[str] = (), **node_kwargs: Any) -> None:
        """As SegmentNode; ``segmenter`` is taken (not loaded) on every configure and only the
        node's reference to it is dropped at cleanup (the caller owns it)."""
        self._given = segmenter
        self._configure_error = ""  # why the last configure failed; "" once one succeeds
        # Explicitly: the mixin's __init__ (next in the MRO) takes no node arguments; _start calls it.
        SegmentNode.__init__(self, node_name=node_name, segmenter=segmenter, ros_args=ros_args, **node_kwargs)

    def _start(self, segmenter: SegmenterLike | None) -> None:
        """Only the state machine at construction: configure loads the model."""
        # Its own group: a configure that loads a model does not hold up the parameter services.
        LifecycleNodeMixin.__init__(self, callback_group=MutuallyExclusiveCallbackGroup())
        self._log(logging.INFO, f"unconfigured (lifecycle): configure {self.get_fully_qualified_name()} to load "
                                "the model, activate it to answer")

    @property
    def lifecycle_state(self) -> str:
        """'unconfigured', 'inactive', 'active', 'finalized' or a transition state ('configuring')."""
        return str(self._state_machine.current_state[1])

    def _lifecycle_status(self) -> dict[str, str]:
        return {"lifecycle_state": self.lifecycle_state, "lifecycle_problem": self._configure_error}

    # ----------------------------------------------------------------- transitions
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure(self._given)
        except StartupError as exc:
            self._configure_error = f"configure failed: {exc}"
            self._log(logging.ERROR, f"{self._configure_error}; the node stays unconfigured")
            self._release()
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:  # rclpy swallows it: say what it was before on_error releases
            self._configure_error = f"configure failed: {type(exc).__name__}: {exc}"
            self._log(logging.ERROR, self._configure_error)
            return TransitionCallbackReturn.ERROR
        self.worker.pause(INACTIVE_REASON)
        self._configure_error = ""
        self._log(logging.INFO, f"configured (inactive until activated): {self._summary()}")
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._activate()
        self._log(logging.INFO, f"active: answering sentences on {self.params.text_topic} and "
                                f"{self.get_fully_qualified_name()}/segment, map from {self.params.map_topic}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        self._log(logging.INFO, "inactive: sentences are answered found=false until activated; map cache freed")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self._log(logging.INFO, "unconfigured: model released")
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._closing = True  # leftovers of the worker log at debug level from here on
        self._release()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A transition raised: release everything and go back to unconfigured (a manager may
        configure again)."""
        self._log(logging.ERROR, f"a lifecycle transition from '{state.label}' failed: releasing the model; "
                                 "the node is unconfigured")
        self._release()
        return TransitionCallbackReturn.SUCCESS

    # ----------------------------------------------------------------- steps
    def _deactivate(self) -> None:
        """Stop answering and free the prepared map; the model stays."""
        if self._sub_map is not None:
            self.destroy_subscription(self._sub_map)
            self._sub_map = None
        worker = self.worker
        if worker is None:
            return
        worker.pause(INACTIVE_REASON)
        # A batch being answered keeps the map cache alive until it ends: wait a little for it.
        idle = worker.wait_idle(SHUTDOWN_GRACE_S)
        if idle and hasattr(self._segmenter, "close"):
            self._segmenter.close()  # CUDA graph pools; captured again on the next query
        release_device_memory(self.device)

    def _release(self) -> None:
        """Back to what the node has unconfigured: no worker, entities or model (any state)."""
        if self._sub_map is not None:
            self.destroy_subscription(self._sub_map)
            self._sub_map = None
        self._stop_worker()
        self.worker = None
        with self._pub_lock:
            pubs = [getattr(self, n, None) for n in ("_pub_result", "_pub_cloud", "_pub_centroid", "_pub_markers")]
            self._pub_result = self._pub_cloud = self._pub_centroid = self._pub_markers = None
        for pub in pubs:
            if pub is not None:
                self.destroy_publisher(pub)
        for name, destroy in (("_sub_text", self.destroy_subscription), ("_srv", self.destroy_service)):
            entity = getattr(self, name, None)
            if entity is not None:
                destroy(entity)
            setattr(self, name, None)
        self._segmenter = None
        release_device_memory(self.device)

    # ----------------------------------------------------------------- shutdown
    def shutdown(self) -> None:
        """The shutdown transition from whichever primary state the node is in (finalized after);
        from a transition state in another thread, the plain node's stop."""
        if self.lifecycle_state in ("unconfigured", "inactive", "active"):
            try:
                self.trigger_shutdown()
            except Exception as exc:  # rcl refuses while another transition runs
                self._log(logging.DEBUG, f"shutdown transition not possible now: {exc}")
        super().shutdown()


def main(args: Sequence[str] | None = None) -> int:
    """Console script ``segment_lifecycle_node``: as ``segment_node``, starting unconfigured."""
    return run_node(args, node_class=SegmentLifecycleNode)


if __name__ == "__main__":
    sys.exit(main())
