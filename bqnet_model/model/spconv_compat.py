"""spconv import with CPU fixes.

1. spconv 2.3.8 asks for the current CUDA stream in its backward functions even for CPU tensors,
   which raises "Torch not compiled with CUDA enabled" on CPU-only torch builds. The stream handle
   is only used by CUDA kernels, so on machines without CUDA we replace ``get_current_stream`` by
   a function returning 0 (the null stream) in every spconv module that imported it by name.
2. spconv's CPU ``scatter_add_cpu`` (the scatter step of gather-GEMM-scatter) is not thread safe:
   with more than one OpenMP thread, forward outputs were wrong in about one call in ten (seen
   with 2 threads on a 12^3 grid, errors ~0.3 against a dense conv3d; gradients were always
   right). CPU convs therefore go through spconv's Python gather-mm-scatter loop (its C++ loop
   calls the scatter where we cannot reach it) and that one scatter runs with a single thread;
   the GEMMs keep all threads. On CUDA-less machines ``SPCONV_CPP_GEMM`` is simply off; on CUDA
   machines it is switched off only for the duration of a CPU-tensor conv (CUDA convs keep
   spconv's C++ path).
3. On CUDA machines spconv builds convs with the implicit-GEMM algorithm, which has no CPU
   kernel; ``set_conv_algorithm`` switches a module tree to the native algorithm for CPU
   tensors (the backbone does it by itself, so one model runs on either device).

Import ``spconv`` from here (``from .spconv_compat import spconv``) so the patches apply first.
"""

from __future__ import annotations

import functools
import sys
import threading
from typing import Any, Callable

import torch

try:
    # Load the modules that import ``get_current_stream`` by name first; then bind ``spconv``
    # (a plain ``import spconv.pytorch.x`` would rebind the name to the top-level package).
    import spconv.pytorch.hash  # noqa: F401
    import spconv.pytorch.ops  # noqa: F401
    import spconv.pytorch.utils  # noqa: F401
    import spconv.pytorch.conv  # noqa: F401
    import spconv.pytorch.cppcore as _cppcore
    import spconv.pytorch as spconv  # noqa: F401  (re-exported)
except ImportError as exc:  # pragma: no cover - depends on the machine
    raise ImportError(
        "spconv is required for the BQNet backbone: pip install spconv==2.3.8 (CPU) or spconv-cu12x "
        "(GPU; on the device machine `source .gpu/activate` first)"
    ) from exc

__all__ = ["spconv", "patch_spconv_stream", "patch_spconv_cpu_scatter", "set_conv_algorithm", "stream_patched"]

_ORIGINAL: Callable[[], int] = _cppcore.get_current_stream


def _stream_or_null() -> int:
    """The current CUDA stream handle when CUDA exists, else 0 (the CPU code paths ignore it)."""
    if torch.cuda.is_available():
        return _ORIGINAL()
    return 0


def patch_spconv_stream(force: bool = False) -> list[str]:
    """Replace ``get_current_stream`` in every loaded spconv module; returns the patched module names.

    Only done when CUDA is unavailable (or ``force``); idempotent.
    """
    if torch.cuda.is_available() and not force:
        return []
    patched = []
    for name, mod in list(sys.modules.items()):
        if not name.startswith("spconv.") or mod is None:
            continue
        if getattr(mod, "get_current_stream", None) is _ORIGINAL:
            setattr(mod, "get_current_stream", _stream_or_null)
            patched.append(name)
    return patched


class _SingleThreadScatter:
    """Proxy of spconv's ``SpconvOps`` whose ``scatter_add_cpu`` runs with one thread."""

    def __init__(self, inner: object) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        attr = getattr(self._inner, name)
        if name != "scatter_add_cpu":
            return attr

        def scatter_add_cpu(*args: object, **kwargs: object) -> object:
            n = torch.get_num_threads()
            if n == 1:
                return attr(*args, **kwargs)
            torch.set_num_threads(1)
            try:
                return attr(*args, **kwargs)
            finally:
                torch.set_num_threads(n)

        return scatter_add_cpu


_CPU_LOCK = threading.Lock()


def _cpu_python_path(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn`` (an ``ops.indice_conv*``) through spconv's Python loop when its features are on CPU."""

    @functools.wraps(fn)
    def wrapper(features: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        ops = sys.modules["spconv.pytorch.ops"]
        if features.is_cuda or not ops.SPCONV_CPP_GEMM:
            return fn(features, *args, **kwargs)
        with _CPU_LOCK:
            ops.SPCONV_CPP_GEMM = False
            try:
                return fn(features, *args, **kwargs)
            finally:
                ops.SPCONV_CPP_GEMM = True

    wrapper._bqnet_cpu_path = True  # type: ignore[attr-defined]
    return wrapper


def patch_spconv_cpu_scatter() -> bool:
    """Make CPU sparse convs thread safe (see module docstring); idempotent, returns True."""
    ops = sys.modules["spconv.pytorch.ops"]
    if not isinstance(ops.SpconvOps, _SingleThreadScatter):
        ops.SpconvOps = _SingleThreadScatter(ops.SpconvOps)
    if torch.cuda.is_available():
        for name in ("indice_conv", "indice_conv_backward"):
            fn = getattr(ops, name)
            if not getattr(fn, "_bqnet_cpu_path", False):
                setattr(ops, name, _cpu_python_path(fn))
    else:
        ops.SPCONV_CPP_GEMM = False
    return True


def set_conv_algorithm(module: torch.nn.Module, device_type: str) -> None:
    """Native algorithm on CPU, spconv's default (implicit GEMM where built) on CUDA.

    Weights are KRSC for every algorithm in spconv 2.3 (``ALL_WEIGHT_IS_KRSC``), so switching is free.
    """
    from spconv.core import ConvAlgo

    for m in module.modules():
        if isinstance(m, spconv.conv.SparseConvolution):
            if not hasattr(m, "_bqnet_default_algo"):
                m._bqnet_default_algo = m.algo
            m.algo = ConvAlgo.Native if device_type == "cpu" else m._bqnet_default_algo


def stream_patched() -> bool:
    """True when spconv's ops module uses the CPU-safe stream function."""
    return spconv.ops.get_current_stream is _stream_or_null


patch_spconv_stream()
patch_spconv_cpu_scatter()
