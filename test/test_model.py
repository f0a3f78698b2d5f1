"""Config loading, the text encoder and the whole BQNet model on a tiny scene."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from bqnet_synth import minimal_room
from bqnet_model.model.bqnet import BQNet, SceneFeatures
from bqnet_model.model.config import (
    Config,
    TrainConfig,
    config_from_dict,
    load_config,
)
from bqnet_model.model.heads import select_res
from bqnet_model.model.inputs import collate_scenes, scene_inputs, superpoint_targets
from bqnet_model.model.query_sampling import farthest_point_sample
from bqnet_model.model.text_encoder import TextEncoder, resolve_text_model
from tiny_model import tiny_config

ROOT = Path(__file__).resolve().parents[1]
TINY = {"model": tiny_config()["model"]}


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
                d.num_proposal, cfg.model.text.encoder) == (32, 5, 256, 6, 256, 128, "roberta-base")
        assert (d.num_proposal_fine, d.num_proposal_query, d.num_proposal_query_inst, d.image_channels,
                d.ffn_activation, d.cfr and d.psc and d.dqf) == (512, [128, 64, 32, 16, 8, 4], [128, 64, 32, 16, 8, 4],
                                                                  1024, "gelu", True)
        t = cfg.train
        assert (t.lr, t.weight_decay, t.lr_power, t.lr_mult_text, t.lr_mult_backbone, t.grad_clip, t.seed) == (
            1e-4, 5e-4, 4.0, 0.001, 0.01, 0.1, 1999)
    else:
        assert cfg.model.text.encoder == "minilm" and cfg.model.decoder.image_channels == 0


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
        long = enc(["chair " * 200])  # never truncated: 200 words + ". not mentioned" + [CLS]/[SEP]
        assert long.word_feats.shape[1] == 205 and long.prepared[0].model_input.endswith("chair . not mentioned")
        with pytest.raises(ValueError, match="never cut"):
            enc(["chair " * 600])  # past MiniLM's 512 positions: an error, not a cut
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


def test_text_encoder_reads_the_official_string_and_caches_by_raw_text(model: BQNet, monkeypatch) -> None:
    import bqnet_model.model.text_encoder as te
    from bqnet_model.text import positive_maps, prepare_text

    enc = model.text_encoder
    enc.clear_cache()
    calls = []

    def counting(text: str, *args, **kwargs):
        calls.append(text)
        return prepare_text(text, *args, **kwargs)

    monkeypatch.setattr(te, "prepare_text", counting)
    long = ("the tall narrow shelf in the far corner of the room next to the window behind the sofa and to the "
            "right of the tv stand with a lamp on top and some books on the middle shelf, not the short one by "
            "the door nor the white one near the desk, but the one whose left side touches the curtain. it is "
            "made of dark wood, has four shelves, and there is a small green plant on the floor right next to it.")
    texts = ["it is on the left.", long]
    f = enc(texts)
    assert [p.raw for p in f.prepared] == texts and calls == texts
    assert f.prepared[0].model_input == "This is an object . it is on the left . . not mentioned"
    ids = [enc.tokenizer(p.model_input)["input_ids"] for p in f.prepared]
    assert f.word_mask.sum(1).tolist() == [len(i) for i in ids] and len(ids[1]) > 78  # not cut at 78
    direct, _ = enc._encode([f.prepared[1].model_input])
    assert torch.allclose(f.word_feats[1, : len(ids[1])], direct[0], atol=1e-5)
    again = enc([long, "it is on the left."])
    assert calls == texts  # raw-text cache: no second parse
    assert again.prepared[0] is f.prepared[1]
    maps = positive_maps(enc.tokenizer, f.prepared, length=f.word_feats.shape[1])
    assert maps["target"].shape == f.word_mask.shape
    monkeypatch.setattr(enc, "cfg", dataclasses.replace(enc.cfg, max_tokens=20))
    monkeypatch.setattr(enc, "max_tokens", 20)
    with pytest.raises(ValueError, match="text.max_tokens"):
        enc(["the chair next to the desk by the window with the lamp on the table in the corner of the room"])
    with pytest.raises(ValueError, match="max_tokens"):
        load_config({"model": {"text": {"max_tokens": 2}}})


def test_text_encoder_builds_roberta_from_the_stored_config(tmp_path: Path, monkeypatch) -> None:
    from transformers import AutoConfig

    import bqnet_model.model.text_encoder as te
    from bqnet_model.text import positive_maps
    from test_text_prep import tiny_roberta_tokenizer

    stored = te.STORED_TEXT_CONFIGS["roberta-base"]
    full = AutoConfig.for_model(**stored)
    assert (full.vocab_size, full.hidden_size, full.num_hidden_layers, full.num_attention_heads) == (50265, 768, 12, 12)
    assert (full.intermediate_size, full.max_position_embeddings, full.type_vocab_size) == (3072, 514, 1)
    assert (full.layer_norm_eps, full.pad_token_id, full.bos_token_id, full.eos_token_id) == (1e-5, 1, 0, 2)
    assert te._position_limit(full) == 512
    with pytest.raises(OSError, match="text.tokenizer"):  # roberta-base's tokenizer files are not here
        TextEncoder(load_config({"model": {"text": {"encoder": "roberta-base"}}}).model.text, pretrained=False)
    with pytest.raises(FileNotFoundError, match="text.tokenizer"):
        TextEncoder(load_config({"model": {"text": {"encoder": "roberta-base", "tokenizer": str(tmp_path / "none")}}})
                    .model.text, pretrained=False)
    folder = tmp_path / "tok"
    tok = tiny_roberta_tokenizer(folder)  # vocab.json + merges.txt only, no tokenizer config
    tiny = dict(stored, vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=66)
    monkeypatch.setitem(te.STORED_TEXT_CONFIGS, "roberta-base", tiny)
    cfg = load_config({"model": {"text": {"encoder": "roberta-base", "tokenizer": str(folder)}}}).model.text
    enc = TextEncoder(cfg, pretrained=False)
    assert enc.hidden_size == 32 and enc.position_limit == 64 and enc.tokenizer.is_fast
    f = enc(["the chair, by the door.", "a chair"])
    ids = [enc.tokenizer(p.model_input)["input_ids"] for p in f.prepared]
    assert ids[1][0] == 0 and ids[1][-1] == 2  # <s> ... </s>
    assert f.word_mask.sum(1).tolist() == [len(i) for i in ids]
    maps = positive_maps(enc.tokenizer, f.prepared)
    words = enc.tokenizer.convert_ids_to_tokens(ids[1])
    assert words[maps["target"][1].nonzero().flatten().tolist()[0]] == "Ġchair"
    with pytest.raises(ValueError, match="never cut"):
        enc(["chair " * 70])


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
        # FPS runs in the mean-centred frame (the authors' kernel skips points near the origin)
        centred = BQNet.centred(sc.sp_xyz, sc.sp_sizes)
        mean = (centred.double() * sc.sp_sizes.unsqueeze(-1)).sum(1) / sc.sp_sizes.sum(1, keepdim=True)
        assert float(mean.abs().max()) < 1e-5
        assert torch.equal(sc.seed_idx, farthest_point_sample(centred, 32, sc.sp_pad))
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
    # The official score term only trains pairs with mask IoU > 0.5, which an untrained model has
    # none of: open it to every pair so that the score head is reached too.
    loss_cfg = model.cfg.loss
    model.cfg.loss = dataclasses.replace(loss_cfg, score_iou_min=0.0)
    try:
        loss, parts = model.loss(out, batch)
    finally:
        model.cfg.loss = loss_cfg
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
