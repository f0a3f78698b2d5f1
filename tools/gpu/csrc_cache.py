#!/usr/bin/env python3
"""Keep the GPU machine's csrc build between device calls: pack the built extensions, reuse them.

Why: every cold device machine compiles ``bqnet_model._C`` and ``bqnet_model._C_cuda`` (csrc/ and
csrc/cuda/, about two and a half minutes of nvcc and g++) before anything runs, out of 30 device-minutes a
session. The machines are alike (same Python, torch, CUDA), so the build of one serves the next, as long
as the sources and the toolchain are the same. A stamp says what a build was made from: a hash of every
file under csrc/ and of setup.py, the Python and torch versions, torch's CUDA version and the target
architectures. ``unpack`` places the packed modules only when the stamp of the tree and machine it runs on
is the same; anything else (a changed kernel, another torch) means building again.

    python3 tools/gpu/csrc_cache.py stamp                  # print this tree's and machine's stamp
    python3 tools/gpu/csrc_cache.py pack OUT.tar.xz        # after a build: the modules (debug info stripped) + stamp
    python3 tools/gpu/csrc_cache.py unpack IN.tar.xz       # exit 0: placed; 3: stamp differs or the archive is unusable

``tools/device_build.sh`` runs ``unpack`` on ``.gpu/csrc_build.tar.xz`` first and ``pack`` after a build
(to /tmp/csrc_build.tar.xz, which the device scripts return so that it can be put into .gpu/).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULES = ("_C", "_C_cuda")
STAMP_NAME = "stamp.json"


def source_hash(root: Path = ROOT) -> str:
    """sha256 over the relative path and bytes of every file under csrc/, and setup.py."""
    h = hashlib.sha256()
    files = sorted(p for p in (root / "csrc").rglob("*") if p.is_file()) + [root / "setup.py"]
    for p in files:
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        h.update(p.read_bytes() + b"\0")
    return h.hexdigest()


def stamp(root: Path = ROOT) -> dict[str, str]:
    """What a build depends on: the sources and the toolchain of this machine."""
    import torch

    return {
        "sources": source_hash(root),
        "python": f"{sys.version_info[0]}.{sys.version_info[1]}",
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "arch": os.environ.get("TORCH_CUDA_ARCH_LIST", "9.0"),
    }


def built_modules(root: Path = ROOT) -> list[Path]:
    """The extension files of this interpreter in bqnet_model/ (``_C`` required, ``_C_cuda`` if built)."""
    import sysconfig

    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    return [root / "bqnet_model" / f"{m}{suffix}" for m in MODULES if (root / "bqnet_model" / f"{m}{suffix}").is_file()]


def pack(out: Path, root: Path = ROOT) -> int:
    mods = built_modules(root)
    if not any(m.name.startswith("_C.") for m in mods):
        print(f"[csrc-cache] no built bqnet_model._C under {root / 'bqnet_model'}: nothing to pack", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(out, "w:xz") as tar:
        for m in mods:
            dst = Path(tmp) / m.name
            shutil.copy2(m, dst)
            if shutil.which("strip"):  # debug info is most of the file; the code is the same
                subprocess.run(["strip", "--strip-debug", str(dst)], check=False)
            tar.add(dst, arcname=m.name)
        data = json.dumps(stamp(root), indent=1).encode()
        info = tarfile.TarInfo(STAMP_NAME)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    print(f"[csrc-cache] packed {', '.join(m.name for m in mods)} into {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def unpack(src: Path, root: Path = ROOT) -> int:
    if not src.is_file():
        print(f"[csrc-cache] no {src}: building", file=sys.stderr)
        return 3
    try:
        with tarfile.open(src, "r:xz") as tar:
            names = tar.getnames()
            f = tar.extractfile(STAMP_NAME) if STAMP_NAME in names else None
            packed = json.loads(f.read()) if f is not None else None
            here = stamp(root)
            if packed != here:
                diff = sorted(k for k in here if packed is None or packed.get(k) != here[k])
                print(f"[csrc-cache] {src} was built from other sources or for another toolchain ({', '.join(diff)}): "
                      "building", file=sys.stderr)
                return 3
            mods = [n for n in names if n != STAMP_NAME and "/" not in n and n.split(".")[0] in MODULES]
            if not any(n.startswith("_C.") for n in mods):
                print(f"[csrc-cache] {src} holds no bqnet_model._C: building", file=sys.stderr)
                return 3
            for n in mods:
                member = tar.extractfile(n)
                if member is None:
                    return 3
                (root / "bqnet_model" / n).write_bytes(member.read())
                os.chmod(root / "bqnet_model" / n, 0o755)
    except (tarfile.TarError, OSError, ValueError) as e:
        print(f"[csrc-cache] cannot read {src} ({e}): building", file=sys.stderr)
        return 3
    print(f"[csrc-cache] placed {', '.join(mods)} from {src} (same sources and toolchain)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("stamp")
    for name in ("pack", "unpack"):
        sub.add_parser(name).add_argument("archive", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "stamp":
        print(json.dumps(stamp(), indent=1))
        return 0
    return pack(args.archive) if args.cmd == "pack" else unpack(args.archive)


if __name__ == "__main__":
    sys.exit(main())
