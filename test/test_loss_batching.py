"""The batched matching and loss against the plain per-sentence code (``loss_reference``): on random
batches with several rooms, padding, repeated seeds, zero-target sentences and anchors, every
matched pair, every sampling target, every loss part and every gradient must be the same."""

from __future__ import annotations

import pytest
import torch

from bqnet_model.model.decoder import PAD_LOGIT, DecoderOutput, LayerPrediction
from bqnet_model.model.losses import TOKEN_MAP_KINDS, LossConfig, anchor_matching, bqnet_loss
from bqnet_model.model.matching import LossTargets, batch_objects, match_batch, sampling_targets, sentence_objects
from loss_reference import reference_loss, reference_match_batch, reference_sampling_targets


def _random_case(seed: int, T: int = 7, Q: int = 6, F: int = 9, L: int = 5, n_pred: int = 3,
                 empty: bool = False) -> tuple[DecoderOutput, LossTargets]:
    """T sentences over 3 rooms of different sizes (padding), each sentence naming 0-3 of its room's
    instances as targets (``empty``: none at all) and 0-2 others as anchors; seeds drawn with
    repeats, so that several queries sit on one superpoint (exact distance ties)."""
    g = torch.Generator().manual_seed(seed)
    sizes = [12, 20, 7]
    S = max(sizes)
    room_xyz = torch.rand(len(sizes), S, 3, generator=g) * 4
    room_inst = torch.randint(0, 5, (len(sizes), S), generator=g) * 3 + 2  # ids 2, 5, ..., 14: not dense
    scene = torch.randint(0, len(sizes), (T,), generator=g)
    scene[:3] = torch.tensor([0, 1, 2])
    n_real = torch.tensor(sizes)[scene]
    pad = torch.arange(S)[None] >= n_real[:, None]
    sp_inst = torch.full((T, S), -1, dtype=torch.long)
    sp_anchor = torch.full((T, S), -1, dtype=torch.long)
    for t in range(T):
        ids = room_inst[scene[t], : int(n_real[t])].unique()
        perm = ids[torch.randperm(ids.numel(), generator=g)]
        k = 0 if empty or t % 4 == 3 else int(torch.randint(1, 4, (1,), generator=g))
        a = int(torch.randint(0, 3, (1,), generator=g))
        inst = room_inst[scene[t]].clone()
        inst[int(n_real[t]):] = -1
        sp_inst[t] = torch.where(torch.isin(inst, perm[:k]), inst, -1)
        sp_anchor[t] = torch.where(torch.isin(inst, perm[k:k + a]), inst, -1)
    seeds = torch.stack([torch.randint(0, n, (F,), generator=g) for n in sizes])  # repeats on purpose
    seed_idx = seeds[scene]
    sample_idx = torch.stack([torch.randperm(F, generator=g)[:Q] for _ in range(T)])
    sp_xyz = room_xyz[scene] * (~pad).unsqueeze(-1)

    def leaf(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * scale).requires_grad_()

    layers = []
    for _ in range(n_pred):
        masks = torch.randn(T, Q, S, generator=g) * 2
        masks = masks.masked_fill(pad.unsqueeze(1), PAD_LOGIT).requires_grad_()
        pq = torch.nn.functional.normalize(torch.randn(T, Q, 4, generator=g), dim=-1).requires_grad_()
        pt = torch.nn.functional.normalize(torch.randn(T, L, 4, generator=g), dim=-1).requires_grad_()
        layers.append(LayerPrediction(masks, leaf(T, Q), leaf(T, Q, 2), pq, pt))
    word_pad = torch.arange(L)[None] >= torch.randint(3, L + 1, (T,), generator=g)[:, None]
    out = DecoderOutput(layers, seed_idx.gather(1, sample_idx), torch.zeros(T, Q, 3), sample_idx, seed_idx,
                        torch.rand(T, F, generator=g).mul(3).requires_grad_(), torch.zeros(T, F, 3), word_pad)
    out.sem_logits = leaf(len(sizes), S, 4)
    maps = {k: (torch.rand(T, L, generator=g) < 0.3).float() * ~word_pad for k in TOKEN_MAP_KINDS}
    sem = torch.randint(-1, 4, (len(sizes), S), generator=g)
    tg = LossTargets(sp_inst=sp_inst, sp_pad=pad, sp_xyz=sp_xyz, sp_ref=torch.rand(T, S, generator=g) * ~pad,
                     token_maps=maps, sem=sem, sp_anchor=sp_anchor)
    return out, tg


def _leaves(out: DecoderOutput) -> list[torch.Tensor]:
    ts = [out.seed_scores, out.sem_logits]
    for p in out.layers:
        ts += [p.masks, p.scores, p.indi, p.proj_queries, p.proj_tokens]
    return ts


@pytest.mark.parametrize("seed", range(6))
def test_batched_matching_equals_the_sentence_loop(seed):
    out, tg = _random_case(seed)
    ref, ref_objects = reference_match_batch(out.seed_idx, out.sample_idx, tg)
    m = match_batch(out.seed_idx, out.sample_idx, tg)
    assert m.num_insts == ref.num_insts > 0
    for name in ("t_idx", "q_idx", "k_idx", "targets", "matched"):
        assert torch.equal(getattr(m, name), getattr(ref, name)), name
    for t, objs in enumerate(ref_objects):
        got = m.objects.sentence(t)
        assert torch.equal(got.ids, objs.ids) and torch.equal(got.masks, objs.masks)
        assert torch.equal(got.centroids, objs.centroids)
    assert torch.equal(sampling_targets(out.seed_idx, tg, m.objects),
                       reference_sampling_targets(out.seed_idx, tg, ref_objects))
    # the anchors' matching goes through the same code
    a_ref, _ = reference_match_batch(out.seed_idx, out.sample_idx, LossTargets(**{**vars(tg), "sp_inst": tg.sp_anchor}))
    a = anchor_matching(out.seed_idx, out.sample_idx, tg, m)
    keep = ~ref.matched[a_ref.t_idx, a_ref.q_idx]
    assert torch.equal(a.t_idx, a_ref.t_idx[keep]) and torch.equal(a.q_idx, a_ref.q_idx[keep])


