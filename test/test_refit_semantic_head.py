"""``tools/refit_semantic_head.py`` on a tiny random model: features from the inference path, the
loss weights, a deterministic refit that changes only ``sem_cls_head.*`` and fits its training maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bqnet_model.model.config import load_config
from bqnet_model.pipeline import Segmenter
from bqnet_model.text.named_objects import OTHER_CLASS
from bqnet_synth import minimal_room
from conftest import load_tool
from tiny_model import tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = tiny_config(num_classes=OTHER_CLASS + 1)


@pytest.fixture(scope="module")
def tool():
    return load_tool("refit_semantic_head")


@pytest.fixture(scope="module")
def files(tmp_path_factory, tool) -> tuple[Path, Path]:
    """A tiny checkpoint and the features of three small rooms, the last one marked real."""
    from bqnet_model.checkpoint import save_checkpoint

    tmp = tmp_path_factory.mktemp("refit")
    rooms = tmp / "rooms"
    rooms.mkdir()
    for seed in range(3):
        r = minimal_room(2500, seed=seed)
        sem = r.semantic.astype(np.int64)
        sem[::50] = -1  # unlabelled points must not count
        np.savez(rooms / f"room_{seed}.npz", xyz=r.xyz, rgb=r.rgb, semantic=sem)
    seg = Segmenter.from_config(TINY, device="cpu", seed=0)
    ckpt = save_checkpoint(tmp / "m.pth", seg.model, load_config(TINY))
    feats = tmp / "f.npz"
    assert tool.main(["features", "--checkpoint", str(ckpt), "--synth-dir", str(rooms), "--out", str(feats)]) == 0
    z = dict(np.load(feats))
    z["map_real"] = np.array([0, 0, 1])
    np.savez(feats, **z)
    return ckpt, feats


def test_features_are_the_heads_inputs(files, tool) -> None:
    ckpt, feats = files
    z = np.load(feats)
    seg = Segmenter.from_checkpoint(ckpt)
    r = minimal_room(2500, seed=0)
    cache = seg.prepare(r.xyz, r.rgb)
    rows = z["map"] == 0
    np.testing.assert_allclose(z["feats"][rows], cache.scene.sp_feats[0].numpy(), rtol=1e-5, atol=1e-6)
    head = tool.head_from_state(seg.model.state_dict())
    assert np.array_equal(tool.predict(head, z["feats"][rows]), cache.sp_class)
    # every labelled point that cleaning kept, once, in its superpoint's row
    kept = cache.point_index
    assert 0 < len(kept) <= 2500
    assert z["hist"][rows].sum() == int((kept % 50 != 0).sum())
    np.testing.assert_array_equal(z["hist"][rows].sum(1) <= np.bincount(cache.point_superpoint), True)


def test_weights_balance_classes_and_domains(tool) -> None:
    hist = np.array([[90, 0], [0, 10], [5, 5]], np.float32)
    real = np.array([False, False, True])
    w = tool.sample_weights(hist, real, 0.25)
    assert w[real].sum() == pytest.approx(0.25) and w[~real].sum() == pytest.approx(0.75)
    # count^-0.5 per class in the synthetic rows: 90 points of class 0 weigh 3x 10 points of class 1
    assert w[0, 0] / w[1, 1] == pytest.approx(90 / 90 ** 0.5 / (10 / 10 ** 0.5))


def test_refit_changes_only_the_head(files, tool, tmp_path: Path, capsys) -> None:
    from bqnet_model.checkpoint import read_checkpoint

    ckpt, feats = files
    outs = [tmp_path / f"r{i}.pth" for i in range(2)]
    for out in outs:
        assert tool.main(["fit", "--checkpoint", str(ckpt), "--features", str(feats), "--real-share", "0.2", "0.5",
                          "--steps", "150", "--lr", "0.01", "--write", str(out)]) == 0
    text = capsys.readouterr().out
    assert "leave-one-scan-out, real share 0.2" in text and "leave-one-scan-out, real share 0.5" in text
    a, b, c = (read_checkpoint(p) for p in (ckpt, *outs))
    assert a["config"] == b["config"] and a["state_dict"].keys() == b["state_dict"].keys()
    head = [k for k in a["state_dict"] if k.startswith("sem_cls_head.")]
    assert len(head) == 4
    for k, v in a["state_dict"].items():
        assert torch.equal(b["state_dict"][k], c["state_dict"][k]), f"{k} differs between two identical runs"
        assert torch.equal(v, b["state_dict"][k]) != (k in head), f"{k}: changed only when it is the head"
    assert "refitted on frozen features" in b["meta"]["semantic_head"]
    # the refitted head fits its training maps better than the random one
    data = tool.load_features([feats])
    acc = [tool.accuracy(tool.predict(tool.head_from_state(x["state_dict"]), data["feats"]), data["hist"])["points"]
           for x in (a, b)]
    assert acc[1] > acc[0] + 0.2
    Segmenter.from_checkpoint(outs[0])  # loads strictly


def test_no_head_is_refused(tool) -> None:
    with pytest.raises(ValueError, match="no semantic head"):
        tool.head_from_state({"other.weight": torch.zeros(1)})
