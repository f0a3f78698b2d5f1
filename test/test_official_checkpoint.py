"""The authors' checkpoint files: read safely, mapped by the fixed prefix rule, loaded strictly.

Uses ``../shared/fixtures/cfnet`` (a fake file in the official layout, the official key lists of
the paper-size model) when it is beside the checkout, and files the tests write themselves.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from bqnet_model.checkpoint import load_model
from bqnet_model.official_checkpoint import (
    DROPPED_KEYS,
    config_from_official,
    describe_official,
    load_official,
    map_official_keys,
    official_name,
    read_official_checkpoint,
    read_official_file,
)
from conftest import load_tool

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "cfnet"
needs_fixtures = pytest.mark.skipif(not (FIXTURES / "fake_official_checkpoint.pth").is_file(),
                                    reason=f"official fixtures not found at {FIXTURES} (a user's clone has no shared/)")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _gorilla_like(path: Path, model: dict[str, torch.Tensor], best=np.float32(0.5)) -> Path:
    """A file in the authors' layout: numpy scalar in meta, optimizer and scheduler dicts."""
    torch.save({"meta": {"epoch": 3, "best_miou": best, "time": "Tue Jul 15 10:21:07 2025"},
                "model": model, "optimizer": {"state": {}, "param_groups": []},
                "scheduler": {"last_epoch": 3}}, path)
    return path


class _Evil:
    def __reduce__(self):  # would run code on a plain pickle load
        return (print, ("pwned",))


def test_reader_allows_the_numpy_scalar_and_nothing_else(tmp_path: Path) -> None:
    good = _gorilla_like(tmp_path / "good.pth", {"dec.x_mask.0.weight": torch.ones(2, 2)})
    with pytest.raises(Exception):  # the plain weights-only load refuses the numpy scalar
        torch.load(good, weights_only=True)
    obj = read_official_file(good)
    assert float(obj["meta"]["best_miou"]) == 0.5 and set(obj) == {"meta", "model", "optimizer", "scheduler"}
    assert "epoch 3" in describe_official(obj) and "dec 1" in describe_official(obj)
    torch.save({"model": {"a": torch.ones(1)}, "meta": {"hook": _Evil()}}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="refused"):
        read_official_file(tmp_path / "evil.pth")
    with pytest.raises(FileNotFoundError):
        read_official_file(tmp_path / "missing.pth")
    (tmp_path / "text.pth").write_text("not a torch file")
    with pytest.raises(ValueError, match="cannot read"):
        read_official_file(tmp_path / "text.pth")
    with open(tmp_path / "list.pth", "wb") as f:
        pickle.dump([1, 2], f)
    with pytest.raises(ValueError):
        read_official_file(tmp_path / "list.pth")


def test_prefix_rule_and_dropped_entries() -> None:
    sd = {"input_conv.0.weight": torch.zeros(1), "unet.blocks.x": torch.zeros(1), "output_layer.0.bias": torch.zeros(1),
          "dec.qia_layers.0.attn.in_proj_weight": torch.zeros(1), "text_encoder.pooler.dense.bias": torch.zeros(1),
          "criterion.loss_weight": torch.zeros(8), "text_encoder.embeddings.position_ids": torch.arange(5)[None],
          "text_encoder.embeddings.token_type_ids": torch.zeros(1, 5, dtype=torch.long), "something.else": torch.zeros(1)}
    mapped, dropped, unknown = map_official_keys(sd)
    assert sorted(mapped) == ["backbone.input_conv.0.weight", "backbone.output_layer.0.bias", "backbone.unet.blocks.x",
                              "decoder.qia_layers.0.attn.in_proj_weight", "text_encoder.model.pooler.dense.bias"]
    assert sorted(dropped) == sorted(DROPPED_KEYS) and unknown == ["something.else"]
    assert all(official_name(k) in sd for k in mapped)


