"""Loss targets built in the loader's workers (``train.data.train_collate``, ``model.targets``) against
the targets built in the step (``BQNet.sentence_targets`` from ``collate_fn``'s per-sentence lists):
same batch, same weights, the same tables, loss parts and every gradient, bit for bit (CPU)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from bqnet_model.data.dataset import collate_fn
from bqnet_model.model.backbone import OffsetPadding
from bqnet_model.model.bqnet import BQNet
from bqnet_model.model.config import load_config
from bqnet_model.model.matching import batch_objects, object_keys
from bqnet_model.model.targets import PADDING_KEY, TABLES_KEY, build_tables, loss_targets
from bqnet_model.train import EpochSampler, build_datasets
from bqnet_model.train.data import PER_SENTENCE_KEYS, make_loader, train_collate
from tiny_model import _TRAIN, _merged

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(root, **loss):
    d = _merged(_TRAIN, {"model": {"num_classes": 23, "loss": {"anchor_ref": 0.7, "anchor_mask": 0.5, **loss}},
                         "inference": {"task": "gres"},
                         "train": {"data_root": str(root), "lang_per_scene": 6, "max_points_train": 3000}})
    return load_config(copy.deepcopy(d))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from bqnet_synth.dataset import generate_dataset

    root = tmp_path_factory.mktemp("targets")
    generate_dataset(root, 3, seed=1, split_name="train")
    cfg = _cfg(root)
    ds, _ = build_datasets(cfg, root, train=True)
    samples = [ds[i] for i in range(3)]
    return root, cfg, ds, samples


def _step(cfg, batch):
    """Loss parts and gradients of one forward + backward of a freshly seeded model."""
    torch.manual_seed(0)
    model = BQNet(cfg.model)
    model.train()
    out = model(batch)
    loss, parts = model.loss(out, batch)
    loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), {k: v.detach() for k, v in parts.items()}, grads


def test_the_batch_has_what_the_loss_needs(data):
    _, _, _, samples = data
    old, new = collate_fn(samples), train_collate(samples)
    T = len(old["texts"])
    assert T > 6 and len(old["gt_sp_anchor"]) == T  # several rooms, anchors present
    assert any(int(m.max()) < 0 for m in old["gt_sp_inst"])  # a zero-target sentence (GRES)
    counts = (old["sp_offsets"][1:] - old["sp_offsets"][:-1]).tolist()
    assert len(set(counts)) > 1  # rooms of different superpoint counts: real padding
    for k in PER_SENTENCE_KEYS:
        assert old[k] is not None and new[k] is None
    assert new["texts"] == old["texts"] and torch.equal(new["text_scene"], old["text_scene"])

    def n_tensors(x):
        if isinstance(x, torch.Tensor):
            return 1
        if isinstance(x, dict):
            return sum(n_tensors(v) for v in x.values())
        if isinstance(x, (list, tuple)):
            return sum(n_tensors(v) for v in x)
        return 0

    assert n_tensors(old) >= 5 * T
    assert n_tensors(new) <= 30  # whatever the number of sentences


def test_tables_equal_the_targets_built_in_the_step(data):
    _, _, _, samples = data
    batch = collate_fn(samples)
    ref = BQNet.sentence_targets(batch)
    tables = build_tables(batch)
    got = loss_targets(tables, batch["text_scene"], "cpu")
    assert torch.equal(got.sem_labelled, torch.nonzero(ref.sem.reshape(-1) >= 0).flatten())
    assert got.sem_max == int(ref.sem.max())
    for f in ("sp_inst", "sp_pad", "sp_xyz", "sp_ref", "sem", "sp_anchor"):
        a, b = getattr(ref, f), getattr(got, f)
        assert a.dtype == b.dtype and torch.equal(a, b), f
    for sp_inst, keys in ((ref.sp_inst, got.objects), (ref.sp_anchor, got.anchor_objects)):
        found = batch_objects(sp_inst, ref.sp_xyz)
        given = batch_objects(sp_inst, ref.sp_xyz, keys)
        for f in ("t_idx", "ids", "masks", "centroids", "first"):
            assert torch.equal(getattr(found, f), getattr(given, f)), f
    pads = OffsetPadding(batch["sp_offsets"], "cpu")
    pre = train_collate(samples)[PADDING_KEY]
    given = OffsetPadding.from_indices(pre["scene"], pre["local"], pre["pad"], "cpu")
    rows = torch.randn(int(batch["sp_offsets"][-1]), 4)
    assert torch.equal(pads(rows), given(rows)) and torch.equal(pads.pad, given.pad)


def test_object_keys_edge_cases():
    none = object_keys(torch.full((3, 5), -1))
    assert none.t_idx.numel() == 0 and torch.equal(none.first, torch.zeros(3, dtype=torch.long))
    sp_inst = torch.tensor([[4, 4, -1, 2], [-1, -1, -1, -1], [0, 7, 7, 0]])
    k = object_keys(sp_inst)
    assert k.t_idx.tolist() == [0, 0, 2, 2] and k.ids.tolist() == [2, 4, 0, 7] and k.first.tolist() == [0, 2, 2]
    xyz = torch.randn(3, 4, 3)
    a, b = batch_objects(sp_inst, xyz), batch_objects(sp_inst, xyz, k)
    assert all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("t_idx", "ids", "masks", "centroids", "first"))


@pytest.mark.parametrize("loss", [{}, {"sem_balance": 0.5, "anchor_mask": 0.0}])
def test_loss_and_every_gradient_are_bit_identical(data, loss):
    root, _, _, samples = data
    cfg = _cfg(root, **loss)
    l_old, p_old, g_old = _step(cfg, collate_fn(samples))
    l_new, p_new, g_new = _step(cfg, train_collate(samples))
    assert torch.equal(l_old, l_new) and float(l_old) > 0
    assert p_old.keys() == p_new.keys() and ("anchor_mask" in p_old) == (cfg.model.loss.anchor_mask > 0)
    for k in p_old:
        assert torch.equal(p_old[k], p_new[k]), k
    assert g_old.keys() == g_new.keys() and len(g_old) > 20
    assert any(k.startswith("backbone.") for k in g_old) and any(k.startswith("sem_cls_head.") for k in g_old)
    for k in g_old:
        assert torch.equal(g_old[k], g_new[k]), k


def test_loader_builds_the_tables_in_its_worker(data, monkeypatch):
    """A worker process builds the tables (they reach the step through the loader's pickling);
    ``BQNET_TARGETS_IN_STEP=1`` keeps the per-sentence lists."""
    _, _, ds, _ = data
    ds.set_epoch(0)
    sampler = EpochSampler(len(ds), shuffle=False)
    batch = next(iter(make_loader(ds, sampler, 3, 1, torch.device("cpu"))))
    ref = collate_fn([ds[i] for i in range(3)])
    assert batch["gt_sp_inst"] is None
    want = build_tables(ref)
    assert want.keys() == batch[TABLES_KEY].keys()
    for k, v in want.items():
        got = batch[TABLES_KEY][k]
        assert (torch.equal(v, got) if isinstance(v, torch.Tensor) else v == got), k
    monkeypatch.setenv("BQNET_TARGETS_IN_STEP", "1")
    step_batch = next(iter(make_loader(ds, sampler, 3, 0, torch.device("cpu"))))
    assert TABLES_KEY not in step_batch and len(step_batch["gt_sp_inst"]) == len(ref["texts"])


def test_tables_refuse_a_batch_without_targets(data):
    _, _, _, samples = data
    batch = collate_fn(samples)
    with pytest.raises(ValueError, match="gt_sp_masks"):
        build_tables({**batch, "gt_sp_masks": None})
    bad = dataclasses.replace(samples[0])
    bad.gt_sp_inst = [m[:-1] for m in bad.gt_sp_inst]
    with pytest.raises(ValueError, match="gt_sp_inst rows"):
        build_tables(collate_fn([bad]))


def test_a_training_step_is_the_same_on_both_paths(data):
    """``train_step`` (loss, clipping, AdamW) from the two batches: the same returned figures and
    the same weights after the step."""
    from bqnet_model.train import train_step

    root, _, _, samples = data
    cfg = _cfg(root)
    results, weights = [], []
    for batch in (collate_fn(samples), train_collate(samples)):
        torch.manual_seed(0)
        model = BQNet(cfg.model)
        opt = torch.optim.AdamW(model.param_groups(cfg.train), lr=1e-3)
        results.append(train_step(model, model, batch, opt, None, cfg, torch.device("cpu"), False, torch.float16))
        weights.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    assert results[0] == results[1] and {"loss", "grad_norm", "sem", "anchor_mask"} <= results[0].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.parametrize("balance", [0.0, 0.5])
def test_semantic_loss_with_host_indices_is_the_same(balance):
    from bqnet_model.model.losses import semantic_loss

    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 7, 5, generator=g)
    tgt = torch.randint(-1, 5, (2, 7), generator=g)
    lab = torch.nonzero(tgt.reshape(-1) >= 0).flatten()
    want = semantic_loss(logits, tgt, balance)
    assert torch.equal(semantic_loss(logits, tgt, balance, labelled=lab, max_label=int(tgt.max())), want)
    none = torch.full((2, 7), -1)
    z = semantic_loss(logits.requires_grad_(), none, balance, labelled=torch.zeros(0, dtype=torch.long), max_label=-1)
    assert float(z.detach()) == 0.0 and z.requires_grad
    with pytest.raises(ValueError, match="out of range"):
        semantic_loss(logits, tgt, balance, labelled=lab, max_label=5)


def test_read_back_gives_the_floats_of_float():
    from bqnet_model.train.loop import _read_back

    vals = {"a": torch.tensor(0.1), "b": torch.tensor(1 / 3, dtype=torch.float64), "c": torch.tensor([2.5]),
            "d": 4.0, "e": torch.tensor(7)}
    got = _read_back(vals)
    assert list(got) == list(vals) and got == {k: float(v) for k, v in vals.items()}


def test_a_scene_without_superpoints_is_refused_on_the_host(data):
    """``pool_scene`` checks the offsets on the host (the FPS then skips its pad read-backs)."""
    root, cfg, _, samples = data
    batch = collate_fn(samples[:2])
    off = batch["sp_offsets"]
    batch["sp_offsets"] = torch.cat([off[:1], off])  # scene 0 has no superpoints
    model = BQNet(cfg.model)
    with pytest.raises(ValueError, match="at least one superpoint"):
        model.pool_scene(torch.zeros(int(batch["coords"].shape[0]), model.backbone.out_channels), batch)
