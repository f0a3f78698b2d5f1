"""spconv import with a CPU-backward fix.

spconv 2.3.8 asks for the current CUDA stream in its backward functions even for CPU tensors,
which raises "Torch not compiled with CUDA enabled" on CPU-only torch builds. The stream handle
is only used by CUDA kernels, so on machines without CUDA we replace ``get_current_stream`` by a
function returning 0 (the null stream) in every spconv module that imported it by name. On CUDA
machines nothing is touched. Import ``spconv`` from here (``from .spconv_compat import spconv``)
so the patch is always applied before the first backward.
"""

from __future__ import annotations

import sys
from typing import Callable

import torch

try:
    # Load the modules that import ``get_current_stream`` by name first; then bind ``spconv``
    # (a plain ``import spconv.pytorch.x`` would rebind the name to the top-level package).
    import spconv.pytorch.hash  # noqa: F401
    import spconv.pytorch.ops  # noqa: F401
    import spconv.pytorch.utils  # noqa: F401
    import spconv.pytorch.cppcore as _cppcore
    import spconv.pytorch as spconv  # noqa: F401  (re-exported)
except ImportError as exc:  # pragma: no cover - depends on the machine
    raise ImportError(
        "spconv is required for the BQNet backbone: pip install spconv==2.3.8 (CPU) or spconv-cu12x "
        "(GPU; on the device machine `source .gpu/activate` first)"
    ) from exc

__all__ = ["spconv", "patch_spconv_stream", "stream_patched"]

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


def stream_patched() -> bool:
    """True when spconv's ops module uses the CPU-safe stream function."""
    return spconv.ops.get_current_stream is _stream_or_null


patch_spconv_stream()