def _official_small_config(tmp_path: Path):
    """Our config for the fixtures' small official model, with the fake file's tiny RoBERTa as a
    folder (config.json + a hand-made byte-level BPE tokenizer of at most its 64 tokens)."""
    from transformers import RobertaTokenizerFast

    spec = json.loads((FIXTURES / "dec_small_config.json").read_text())
    folder = tmp_path / "tiny_roberta"
    folder.mkdir()
    te = dict(spec["fake_checkpoint"]["text_encoder_config"], model_type="roberta")
    (folder / "config.json").write_text(json.dumps(te))
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    chars = list("abcdefghijklmnopqrstuvwxyz.,") + ["Ġ"]
    merges = [("Ġ", "t"), ("Ġt", "h"), ("Ġth", "e"), ("Ġ", "c"), ("Ġc", "h")]
    vocab = {t: i for i, t in enumerate(specials + chars + ["".join(m) for m in merges])}
    assert len(vocab) <= te["vocab_size"]
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
    RobertaTokenizerFast(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt")).save_pretrained(folder)
    return config_from_official(spec["model_cfg_res"], text_encoder=str(folder)), spec


@needs_fixtures
def test_fake_official_file_loads_strictly_and_runs(tmp_path: Path, caplog) -> None:
    from safetensors.torch import load_file

    cfg, _ = _official_small_config(tmp_path)
    with caplog.at_level("INFO", logger="bqnet_model.checkpoint"):
        model, got_cfg = load_model(FIXTURES / "fake_official_checkpoint.pth", config=cfg)
    assert got_cfg is cfg and "0 missing, 0 unexpected, 0 shape mismatches" in caplog.text
    assert "criterion.loss_weight" in caplog.text  # the dropped non-model entries are named
    dec = load_file(FIXTURES / "dec_small.safetensors")
    sd = model.decoder.state_dict()
    assert set(sd) == set(dec) and all(torch.equal(sd[k], dec[k]) for k in dec)
    official = read_official_checkpoint(FIXTURES / "fake_official_checkpoint.pth")
    ours = model.state_dict()
    for k, v in official.items():
        if k not in DROPPED_KEYS:
            mapped = map_official_keys({k: v})[0]
            (name, value), = mapped.items()
            assert torch.equal(ours[name], value), k
    # the decoder of the loaded network gives the authors' outputs of fixture case A. (The fake
    # file's text encoder is 16-d while the official DEC hard-codes 768-d words, so the file itself
    # cannot run end to end: the decoder is fed the fixture's 768-d word features.)
    from safetensors.torch import load_file as load_st

    case = load_st(FIXTURES / "dec_small_io.safetensors")
    tool = load_tool("check_official")
    model.decoder.eval()
    with torch.no_grad():
        out = model.decoder(**tool.case_inputs(case), keep_all_layers=True)
    pad = out.final.masks <= -1e3
    assert torch.allclose(out.final.masks.masked_fill(pad, 0), case["out.masks"], atol=1e-4, rtol=1e-4)
    assert torch.allclose(out.final.indi, case["out.indis"], atol=1e-4, rtol=1e-4)
    assert torch.equal(out.sample_idx, case["out.sample_inds"].long())


@needs_fixtures
def test_a_mismatching_file_is_refused_with_the_report(tmp_path: Path) -> None:
    cfg, _ = _official_small_config(tmp_path)
    sd = read_official_checkpoint(FIXTURES / "fake_official_checkpoint.pth")
    del sd["dec.norm_qqa.weight"]
    sd["dec.extra.weight"] = torch.zeros(1)
    sd["dec.sum_norm.bias"] = torch.zeros(3)
    path = _gorilla_like(tmp_path / "bad.pth", sd)
    with pytest.raises(ValueError, match="nothing loaded") as err:
        load_model(path, config=cfg)
    text = str(err.value)
    assert "decoder.norm_qqa.weight" in text and "dec.extra.weight" in text and "decoder.sum_norm.bias" in text
    with pytest.raises(ValueError, match="carries no config"):
        load_model(FIXTURES / "fake_official_checkpoint.pth")


@needs_fixtures
@pytest.mark.parametrize("tsv", ["official_keys_res.tsv", "official_keys_gres.tsv"])
def test_paper_size_model_matches_the_official_key_lists(tsv: str) -> None:
    """Every entry of the official paper-size model maps onto ours with its shape, and nothing is left
    over (built on the meta device: no memory for 161 M parameters)."""
    from bqnet_model.model.bqnet import BQNet
    from bqnet_model.model.config import load_config

    rows = [line.split("\t") for line in (FIXTURES / tsv).read_text().splitlines()[1:] if line.strip()]
    official = {k: torch.empty(json.loads(shape), device="meta") for k, shape, *_ in rows}
    cfg = load_config(Path(__file__).resolve().parents[1] / "config" / ("res.yaml" if "res" in tsv else "gres.yaml"))
    cfg.model.text.encoder = "roberta-base"
    import bqnet_model.model.text_encoder as te

    with torch.device("meta"):
        text = te._load_model(cfg.model.text, "roberta-base", pretrained=False)
    mapped, dropped, unknown = map_official_keys(official)
    assert unknown == [] and sorted(dropped) == sorted(DROPPED_KEYS)
    with torch.device("meta"):
        decoder_and_backbone = BQNet.__new__(BQNet)
        torch.nn.Module.__init__(decoder_and_backbone)
        from bqnet_model.model.backbone import SparseUNetBackbone
        from bqnet_model.model.decoder import BQNetDecoder
        import dataclasses

        decoder_and_backbone.backbone = SparseUNetBackbone(cfg.model.backbone)
        decoder_and_backbone.decoder = BQNetDecoder(dataclasses.replace(cfg.model.decoder, in_channels=32,
                                                                        text_channels=768))
    ours = {k: v.shape for k, v in decoder_and_backbone.state_dict().items()}
    ours.update({"text_encoder.model." + k: v.shape for k, v in text.state_dict().items()})
    assert set(ours) == set(mapped), (sorted(set(ours) - set(mapped))[:5], sorted(set(mapped) - set(ours))[:5])
    assert all(tuple(ours[k]) == tuple(mapped[k].shape) for k in ours)
    assert len(official) == 936


def test_load_official_non_strict_backbone_only(tmp_path: Path) -> None:
    from bqnet_model.model.bqnet import BQNet
    from bqnet_model.model.config import load_config

    cfg = load_config({"model": {"backbone": {"media": 8, "levels": 3},
                                 "decoder": {"d_model": 32, "nhead": 2, "ffn": 64, "num_layers": 2, "fps_num": 32,
                                             "num_proposal": 16, "num_proposal_fine": 64,
                                             "num_proposal_query": [16, 4], "num_proposal_query_inst": [32, 8]}}})
    torch.manual_seed(0)
    src = BQNet(cfg.model)
    sd = {k[len("backbone."):]: v for k, v in src.state_dict().items() if k.startswith("backbone.")}
    path = _gorilla_like(tmp_path / "spformer.pth", {**sd, "head.weight": torch.zeros(1)})
    torch.manual_seed(1)
    dst = BQNet(cfg.model)
    report = load_official(dst, path, strict=False, backbone_only=True)
    assert not report.missing and not report.shape_mismatch and report.unexpected == ["head.weight"]
    assert len(report.loaded) == len(sd)
    assert all(torch.equal(dst.state_dict()["backbone." + k], v) for k, v in sd.items())
    with pytest.raises(ValueError, match="nothing loaded"):
        load_official(dst, path, strict=True)


def test_node_builds_official_checkpoints_from_official_config(tmp_path: Path) -> None:
    """The node's checkpoint parameter takes an official file: its network comes from
    official_config (with tokenizer filled in); our own files keep their stored config."""
    from bqnet_model.checkpoint import save_checkpoint
    from bqnet_model.model.bqnet import BQNet
    from bqnet_model.model.config import load_config
    from bqnet_ros.model_setup import _official_config
    from bqnet_ros.parameters import NodeParams

    root = Path(__file__).resolve().parents[1]
    p = NodeParams.defaults(official_config=str(root / "config" / "gres.yaml"), tokenizer=str(tmp_path))
    official = _gorilla_like(tmp_path / "best_gres.pth", {"dec.x": torch.zeros(1)})
    cfg = _official_config(official, p, None)
    assert cfg.inference.task == "gres" and cfg.model.text.tokenizer == str(tmp_path)
    assert cfg.model.decoder.image_channels == 1024
    small = load_config({"model": {"backbone": {"media": 8, "levels": 3},
                                   "decoder": {"d_model": 32, "nhead": 2, "ffn": 64, "num_layers": 2, "fps_num": 32,
                                               "num_proposal": 16, "num_proposal_fine": 64}}})
    ours = save_checkpoint(tmp_path / "ours.pth", BQNet(small.model), small)
    assert _official_config(ours, p, None) is None
    from bqnet_ros.parameters import StartupError

    with pytest.raises(StartupError, match="official_config"):
        _official_config(official, p.replace(official_config=str(tmp_path / "none.yaml")), None)
