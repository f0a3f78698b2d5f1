"""Shared pytest fixtures.

``one_torch_thread``: torch on one thread for the test (tiny problems on the shared 2-core
machine run faster on one thread than on two contended ones); used by the model tests through
``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.

ROS-specific (used by test_node.py and test_msgs.py):

``ros_domain_id``: one random ROS_DOMAIN_ID per test session, so parallel sessions on one
machine do not hear each other; discovery is kept on this host.
``ros_context_factory``: fresh rclpy contexts on that domain (with optional ROS arguments such as
``--params-file``), shut down after the test.

Helpers: ``save_grid_room`` (imported by test_train.py and test_loaders.py) writes a synthetic room
as a per-scene npz, as the data sets store scenes; ``load_tool`` imports a script of ``tools/``
(they are programs, not a package) so a test can call its functions or its ``main``;
``nvcc_compile`` compile-checks one ``csrc/cuda`` file with setup.py's device flags (skips without nvcc).
"""

from __future__ import annotations

import importlib.util
import os
import random
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest


# setup.py's nvcc flags for the _C_cuda sources (IEEE float arithmetic on the device), sm_90 = H200.
NVCC_FLAGS = ["-std=c++17", "-arch=sm_90", "--extended-lambda", "--expt-relaxed-constexpr", "-fmad=false",
              "--prec-div=true", "--prec-sqrt=true"]


def nvcc_compile(source: Path, out: Path, *extra: str) -> "subprocess.CompletedProcess[str]":
    """Compile ``source`` (a .cu of csrc/cuda) to ``out`` with ``NVCC_FLAGS`` plus ``extra``; skips the
    test when no CUDA toolkit is found, since then the device file cannot be checked at all."""
    import shutil
    import subprocess

    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)
    if nvcc is None:
        pytest.skip(f"nvcc not found (no CUDA toolkit on this machine): {source.name} cannot be compile-checked")
    root = Path(__file__).resolve().parents[1]
    cmd = [nvcc, *NVCC_FLAGS, *extra, "-I", str(root / "csrc"), "-I", str(root / "csrc" / "cuda"), "-c", str(source),
           "-o", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def ros_domain_id() -> int:
    """A random domain in 1..100 for this session; exported for subprocesses too."""
    domain = random.SystemRandom().randint(1, 100)
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.pop("ROS_LOCALHOST_ONLY", None)  # deprecated; would conflict with the range above
    return domain


@pytest.fixture
def ros_context_factory(ros_domain_id: int) -> Iterator[Callable[..., object]]:
    """``make(ros_args=None)`` -> an initialised ``rclpy.context.Context`` on the session domain."""
    import rclpy
    from rclpy.context import Context

    made: list[Context] = []

    def make(ros_args: Sequence[str] | None = None) -> Context:
        ctx = Context()
        args = ["pytest"] + (["--ros-args", *ros_args] if ros_args else [])
        rclpy.init(args=args, context=ctx, domain_id=ros_domain_id)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        rclpy.try_shutdown(context=ctx)


def save_grid_room(root: Path, sid: str, room: Any) -> np.ndarray:
    """Save a ``SyntheticScene`` as ``root/<sid>.npz`` with cheap superpoints (0.6 m grid cells split
    by instance, so no superpoint spans two objects); returns the object names (index = object id)."""
    from bqnet_model.data.scannet import ScanNetScene, save_scene_npz

    cell = np.floor(room.xyz / 0.6).astype(np.int64)
    key = room.instance.astype(np.int64) * 10**6 + cell[:, 0] * 10**4 + cell[:, 1] * 100 + cell[:, 2]
    sp = np.unique(key, return_inverse=True)[1].reshape(-1)
    names = np.array([o.name for o in room.objects])
    save_scene_npz(root / f"{sid}.npz", ScanNetScene(sid, room.xyz, room.rgb, sp, room.semantic.astype(np.int64),
                                                     room.instance.astype(np.int64), names))
    return names


def load_tool(name: str) -> types.ModuleType:
    """``tools/<name>.py`` as a fresh module, registered under ``name`` in ``sys.modules`` while it
    runs (dataclasses defined in a script look their module up there)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
