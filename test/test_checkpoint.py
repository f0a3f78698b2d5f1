"""Our checkpoint format (strict), and official-style files through the one loader (load_model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bqnet_model.checkpoint import (
    FORMAT,
    LoadReport,
    checkpoint_state,
    export_weights,
    load_backbone,
    load_checkpoint,
    load_model,
    load_official,
    load_state_dict_into,
    read_checkpoint,
    save_checkpoint,
    with_weights,
)
from bqnet_synth import minimal_room
from bqnet_model.model.bqnet import BQNet
from bqnet_model.model.config import load_config
from bqnet_model.model.inputs import collate_scenes, scene_inputs
from bqnet_model.pipeline import Segmenter
from conftest import load_tool

TINY = {
    "model": {
        "backbone": {"media": 8, "levels": 3},
        "decoder": {"d_model": 32, "nhead": 2, "ffn": 64, "num_layers": 2, "fps_num": 32, "num_proposal": 16,
                    "num_proposal_fine": 64},
    },
    "inference": {"task": "gres"},
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(seed: int) -> tuple[BQNet, object]:
    cfg = load_config(TINY)
    torch.manual_seed(seed)
    model = BQNet(cfg.model).eval()
    cfg.model = model.cfg
    return model, cfg


@pytest.fixture(scope="module")
def batch():
    room = minimal_room(2000, seed=3)
    sp = np.unique(np.floor(room.xyz / 0.4).astype(np.int64), axis=0, return_inverse=True)[1].ravel()
    return collate_scenes([scene_inputs(room.xyz, room.rgb, sp, 0.02)], ["the red chair", "the table"])


@pytest.fixture(scope="module")
def trained():
    """A model whose BN statistics and weights differ from a fresh one."""
    model, cfg = _model(7)
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.add_(0.01)
        for m in model.backbone.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.fill_(0.1)
    return model, cfg


def _outputs(model: BQNet, batch) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(batch).final.masks


def test_round_trip_gives_identical_outputs(tmp_path: Path, trained, batch) -> None:
    model, cfg = trained
    path = save_checkpoint(tmp_path / "m.pth", model, cfg, meta={"note": "test", "step": 3})
    obj = torch.load(path, weights_only=True)
    assert obj["format"] == FORMAT and obj["meta"]["note"] == "test" and obj["meta"]["text_channels"] == 384
    assert not any(k.startswith("text_encoder.") for k in obj["state_dict"])  # frozen encoder not stored
    loaded, cfg2, meta = load_checkpoint(path)
    assert cfg2 == cfg and cfg2.inference.task == "gres" and meta["step"] == 3
    assert torch.equal(_outputs(loaded, batch), _outputs(model, batch))
    fresh, _ = _model(99)
    load_state_dict_into(fresh, path)
    assert torch.equal(_outputs(fresh, batch), _outputs(model, batch))
    m3, c3 = load_model(path)
    assert c3 == cfg and torch.equal(_outputs(m3, batch), _outputs(model, batch))


def test_export_of_a_training_checkpoint_drops_the_training_state(tmp_path: Path, trained, batch,
                                                                  monkeypatch) -> None:
    model, cfg = trained
    opt = torch.optim.AdamW(model.decoder.parameters(), lr=1e-3)
    src = save_checkpoint(tmp_path / "latest.pth", model, cfg, meta={"step": 5},
                          extra={"optimizer": opt.state_dict(), "step": 5})
    # the export must not build the model (on the GPU machine that may need spaCy)
    monkeypatch.setattr(BQNet, "__init__", lambda *a, **k: (_ for _ in ()).throw(AssertionError("model built")))
    out = export_weights(src, tmp_path / "out" / "m.pth")
    monkeypatch.undo()
    stored = torch.load(out, weights_only=True)
    assert set(stored) == {"format", "config", "state_dict", "meta"} and stored["meta"]["step"] == 5
    loaded, cfg2, _ = load_checkpoint(out)
    assert cfg2 == cfg and torch.equal(_outputs(loaded, batch), _outputs(model, batch))
    torch.save({"weights": 1}, tmp_path / "foreign.pth")
    with pytest.raises(ValueError):
        export_weights(tmp_path / "foreign.pth", tmp_path / "x.pth")


def test_half_copy_for_the_device_loads_close_to_the_original(tmp_path: Path, trained, batch) -> None:
    tool = load_tool("half_checkpoint")
    model, cfg = trained
    src = save_checkpoint(tmp_path / "m.pth", model, cfg, meta={"step": 3})
    assert tool.main([str(src), str(tmp_path / "half.pth")]) == 0
    stored = torch.load(tmp_path / "half.pth", weights_only=True)
    floats = [v for v in stored["state_dict"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    assert stored["meta"]["step"] == 3 and stored["meta"]["half_copy_of"] == str(src)
    half, cfg2, _ = load_checkpoint(tmp_path / "half.pth")
    assert cfg2 == cfg and next(half.parameters()).dtype == torch.float32
    assert torch.allclose(_outputs(half, batch), _outputs(model, batch), atol=2e-2)
    assert tool.main([str(tmp_path / "missing.pth"), str(tmp_path / "x.pth")]) == 2


def test_wrong_key_or_shape_is_refused_with_the_list(tmp_path: Path, trained) -> None:
    model, cfg = trained
    path = save_checkpoint(tmp_path / "m.pth", model, cfg)
    obj = torch.load(path, weights_only=True)
    sd = obj["state_dict"]
    sd["decoder.lang_proj.weightx"] = sd.pop("decoder.lang_proj.weight")
    sd["decoder.out_score.0.bias"] = torch.zeros(5)
    sd["backbone.extra_thing"] = torch.zeros(1)
    torch.save(obj, tmp_path / "bad.pth")
    with pytest.raises(ValueError) as err:
        load_checkpoint(tmp_path / "bad.pth")
    msg = str(err.value)
    for needle in ("decoder.lang_proj.weight", "decoder.lang_proj.weightx", "backbone.extra_thing",
                   "decoder.out_score.0.bias: (5,) -> (32,)", "1 missing", "2 unexpected", "1 shape mismatches"):
        assert needle in msg, needle
    # A config that builds a different model than the weights: refused too.
    obj2 = torch.load(path, weights_only=True)
    obj2["config"]["model"]["decoder"]["d_model"] = 64
    torch.save(obj2, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="shape mismatches"):
        load_checkpoint(tmp_path / "other.pth")


def test_unsafe_or_foreign_files_are_refused(tmp_path: Path, trained) -> None:
    model, cfg = trained
    torch.save({"format": FORMAT, "config": cfg.to_dict(), "state_dict": {}, "meta": {"x": np.arange(3)}},
               tmp_path / "pickled.pth")
    with pytest.raises(ValueError, match="weights-only"):
        read_checkpoint(tmp_path / "pickled.pth")
    torch.save({"net": checkpoint_state(model)}, tmp_path / "official.pth")
    with pytest.raises(ValueError, match="not a bqnet_ros/1 checkpoint"):
        load_checkpoint(tmp_path / "official.pth")
    with pytest.raises(ValueError, match="carries no config"):
        load_model(tmp_path / "official.pth")
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "missing.pth")
    with pytest.raises(TypeError, match=r"extra\['rng'\]"):
        save_checkpoint(tmp_path / "x.pth", model, cfg, extra={"rng": np.zeros(3)})
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "x.pth", model, cfg, extra={"config": {}})


def _official_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our names -> IPDN's (the inverse of the checkpoint mapper), DataParallel-prefixed."""
    out = {}
    for k, v in sd.items():
        if k.startswith("backbone."):
            k = k[len("backbone."):]
        elif k.startswith("decoder."):
            k = "dec." + k[len("decoder."):]
        elif k.startswith("text_encoder.model."):
            k = "text_encoder." + k[len("text_encoder.model."):]
        out["module." + k] = v.clone()
    return out


