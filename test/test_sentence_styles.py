"""The style layer (bqnet_synth.styles): styles = 0 is the grammar bit for bit; reworded sentences
keep their claims (extra and contrast clauses checked against the geometry); typos are seeded and
never make a class noun; held-out wordings are disjoint from the training ones; JSON fields."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest

import bqnet_synth as S
from bqnet_synth import expressions as X
from bqnet_synth import style_words as W
from bqnet_synth.relations import FALSE, TRUE, SceneGeometry, evaluate
from bqnet_synth.styles import HELD_OUT_PREFIX, LEXICON, STYLES, add_typo, all_nouns

FAST = S.RoomConfig(density=300.0)
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def scenes():
    return [S.generate_room(s, FAST) for s in SEEDS]


def _gen(scene, seed, **kw):
    cfg = X.ExpressionConfig(**kw) if kw else None
    return X.generate_expressions(scene, np.random.default_rng(np.random.SeedSequence([seed, 7])), cfg)


def _digest(exprs) -> str:
    return hashlib.sha256("\n".join(e.text for e in exprs).encode()).hexdigest()


def _names(text: str, cls: str) -> bool:
    low = text.lower()
    return any(re.search(rf"(?<![a-z]){re.escape(n)}(?![a-z])", low) for n in all_nouns(cls))


def test_styles_zero_is_the_grammar_bit_for_bit(scenes, monkeypatch):
    for seed, sc in zip(SEEDS, scenes):
        default = _gen(sc, seed)
        zero = _gen(sc, seed, styles=0.0, typo_rate=0.0)
        assert _digest(default) == _digest(zero) and default == zero
        assert all(e.style == "plain" and not e.typo and not e.contrast for e in zero)
    # The style layer is not even consulted at 0 (so the rng stream is the grammar's alone).
    monkeypatch.setattr(X, "apply_styles", lambda *a, **k: (_ for _ in ()).throw(AssertionError("called")))
    assert _digest(_gen(scenes[0], 0, styles=0.0)) == _digest(_gen(scenes[0], 0))


def test_styled_sentences_keep_their_claims(scenes):
    seen_styles = set()
    for seed, sc in zip(SEEDS, scenes):
        g = SceneGeometry(sc.objects)
        base = _gen(sc, seed)
        for held_out in (False, True):
            styled = _gen(sc, seed, styles=1.0, held_out=held_out)
            assert len(styled) == len(base)
            for b, e in zip(base, styled):
                assert (e.target_ids, e.eval_type, e.relation, e.object_name, e.distractor_ids) == \
                       (b.target_ids, b.eval_type, b.relation, b.object_name, b.distractor_ids)
                assert e.style.startswith(HELD_OUT_PREFIX) == held_out
                style = e.style[len(HELD_OUT_PREFIX):] if held_out else e.style
                assert style in STYLES
                seen_styles.add(e.style)
                assert e.descriptors[:len(b.descriptors)] == b.descriptors, e.text
                extra = e.descriptors[len(b.descriptors):]
                assert not extra or style == "multi"
                assert not e.contrast or (style == "casual" and e.eval_type == "st_w_d")
                members = [int(m) for m in np.flatnonzero(g.names == e.object_name)]
                # By construction: every extra clause is a descriptor TRUE for every target ...
                for d in extra:
                    assert (evaluate(g, d, e.target_ids, members) == TRUE).all(), (e.text, d)
                # ... and every contrast FALSE for the target and TRUE for a distractor.
                for d in e.contrast:
                    assert (evaluate(g, d, e.target_ids, members) == FALSE).all(), (e.text, d)
                    assert (evaluate(g, d, e.distractor_ids, members) == TRUE).any(), (e.text, d)
                want = list(b.anchor_ids)
                for a in (a for d in (*extra, *e.contrast) for a in (*d.anchors, d.viewpoint)):
                    if a >= 0 and a not in want:
                        want.append(a)
                assert e.anchor_ids == want
                assert _names(e.text, e.object_name), (e.style, e.text)
                for a in e.anchor_ids:
                    assert _names(e.text, str(g.names[a])), (e.style, e.text, str(g.names[a]))
                if not e.target_ids:
                    assert style != "multi"  # "this is a ..." would claim an object that is not there
    assert seen_styles >= set(STYLES) | {HELD_OUT_PREFIX + s for s in STYLES}


def test_share_and_unstyled_rest(scenes):
    n = n_styled = 0
    for seed, sc in zip(SEEDS, scenes):
        base = _gen(sc, seed)
        half = _gen(sc, seed, styles=0.5)
        for b, e in zip(base, half):
            n += 1
            if e.style == "plain":
                assert e == b
            else:
                n_styled += 1
                assert e.text != b.text
    assert 0.3 < n_styled / n < 0.7


def test_deterministic_for_a_seed(scenes):
    a = _gen(scenes[1], 1, styles=0.5, typo_rate=0.2)
    b = _gen(scenes[1], 1, styles=0.5, typo_rate=0.2)
    c = _gen(scenes[1], 2, styles=0.5, typo_rate=0.2)
    assert a == b and _digest(a) != _digest(c)


def test_typos_are_seeded_and_never_a_class_noun(scenes):
    n_typo = 0
    for seed, sc in zip(SEEDS, scenes):
        clean = _gen(sc, seed, styles=0.5)
        typo = _gen(sc, seed, styles=0.5, typo_rate=1.0)
        for c, t in zip(clean, typo):
            assert t.style == c.style and t.descriptors == c.descriptors
            if not t.typo:
                assert t.text == c.text
                continue
            n_typo += 1
            cw, tw = c.text.split(), t.text.split()
            diff = [(x, y) for x, y in zip(cw, tw) if x != y]
            assert len(cw) == len(tw) and len(diff) == 1, (c.text, t.text)
            old, new = (re.sub(r"[^a-z]", "", w.lower()) for w in diff[0])
            assert new not in LEXICON and new[0] == old[0] and abs(len(new) - len(old)) <= 1
    assert n_typo > 0.8 * sum(len(_gen(sc, s)) for s, sc in zip(SEEDS, scenes))
    # Every noun of every class: a typo never turns it into a word of the vocabulary.
    rng = np.random.default_rng(0)
    for cls in S.NOUNS:
        for noun in sorted(all_nouns(cls)):
            for _ in range(6):
                t = add_typo(f"the {noun}", rng)
                if t is not None:
                    assert all(w not in LEXICON for w in t.lower().split()[1:] if w not in noun.split()), t
    assert add_typo("the bed", rng) is None  # words under four letters are left alone
    assert "table" not in {add_typo("tables", np.random.default_rng(k)) for k in range(40)}


def test_held_out_wordings_are_disjoint():
    tables = (W.COMMAND, W.QUESTION, W.SR3D, W.PASSIVE, W.MULTI, W.CASUAL, W.REL_WORDS, W.SIZE_WORDS,
              W.DIST_WORDS, W.SIDE_OF_IT, W.COLOUR_WORDS)
    for t in tables:
        seen = {w for ws in t[W.SEEN].values() for w in ws}
        held = {w for ws in t[W.HELD_OUT].values() for w in ws}
        assert held and not seen & held, seen & held
    assert not set(W.VIEW_WORDS[W.SEEN]) & set(W.VIEW_WORDS[W.HELD_OUT])
    seen_nouns = {n for ns in W.EXTRA_NOUNS[W.SEEN].values() for n in ns}
    assert not seen_nouns & {n for ns in W.EXTRA_NOUNS[W.HELD_OUT].values() for n in ns}
    # A held-out command never opens like a training one, and the other way round.
    openers = {p: {f.split("{")[0] for fs in W.COMMAND[p].values() for f in fs} for p in W.POOLS}
    assert not openers[W.SEEN] & openers[W.HELD_OUT]


def test_held_out_sentences_use_no_training_opener(scenes):
    seen_open = tuple(f.split("{")[0] for fs in W.COMMAND[W.SEEN].values() for f in fs)
    held_open = tuple(f.split("{")[0] for fs in W.COMMAND[W.HELD_OUT].values() for f in fs)
    for seed, sc in zip(SEEDS, scenes):
        for e in _gen(sc, seed, held_out=True):
            body = re.sub(r"^[^,]*(facing|looking|with|while|turned|if you)[^,]*, ", "", e.text.lower())
            if e.style == HELD_OUT_PREFIX + "command":
                assert body.startswith(held_open) and not body.startswith(seen_open), e.text
        for e in _gen(sc, seed, styles=1.0):
            assert not e.text.lower().startswith(held_open), e.text


def test_json_fields_and_cli(tmp_path, capsys):
    from bqnet_model.data.referit import load_multi3drefer, load_scanrefer

    cfg = X.ExpressionConfig(styles=0.5, typo_rate=0.2)
    s = S.generate_dataset(tmp_path, 1, seed=4, split_name="val", config=FAST, expr_config=cfg, superpoints=False)
    assert sum(s.style_counts.values()) == sum(s.eval_type_counts.values()) and s.typo_count > 0
    for kind in ("scanrefer", "multi3drefer"):
        rows = json.loads((tmp_path / f"val_{kind}.json").read_text())
        assert rows and all(isinstance(r["style"], str) and isinstance(r["typo"], bool) for r in rows)
        assert {r["style"] for r in rows} - {"plain"} <= set(STYLES) and "plain" in {r["style"] for r in rows}
    anns = load_scanrefer(tmp_path / "val_scanrefer.json")
    assert all("style" in a.extra for a in anns)
    assert len(load_multi3drefer(tmp_path / "val_multi3drefer.json")) == sum(s.eval_type_counts.values())
    rc = S.main(["--out", str(tmp_path / "c"), "--scenes", "1", "--no-superpoints", "--density", "300",
                 "--held-out-styles", "--typo-rate", "0.1"])
    assert rc == 0 and "heldout_" in capsys.readouterr().out
    rows = json.loads((tmp_path / "c" / "train_multi3drefer.json").read_text())
    assert all(r["style"].startswith(HELD_OUT_PREFIX) for r in rows)
    with pytest.raises(SystemExit):
        S.main(["--out", str(tmp_path / "d"), "--scenes", "1", "--styles", "1.5"])


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="styles"):
        X.ExpressionConfig(styles=1.5)
    with pytest.raises(ValueError, match="typo_rate"):
        X.ExpressionConfig(typo_rate=-0.1)
    with pytest.raises(TypeError, match="held_out"):
        X.ExpressionConfig(held_out="yes")  # type: ignore[arg-type]
