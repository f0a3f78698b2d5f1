"""The GPU oversegmentation: ``bqnet_model._C_cuda`` (``csrc/cuda/``), the CUDA build of the parallel
port of the online superpoints (``csrc/sp_parallel*.h``).

``bqnet_model.superpoints.oversegment_detailed`` comes here for CUDA input (a CUDA tensor, or
``device="cuda"``). The port runs the algorithm of ``merge="boruvka"`` (spacing estimate, hashed grid
and kNN, PCA normals and the normal pick, weighted edges, stable sort, Borůvka FH merge over weight
buckets with the size cap and min-size, Borůvka coplanar merge, boundary exchange, min-size again,
labels numbered by first point): ``merge="fh"`` on CUDA means that GPU form of FH, since sequential
FH has no GPU form. The kernels are written once; ``oversegment_host_port`` runs the same code on the
host (``_C.oversegment_parallel``), which is how the CPU-only tests check the port: its labels equal
the CPU's ``merge="boruvka"`` labels. On the device the float bits match the host's except where
CUDA's double ``acos`` / ``cos`` differ from glibc's in the last bit (normals), so labels can differ
in rare near-tied edges; ``tools/device_superpoints_cuda.sh`` measures the agreement.

Without ``_C_cuda`` (a CPU-only torch, no nvcc, or ``BQNET_NO_CUDA=1`` at build time) the CPU
segments instead and one log line says so (``extension`` returns None).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from bqnet_model.superpoint_params import SuperpointParams

__all__ = ["extension", "run", "oversegment_host_port"]

log = logging.getLogger(__name__)
_EXT: dict[str, Any] = {}  # "module": the loaded _C_cuda, or "missing": why it could not be loaded


def extension() -> Any | None:
    """``bqnet_model._C_cuda``, or None (logged once) when it is not built or cannot load."""
    if "module" in _EXT:
        return _EXT["module"]
    if "missing" not in _EXT:
        try:
            from bqnet_model import _C_cuda
        except ImportError as exc:
            _EXT["missing"] = str(exc)
            log.warning("bqnet_model._C_cuda is not built (%s): superpoints of CUDA clouds are computed on the "
                        "CPU; build it with a CUDA torch and nvcc: `python setup.py build_ext --inplace`", exc)
            return None
        _EXT["module"] = _C_cuda
        return _C_cuda
    return None


def _on(dev: torch.device, name: str, a: Any) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a))
    if t.dtype in (torch.bool, torch.complex64, torch.complex128):
        raise TypeError(f"{name} must hold real numbers, got dtype {t.dtype}")
    return t.to(dev)


def _points(dev: torch.device, name: str, a: Any, n: int | None) -> torch.Tensor:
    if a is None:
        raise TypeError(f"{name} must be an array of shape (N, 3), got None")
    t = _on(dev, name, a)
    if t.dim() != 2 or t.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3), got {tuple(t.shape)}")
    if n is not None and t.shape[0] != n:
        raise ValueError(f"{name} has {t.shape[0]} rows but xyz has {n} points")
    return t


def run(ext: Any, xyz: Any, rgb: Any, normals: Any, p: SuperpointParams,
        dev: torch.device) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Checks the input as the CPU path does (same messages), segments on ``dev``; returns labels and
    normals on ``dev`` and the stats array on the host. Host round trips: the checks' flags only."""
    from bqnet_model.superpoints import check_point_count, nonfinite_message

    x = _points(dev, "xyz", xyz, None)
    n = int(x.shape[0])
    check_point_count(n)
    if x.dtype != torch.float32:
        # As on the CPU: shift to the minimum corner in float64 before narrowing to float32.
        x = x.double()
        if bool(torch.isfinite(x).all()):
            x = x - x.min(dim=0).values
    x = x.float().contiguous()
    finite = torch.isfinite(x).all(dim=1)
    bad = int(n - int(finite.sum()))
    if bad:
        raise ValueError(nonfinite_message(bad, n))
    rgb_t = None
    if rgb is not None:
        c = _points(dev, "rgb", rgb, n)
        if c.dtype != torch.uint8:
            if c.is_floating_point():
                raise TypeError(f"rgb must be uint8 (0..255), got dtype {c.dtype}")
            lo, hi = int(c.min()), int(c.max())
            if lo < 0 or hi > 255:
                raise ValueError(f"rgb values must be in 0..255, got range [{lo}, {hi}]")
        rgb_t = c.to(torch.uint8).contiguous()
    nrm_t = None
    if normals is not None:
        nrm_t = _points(dev, "normals", normals, n).float().contiguous()
        if not bool(torch.isfinite(nrm_t).all()):
            raise ValueError("normals contain NaN/Inf")
    try:
        labels, nrm_out, stats = ext.oversegment(x, rgb_t, nrm_t, **asdict(p))
    except RuntimeError as exc:  # the kernel's guards (grid size, edge count): a ValueError
        raise ValueError(str(exc).split("\n")[0]) from exc
    return labels, nrm_out, stats.numpy()


def oversegment_host_port(xyz: Any, rgb: Any = None, normals: Any = None, *, params: SuperpointParams | None = None,
                          num_threads: int | None = None) -> Any:
    """The GPU port's kernels on the host (``_C.oversegment_parallel``): a ``SuperpointResult`` like
    ``oversegment_detailed``'s, labels equal to its ``merge="boruvka"`` labels."""
    from bqnet_model import _C
    from bqnet_model.superpoints import oversegment_host

    p = SuperpointParams() if params is None else params
    if not isinstance(p, SuperpointParams):
        raise TypeError(f"params must be a SuperpointParams, got {type(p).__name__}")
    p.validate()
    return oversegment_host(xyz, rgb, normals, p, num_threads, _C.oversegment_parallel)
