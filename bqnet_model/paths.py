"""Where model and config files named by a relative path are looked up.

The command line (``bqnet-segment``) and the ROS node both take paths such as
``models/bqnet_tiny.pth`` or ``config/tiny.yaml``; both resolve them here, so a name finds
the same file whichever front end reads it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["PACKAGE_ROOT", "search_roots", "resolve_resource"]

# The repository (editable install) or install root above bqnet_model/, where models/ and config/ live.
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def search_roots(extra_roots: Iterable[str | os.PathLike] = (), *,
                 package_root: str | os.PathLike = PACKAGE_ROOT) -> list[Path]:
    """The folders a relative name is looked up in, in this one order: the current folder, the
    package (checkout) root, then ``extra_roots`` (e.g. the ROS package share folder of a colcon
    install). A folder already in the list (same resolved path) is not repeated, so an error
    message lists every place once. ``package_root`` exists so tests can point it elsewhere."""
    roots: list[Path] = []
    seen: set[Path] = set()
    for r in (Path.cwd(), Path(package_root), *(Path(e) for e in extra_roots)):
        key = r.resolve()
        if key not in seen:
            seen.add(key)
            roots.append(r)
    return roots


def resolve_resource(
    name: str | os.PathLike,
    extra_roots: Iterable[str | os.PathLike] = (),
    *,
    roots: Sequence[Path] | None = None,
) -> tuple[Path | None, list[Path]]:
    """``(the existing file or None, the candidates tried in order)`` for a model or config name.

    Order: an absolute name (``~`` expanded) is only looked at as given; a relative one under each
    of ``roots`` in turn, by default ``search_roots(extra_roots)``: the current folder, the package
    (checkout) root, then ``extra_roots``. The first existing regular file wins and is returned as
    found (not resolved), so messages show the path the way it was built. ``roots`` replaces the
    whole list, for callers (and tests) that pin where to look.
    """
    p = Path(name).expanduser()
    candidates = [p] if p.is_absolute() else [r / p for r in (search_roots(extra_roots) if roots is None else roots)]
    for c in candidates:
        if c.is_file():
            return c, candidates
    return None, candidates
