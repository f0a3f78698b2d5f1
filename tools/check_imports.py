"""Report import cycles among bqnet_model, bqnet_ros and bqnet_synth; exit 1 when there is one.

Two graphs are built from the sources with ``ast`` (nothing is imported):

- import time: module-level imports (inside ``try`` / ``if`` too, but not under
  ``if TYPE_CHECKING:``), the imports that run when a module is loaded. A cycle here is an error.
- layering: the product packages ``bqnet_model`` and ``bqnet_ros`` must not import ``bqnet_synth``
  at import time (the robot install does not have it), and ``bqnet_model`` must not import
  ``bqnet_ros`` at all. A violation is an error.

Usage: ``python tools/check_imports.py [REPO_ROOT]``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGES = ("bqnet_model", "bqnet_ros", "bqnet_synth")
PRODUCT = ("bqnet_model", "bqnet_ros")


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> source file, for every .py file of PACKAGES under ``root``."""
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        for f in sorted((root / pkg).rglob("*.py")):
            parts = list(f.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = f
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(body: list[ast.stmt], top: bool) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """(import node, at import time) for every import, walking into blocks but not TYPE_CHECKING."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append((node, top))
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            continue
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            found += _import_nodes(node.body, False)
        elif isinstance(node, ast.ClassDef):
            found += _import_nodes(node.body, top)
        else:
            for field in ("body", "orelse", "finalbody", "handlers"):
                sub = getattr(node, field, None)
                if isinstance(sub, list):
                    found += _import_nodes([s for s in sub if isinstance(s, ast.AST)], top)
    return found


def _targets(node: ast.Import | ast.ImportFrom, here: str, is_pkg: bool, known: dict[str, Path]) -> list[str]:
    """The project modules an import statement loads (the deepest known module of each name)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            anchor = here.split(".") if is_pkg else here.split(".")[:-1]
            anchor = anchor[: len(anchor) - node.level + 1]
            base = ".".join(anchor + ([base] if base else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    out = []
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != here:
            out.append(name)
    return out


def graphs(root: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(import-time edges, all edges incl. imports inside functions) between project modules."""
    known = modules(root)
    eager: dict[str, set[str]] = {m: set() for m in known}
    every: dict[str, set[str]] = {m: set() for m in known}
    for mod, path in known.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, top in _import_nodes(tree.body, True):
            for t in _targets(node, mod, path.name == "__init__.py", known):
                every[mod].add(t)
                if top:
                    eager[mod].add(t)
    return eager, every


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    comps: list[list[str]] = []

    def visit(v: str) -> None:  # recursion depth = module chain length, small here
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return comps


def problems(root: Path) -> list[str]:
    """Every import-time cycle and layering violation, as readable lines (empty: all good)."""
    eager, every = graphs(root)
    out = [f"import cycle: {' <-> '.join(c)}" for c in cycles(eager)]
    for mod, targets in eager.items():
        for t in sorted(targets):
            if mod.split(".")[0] in PRODUCT and t.split(".")[0] == "bqnet_synth":
                out.append(f"{mod} imports {t} at import time: the robot install has no bqnet_synth; "
                           "import it inside the function through bqnet_model.synth_extra.load_synth")
    for mod, targets in every.items():
        for t in sorted(targets):
            if mod.split(".")[0] == "bqnet_model" and t.split(".")[0] == "bqnet_ros":
                out.append(f"{mod} imports {t}: bqnet_model must not depend on bqnet_ros")
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else Path(__file__).resolve().parents[1]
    found = problems(root)
    for line in found:
        print(line)
    if not found:
        n = len(modules(root))
        print(f"no import cycles among {n} modules of {', '.join(PACKAGES)}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
