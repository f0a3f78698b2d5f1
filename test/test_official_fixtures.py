"""Our decoder port against the golden outputs of the authors' CFNet code (tools/check_official.py).

The fixtures live in the shared folder beside the checkout (``../shared/fixtures/cfnet``); the
tests skip, saying so, when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import load_tool

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = [Path("/work/shared/fixtures/cfnet"), ROOT.parent / "shared" / "fixtures" / "cfnet"]


def _fixture_dir() -> Path:
    for d in CANDIDATES:
        if (d / "dec_small_config.json").is_file():
            return d
    pytest.skip(f"official CFNet fixtures not found in {[str(c) for c in CANDIDATES]}")


def _tool():
    return load_tool("check_official")


@pytest.fixture(scope="module")
def tool():
    return _tool()


@pytest.fixture(scope="module")
def fixture_dir() -> Path:
    return _fixture_dir()


@pytest.fixture(scope="module")
def decoder(tool, fixture_dir):
    torch.set_num_threads(1)
    return tool.build_decoder(fixture_dir)


def test_every_case_matches_the_official_outputs(tool, fixture_dir, decoder) -> None:
    """Final, per-layer and traced outputs, post-processing and crafted cases of every case file."""
    for path in tool.case_files(fixture_dir):
        report = tool.Report()
        tool.compare_case(decoder, path, report)
        failed = [line for line in report.lines() if line.startswith("FAIL")]
        assert report.checks and not failed, "\n".join(failed)
        names = {c.name.split(" ", 1)[1] for c in report.checks if " " in c.name}
        assert {"out.masks", "out.indis", "out.sample_inds", "out.aux.0.masks"} <= names


def test_official_format_checkpoint_reproduces_case_a_exactly(tool, fixture_dir, decoder) -> None:
    if not (fixture_dir / "fake_official_checkpoint.pth").is_file():
        pytest.skip("fake_official_checkpoint.pth not in the fixtures")
    first = tool.case_files(fixture_dir)[0]
    with torch.no_grad():
        ref = decoder(**tool.case_inputs(tool._load(first)), keep_all_layers=True)
    report = tool.Report()
    tool.check_fake_checkpoint(fixture_dir, ref, first, report)
    assert report.ok, "\n".join(report.lines())


def test_a_wrong_weight_is_caught(tool, fixture_dir) -> None:
    """The check can fail: one perturbed weight breaks the comparison."""
    dec = tool.build_decoder(fixture_dir)
    with torch.no_grad():
        dec.qqa_ffn_layers[0].net[3].bias[0] += 0.05  # one channel: a uniform shift would vanish in the LayerNorm
    report = tool.Report()
    tool.compare_case(dec, tool.case_files(fixture_dir)[0], report)
    assert not report.ok
