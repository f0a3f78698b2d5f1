"""bqnet-segment: argument parsing, every user error path (message + exit code) and a full run
with a randomly initialised tiny model on a small room (ply / png / json per sentence)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bqnet_model import cli
from bqnet_synth import minimal_room
from bqnet_model.ply import read_ply, write_ply

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "config" / "tiny.yaml"

torch.set_num_threads(2)


def _exit(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run main, expect SystemExit; return (code, stderr)."""
    with pytest.raises(SystemExit) as ei:
        cli.main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return int(ei.value.code), err


@pytest.fixture(scope="module")
def small_ply(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small room with a few NaN points, as real maps have (they must never be answered)."""
    scene = minimal_room(n_points=6000, seed=1)
    xyz = scene.xyz.copy()
    xyz[::500] = np.nan
    path = tmp_path_factory.mktemp("cloud") / "room.ply"
    write_ply(path, xyz, scene.rgb)
    return path


# ----------------------------------------------------------------------------- parsing


def test_parser_collects_sentences_and_defaults() -> None:
    a = cli.build_parser().parse_args(["--cloud", "demo", "--text", "a chair", "--text", "the desk", "--out", "o"])
    assert a.text == ["a chair", "the desk"]
    assert (a.task, a.device, a.checkpoint, a.untrained, a.config, a.seed) == ("res", "cpu", None, False, None, 0)
    a = cli.build_parser().parse_args(["--cloud", "x.ply", "--text", "t", "--task", "gres", "--out", "o",
                                       "--untrained", "--config", "c.yaml", "--seed", "3"])
    assert (a.task, a.untrained, a.config, a.seed) == ("gres", True, "c.yaml", 3)


def test_parser_rejects_bad_task_and_missing_required(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _exit(["--cloud", "demo", "--text", "t", "--task", "detect", "--out", "o"], capsys)
    assert code == 2 and "invalid choice: 'detect'" in err
    code, err = _exit(["--text", "t", "--out", "o"], capsys)
    assert code == 2 and "--cloud" in err
    code, err = _exit(["--cloud", "demo", "--text", "t"], capsys)
    assert code == 2 and "--out" in err


def test_finite_points_drops_nan_and_remaps() -> None:
    from bqnet_model import viz

    xyz = np.arange(30, dtype=np.float32).reshape(10, 3)
    xyz[[1, 4]] = np.nan
    cols = np.arange(30, dtype=np.uint8).reshape(10, 3)
    kept_xyz, kept_cols, hl = viz.finite_points(xyz, cols, [viz.Highlight(np.array([0, 4, 5, 9]))])
    assert np.isfinite(kept_xyz).all() and len(kept_xyz) == 8
    assert np.array_equal(kept_xyz[hl[0].indices], xyz[[0, 5, 9]])
    assert np.array_equal(kept_cols[hl[0].indices], cols[[0, 5, 9]])
    with pytest.raises(ValueError, match="no finite points"):
        viz.finite_points(np.full((3, 3), np.nan), cols[:3])


def test_result_to_dict_fields_and_optional_indices() -> None:
    from bqnet_model.pipeline import Result, TargetObject

    o = TargetObject(np.array([3, 5, 9]), 0.8, np.array([1.0, 2.0, 0.5]), np.zeros(3), np.ones(3))
    r = Result("a chair", True, [o], np.array([3, 5, 9]), {"total": 12.5}, "gres")
    d = cli.result_to_dict(r, "gres", 20)
    assert (d["text"], d["task"], d["found"], d["n_objects"], d["n_points"], d["cloud_points"]) == (
        "a chair", "gres", True, 1, 3, 20)
    assert d["objects"][0] == {"rank": 0, "score": 0.8, "n_points": 3, "centroid": [1.0, 2.0, 0.5],
                               "box_min": [0.0] * 3, "box_max": [1.0] * 3, "point_indices": [3, 5, 9]}
    assert d["timings_ms"] == {"total": 12.5}
    assert "point_indices" not in cli.result_to_dict(r, "gres", 20, include_indices=False)["objects"][0]


def test_slugify_is_safe_numbered_and_bounded() -> None:
    assert cli.slugify("The chair next to the desk!", 1) == "01_the-chair-next-to-the-desk"
    assert cli.slugify("  ../../etc/passwd  ", 12) == "12_etc-passwd"
    assert cli.slugify("椅子", 3) == "03_sentence"
    long = cli.slugify("the " + "very " * 40 + "big chair", 2)
    assert len(long) <= 3 + 48 and not long.endswith("-")
    assert all(c.isalnum() or c in "_-" for c in long)


# ----------------------------------------------------------------------------- error paths


def test_no_text_and_empty_text(tmp_path: Path, small_ply: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--cloud", str(small_ply), "--out", str(tmp_path / "o"), "--untrained", "--config", str(TINY)]
    code, err = _exit(base, capsys)
    assert code == 2 and "no sentence given" in err and "--text" in err
    code, err = _exit(base + ["--text", "a chair", "--text", "  \t "], capsys)
    assert code == 2 and "--text number 2 is empty or only whitespace" in err


def test_missing_cloud(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.ply"
    code, err = _exit(["--cloud", str(missing), "--text", "the chair", "--out", str(tmp_path / "o"),
                       "--untrained", "--config", str(TINY)], capsys)
    assert code == 2 and f"cloud file not found: {missing}" in err and "'demo'" in err


def test_unreadable_ply(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"this is not a point cloud\n\x00\x01")
    code, err = _exit(["--cloud", str(bad), "--text", "the chair", "--out", str(tmp_path / "o"),
                       "--untrained", "--config", str(TINY)], capsys)
    assert code == 2 and f"cannot read the cloud {bad}" in err and "not a PLY file" in err
    empty = tmp_path / "empty.ply"
    empty.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\n"
                      b"property float z\nend_header\n")
    code, err = _exit(["--cloud", str(empty), "--text", "the chair", "--out", str(tmp_path / "o"),
                       "--untrained", "--config", str(TINY)], capsys)
    assert code == 2 and "has no points" in err


def test_unknown_checkpoint_says_where_it_looked(tmp_path: Path, small_ply: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _exit(["--cloud", str(small_ply), "--text", "the chair", "--out", str(tmp_path / "o"),
                       "--checkpoint", "no/such/model.pth"], capsys)
    assert code == 2 and "checkpoint 'no/such/model.pth' not found; looked in" in err
    assert str(Path.cwd() / "no/such/model.pth") in err and str(cli.PACKAGE_ROOT / "no/such/model.pth") in err
    assert "make demo" in err and "bqnet-train" in err
    assert not (tmp_path / "o").exists()  # failed before creating anything


def test_default_checkpoint_missing(tmp_path: Path, small_ply: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    # A package root and a working folder without the shipped model.
    monkeypatch.setattr(cli, "PACKAGE_ROOT", tmp_path / "pkg")
    monkeypatch.chdir(tmp_path)
    code, err = _exit(["--cloud", str(small_ply), "--text", "the chair", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and f"the shipped model {cli.DEFAULT_CHECKPOINT} not found" in err
    assert str(tmp_path / "pkg" / cli.DEFAULT_CHECKPOINT) in err and str(tmp_path / cli.DEFAULT_CHECKPOINT) in err


def test_corrupt_checkpoint(tmp_path: Path, small_ply: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    code, err = _exit(["--cloud", str(small_ply), "--text", "the chair", "--out", str(tmp_path / "o"),
                       "--checkpoint", str(bad)], capsys)
    assert code == 2 and f"cannot load checkpoint {bad}" in err


def test_out_dir_not_writable(tmp_path: Path, small_ply: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, err = _exit(["--cloud", str(small_ply), "--text", "the chair", "--out", str(blocker / "sub"),
                       "--untrained", "--config", str(TINY)], capsys)
    assert code == 2 and f"cannot write to the output folder {blocker / 'sub'}" in err
    code, err = _exit(["--cloud", str(small_ply), "--text", "the chair", "--out", str(blocker),
                       "--untrained", "--config", str(TINY)], capsys)
    assert code == 2 and "exists and is not a folder" in err


def test_config_and_untrained_must_go_together(tmp_path: Path, small_ply: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--cloud", str(small_ply), "--text", "the chair", "--out", str(tmp_path / "o")]
    code, err = _exit(base + ["--config", str(TINY)], capsys)  # our checkpoints carry their config
    assert code == 2 and "carries its own config" in err
    code, err = _exit(base + ["--untrained"], capsys)
    assert code == 2 and "--untrained needs --config" in err
    code, err = _exit(base + ["--untrained", "--config", str(tmp_path / "none.yaml")], capsys)
    assert code == 2 and "config file not found" in err
    code, err = _exit(base + ["--untrained", "--config", str(TINY), "--tta", "0"], capsys)
    assert code == 2 and "--tta must be >= 1" in err


def test_tta_reaches_the_segmenter(tmp_path: Path, small_ply: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--tta K is the inference setting tta_rotations; without it the model's own setting stays."""
    from bqnet_model.pipeline import Segmenter

    made = []
    real = Segmenter.from_config.__func__

    def spy(cls, *a, **kw):
        seg = real(cls, *a, **kw)
        made.append(seg.inference.tta_rotations)
        return seg

    monkeypatch.setattr(Segmenter, "from_config", classmethod(spy))
    base = ["--cloud", str(small_ply), "--text", "the chair", "--untrained", "--config", str(TINY), "--quiet"]
    assert cli.main(base + ["--out", str(tmp_path / "a"), "--tta", "2"]) == 0
    assert cli.main(base + ["--out", str(tmp_path / "b")]) == 0
    assert made == [2, 1]


# ----------------------------------------------------------------------------- full runs


def _check_outputs(out: Path, stem: str, text: str, task: str, n_cloud: int) -> dict:
    ply, png, js = (out / f"{stem}{e}" for e in (".ply", ".png", ".json"))
    assert ply.is_file() and png.is_file() and js.is_file()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    d = json.loads(js.read_text())
    assert d["text"] == text and d["task"] == task and d["cloud_points"] == n_cloud
    assert d["files"] == {"ply": ply.name, "png": png.name}
    assert d["found"] == (d["n_objects"] > 0) and d["n_objects"] == len(d["objects"])
    assert set(d["timings_ms"]) >= {"text", "decoder", "total"}
    assert set(d["prepare_timings_ms"]) >= {"superpoints", "backbone", "total"}
    assert isinstance(d["model"], str) and isinstance(d["untrained"], bool)
    cloud = read_ply(ply)
    assert cloud.n_points == n_cloud and cloud.rgb is not None
    finite = np.isfinite(cloud.xyz).all(axis=1)
    inst = cloud.fields["instance"]
    union: set[int] = set()
    expected = np.full(n_cloud, -1)
    for k, o in reversed(list(enumerate(d["objects"]))):  # overlaps go to the best-ranked object
        expected[o["point_indices"]] = k
    assert np.array_equal(inst, expected)
    for k, o in enumerate(d["objects"]):
        idx = np.asarray(o["point_indices"], np.int64)
        assert o["rank"] == k and o["n_points"] == idx.size > 0
        assert idx.min() >= 0 and idx.max() < n_cloud and np.all(np.diff(idx) > 0) and finite[idx].all()
        assert 0.0 <= o["score"] <= 1.0
        lo, hi, c = (np.asarray(o[key]) for key in ("box_min", "box_max", "centroid"))
        assert np.all(lo <= c + 1e-6) and np.all(c <= hi + 1e-6)
        assert np.all((inst[idx] >= 0) & (inst[idx] <= k))
        union |= set(idx.tolist())
    assert d["n_points"] == len(union) == int((inst >= 0).sum())
    if task == "res":
        assert d["n_objects"] <= 1
    return d


def test_full_run_untrained_writes_ply_png_json(tmp_path: Path, small_ply: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    texts = ["the red chair next to the desk", 'the white "table" [1, 2]']
    rc = cli.main(["--cloud", str(small_ply), "--text", texts[0], "--text", texts[1], "--out", str(out),
                   "--untrained", "--config", str(TINY), "--seed", "0"])
    assert rc == 0
    cap = capsys.readouterr()
    assert "WARNING: --untrained" in cap.err and "RANDOM weights" in cap.err
    n = read_ply(small_ply).n_points
    for i, t in enumerate(texts, start=1):
        d = _check_outputs(out, cli.slugify(t, i), t, "res", n)
        assert d["untrained"] is True and d["model"].startswith("UNTRAINED")
        assert f'"{t}" (res): ' in cap.out
    assert "map prepared in" in cap.out and "timings: prepare" in cap.out and "query" in cap.out


def test_demo_job_with_a_saved_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What make demo runs after the superpoint picture: checkpoint -> demo room -> RES and GRES
    sentences in one job (mixed tasks, one prepare) -> files + scores against the ground truth.
    The checkpoint holds random weights here, so only consistency is checked, not accuracy."""
    from bqnet_model import demo
    from bqnet_model.checkpoint import save_checkpoint
    from bqnet_model.pipeline import Segmenter

    seg = Segmenter.from_config(TINY, device="cpu", seed=0)
    ckpt = save_checkpoint(tmp_path / "m.pth", seg.model, seg.cfg)
    out = tmp_path / "seg"
    answers = demo.referring_demo(out, str(ckpt), "cpu", density=60.0)
    cap = capsys.readouterr().out
    room = read_ply(out / "room.ply")
    assert "gt_instance" in room.fields and room.rgb is not None
    n = room.n_points
    tasks = [a.task for a in answers]
    assert answers[0].text == "the chair next to the desk" and tasks[0] == "res"
    assert answers[0].n_targets_gt == 1 and tasks[1:] == ["gres"] * (len(answers) - 1)
    assert answers[1].n_targets_gt >= 2 and any(a.n_targets_gt == 0 for a in answers[2:])
    for i, a in enumerate(answers, start=1):
        assert 0.0 <= a.iou <= 1.0
        if a.n_targets_gt == 0:
            assert a.iou == float(not a.found)  # zero-target rule
        d = _check_outputs(out, cli.slugify(a.text, i), a.text, a.task, n)
        assert d["found"] == a.found and d["n_objects"] == a.n_objects and a.png.name == d["files"]["png"]
        assert f'"{a.text}" ({a.task}): ' in cap and str(a.png) in cap
    assert "against the room's ground truth" in cap and "IoU" in cap


def test_demo_without_model_fails_loudly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bqnet_model import demo

    with pytest.raises(SystemExit) as ei:
        demo.main(["--out", str(tmp_path / "d"), "--no-superpoints", "--checkpoint", str(tmp_path / "none.pth")])
    assert ei.value.code == 1
    err = capsys.readouterr().err
    assert f"the model {tmp_path / 'none.pth'} is missing" in err and "will not use random weights" in err
    assert "bqnet-train" in err and "Traceback" not in err
    assert not (tmp_path / "d" / "segment").exists()
