"""Count the host read-backs of a piece of code (``bench/train_step.py --sync-report``).

On CUDA a read-back of a device tensor (``.item()``, ``bool()``/``int()``/``float()`` of a tensor,
``.tolist()``, ``nonzero``, ``unique``, indexing by a boolean mask, ...) makes the host wait for
every kernel queued before it: the host can no longer run ahead of the GPU. ``ReadbackCounter``
counts them in two ways:

* ``cuda``: torch's own detector (``torch.cuda.set_sync_debug_mode("warn")``): each synchronising
  call of a CUDA op warns; the warnings are counted by the Python line that made them;
* ``host`` (any device, e.g. a CPU dev machine): a ``TorchFunctionMode`` counts the tensor calls
  that read values back or give a shape that depends on values (the list below), by the first
  ``bqnet_model`` function on the stack. On CPU no call synchronises anything; the count says
  where the CUDA step would wait, as an upper bound: calls on tensors that stay on the host on
  CUDA (the batch's offsets, for example) are counted too.
"""

from __future__ import annotations

import collections
import sys
import warnings
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["READBACK_CALLS", "ReadbackCounter"]

# Tensor calls that read values back to the host (or size their output by the values).
READBACK_CALLS = frozenset({"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero",
                            "unique", "unique_consecutive", "masked_select", "bincount", "argwhere"})


def _site() -> str:
    """The first ``bqnet_model`` function on the stack, and the library function (torch's optimizer,
    spconv, ...) below it that made the call, if any."""
    f = sys._getframe(2)
    inner = None
    while f is not None:
        name = f.f_code.co_filename
        if "bqnet_model" in name and not name.endswith("readbacks.py"):
            site = f"{name[name.rindex('bqnet_model'):]}:{f.f_code.co_name}"
            return site if inner is None else f"{site} <- {inner}"
        if inner is None:
            parts = name.replace("\\", "/").split("/")
            inner = f"{'/'.join(parts[-2:])}:{f.f_code.co_name}"
        f = f.f_back
    return "(outside bqnet_model)" if inner is None else inner


class _Mode(TorchFunctionMode):
    def __init__(self, counts: collections.Counter) -> None:
        super().__init__()
        self.counts = counts

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        name = getattr(func, "__name__", "")
        hit = name in READBACK_CALLS
        if name == "repeat_interleave":
            hit = (kwargs or {}).get("output_size") is None and len(args) > 1 and isinstance(args[1], torch.Tensor)
        elif name == "__getitem__" and len(args) > 1:
            idx = args[1] if isinstance(args[1], tuple) else (args[1],)
            hit = any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in idx)
        if hit:
            self.counts[f"{_site()} {name}"] += 1
        return func(*args, **(kwargs or {}))


class ReadbackCounter:
    """``with ReadbackCounter(kind) as c: ...``; then ``c.total`` and ``c.counts`` (site -> calls).
    ``kind``: "host" (the function mode, any device) or "cuda" (torch's sync detector)."""

    def __init__(self, kind: str = "host") -> None:
        if kind not in ("host", "cuda"):
            raise ValueError(f"kind must be 'host' or 'cuda', got {kind!r}")
        self.kind = kind
        self.counts: collections.Counter = collections.Counter()
        self._ctx: Any = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __enter__(self) -> "ReadbackCounter":
        if self.kind == "host":
            self._ctx = _Mode(self.counts)
            self._ctx.__enter__()
        else:
            self._ctx = warnings.catch_warnings(record=True)
            self._records = self._ctx.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.kind == "cuda":
            torch.cuda.set_sync_debug_mode("default")
            for w in self._records:
                if "synchroniz" in str(w.message):
                    f = w.filename
                    self.counts[f"{f[f.rindex('bqnet_model'):] if 'bqnet_model' in f else f}:{w.lineno}"] += 1
        self._ctx.__exit__(*exc)

    def report(self, top: int = 15) -> str:
        lines = [f"host read-backs ({self.kind}): {self.total}"]
        lines += [f"  {n:5d}  {site}" for site, n in self.counts.most_common(top)]
        return "\n".join(lines)
