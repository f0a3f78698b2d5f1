"""Auxiliary superpoint semantic head and loss (``model.num_classes`` > 0, ``loss.sem``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bqnet_model.data.dataset import ReferDataset, collate_fn
from bqnet_model.data.referit import Annotation
from bqnet_model.data.scannet import OTHER_CLASS, ScanNetScene, save_scene_npz
from bqnet_synth import CLASSES, minimal_room
from bqnet_model.model.bqnet import BQNet
from bqnet_model.model.config import load_config
from bqnet_model.model.inputs import collate_scenes, scene_inputs, superpoint_semantic, superpoint_targets
from bqnet_model.model.losses import semantic_loss
from bqnet_model.superpoints import oversegment

K = len(CLASSES) + 1
TINY = {
    "model": {
        "backbone": {"media": 8, "levels": 2, "block_reps": 1},
        "decoder": {"d_model": 32, "nhead": 2, "ffn": 64, "num_layers": 1, "fps_num": 32, "num_proposal": 8},
    }
}


def _cfg(num_classes: int):
    d = {"model": {**TINY["model"], "num_classes": num_classes}}
    return load_config(d).model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def room():
    return minimal_room(3000, seed=0)


@pytest.fixture(scope="module")
def room_sp(room):
    return np.asarray(oversegment(room.xyz, room.rgb), dtype=np.int64)


@pytest.fixture(scope="module")
def batch(room, room_sp):
    inp = scene_inputs(room.xyz, room.rgb, room_sp, 0.02)
    sem = superpoint_semantic(inp.superpoints, room.semantic.astype(np.int64))
    gt = [superpoint_targets(inp.superpoints, room.instance == 6)]
    return collate_scenes([inp], ["the red chair"], [0], gt, None, None, sp_semantic=[sem])


def test_config_defaults_and_yaml():
    assert K == OTHER_CLASS + 1 == 23
    for p in ("config/tiny.yaml", "config/tiny_ablation.yaml"):
        c = load_config(p)
        assert c.model.num_classes == K and c.model.loss.sem == 1.0
    for p in ("config/res.yaml", "config/gres.yaml"):
        assert load_config(p).model.num_classes == 0
    with pytest.raises(ValueError):
        _cfg(-1)


def test_head_exists_only_when_enabled():
    off = BQNet(_cfg(0))
    assert off.sem_cls_head is None
    assert not any(k.startswith("sem_cls_head") for k in off.state_dict())
    assert all(g["name"] != "sem_cls_head" for g in off.param_groups(load_config({}).train))
    on = BQNet(_cfg(K))
    keys = [k for k in on.state_dict() if k.startswith("sem_cls_head")]
    assert keys and on.sem_cls_head[-1].out_features == K
    assert on.sem_cls_head[0].in_features == on.backbone.out_channels
    assert any(g["name"] == "sem_cls_head" for g in on.param_groups(load_config({}).train))


def test_checkpoint_roundtrip_strict(tmp_path):
    from bqnet_model.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    cfg = load_config({"model": {**TINY["model"], "num_classes": K}})
    m = BQNet(cfg.model)
    p = tmp_path / "m.pth"
    save_checkpoint(p, m, cfg)
    m2, cfg2, _ = load_checkpoint(p)
    assert cfg2.model.num_classes == K
    assert torch.equal(m2.sem_cls_head[0].weight, m.sem_cls_head[0].weight)


def test_semantic_loss_hand_case():
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.5, 0.1, 0.3], [9.0, 9.0, 9.0]],
                           [[0.0, 1.0, 0.0], [7.0, -7.0, 3.0], [1.0, 1.0, 1.0]]])
    tgt = torch.tensor([[0, 2, -1], [1, -1, -1]])  # -1: unlabelled or padding
    want = (-F.log_softmax(logits[0, 0], 0)[0] - F.log_softmax(logits[0, 1], 0)[2]
            - F.log_softmax(logits[1, 0], 0)[1]) / 3
    got = semantic_loss(logits, tgt)
    assert torch.isfinite(got) and torch.allclose(got, want)
    # ignored entries do not matter
    logits2 = logits.clone()
    logits2[0, 2] = 1e4
    logits2[1, 1:] = -1e4
    assert torch.allclose(semantic_loss(logits2, tgt), want)
    # all ignored: finite zero, still in the graph
    z = semantic_loss(logits.requires_grad_(), torch.full((2, 3), -1))
    assert float(z.detach()) == 0.0
    z.backward()


def test_semantic_loss_class_balance():
    # three superpoints of class 0 (well predicted), one of class 1 (badly predicted)
    logits = torch.tensor([[[3.0, 0.0], [3.0, 0.0], [3.0, 0.0], [3.0, 0.0]]])
    tgt = torch.tensor([[0, 0, 0, 1]])
    nll = -F.log_softmax(logits[0], dim=1)
    plain = (3 * nll[0, 0] + nll[3, 1]) / 4
    assert torch.allclose(semantic_loss(logits, tgt, balance=0.0), plain)
    assert torch.allclose(semantic_loss(logits, tgt), plain)  # the default is plain cross-entropy
    # balance 1: each present class weighs 1 / its count, so both classes count the same
    assert torch.allclose(semantic_loss(logits, tgt, balance=1.0), (nll[0, 0] + nll[3, 1]) / 2)
    w0, w1 = 3.0 ** -0.5, 1.0
    want = (3 * w0 * nll[0, 0] + w1 * nll[3, 1]) / (3 * w0 + w1)
    assert torch.allclose(semantic_loss(logits, tgt, balance=0.5), want)
    assert float(semantic_loss(logits, tgt, balance=0.5)) > float(plain)  # the rare miss counts more
    with pytest.raises(ValueError, match="balance"):
        semantic_loss(logits, tgt, balance=1.5)
    from bqnet_model.model.losses import LossConfig
    assert LossConfig(sem_balance=0.5).sem_balance == 0.5
    with pytest.raises(ValueError, match="sem_balance"):
        LossConfig(sem_balance=-0.1)


def test_semantic_targets_padding():
    b = {"sp_offsets": torch.tensor([0, 2, 5]), "sp_semantic": torch.tensor([3, -1, 0, 1, 2])}
    t = BQNet.semantic_targets(b)
    assert t.tolist() == [[3, -1, -1], [0, 1, 2]]
    assert BQNet.semantic_targets({"sp_offsets": torch.tensor([0, 2])}) is None


def test_superpoint_semantic_majority():
    sp = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    sem = np.array([4, 4, 1, -1, -1, -1, 2, 2, 5, 0])
    assert superpoint_semantic(sp, sem).tolist() == [4, -1, 2, 0]


def test_loss_wiring_and_gradient_reaches_backbone(batch):
    torch.manual_seed(0)
    m = BQNet(_cfg(K))
    out = m(batch)
    assert out.sem_logits is not None and out.sem_logits.shape[-1] == K
    loss, parts = m.loss(out, batch)
    assert "sem" in parts and torch.isfinite(loss)
    # without sp_semantic there is no sem term; the model without head has none either
    _, p2 = m.loss(out, {**batch, "sp_semantic": None})
    assert "sem" not in p2
    off = BQNet(_cfg(0))
    o2 = off(batch)
    assert o2.sem_logits is None and "sem" not in off.loss(o2, batch)[1]
    # the sem loss alone drives the backbone
    m.zero_grad()
    sem_t = m.semantic_targets(batch)
    semantic_loss(out.sem_logits, sem_t).backward()
    g = [p.grad for p in m.backbone.parameters() if p.grad is not None]
    assert g and sum(float(x.abs().sum()) for x in g) > 0
    assert all(p.grad is None for p in m.decoder.parameters())


def test_sem_loss_decreases(batch):
    torch.manual_seed(0)
    m = BQNet(_cfg(K))
    m.train()
    opt = torch.optim.Adam([p for n, p in m.named_parameters()
                            if n.startswith(("backbone.", "sem_cls_head."))], lr=1e-2)
    tgt = m.semantic_targets(batch)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        scene = m.encode_scene(batch)
        loss = semantic_loss(m.semantic_logits(scene), tgt)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0] and min(losses[-5:]) < min(losses[:5]), losses


def test_dataset_batch_has_sp_semantic(tmp_path):
    room = minimal_room(1500, seed=1)
    n = room.xyz.shape[0]
    sp = (np.arange(n) % 7).astype(np.int64)  # 7 superpoints interleaved over the room
    sem = np.full(n, 3, np.int64)
    sem[sp == 0] = 5                   # superpoint 0: all class 5
    sem[(sp == 1) & (np.arange(n) % 2 == 0)] = -1   # superpoint 1: half unlabelled, rest 3
    sem[sp == 2] = -1                  # superpoint 2: no label
    idx2 = np.flatnonzero(sp == 3)
    sem[idx2[: len(idx2) // 3]] = 8    # superpoint 3: a third 8, two thirds 3
    names = np.array([o.name for o in room.objects])
    save_scene_npz(tmp_path / "r.npz", ScanNetScene("r", room.xyz, room.rgb, sp, sem, room.instance.astype(np.int64), names))
    anns = [Annotation("r", [6], str(names[6]), "0", "the chair", eval_type="unique")]
    ds = ReferDataset(tmp_path, anns, "val", "res")
    b = collate_fn([ds[0], ds[0]])
    s = b["sp_semantic"]
    assert s.dtype == torch.long and s.shape == (int(b["sp_offsets"][-1]),) == (14,)
    assert s[:7].tolist() == [5, 3, -1, 3, 3, 3, 3] == s[7:].tolist()
