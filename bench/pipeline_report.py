"""Printing and run metadata of ``bench/pipeline.py`` (its table rows, git commit, machine, versions)."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
PREP_STAGES = ("clean", "superpoints", "voxelize", "backbone", "pooling", "fps", "total")
QUERY_STAGES = ("text", "decoder", "post", "total")


def _fmt(v: Any) -> str:
    return f"{v:8.1f}" if isinstance(v, (int, float)) else f"{'-':>8}"


def report_prepare(name: str, r: dict[str, Any]) -> str:
    if "error" in r:
        return f"  prepare  {name:<30} FAILED: {r['error'].splitlines()[0]}"
    st = r["stages_ms"]
    cells = " ".join(_fmt(st.get(k)) for k in PREP_STAGES)
    mem = f" {r['peak_alloc_mib']:7.0f}" if "peak_alloc_mib" in r else ""
    table = f"  superpoint table: {r['sp_table']}" if "sp_table" in r else ""
    return f"  prepare  {name:<30} {cells}{mem}{table}"


def report_query(name: str, r: dict[str, Any], batch: int) -> str:
    if "error" in r:
        return f"  query    {name:<30} FAILED: {r['error'].splitlines()[0]}"
    if "skipped" in r:
        return f"  query    {name:<30} skipped ({r['skipped']})"
    st = r["stages_ms"]
    cells = " ".join(_fmt(st.get(k)) for k in QUERY_STAGES)
    mem = f" {r['peak_alloc_mib']:7.0f}" if "peak_alloc_mib" in r else ""
    if "peak_alloc_mib_1" in r:  # the map plus one sentence, apart from the batched calls
        mem += f" (1 sentence {r['peak_alloc_mib_1']:.0f}, x{batch} {r.get('peak_alloc_mib_batch', float('nan')):.0f})"
    g = r.get("graph", {})
    gtxt = f"  graph cap/replay/fail {g['captures']}/{g['replays']}/{g['failures']}" if g.get("captures") or g.get("failures") else ""
    if g.get("compiled") or g.get("compile_failures"):
        gtxt += f" compiled {g['compiled']}" + (f" (compile failed {g['compile_failures']})" if g.get("compile_failures") else "")
    if g.get("captures"):  # what the captures (and compiles) cost, apart from the timed calls
        gtxt += (f"  first call {r.get('first_call_ms', float('nan')) / 1e3:.1f} s / x{batch} "
                 f"{r.get('first_batch_call_ms', float('nan')) / 1e3:.1f} s, capture {g['capture_ms'] / 1e3:.1f} s")
    tg = r.get("text_graph", {})
    if tg.get("captures") or tg.get("failures"):
        gtxt += f"  text graph cap/replay/fail {tg['captures']}/{tg['replays']}/{tg['failures']}"
    return (f"  query    {name:<30} {cells} {r['sentences_per_s_1']:8.1f} {r['sentences_per_s_batch']:8.1f} "
            f"{r['repeated_sentence_ms']:8.1f}{mem}{gtxt}")


def header_lines(batch: int, cuda: bool) -> list[str]:
    mem = "  peakMiB" if cuda else ""
    return [
        "  prepare  variant (ms, median)           " + " ".join(f"{k[:8]:>8}" for k in PREP_STAGES) + mem,
        "  query    variant (ms, 1 sentence)       " + " ".join(f"{k:>8}" for k in QUERY_STAGES)
        + f" {'sent/s':>8} {f'x{batch}/s':>8} {'repeat':>8}" + mem,
    ]



def git_commit() -> dict[str, Any]:
    info: dict[str, Any] = {"commit": os.environ.get("BQNET_GIT_COMMIT", "unknown"), "dirty": None}
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                        timeout=10, check=True).stdout.strip()
        info["dirty"] = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                            capture_output=True, text=True, timeout=10).stdout.strip())
    except Exception:  # noqa: BLE001 - no git on the GPU machine's copy: keep what we have
        pass
    digest = hashlib.sha1()
    for p in sorted((ROOT / "bqnet_model").rglob("*.py")) + sorted((ROOT / "csrc").glob("*.cpp")):
        digest.update(p.read_bytes())
    info["source_sha1"] = digest.hexdigest()[:12]
    return info


def machine(dev: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out = {"host": platform.node(), "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None}
    if dev.type == "cuda":
        out["gpu_mem_mib"] = torch.cuda.get_device_properties(dev).total_memory / 2**20
    return out


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": str(torch.version.cuda),
           "numpy": np.__version__}
    try:
        import spconv

        out["spconv"] = getattr(spconv, "__version__", "?")
    except Exception as exc:  # noqa: BLE001
        out["spconv"] = f"unavailable ({exc})"
    try:
        import transformers

        out["transformers"] = transformers.__version__
    except Exception:  # noqa: BLE001
        pass
    return out