def test_official_checkpoint_maps_and_reports(tmp_path: Path, trained, batch) -> None:
    model, _ = trained
    official = _official_names(model.state_dict())  # includes the full text encoder, as IPDN's files
    official["module.dec.swa_layers.0.norm.weight"] = torch.ones(32)  # IPDN's unused norms
    official["module.criterion.empty_weight"] = torch.ones(2)
    official["module.dec.lang_proj.bias"] = torch.zeros(7)  # wrong shape
    path = tmp_path / "ipdn.pth"
    torch.save({"net": official, "epoch": 70}, path)

    fresh, cfg = _model(5)
    with pytest.raises(ValueError, match="nothing loaded"):  # strict by default
        load_official(fresh, path)
    report = load_official(fresh, path, strict=False)
    assert isinstance(report, LoadReport) and not report.ok
    assert report.unexpected == ["criterion.empty_weight", "dec.swa_layers.0.norm.weight"]
    assert report.shape_mismatch == [("decoder.lang_proj.bias", (7,), (32,))]
    assert report.missing == []
    text = str(report)
    assert "criterion.empty_weight" in text and "decoder.lang_proj.bias: (7,) -> (32,)" in text
    for k, v in fresh.state_dict().items():
        if k != "decoder.lang_proj.bias":
            assert torch.equal(v, model.state_dict()[k]), k
    # with the bias fixed, the outputs equal the original model's
    official["module.dec.lang_proj.bias"] = model.state_dict()["decoder.lang_proj.bias"].clone()
    torch.save(official, tmp_path / "bare.pth")  # a bare state dict works too
    with pytest.raises(ValueError, match="criterion.empty_weight"):  # strict: leftovers are refused too
        load_model(tmp_path / "bare.pth", config=cfg)
    for k in ("module.dec.swa_layers.0.norm.weight", "module.criterion.empty_weight"):
        del official[k]
    torch.save(official, tmp_path / "bare.pth")
    m2, stored = load_model(tmp_path / "bare.pth", config=cfg)
    assert stored is cfg
    assert torch.equal(_outputs(m2, batch), _outputs(model, batch))
    seg = Segmenter.from_checkpoint(tmp_path / "bare.pth", config=TINY, mask_threshold=0.3)
    assert seg.inference.mask_threshold == 0.3 and seg.cfg.model.decoder.text_channels == 384
    assert torch.equal(_outputs(seg.model, batch), _outputs(model, batch))

    # missing decoder weights: reported, and refused by load_model (they would stay random)
    del official["module.dec.out_norm.weight"]
    torch.save({"net": official}, tmp_path / "partial.pth")
    rep = load_official(_model(6)[0], tmp_path / "partial.pth", strict=False)
    assert rep.missing == ["decoder.out_norm.weight"]
    with pytest.raises(ValueError, match="decoder.out_norm.weight"):
        load_model(tmp_path / "partial.pth", config=cfg)