def test_batch_objects_of_sentences_without_targets():
    sp_inst = torch.full((3, 4), -1, dtype=torch.long)
    objs = batch_objects(sp_inst, torch.rand(3, 4, 3))
    assert objs.ids.numel() == 0 and objs.masks.shape == (0, 4) and objs.first.tolist() == [0, 0, 0]
    sp_inst[1, 2] = 0  # id 0 is an object like any other
    objs = batch_objects(sp_inst, torch.rand(3, 4, 3))
    assert objs.t_idx.tolist() == [1] and objs.ids.tolist() == [0] and objs.first.tolist() == [0, 0, 1]
    assert torch.equal(objs.sentence(1).masks, sentence_objects(sp_inst[1], torch.rand(4, 3)).masks)


@pytest.mark.parametrize("seed,empty,anchor", [(0, False, 0.0), (1, False, 0.7), (2, True, 0.0), (3, True, 1.0),
                                               (4, False, 0.3)])
def test_batched_loss_and_gradients_equal_the_reference(seed, empty, anchor):
    cfg = LossConfig(align=0.1, anchor_mask=anchor, sem=0.5)
    out, tg = _random_case(seed, empty=empty)
    total, parts = bqnet_loss(out, tg, cfg)
    grads = torch.autograd.grad(total, _leaves(out))
    ref_total, ref_parts = reference_loss(out, tg, cfg)
    ref_grads = torch.autograd.grad(ref_total, _leaves(out))
    assert parts.keys() == ref_parts.keys()
    for k in parts:
        torch.testing.assert_close(parts[k], ref_parts[k], rtol=1e-6, atol=1e-7, msg=k)
    torch.testing.assert_close(total, ref_total, rtol=1e-6, atol=1e-7)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def _room_batch(tmp_path):
    """A collated GRES batch of two grid rooms: multi-target, one-target, zero-target sentences and
    an anchor, as ``dataset.collate_fn`` gives it to the training step."""
    import json

    from bqnet_model.data.dataset import collate_fn
    from bqnet_model.model.config import load_config
    from bqnet_model.train import build_datasets
    from bqnet_synth import minimal_room
    from conftest import save_grid_room
    from tiny_model import write_train_config

    data = tmp_path / "data"
    data.mkdir()
    ann = []
    for k in range(2):
        sid = f"room{k:02d}"
        save_grid_room(data, sid, minimal_room(n_points=1500 + 500 * k, seed=k))
        ann += [{"scene_id": sid, "object_ids": [6, 9], "object_name": "chair", "ann_id": 0, "description": "the chairs",
                 "eval_type": "mt", "anchor_ids": [5]},
                {"scene_id": sid, "object_ids": [7], "object_name": "table", "ann_id": 1,
                 "description": "the white table", "eval_type": "st_wo_d"},
                {"scene_id": sid, "object_ids": [], "object_name": "sofa", "ann_id": 2, "description": "the sofa",
                 "eval_type": "zt_wo_d"}]
    (data / "multi3drefer_train.json").write_text(json.dumps(ann))
    cfg_path = write_train_config(tmp_path / "tiny.yaml", data, tmp_path / "run", inference={"task": "gres"},
                                  model={"loss": {"align": 0.0, "anchor_mask": 0.5, "anchor_ref": 0.8},
                                         "num_classes": 23}, train={"lang_per_scene": 3})
    cfg = load_config(cfg_path)
    ds, _ = build_datasets(cfg, data, train=True)
    return cfg, collate_fn([ds[0], ds[1]])


def test_model_loss_and_parameter_gradients_equal_the_reference(tmp_path):
    from bqnet_model.model.bqnet import BQNet
    from loss_reference import reference_sentence_targets

    torch.manual_seed(0)
    cfg, batch = _room_batch(tmp_path)
    assert len(batch["texts"]) == 6 and batch["batch_size"] == 2
    tg = BQNet.sentence_targets(batch)
    ref_tg = reference_sentence_targets(batch)
    for k, v in vars(ref_tg).items():
        assert (v is None and getattr(tg, k) is None) or torch.equal(getattr(tg, k), v), k
    model = BQNet(cfg.model)
    out = model(batch)
    params = [p for p in model.parameters() if p.requires_grad]
    total, parts = model.loss(out, batch)
    assert parts["num_insts"] > 0 and parts["anchor_insts"] > 0
    grads = torch.autograd.grad(total, params, retain_graph=True, allow_unused=True)
    ref_total, ref_parts = reference_loss(out, ref_tg, cfg.model.loss)
    ref_grads = torch.autograd.grad(ref_total, params, allow_unused=True)
    for k in ref_parts:
        torch.testing.assert_close(parts[k], ref_parts[k], rtol=1e-6, atol=1e-7, msg=k)
    n_checked = 0
    for p, got, want in zip(params, grads, ref_grads):
        assert (got is None) == (want is None)
        if got is not None:
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-8)
            n_checked += 1
    assert n_checked > len(params) // 2
