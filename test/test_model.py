"""Config loading, the text encoder and the whole BQNet model on a tiny scene."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from bqnet_model.data.synthetic import minimal_room
from bqnet_model.model.bqnet import BQNet, SceneFeatures
from bqnet_model.model.config import (
    Config,
    TrainConfig,
    config_from_dict,
    load_config,
)
from bqnet_model.model.heads import select_res
from bqnet_model.model.inputs import collate_scenes, scene_inputs, superpoint_targets
from bqnet_model.model.text_encoder import TextEncoder, resolve_text_model

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "model": {
        "backbone": {"media": 8, "levels": 3},
        "decoder": {"d_model": 32, "nhead": 2, "ffn": 64, "num_layers": 2, "fps_num": 32, "num_proposal": 16},
    }
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def oracle_superpoints(room, cell: float = 0.4) -> np.ndarray:
    """Pure superpoints (instance x grid cell), so that IoU limits come from the model only."""
    key = np.concatenate([room.instance[:, None], np.floor(room.xyz / cell).astype(np.int64)], axis=1)
    return np.unique(key, axis=0, return_inverse=True)[1].ravel()


@pytest.fixture(scope="module")
def room():
    return minimal_room(3000, seed=0)


@pytest.fixture(scope="module")
def scene(room):
    return scene_inputs(room.xyz, room.rgb, oracle_superpoints(room), 0.02)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return BQNet(load_config(TINY).model)


def _batch(room, scene):
    targets = [room.instance == k for k in (6, 5, 8)]
    return collate_scenes(
        [scene, scene], ["the red chair", "the brown desk", "the blue cabinet"], [0, 1, 1],
        gt_sp_masks=[superpoint_targets(scene.superpoints, t) for t in targets],
    )


# ---------------------------------------------------------------------- config
@pytest.mark.parametrize("name", ["res", "gres", "tiny"])
def test_shipped_configs_load_and_round_trip(name: str) -> None:
    cfg = load_config(ROOT / "config" / f"{name}.yaml")
    assert isinstance(cfg, Config)
    assert cfg.inference.task == ("gres" if name == "gres" else "res")
    assert config_from_dict(cfg.to_dict()) == cfg
    if name != "tiny":
        d = cfg.model.decoder
        assert (cfg.model.backbone.media, cfg.model.backbone.levels, d.d_model, d.num_layers, d.fps_num,
                d.num_proposal, cfg.model.text.encoder) == (32, 5, 256, 6, 512, 128, "roberta-base")
        t = cfg.train
        assert (t.lr, t.weight_decay, t.lr_power, t.lr_mult_text, t.lr_mult_backbone, t.grad_clip, t.seed) == (
            1e-4, 5e-4, 4.0, 0.001, 0.01, 0.1, 1999)
    else:
        assert cfg.model.text.encoder == "minilm"


def test_config_refuses_unknown_keys_and_wrong_types(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"model\.decoder.*unknown key\(s\) \['n_layers'\]"):
        load_config({"model": {"decoder": {"n_layers": 3}}})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['modle'\]"):
        load_config({"modle": {}})
    with pytest.raises(TypeError, match=r"model\.backbone\.media: expected an integer"):
        load_config({"model": {"backbone": {"media": "32"}}})
    with pytest.raises(ValueError, match=r"inference\.task"):
        load_config({"inference": {"task": "detect"}})
    with pytest.raises(ValueError, match="mask_threshold"):
        load_config({"inference": {"mask_threshold": 1.5}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: 1e-4\n  epoch: 3\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*train.*\['epoch'\]"):
        load_config(bad)
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "none.yaml")
    # YAML reads 1e-4 (no dot) as a string; floats accept it.
    assert load_config({"train": {"lr": "1e-4"}}).train.lr == pytest.approx(1e-4)


# ---------------------------------------------------------------------- text encoder
def test_text_encoder_minilm_offline_cached_and_frozen(model: BQNet) -> None:
    assert Path(resolve_text_model("minilm"), "config.json").is_file()
    enc = model.text_encoder
    assert enc.hidden_size == 384 and enc.frozen
    assert not any(p.requires_grad for p in enc.parameters())
    enc.clear_cache()
    calls = []
    hook = enc.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        f1 = enc(["the red chair next to the desk", "a lamp"])
        assert f1.word_feats.shape[0] == 2 and f1.word_feats.shape[2] == 384
        assert f1.word_mask.dtype == torch.bool
        assert f1.word_mask.sum(1).tolist()[0] > f1.word_mask.sum(1).tolist()[1]
        f2 = enc(["a lamp", "the red chair next to the desk", "a lamp"])
        assert len(calls) == 1  # all three from the cache
        assert torch.allclose(f2.word_feats[1], f1.word_feats[0], atol=1e-6)
        assert torch.equal(f2.word_mask[0], f2.word_mask[2])
        assert enc.cache_hits == 3
        long = enc(["chair " * 200])
        assert long.word_feats.shape[1] == 78  # max_tokens
        model.train()
        assert not enc.model.training  # frozen encoder stays in eval mode
        model.eval()
    finally:
        hook.remove()
    with pytest.raises(ValueError, match="empty"):
        enc(["the chair", "  "])
    with pytest.raises(ValueError, match="empty"):
        enc([])
    with pytest.raises(TypeError):
        enc([3])


def test_text_encoder_unavailable_offline_is_a_clear_error() -> None:
    cfg = load_config({"model": {"text": {"encoder": "no-such-org/no-such-encoder"}}}).model.text
    with pytest.raises(OSError, match="allow_download"):
        TextEncoder(cfg)


# ---------------------------------------------------------------------- model
def test_shapes_and_dtypes_through_every_stage(model: BQNet, room, scene) -> None:
    model.eval()
    batch = _batch(room, scene)
    S = scene.n_superpoints
    with torch.no_grad():
        timings: dict[str, float] = {}
        sc = model.encode_scene(batch, timings)
        assert isinstance(sc, SceneFeatures) and set(timings) == {"backbone", "pooling", "fps"}
        assert sc.sp_feats.shape == (2, S, 8) and sc.sp_feats.dtype == torch.float32
        assert sc.sp_xyz.shape == (2, S, 3) and sc.sp_pad.shape == (2, S) and not sc.sp_pad.any()
        assert sc.seed_idx.shape == (2, 32) and sc.seed_idx.dtype == torch.long
        assert sc.sp_sizes.sum(1).tolist() == [scene.n_points] * 2
        # superpoint centre = mean of its points
        sp0 = scene.superpoints == 0
        assert torch.allclose(sc.sp_xyz[0, 0], torch.from_numpy(scene.xyz[sp0].mean(0)), atol=1e-5)
        text = model.encode_text(batch["texts"])
        assert text.word_feats.shape[:1] == (3,) and text.word_feats.shape[2] == 384
        out = model.decode(sc, text, batch["text_scene"])
        assert len(out.layers) == 3  # before layer 1 + 2 layers
        fin = out.final
        assert fin.masks.shape == (3, 16, S) and fin.scores.shape == (3, 16) and fin.indi.shape == (3, 16, 2)
        assert all(torch.isfinite(p.masks).all() for p in out.layers)
        again = model(batch)
        assert torch.allclose(again.final.masks, fin.masks, atol=1e-5)
    with pytest.raises(ValueError, match="no texts"):
        model({**batch, "texts": []})
    with pytest.raises(KeyError, match="collate_scenes"):
        model.encode_scene({"feats": batch["feats"]})


def test_gradients_reach_every_trainable_parameter(model: BQNet, room, scene) -> None:
    model.train()
    model.zero_grad(set_to_none=True)
    batch = _batch(room, scene)
    out = model(batch)
    loss, parts = model.loss(out, batch)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith(("backbone.", "decoder.")) for n, _ in trainable)
    lacking = [n for n, p in trainable if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert lacking == []
    assert all(p.grad is None for p in model.text_encoder.parameters())
    model.zero_grad(set_to_none=True)
    model.eval()


def test_param_groups_multipliers_exclude_frozen_text(model: BQNet) -> None:
    tc = TrainConfig()
    groups = {g["name"]: g for g in model.param_groups(tc)}
    assert set(groups) == {"backbone", "decoder"}
    assert groups["backbone"]["lr"] == pytest.approx(1e-6) and groups["decoder"]["lr"] == pytest.approx(1e-4)
    n_groups = sum(len(g["params"]) for g in groups.values())
    assert n_groups == sum(1 for p in model.parameters() if p.requires_grad)
    torch.optim.AdamW(model.param_groups(tc), lr=tc.lr, weight_decay=tc.weight_decay)


def test_rel_pos_has_its_own_lr_group() -> None:
    """decoder.rel_pos's parameters go to their own group (lr_mult_rel_pos, default: the decoder's),
    and to no other group."""
    cfg = load_config(TINY, ["model.decoder.rel_pos=true", "model.decoder.rel_pos_text=true"])
    net = BQNet(cfg.model)
    for mult, want in ((None, cfg.train.lr * cfg.train.lr_mult_decoder), (20.0, cfg.train.lr * 20.0)):
        tc = dataclasses.replace(cfg.train, lr_mult_rel_pos=mult)
        groups = {g["name"]: g for g in net.param_groups(tc)}
        assert groups["rel_pos"]["lr"] == pytest.approx(want)
        rel = {id(p) for p in net.decoder.rel_pos.parameters()}
        assert {id(p) for p in groups["rel_pos"]["params"]} == rel
        assert not rel & {id(p) for n, g in groups.items() if n != "rel_pos" for p in g["params"]}
        assert sum(len(g["params"]) for g in groups.values()) == sum(1 for p in net.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="lr_mult_rel_pos"):
        dataclasses.replace(cfg.train, lr_mult_rel_pos=0.0)


def test_decoder_channels_are_resolved_from_backbone_and_text(model: BQNet) -> None:
    assert model.cfg.decoder.in_channels == 8 and model.cfg.decoder.text_channels == 384
    assert dataclasses.asdict(model.decoder.cfg) == dataclasses.asdict(model.cfg.decoder)


def test_overfit_one_scene_one_sentence(room, scene) -> None:
    """The whole loss/mask path learns: one scene, one sentence, mask IoU >= 0.8 on CPU."""
    torch.manual_seed(1999)
    net = BQNet(load_config(TINY).model)
    target = room.instance == 6  # the red chair
    batch = collate_scenes([scene], ["the red chair next to the desk"], [0],
                           gt_sp_masks=[superpoint_targets(scene.superpoints, target)])
    opt = torch.optim.AdamW([p for g in net.param_groups(TrainConfig()) for p in g["params"]], lr=3e-3, weight_decay=0.0)
    iou = 0.0
    for step in range(150):
        net.train()
        opt.zero_grad()
        loss, _ = net.loss(net(batch), batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        if step % 10 == 9:
            net.eval()
            with torch.no_grad():
                prob = select_res(net(batch).final).sp_prob[0]
            pred = (prob >= 0.5).numpy()[scene.superpoints]
            iou = float((pred & target).sum() / max((pred | target).sum(), 1))
            if iou >= 0.9:
                break
    assert iou >= 0.8, f"IoU {iou:.3f} after {step + 1} steps"