def test_spformer_backbone_only(tmp_path: Path, trained) -> None:
    model, _ = trained
    sd = {k[len("backbone."):]: v.clone() for k, v in model.state_dict().items() if k.startswith("backbone.")}
    sd["decoder.query"] = torch.zeros(3)  # SPFormer's own decoder: not ours
    torch.save({"net": sd}, tmp_path / "sp_unet_backbone.pth")
    fresh, _ = _model(11)
    dec_before = {k: v.clone() for k, v in fresh.decoder.state_dict().items()}
    report = load_backbone(fresh, tmp_path / "sp_unet_backbone.pth")
    assert report.missing == [] and report.shape_mismatch == [] and report.unexpected == ["decoder.query"]
    assert len(report.loaded) == len(fresh.backbone.state_dict())
    for k, v in fresh.backbone.state_dict().items():
        assert torch.equal(v, model.backbone.state_dict()[k])
    for k, v in fresh.decoder.state_dict().items():
        assert torch.equal(v, dec_before[k])
    # a backbone file lacking a level is reported as missing
    del sd["unet.u.blocks.block0.conv_branch.2.weight"]
    torch.save(sd, tmp_path / "partial.pth")
    rep = load_backbone(_model(12)[0], tmp_path / "partial.pth")
    assert rep.missing == ["backbone.unet.u.blocks.block0.conv_branch.2.weight"]
    assert "missing" in str(rep)


def test_with_weights_replaces_only_the_named_tensors(tmp_path: Path, trained) -> None:
    """A refitted part goes into a copy: the named tensors change (dtype kept), nothing else does;
    an unknown key or a wrong shape is refused before anything is written."""
    model, cfg = trained
    src = save_checkpoint(tmp_path / "a.pth", model, cfg)
    before = read_checkpoint(src)["state_dict"]
    key = next(k for k in before if before[k].is_floating_point())
    dst = with_weights(src, tmp_path / "b.pth", {key: torch.ones_like(before[key], dtype=torch.float64)},
                       {"refit": "test"})
    after = read_checkpoint(dst)
    assert torch.equal(after["state_dict"][key], torch.ones_like(before[key]))
    assert after["state_dict"][key].dtype == before[key].dtype and after["meta"]["refit"] == "test"
    assert all(torch.equal(after["state_dict"][k], v) for k, v in before.items() if k != key)
    with pytest.raises(KeyError, match="no weight"):
        with_weights(src, tmp_path / "c.pth", {"no.such.weight": torch.zeros(1)}, {})
    with pytest.raises(ValueError, match="new shape"):
        with_weights(src, tmp_path / "c.pth", {key: torch.zeros(*before[key].shape, 2)}, {})
    assert not (tmp_path / "c.pth").exists()
