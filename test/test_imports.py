"""The import graph: no import-time cycle, and the product never needs the synthetic generator."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "tools" / "check_imports.py"


def _run(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECK), str(root)], capture_output=True, text=True, timeout=60)


def test_repository_has_no_import_cycle():
    r = _run(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for pkg in ("bqnet_model", "bqnet_ros", "bqnet_synth"):
        (tmp_path / pkg).mkdir(parents=True)
        (tmp_path / pkg / "__init__.py").write_text("")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def test_checker_reports_a_cycle(tmp_path):
    root = _tree(tmp_path, {"bqnet_synth/a.py": "from bqnet_synth import b\n",
                            "bqnet_synth/b.py": "from bqnet_synth.a import x\n"})
    r = _run(root)
    assert r.returncode == 1 and "bqnet_synth.a <-> bqnet_synth.b" in r.stdout


def test_checker_ignores_lazy_and_type_checking_imports_for_cycles(tmp_path):
    root = _tree(tmp_path, {
        "bqnet_synth/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from bqnet_synth.b import y\n",
        "bqnet_synth/b.py": "from bqnet_synth.a import x\ndef f():\n    from bqnet_synth import a\n",
    })
    assert _run(root).returncode == 0


def test_checker_rejects_product_importing_the_generator_at_import_time(tmp_path):
    root = _tree(tmp_path, {"bqnet_model/demo.py": "from bqnet_synth import demo_room\n"})
    r = _run(root)
    assert r.returncode == 1 and "bqnet_model.demo imports bqnet_synth" in r.stdout
    lazy = _tree(tmp_path / "lazy", {"bqnet_model/demo.py": "def f():\n    from bqnet_synth import demo_room\n"})
    assert _run(lazy).returncode == 0


def test_product_imports_without_the_generator():
    """Importing the product modules that offer a synthetic room must not load bqnet_synth."""
    code = ("import sys\nimport bqnet_model.demo, bqnet_model.cli, bqnet_model.data.dataset, bqnet_model.eval_real\n"
            "assert 'bqnet_synth' not in sys.modules, sorted(m for m in sys.modules if 'synth' in m)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_missing_generator_error_says_what_to_do(tmp_path, monkeypatch):
    import bqnet_model.synth_extra as se

    monkeypatch.setattr(se, "__file__", str(tmp_path / "bqnet_model" / "synth_extra.py"))
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p or ".").resolve() != ROOT])
    for m in [m for m in sys.modules if m == "bqnet_synth" or m.startswith("bqnet_synth.")]:
        monkeypatch.delitem(sys.modules, m)
    try:
        se.load_synth()
    except ModuleNotFoundError as exc:
        assert "development package" in str(exc) and "PYTHONPATH" in str(exc)
    else:
        raise AssertionError("load_synth found bqnet_synth outside the checkout")
