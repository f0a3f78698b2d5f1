"""Training / evaluation program on a tiny synthetic data set written to tmp (CPU, seconds): the loop,
the schedules, the chunked epochs, the augmentation settings."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bqnet_synth import minimal_room
from bqnet_model.model.config import load_config
from bqnet_model.train import EpochSampler, find_annotations, lr_factor, main, parse_args, poly_factor
from conftest import save_grid_room
from tiny_model import write_train_config

SENTENCES = [(6, "the red chair next to the desk"), (9, "the green chair"), (7, "the white table"),
             (8, "the blue cabinet"), (5, "the desk")]


def _write_data(root: Path) -> None:
    """3 small rooms (2 train, 1 val) as per-scene npz + ScanRefer JSON (no eval_type: computed)."""
    root.mkdir(parents=True)
    train, val = [], []
    for k in range(3):
        room = minimal_room(n_points=2500, seed=k)
        sid = f"room{k:02d}"
        names = save_grid_room(root, sid, room)
        for j, (oid, text) in enumerate(SENTENCES):
            (val if k == 2 else train).append({"scene_id": sid, "object_id": str(oid), "object_name": str(names[oid]),
                                               "ann_id": str(j), "description": text})
    (root / "scanrefer_train.json").write_text(json.dumps(train))
    (root / "scanrefer_val.json").write_text(json.dumps(val))
    # Multi3DRefer: several targets, one target, zero targets
    for split, sid in (("train", "room00"), ("val", "room02")):
        m3 = [{"scene_id": sid, "object_ids": [6, 9], "object_name": "chair", "ann_id": 0,
               "description": "the chairs", "eval_type": "mt"},
              {"scene_id": sid, "object_ids": [7], "object_name": "table", "ann_id": 1,
               "description": "the white table", "eval_type": "st_wo_d"},
              {"scene_id": sid, "object_ids": [], "object_name": "sofa", "ann_id": 2,
               "description": "the sofa", "eval_type": "zt_wo_d"}]
        (root / f"multi3drefer_{split}.json").write_text(json.dumps(m3))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(2)
    tmp = tmp_path_factory.mktemp("train")
    _write_data(tmp / "data")
    cfg = tmp / "tiny.yaml"
    write_train_config(cfg, tmp / "data", tmp / "run", train={"epochs": 2, "batch_size": 2, "lang_per_scene": 3,
                                                              "lang_per_scene_eval": 4, "lr_mult_backbone": 1.0})
    return tmp, cfg


def _log(work: Path) -> list[dict]:
    return [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]


def test_train_resume_and_evaluate(setup, capsys):
    from bqnet_model.checkpoint import load_checkpoint, read_checkpoint

    tmp, cfg = setup
    work = tmp / "run"
    assert main([str(cfg), "--gpu_id", "0", "--max-steps", "2", "--no-eval"]) == 0
    log = _log(work)
    train = [r for r in log if r["event"] == "train"]
    assert [r["step"] for r in train] == [1, 2]
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in train)
    assert train[1]["lr"] < train[0]["lr"]  # poly decay over the 2 steps
    ck = work / "latest.pth"
    assert ck.is_file()
    st = read_checkpoint(ck)["train_state"]
    assert st["step"] == 2
    w2 = {k: v.clone() for k, v in read_checkpoint(ck)["state_dict"].items()}
    # the written checkpoint is the product's format: Segmenter / load_checkpoint read it
    model, ccfg, _ = load_checkpoint(ck)
    assert ccfg.model.decoder.d_model == 32

    # resume: continues at step 2 with the optimizer state, schedule over the new total
    assert main([str(cfg), "--max-steps", "4", "--resume", "--no-eval", "--set", "train.num_workers=1"]) == 0
    log = _log(work)
    starts = [r for r in log if r["event"] == "start"]
    assert starts[-1]["step"] == 2 and starts[-1]["total_steps"] == 4
    assert [r["step"] for r in log if r["event"] == "train"][-2:] == [3, 4]
    obj = read_checkpoint(ck)
    assert obj["train_state"]["step"] == 4
    assert len(obj["train_state"]["optimizer"]["state"]) > 0
    changed = [k for k, v in obj["state_dict"].items() if v.is_floating_point() and not torch.equal(v, w2[k])]
    assert any(k.startswith("decoder.") for k in changed) and any(k.startswith("backbone.") for k in changed)

    # evaluation only: prints the metrics and writes the per-description records
    capsys.readouterr()
    assert main([str(cfg), "--checkpoint", str(ck)]) == 0
    out = capsys.readouterr().out
    assert "mIoU" in out and "Acc@0.5" in out and "unique" in out and "multiple" in out
    res = json.loads((work / "eval_val.json").read_text())
    assert res["summary"]["count"] == len(SENTENCES)
    assert {r["ann_id"] for r in res["records"]} == {str(j) for j in range(len(SENTENCES))}
    assert res["summary"]["multiple"]["count"] == 2  # the two chairs
    assert 0.0 <= res["summary"]["mIoU"] <= 1.0


def test_training_reduces_loss_on_one_batch(setup):
    """Several steps on one fixed batch: the loss must drop (the step really optimizes)."""
    from bqnet_model.data.dataset import ReferDataset, collate_fn
    from bqnet_model.model.bqnet import BQNet
    from bqnet_model.model.config import load_config
    from bqnet_model.train import train_step

    tmp, cfg_path = setup
    cfg = load_config(cfg_path)
    cfg.train.lr = 1e-3
    cfg.train.grad_clip = 1.0
    torch.manual_seed(0)
    model = BQNet(cfg.model)
    ds = ReferDataset(tmp / "data", tmp / "data" / "scanrefer_train.json", "val", "res", lang_per_scene=5)
    batch = collate_fn([ds[0]])
    opt = torch.optim.AdamW(model.param_groups(cfg.train), lr=cfg.train.lr)
    before = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    losses = [train_step(model, model, batch, opt, None, cfg, torch.device("cpu"), False, torch.float16)["loss"]
              for _ in range(6)]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    after = dict(model.named_parameters())
    assert all(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder.query_generator"))


def test_sampler_schedule_and_errors(setup, tmp_path, capsys):
    s = EpochSampler(5, shuffle=True, seed=3, rank=0, world_size=2)
    t = EpochSampler(5, shuffle=True, seed=3, rank=1, world_size=2)
    a, b = list(s), list(t)
    assert len(a) == len(b) == 3 and set(a) | set(b) == set(range(5))
    s.set_epoch(0, start=2)
    assert list(s) == a[2:] and len(s) == 1
    one = EpochSampler(6, shuffle=True, seed=3)
    e0 = list(one)
    one.set_epoch(1)
    assert sorted(list(one)) == sorted(e0) == list(range(6)) and list(one) != e0  # a new order per epoch
    assert list(EpochSampler(4, shuffle=False)) == [0, 1, 2, 3]
    w = EpochSampler(4, shuffle=False, with_epoch=True)
    w.set_epoch(7, start=1)
    assert list(w) == [(7, 1), (7, 2), (7, 3)]
    assert poly_factor(0, 10, 4.0) == 1.0 and poly_factor(10, 10, 4.0) == 0.0
    assert poly_factor(5, 10, 4.0) == pytest.approx(0.5**4)
    # warm-up ramps linearly, then the decay follows the larger of step and time progress
    assert lr_factor(0, 100, 1.0, warmup_steps=10) == pytest.approx(0.1 * 1.0)
    assert lr_factor(9, 100, 1.0, warmup_steps=10) == pytest.approx(1.0 * 0.91)
    assert lr_factor(50, 100, 1.0) == pytest.approx(0.5)
    assert lr_factor(10, 100, 1.0, time_fraction=0.75) == pytest.approx(0.25)  # the time budget is further on
    assert lr_factor(10, 100, 1.0, time_fraction=2.0) == 0.0
    # the authors' PolyLR stepped per epoch: constant within an epoch, (1 - e / 70) ** 4 in epoch e
    ep = dict(steps_per_epoch=5, poly_epochs=70)
    assert lr_factor(0, 10**6, 4.0, **ep) == lr_factor(4, 10**6, 4.0, **ep) == 1.0
    assert lr_factor(5, 10**6, 4.0, **ep) == pytest.approx((1 - 1 / 70) ** 4)
    assert lr_factor(49 * 5 + 3, 10**6, 4.0, **ep) == pytest.approx((1 - 49 / 70) ** 4)
    assert lr_factor(80 * 5, 10**6, 4.0, **ep) == 0.0
    assert lr_factor(5, 10**6, 4.0, time_fraction=0.5, **ep) == pytest.approx(0.5**4)  # the budget caps it
    tmp, cfg = setup
    with pytest.raises(FileNotFoundError, match="train_annotations"):
        find_annotations(tmp_path, "res", "train")
    assert find_annotations(tmp / "data", "res", "val").name == "scanrefer_val.json"
    capsys.readouterr()
    assert main([str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main([str(cfg), "--set", f"train.data_root={tmp_path / 'nothing'}", "--set",
                 f"train.work_dir={tmp_path / 'w'}"]) == 2
    assert "data root" in capsys.readouterr().err
    # the config's own validation names the key of a bad --set value
    for key, value, words in (("train.lr", "0", "train.lr must be > 0"), ("train.epochs", "0", "train.epochs must be >= 1"),
                              ("train.batch_size", "0", "train.batch_size must be >= 1"),
                              ("train.lang_per_scene", "0", "train.lang_per_scene must be >= 1"),
                              ("train.num_workers", "-1", "train.num_workers must be >= 0"),
                              ("inference.task", "detect", "inference.task")):
        assert main([str(cfg), "--set", f"{key}={value}"]) == 2 and words in capsys.readouterr().err
    # run-control flags are refused by argparse (exit 2), and so are the retired one-key flags, with a hint
    for argv, words in ((["--max-steps", "0"], "--max_steps: must be > 0, got 0"),
                        (["--time-budget", "-1"], "--time_budget: must be > 0"),
                        (["--lr", "4e-4"], "use --set train.lr=..."), (["--task", "gres"], "use --set inference.task=...")):
        with pytest.raises(SystemExit) as exc:
            main([str(cfg), *argv])
        assert exc.value.code == 2 and words in capsys.readouterr().err
    assert main([str(cfg), "--resume", str(tmp_path / "none.pth"), "--set", f"train.work_dir={tmp_path / 'w'}"]) == 2
    assert "not found" in capsys.readouterr().err


def test_command_line_overrides_reach_the_config(setup):
    _, cfg_path = setup
    opt = parse_args([str(cfg_path), "--set", "train.lr=4e-4", "--set", "train.lang_per_scene=24",
                      "--set", "train.batch_size=5", "--set", "inference.task=gres", "--max-steps", "3"])
    cfg = load_config(opt.config, opt.overrides)
    assert (cfg.train.lr, cfg.train.lang_per_scene, cfg.train.batch_size, cfg.inference.task) == (4e-4, 24, 5, "gres")
    assert opt.max_steps == 3


def test_set_overrides_any_config_key(setup, tmp_path):
    _, cfg_path = setup
    cfg = load_config(cfg_path, ["model.decoder.psc=false", "model.loss.align=0.5", "train.poly_epochs=9",
                                 "train.lr=1e-3", "inference.task=gres"])
    assert cfg.model.decoder.psc is False and cfg.model.loss.align == 0.5 and cfg.train.poly_epochs == 9
    assert cfg.train.lr == 1e-3 and cfg.inference.task == "gres"
    assert load_config(cfg_path).model.decoder.psc is True
    for bad, words in (("model.decoder.no_such_key=1", "no_such_key"), ("model.decoder.psc", "KEY=VALUE"),
                       ("model.decoder.d_model.x=1", "is a value"), ("train.poly_epochs=0", "poly_epochs"),
                       ("train.lr_schedule=cosine", "lr_schedule"), ("model.loss.eos_coef=-1", "eos_coef")):
        with pytest.raises(ValueError, match=words):
            load_config(cfg_path, [bad])
    assert main([str(cfg_path), "--set", "model.decoder.nope=1", "--set", f"train.work_dir={tmp_path / 'w'}"]) == 2
    # the official recipe is the default of res.yaml / gres.yaml
    for name in ("res.yaml", "gres.yaml"):
        c = load_config(Path(__file__).parents[1] / "config" / name)
        t, lo = c.train, c.model.loss
        assert (t.lr_schedule, t.poly_epochs, t.epochs, t.lr_power, t.lang_per_scene, t.lang_per_scene_eval) == \
            ("epoch", 70, 50, 4.0, 4, 32)
        assert (t.lr, t.weight_decay, t.grad_clip, t.amp, t.augmentation.rgb_noise) == (1e-4, 5e-4, 0.1, False, 0.1)
        assert (lo.indicator, lo.align, lo.sample, lo.score, lo.score_iou_min, lo.eos_coef) == (0.1, 0.1, 5.0, 0.5, 0.5, 0.1)


def test_augmentation_settings_reach_the_training_set(setup):
    """train.augmentation: the authors' set by default (x flip, no scale, RGB noise 0.1), every key
    settable from YAML; the tiny configs keep the mirror off (a mirror swaps the synthetic
    sentences' left and right) and have no RGB noise."""
    from bqnet_model.train import build_datasets

    _, cfg_path = setup
    for override, flip, noise in (([], True, 0.1), (["train.augmentation.flip_x=false",
                                                     "train.augmentation.rgb_noise=0.05"], False, 0.05)):
        train_ds, _ = build_datasets(load_config(cfg_path, override), load_config(cfg_path).train.data_root, train=True)
        a = train_ds.augment_cfg
        assert (a.flip_x, a.rgb_noise, a.scale_range, a.rotate_z) == (flip, noise, (1.0, 1.0), True)
    for name in ("tiny.yaml", "tiny_continue.yaml", "tiny_ablation.yaml"):
        a = load_config(Path(__file__).parents[1] / "config" / name).train.augmentation
        assert a.flip_x is False and a.rgb_noise == 0.0
    with pytest.raises(ValueError, match="rgb_noise"):
        load_config(cfg_path, ["train.augmentation.rgb_noise=-1"])


def test_rgb_noise_and_elastic_grid_as_the_authors(setup):
    """The colour shift is one rgb_noise * randn(3) offset on the normalised colour; the elastic
    distortion moves the voxel grid only, the xyz the model reads stays undistorted."""
    from bqnet_model.data.augment import AugmentConfig
    from bqnet_model.data.dataset import ReferDataset

    tmp, _ = setup
    ann = tmp / "data" / "scanrefer_train.json"
    still = AugmentConfig(rotate_z=False, flip_x=False, matrix_jitter=0.0, elastic=(), rgb_noise=0.1)
    plain = ReferDataset(tmp / "data", ann, "train", "res", augment=False, lang_per_scene=5)[0]
    noisy = ReferDataset(tmp / "data", ann, "train", "res", augment=True, lang_per_scene=5, augment_cfg=still,
                         seed=3)[0]
    shift = 0.1 * np.random.default_rng([3, 0, 0]).standard_normal(3)
    np.testing.assert_array_equal(noisy.inputs.coords, plain.inputs.coords)
    np.testing.assert_allclose(noisy.inputs.feats[:, :3] - plain.inputs.feats[:, :3],
                               np.broadcast_to(shift, (plain.inputs.n_voxels, 3)), atol=1e-5)
    elastic = AugmentConfig(rotate_z=False, flip_x=False, matrix_jitter=0.0, rgb_noise=0.0)
    el = ReferDataset(tmp / "data", ann, "train", "res", augment=True, lang_per_scene=5, augment_cfg=elastic)[0]
    xyz = plain.inputs.xyz.astype(np.float64)
    np.testing.assert_allclose(el.inputs.xyz, xyz - xyz.mean(0), atol=1e-5)  # centred, not distorted
    assert el.inputs.n_voxels != plain.inputs.n_voxels or not np.array_equal(el.inputs.coords, plain.inputs.coords)


def test_an_epoch_covers_every_description_in_chunks(setup):
    """One item = one scene and <= lang_per_scene consecutive descriptions, in training as in
    evaluation: an epoch sees every description once; items carry the loss targets."""
    from bqnet_model.data.dataset import ReferDataset, collate_fn

    tmp, _ = setup
    ds = ReferDataset(tmp / "data", tmp / "data" / "scanrefer_train.json", "train", "res", augment=True,
                      lang_per_scene=2)
    assert len(ds) == 2 * 3  # 2 scenes x ceil(5 / 2)
    seen = [(m["scene_id"], m["ann_id"]) for i in range(len(ds)) for m in ds[i].meta]
    assert sorted(seen) == sorted({(a.scene_id, a.ann_id) for a in ds.annotations}) and len(seen) == 10
    s = ds[0]
    assert [m["ann_id"] for m in s.meta] == ["0", "1"]
    assert len(s.prepared) == len(s.sp_ref_masks) == len(s.gt_sp_inst) == 2
    # the red chair (6) "next to the desk": the desk is context (0.5), the chair 1
    ref, inst = s.sp_ref_masks[0], s.gt_sp_inst[0]
    assert "desk" in s.prepared[0].context_classes
    assert ref.max() == pytest.approx(1.0) and np.isclose(ref, 0.5, atol=0.05).any() and (inst[ref > 0.99] == 6).all()
    b = collate_fn([s, ds[1]])
    assert len(b["sp_ref_masks"]) == len(b["prepared"]) == len(b["texts"]) == 4


def test_epoch_schedule_in_a_run(setup):
    """lr_schedule epoch: the lr holds within an epoch and drops by the poly factor at the next."""
    tmp, cfg = setup
    work = tmp / "run_epoch_lr"
    assert main([str(cfg), "--max-steps", "4", "--no-eval", "--set", f"train.work_dir={work}", "--set", "train.lr_schedule=epoch",
                 "--set", "train.poly_epochs=3", "--set", "train.lr=1e-3"]) == 0
    lrs = [r["lr"] for r in _log(work) if r["event"] == "train"]
    assert lrs[0] == lrs[1] == pytest.approx(1e-3) and lrs[2] == lrs[3] == pytest.approx(1e-3 * (2 / 3) ** 4)


def test_init_weights_into_a_model_with_a_new_module(setup, capsys):
    """--init-weights from a model without the contrastive projections into one with them: the old
    weights load, the new module is reported and keeps its initial values; a checkpoint with weights
    the model lacks is refused."""
    from bqnet_model.checkpoint import read_checkpoint

    tmp, cfg = setup
    base = tmp / "init_base"
    off = ["--set", "model.decoder.contrastive_align=false"]
    assert main([str(cfg), "--max-steps", "1", "--no-eval", "--set", f"train.work_dir={base}", *off]) == 0
    src = read_checkpoint(base / "latest.pth")["state_dict"]
    on = tmp / "init_proj"
    capsys.readouterr()
    assert main([str(cfg), "--max-steps", "1", "--no-eval", "--set", f"train.work_dir={on}", "--set", "train.lr=1e-12",
                 "--init-weights", str(base / "latest.pth")]) == 0
    out = capsys.readouterr().out
    assert "new weights keep their initial values" in out and "decoder.contrastive_align_projection" in out
    got = read_checkpoint(on / "latest.pth")["state_dict"]
    assert any(k.startswith("decoder.contrastive_align_projection_text.") for k in got)
    # lr 1e-12: the copied weights are (numerically) the source's (BatchNorm running statistics move)
    differ = [k for k, v in src.items() if v.is_floating_point() and "running_" not in k
              and not torch.allclose(got[k].float(), v.float(), atol=1e-6)]
    assert not differ
    # the other way round: weights the model has no place for are an error
    capsys.readouterr()
    assert main([str(cfg), "--max-steps", "1", "--no-eval", "--set", f"train.work_dir={tmp / 'init_back'}",
                 "--init-weights", str(on / "latest.pth"), *off]) == 2
    assert "no place for" in capsys.readouterr().err


def test_gres_training_and_evaluation(setup, capsys):
    """GRES: Multi3DRefer JSON, per-object loss targets (gt_sp_inst), select_gres in evaluation."""
    tmp, cfg = setup
    work = tmp / "run_gres"
    capsys.readouterr()
    assert main([str(cfg), "--set", "inference.task=gres", "--max-steps", "1", "--set", f"train.work_dir={work}"]) == 0
    out = capsys.readouterr().out
    assert "mt" in out and "zt_wo_d" in out and "st_wo_d" in out
    ev = [r for r in _log(work) if r["event"] == "eval"][-1]
    assert ev["count"] == 3 and set(ev["per_type"]) == {"mt", "st_wo_d", "zt_wo_d"}
    assert math.isfinite([r for r in _log(work) if r["event"] == "train"][0]["loss"])


def test_profile_steps_rule():
    """The warm-up before the profiled window: 10 steps, fewer when the run is too short for 10 + N."""
    from bqnet_model.train.profiling import warmup_steps

    assert warmup_steps(1000, 5) == 10 and warmup_steps(15, 5) == 10
    assert warmup_steps(12, 5) == 7 and warmup_steps(3, 2) == 1 and warmup_steps(2, 2) == 0 and warmup_steps(1, 3) == 0
    with pytest.raises(SystemExit):
        parse_args(["x.yaml", "--profile-steps", "-1"])
    assert parse_args(["x.yaml"]).profile_steps == 0


def test_profile_steps_write_a_profile_and_leave_training_as_it_is(setup):
    """--profile-steps 2 on a 3-step run: 1 warm-up step, steps 2-3 profiled (the epoch end after step
    2 inside the window), profile.txt and a 'profile' event written, the 3 steps trained; the same run
    with --profile-steps 0 writes neither and ends on the same weights (profiling changes no step)."""
    from bqnet_model.checkpoint import read_checkpoint

    tmp, cfg = setup
    runs = {}
    for n in (2, 0):
        work = tmp / f"run_profile_{n}"
        assert main([str(cfg), "--max-steps", "3", "--no-eval", "--profile-steps", str(n),
                     "--set", f"train.work_dir={work}"]) == 0
        log = _log(work)
        assert [r["step"] for r in log if r["event"] == "train"] == [1, 2, 3]
        assert read_checkpoint(work / "latest.pth")["train_state"]["step"] == 3
        runs[n] = (work, log, read_checkpoint(work / "latest.pth")["state_dict"])
    work, log, weights = runs[0]
    assert not (work / "profile.txt").exists() and not [r for r in log if r["event"] == "profile"]
    work, log, profiled = runs[2]
    assert profiled.keys() == weights.keys()
    differ = [k for k, v in weights.items() if not torch.equal(profiled[k], v)]
    assert not differ, differ[:5]

    (ev,) = [r for r in log if r["event"] == "profile"]
    assert (ev["first_step"], ev["last_step"], ev["steps"], ev["warmup"], ev["step"]) == (2, 3, 2, 1, 3)
    assert ev["epoch_ends_in_window"] == 1 and ev["device"] == "cpu" and ev["gpu_kernel_ms_per_step"] == 0
    assert ev["device_events_per_step"] == 0
    assert ev["wall_ms_per_step"] > 0 and ev["op_calls_per_step"] > ev["aten_calls_per_step"] > 100
    assert set(ev["regions"]) == {"forward", "loss", "backward", "optimizer", "readback"}
    assert all(ev["regions"][k]["op_calls"] > 10 for k in ("forward", "loss", "backward", "optimizer"))
    assert sum(r["op_calls"] for r in ev["regions"].values()) < ev["op_calls_per_step"]
    text = (work / "profile.txt").read_text()
    for words in ("steps profiled: 2-3 (2 steps)", "warm-up steps: 1", "wall per step:", "op calls per step: ",
                  "GPU kernel time per step: 0.0 ms", "epoch ends in the window: 1", "top 25 by self device time:",
                  "top 25 by self CPU time:", "aten::", "Self CPU", "# of Calls"):
        assert words in text, words
    for name in ("forward", "loss", "backward", "optimizer", "readback", "outside train_step"):
        assert f"  {name}" in text, name


def test_step_profiler_window_partial_run_and_failure(tmp_path, monkeypatch):
    """The window opens only once the warm-up is done, a run that stops inside it writes the steps
    profiled so far, and a profile that cannot be made is reported without ending the run."""
    from bqnet_model.train import JsonLog
    from bqnet_model.train.profiling import StepProfiler

    def steps(prof: StepProfiler, first: int, last: int, stop_at: int | None = None) -> None:
        for step in range(first, last + 1):
            prof.before_fetch(step - 1)
            x = torch.ones(8, requires_grad=True)
            (x * 2).sum().backward()
            prof.after_step(step, 0.001)
            if step == stop_at:
                break
        prof.finish(step)

    cpu = torch.device("cpu")
    off = StepProfiler(0, 0, 50, 10, cpu, tmp_path, JsonLog(tmp_path / "metrics.jsonl"))
    steps(off, 1, 20)
    assert not (tmp_path / "profile.txt").exists() and not (tmp_path / "metrics.jsonl").exists()

    # resumed at step 5 of 100, window of 4: warm-up to step 15, stopped (time budget) after step 17
    part = StepProfiler(4, 5, 100, 10, cpu, tmp_path, JsonLog(tmp_path / "metrics.jsonl"))
    assert (part.warmup, part.start_after, part.end_at) == (10, 15, 19)
    steps(part, 6, 30, stop_at=17)
    assert not part.active
    (ev,) = _log(tmp_path)
    assert (ev["first_step"], ev["last_step"], ev["steps"]) == (16, 17, 2) and ev["op_calls_per_step"] > 0
    assert "steps profiled: 16-17 (2 steps)" in (tmp_path / "profile.txt").read_text()

    def broken(*args, **kwargs):
        raise RuntimeError("no figures")

    monkeypatch.setattr(StepProfiler, "_figures", broken)
    bad = StepProfiler(1, 0, 3, 10, cpu, tmp_path, JsonLog(tmp_path / "metrics.jsonl"))
    steps(bad, 1, 3)
    assert "failed: RuntimeError('no figures')" in (tmp_path / "profile.txt").read_text()
    assert _log(tmp_path)[-1]["error"] == "RuntimeError('no figures')"
    with pytest.raises(ValueError, match="profile-steps"):
        StepProfiler(-1, 0, 3, 10, cpu, tmp_path, JsonLog(None))
