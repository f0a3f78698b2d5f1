"""tools/gpu/csrc_cache.py: a packed csrc build is reused only for the same sources and toolchain."""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

from conftest import load_tool

ROOT = Path(__file__).resolve().parents[1]


def _tree(tmp: Path) -> Path:
    """A copy of what the stamp reads (csrc/, setup.py) plus a stand-in for a built module."""
    root = tmp / "tree"
    shutil.copytree(ROOT / "csrc", root / "csrc")
    shutil.copy2(ROOT / "setup.py", root / "setup.py")
    (root / "bqnet_model").mkdir()
    (root / "bqnet_model" / f"_C{sysconfig.get_config_var('EXT_SUFFIX')}").write_bytes(b"not an ELF file: strip leaves it")
    return root


def test_unpack_places_the_build_only_for_the_same_sources(tmp_path: Path) -> None:
    tool = load_tool("gpu/csrc_cache")
    root = _tree(tmp_path)
    module = root / "bqnet_model" / f"_C{sysconfig.get_config_var('EXT_SUFFIX')}"
    data = module.read_bytes()
    archive = tmp_path / "csrc_build.tar.xz"
    assert tool.pack(archive, root) == 0
    module.unlink()
    assert tool.unpack(archive, root) == 0 and module.read_bytes() == data
    module.unlink()
    kernel = sorted((root / "csrc").rglob("*.h"))[0]
    kernel.write_text(kernel.read_text() + "\n// changed\n")
    assert tool.unpack(archive, root) == 3 and not module.exists()


def test_bad_or_missing_archives_mean_building(tmp_path: Path) -> None:
    tool = load_tool("gpu/csrc_cache")
    root = _tree(tmp_path)
    assert tool.unpack(tmp_path / "absent.tar.xz", root) == 3
    broken = tmp_path / "broken.tar.xz"
    broken.write_bytes(b"\xfd7zXZ\x00 truncated")
    assert tool.unpack(broken, root) == 3
    for m in (root / "bqnet_model").iterdir():
        m.unlink()
    assert tool.pack(tmp_path / "empty.tar.xz", root) == 1  # nothing built, nothing packed


def test_the_stamp_names_sources_and_toolchain() -> None:
    tool = load_tool("gpu/csrc_cache")
    s = tool.stamp(ROOT)
    assert set(s) == {"sources", "python", "torch", "cuda", "arch"} and len(s["sources"]) == 64
    assert tool.source_hash(ROOT) == s["sources"]
