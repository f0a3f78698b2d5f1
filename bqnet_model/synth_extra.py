"""Access to the synthetic-room generator (``bqnet_synth``), a development extra.

The robot install (``colcon build``) ships ``bqnet_model`` and ``bqnet_ros`` only; the generator
stays in the checkout beside them. Product code that offers a synthetic room (the demo, the
``--demo`` cloud of ``bqnet-segment``, ``play_scene``'s demo scene, ``bqnet-synth``) imports it
through ``load_synth`` inside the function that needs it, so importing ``bqnet_model`` never
needs the generator and a missing one fails with what to do instead of a bare ImportError.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Sequence

MISSING = ("the synthetic rooms (bqnet_synth) are a development package that is not installed: use a checkout "
           "(make setup, or colcon build --symlink-install), or put the repository root on PYTHONPATH")


def load_synth() -> ModuleType:
    """The ``bqnet_synth`` package, found on ``sys.path`` or in the checkout this package lives in.

    The editable install maps only the product packages, so a console script started outside the
    repository root would not see ``bqnet_synth``; the checkout that holds this file does.
    """
    try:
        return importlib.import_module("bqnet_synth")
    except ModuleNotFoundError as exc:
        if exc.name != "bqnet_synth":
            raise
    root = Path(__file__).resolve().parents[1]
    if not (root / "bqnet_synth" / "__init__.py").is_file():
        raise ModuleNotFoundError(MISSING, name="bqnet_synth")
    sys.path.append(str(root))
    return importlib.import_module("bqnet_synth")


def main(argv: Sequence[str] | None = None) -> int:
    """``bqnet-synth``: the generator's command line (``python -m bqnet_synth``)."""
    try:
        synth = load_synth()
    except ModuleNotFoundError as exc:
        print(f"bqnet-synth: {exc}", file=sys.stderr)
        return 2
    return int(synth.main(argv))
