"""``SuperpointParams``: the parameters of the online oversegmentation, with no heavy import.

Here rather than in ``bqnet_model.superpoints`` because that module loads the C++ extension at
import time, while the configuration (``bqnet_model.model.config``: ``inference.superpoints``)
must be importable, and checkable, without it. ``bqnet_model.superpoints`` re-exports the class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["MAX_K", "MERGES", "SuperpointParams"]

MAX_K = 32  # the C++ neighbour lists hold at most this many
MERGES = ("fh", "boruvka")  # SuperpointParams.merge: what the C++ kernel accepts


@dataclass(frozen=True)
class SuperpointParams:
    """Oversegmentation parameters (dimensionless or in units of the estimated spacing).

    The defaults were chosen by measurement on the real ScanNet scans and the synthetic rooms
    (table in docs/benchmarks/superpoints.md): ``knn`` 6 (a mesh vertex has ~6 neighbours;
    more edges let FH leak across boundaries), ``normal_knn`` 8 (sharper creases than 16),
    ``normal_pick`` 4 (the flattest of five nearby planes: sharper creases on real scans; larger
    values help real scans less than they cost on the synthetic rooms), ``k_thresh`` 0.05 and
    ``min_size`` 15 (with the coplanar merge: one segment per some tens of points, inside ScanNet's
    range), ``color_weight`` 1 (needed on coloured synthetic objects, neutral on real scans),
    ``offset_weight`` 0.1, ``max_edge`` 4 spacings, the coplanar merge at 0.5 spacings RMS, |cos|
    0.95, colour 25 and at most 150 points (larger caps change ASA little and make the synthetic
    rooms' segments much larger), ``refine_iters`` 5 with plane weight 2.5 and colour weight 8 (the
    boundary exchange). The exchange weights are high because the size step is single linkage on
    these clouds (FH's own phase joins almost nothing at this k): it leaves segments straddling
    objects that sit flush with a wall or 1-2 cm in front of it (door and window frames, bathtubs,
    desks), and only a point's fit to a segment's plane and mean colour, over several rounds,
    moves such points back; a colour guard in the size step instead costs ASA on real scans,
    whose objects are textured.

    The fields are exactly the keyword arguments of ``bqnet_model.superpoints.oversegment`` (and
    of the C++ kernel): the thread count is not one of them, because the labels do not depend
    on it (``inference.superpoint_threads`` sets it for the pipeline).
    """

    spacing: float = 0.0  # metres; 0 = estimate the median point spacing from the cloud
    k_thresh: float = 0.05
    min_size: int = 15  # points
    max_size: int = 0  # points; 0 = no cap in the FH phase
    color_weight: float = 1.0
    offset_weight: float = 0.1
    knn: int = 6
    normal_knn: int = 8
    max_edge: float = 4.0  # spacings
    normal_pick: int = 4  # a point takes the flattest PCA plane among its own and its nearest; 0 = its own
    refine_iters: int = 5  # boundary exchange rounds after the merge; 0 = FH labels as they are
    refine_plane_weight: float = 2.5  # point-to-segment-plane distance, per spacing
    refine_color_weight: float = 8.0  # colour distance to the segment's mean, per 255
    merge_plane_rms: float = 0.5  # spacings: coplanar merge when the union's RMS plane distance is below; 0 = off
    merge_plane_cos: float = 0.95  # ... and the two planes' |cos| is above
    merge_color: float = 25.0  # ... and the mean colours (0..255) are closer than this
    merge_max_size: int = 150  # points: no coplanar union above this; 0 = no cap
    # The FH merge (stage 5) and the min-size clean-ups: "fh" = sequential FH over the sorted edges;
    # "boruvka" = its parallel form (rounds of lightest-edge picks, csrc/sp_boruvka.h), the one a GPU
    # port runs: different labels, quality compared in docs/benchmarks/superpoints.md. On a CUDA device
    # (bqnet_model.superpoints_cuda) both values run the GPU Borůvka: "fh" there means FH's GPU form.
    merge: str = "fh"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError``/``TypeError`` naming the first bad field."""
        for name in ("spacing", "k_thresh", "color_weight", "offset_weight", "max_edge", "refine_plane_weight",
                     "refine_color_weight", "merge_plane_rms", "merge_plane_cos", "merge_color"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise TypeError(f"SuperpointParams.{name} must be a number, got {type(v).__name__}")
            if not math.isfinite(float(v)) or v < 0:
                raise ValueError(f"SuperpointParams.{name} must be finite and >= 0, got {v}")
        for name in ("min_size", "max_size", "knn", "normal_knn", "normal_pick", "refine_iters", "merge_max_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"SuperpointParams.{name} must be an int, got {type(v).__name__}")
        if self.min_size < 0 or self.max_size < 0 or self.merge_max_size < 0:
            raise ValueError(f"min_size, max_size and merge_max_size must be >= 0, got {self.min_size}, "
                             f"{self.max_size}, {self.merge_max_size}")
        if not 1 <= self.knn <= MAX_K:
            raise ValueError(f"knn must be in [1, {MAX_K}], got {self.knn}")
        if not 2 <= self.normal_knn <= MAX_K:
            raise ValueError(f"normal_knn must be in [2, {MAX_K}], got {self.normal_knn}")
        if not 0 <= self.normal_pick <= MAX_K:
            raise ValueError(f"normal_pick must be in [0, {MAX_K}], got {self.normal_pick}")
        if not 0 <= self.refine_iters <= 100:
            raise ValueError(f"refine_iters must be in [0, 100], got {self.refine_iters}")
        if self.merge_plane_cos > 1:
            raise ValueError(f"merge_plane_cos must be in [0, 1], got {self.merge_plane_cos}")
        if not isinstance(self.merge, str):
            raise TypeError(f"SuperpointParams.merge must be a str, got {type(self.merge).__name__}")
        if self.merge not in MERGES:
            raise ValueError(f"SuperpointParams.merge must be one of {MERGES}, got {self.merge!r}")
        if self.max_edge <= 0:
            raise ValueError(f"max_edge must be > 0 spacings, got {self.max_edge}")
