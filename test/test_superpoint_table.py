"""The superpoint -> point table built where the GPU port's labels are equals the numpy one."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import bqnet_model.superpoints as superpoints_mod
from bqnet_model.pipeline.superpoint_table import superpoint_table, table_on_device
from bqnet_model.superpoint_params import SuperpointParams
from bqnet_synth import minimal_room


def _cloud(n: int = 6000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    room = minimal_room(n_points=n, seed=seed)
    return np.ascontiguousarray(room.xyz, np.float32), np.ascontiguousarray(room.rgb, np.uint8)


def _numpy_table(xyz: np.ndarray, rgb: np.ndarray):
    return superpoint_table(xyz, rgb, None, np.arange(len(xyz)), SuperpointParams(), num_threads=1)


def test_device_table_equals_the_numpy_table() -> None:
    xyz, rgb = _cloud()
    ref = _numpy_table(xyz, rgb)
    built = table_on_device(torch.from_numpy(ref.labels), torch.from_numpy(xyz))
    assert built is not None
    labels, n_sp, order, start, (sums, mins, maxs) = built
    assert n_sp == ref.n_superpoints and labels.dtype == np.int64
    np.testing.assert_array_equal(labels, ref.labels)
    np.testing.assert_array_equal(order, ref.order)
    np.testing.assert_array_equal(start, ref.start)
    np.testing.assert_array_equal(mins, ref.geometry[1])
    np.testing.assert_array_equal(maxs, ref.geometry[2])
    np.testing.assert_allclose(sums, ref.geometry[0], rtol=1e-12, atol=1e-9)
    again = table_on_device(torch.from_numpy(ref.labels), torch.from_numpy(xyz))
    assert all(np.array_equal(a, b) for a, b in zip(again[4], built[4]))  # deterministic


def test_labels_that_are_not_dense_go_back_to_the_numpy_path() -> None:
    xyz = np.random.default_rng(0).random((10, 3)).astype(np.float32)
    assert table_on_device(torch.tensor([0, 0, 2, 2, 3, 3, 3, 0, 2, 3]), torch.from_numpy(xyz)) is None
    assert table_on_device(torch.tensor([-1, 0, 0, 1, 1, 1, 0, 0, 1, 1]), torch.from_numpy(xyz)) is None


def test_superpoint_table_builds_from_tensor_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tensor coming back from the oversegmentation (what the GPU port returns) takes the device
    path, and the table is the one the numpy path makes from the same labels."""
    xyz, rgb = _cloud(4000, seed=1)
    ref = _numpy_table(xyz, rgb)
    real = superpoints_mod.oversegment_detailed
    calls = []

    def as_tensor(*args, **kwargs):
        res = real(*args, **kwargs)
        calls.append(1)
        return dataclasses.replace(res, labels=torch.from_numpy(res.labels))

    monkeypatch.setattr(superpoints_mod, "oversegment_detailed", as_tensor)
    import bqnet_model.pipeline.superpoint_table as st

    monkeypatch.setattr(st, "table_on_device", lambda *a: (calls.append("device"), table_on_device(*a))[1])
    got = superpoint_table(xyz, rgb, None, np.arange(len(xyz)), SuperpointParams(), num_threads=1)
    assert calls == [1, "device"]
    np.testing.assert_array_equal(got.labels, ref.labels)
    np.testing.assert_array_equal(got.order, ref.order)
    np.testing.assert_array_equal(got.start, ref.start)
    np.testing.assert_allclose(got.geometry[0], ref.geometry[0], rtol=1e-12, atol=1e-9)
    assert got.spacing == ref.spacing
