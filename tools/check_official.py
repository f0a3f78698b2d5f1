#!/usr/bin/env python3
"""Check our decoder port against golden outputs of the authors' CFNet code.

Usage: ``check_official.py FIXTURE_DIR`` (the folder of ``dec_small_config.json``). It rebuilds the
small official decoder from the config's ``model_cfg_res`` block, loads ``dec_small.safetensors``
strictly, runs every case file the config lists (``case_*.file``), compares every final, per-layer
(``out.aux.j.*``) and traced (``trace.*``) output and the ``post.*`` / ``crafted.*``
post-processing (through bqnet_model.model.heads), prints the max abs difference of each and ends
with one line, ``PASS`` or ``FAIL``. Floats must agree within atol = rtol = 1e-4; indices and
decisions exactly. With ``fake_official_checkpoint.pth`` present it also reads that file with
``read_official_checkpoint``, loads its ``dec.*`` tensors strictly and requires the first case to
come out bit-identical to the run from the safetensors weights.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bqnet_model.model import decoder as decoder_mod  # noqa: E402
from bqnet_model.model.backbone import pad_by_offsets  # noqa: E402
from bqnet_model.model.decoder import BQNetDecoder, DecoderConfig, DecoderOutput, LayerPrediction  # noqa: E402
from bqnet_model.model.heads import official_iou, select_gres, select_res, target_probability  # noqa: E402
from bqnet_model.official_checkpoint import read_official_checkpoint  # noqa: E402

ATOL = RTOL = 1e-4
_FINAL_KEYS = ("masks", "scores", "indis", "proj_queries", "proj_tokens")


@dataclass
class Check:
    """One comparison: ``diff`` is the max abs difference (number of mismatches for exact ones)."""

    name: str
    ok: bool
    diff: float
    exact: bool
    note: str = ""


class Report:
    """Collects checks; ``floats`` and ``exact`` compare one output each."""

    def __init__(self) -> None:
        self.checks: list[Check] = []

    def floats(self, name: str, ours: Tensor, ref: Tensor, note: str = "") -> None:
        ours, ref = ours.detach().double(), ref.detach().double()
        if ours.shape != ref.shape:
            ours = ours.expand_as(ref) if ours.dim() == ref.dim() else ours.reshape(ref.shape)
        diff = (ours - ref).abs()
        ok = bool((diff <= ATOL + RTOL * ref.abs()).all())
        self.checks.append(Check(name, ok, float(diff.max()) if diff.numel() else 0.0, False, note))

    def exact(self, name: str, ours: Tensor, ref: Tensor, note: str = "") -> None:
        ours, ref = ours.detach(), ref.detach()
        if ours.shape != ref.shape:
            self.checks.append(Check(name, False, float("nan"), True, f"shape {tuple(ours.shape)} vs {tuple(ref.shape)}"))
            return
        bad = int((ours.long() != ref.long()).sum())
        self.checks.append(Check(name, bad == 0, float(bad), True, note))

    def fail(self, name: str, note: str) -> None:
        self.checks.append(Check(name, False, float("nan"), True, note))

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def lines(self) -> list[str]:
        out = []
        for c in self.checks:
            kind = "mismatches" if c.exact else "max|diff|"
            out.append(f"{'ok  ' if c.ok else 'FAIL'} {c.name:<46} {kind} {c.diff:.3g}" + (f"  ({c.note})" if c.note else ""))
        return out


def _load(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def build_decoder(fixture_dir: Path) -> BQNetDecoder:
    """The small official decoder with ``dec_small.safetensors`` loaded strictly, in eval mode."""
    cfg = json.loads((fixture_dir / "dec_small_config.json").read_text())
    dec = BQNetDecoder(DecoderConfig.from_official(cfg["model_cfg_res"]))
    dec.load_state_dict(_load(fixture_dir / "dec_small.safetensors"), strict=True)
    return dec.eval()


def case_files(fixture_dir: Path) -> list[Path]:
    """The case files the config lists (``case_*.file``), in the config's order."""
    cfg = json.loads((fixture_dir / "dec_small_config.json").read_text())
    files = [fixture_dir / v["file"] for k, v in cfg.items() if k.startswith("case_") and isinstance(v, dict) and "file" in v]
    if not files:
        raise FileNotFoundError(f"{fixture_dir / 'dec_small_config.json'} lists no case_*.file")
    return files


def case_inputs(d: dict[str, Tensor], report: Report | None = None) -> dict[str, Tensor]:
    """Decoder inputs (padded per sentence) from a case's ``in.*`` and ``scene.*`` tensors; with a
    report, also checks that expanding ``scene.*`` per sentence gives ``in.*`` exactly."""
    offsets = d["in.batch_offsets"].long()
    lens = d["scene.scenes_len"].long().tolist()
    rep = {name: torch.cat([d[f"scene.{i}.{name}"].repeat(n, 1) for i, n in enumerate(lens)])
           for name in ("sp_feats", "sp_pos", "feats_2d")}
    if report is not None:
        report.exact("expand: in.x == scene sp_feats", torch.tensor(0 if torch.equal(rep["sp_feats"], d["in.x"]) else 1),
                     torch.tensor(0))
        report.exact("expand: in.sp_pos == scene sp_pos",
                     torch.tensor(0 if torch.equal(rep["sp_pos"], d["in.sp_pos"]) else 1), torch.tensor(0))
        seeds = torch.cat([d[f"scene.{i}.fps_seed"].unsqueeze(0).repeat(n, 1) for i, n in enumerate(lens)])
        report.exact("expand: in.fps_seed_sp == scene fps_seed", seeds, d["in.fps_seed_sp"])
    x, pad = pad_by_offsets(d["in.x"], offsets)
    xyz, _ = pad_by_offsets(d["in.sp_pos"], offsets)
    img, _ = pad_by_offsets(rep["feats_2d"], offsets)
    return dict(sp_feats=x, sp_xyz=xyz, sp_pad=pad, seed_idx=d["in.fps_seed_sp"].long(),
                word_feats=d["in.lang_feats"], word_mask=d["in.lang_masks"].bool(), image_feats=img)


def run_traced(dec: BQNetDecoder, inputs: dict[str, Tensor], trace_names: list[str]) -> tuple[DecoderOutput, dict[str, Any]]:
    """Run the decoder recording the module outputs named in ``trace_names`` (``mod`` or
    ``mod.i``), each coarse attention's weights and every ``spatial_prior`` call."""
    rec: dict[str, Any] = {"spatial": []}
    handles = []

    def keep(name: str) -> Callable:
        def hook(_m: torch.nn.Module, _i: Any, out: Any) -> None:
            rec[name] = out
        return hook

    for name in trace_names:
        try:
            handles.append(dec.get_submodule(name).register_forward_hook(keep(name)))
        except AttributeError:
            rec.setdefault("missing", []).append(name)
    for i in range(dec.cfg.num_layers):
        handles.append(dec.qia_layers[i].register_forward_hook(keep(f"coarse.{i}")))
    real = decoder_mod.spatial_prior

    def recording(pos_q: Tensor, pos_k: Tensor, k: int | None, gamma: float | None, key_pad: Tensor | None = None,
                  dis: Tensor | None = None):
        w, allowed = real(pos_q, pos_k, k, gamma, key_pad, dis)
        rec["spatial"].append((pos_k, allowed))
        return w, allowed

    decoder_mod.spatial_prior = recording
    try:
        with torch.no_grad():
            out = dec(**inputs, keep_all_layers=True)
    finally:
        decoder_mod.spatial_prior = real
        for h in handles:
            h.remove()
    return out, rec


def _first(x: Any) -> Tensor:
    return x[0] if isinstance(x, tuple) else x


def compare_case(dec: BQNetDecoder, path: Path, report: Report) -> DecoderOutput:
    """Every ``out.*`` and ``trace.*`` tensor of one case file, then its ``post.*``/``crafted.*``."""
    d = _load(path)
    tag = path.stem
    inputs = case_inputs(d, report)
    pad = inputs["sp_pad"]
    trace_names = sorted({k[len("trace."):] for k in d if k.startswith("trace.") and not k.startswith(("trace.layer.", "trace.scg_call."))})
    out, rec = run_traced(dec, inputs, trace_names)
    for name in rec.get("missing", []):
        report.fail(f"{tag} trace.{name}", "no such module in the port")

    def layer_checks(pred: LayerPrediction, prefix: str) -> None:
        for key in _FINAL_KEYS:
            if f"{prefix}.{key}" not in d:
                continue
            ref = d[f"{prefix}.{key}"]
            ours = {"masks": pred.masks.masked_fill(pad.unsqueeze(1), 0.0), "scores": pred.scores.unsqueeze(-1),
                    "indis": pred.indi, "proj_queries": pred.proj_queries, "proj_tokens": pred.proj_tokens}[key]
            if ours is None:
                report.fail(f"{tag} {prefix}.{key}", "the port gave None")
            else:
                report.floats(f"{tag} {prefix}.{key}", ours, ref)

    layer_checks(out.final, "out")
    aux = sorted({int(k.split(".")[2]) for k in d if k.startswith("out.aux.")})
    for j in aux:
        layer_checks(out.layers[j], f"out.aux.{j}")
    if len(out.layers) != len(aux) + 1:
        report.fail(f"{tag} number of predictions", f"{len(out.layers)} vs {len(aux) + 1}")
    report.exact(f"{tag} out.sample_inds", out.sample_idx, d["out.sample_inds"])
    report.floats(f"{tag} out.ref_scores", out.seed_scores, d["out.ref_scores"])
    report.exact(f"{tag} out.batch_mask", pad, d["out.batch_mask"])

    for name in trace_names:
        if name in rec:
            report.floats(f"{tag} trace.{name}", _first(rec[name]), d[f"trace.{name}"])
    for key in sorted(k for k in d if k.startswith("trace.layer.")):
        i = int(key.split(".")[2])
        weights = rec[f"coarse.{i}"][1]
        report.floats(f"{tag} {key}", (weights * (~pad).unsqueeze(1)).sum(1), d[key])
    calls = rec["spatial"]
    for key in sorted(k for k in d if k.startswith("trace.scg_call.")):
        j, what = int(key.split(".")[2]), key.split(".")[3]
        if j >= len(calls):
            report.fail(f"{tag} {key}", f"the port made only {len(calls)} spatial calls")
        elif what == "mask":
            report.exact(f"{tag} {key}", calls[j][1], d[key])
        elif what == "pos_k":
            report.floats(f"{tag} {key}", calls[j][0], d[key])
    if any(k.startswith("post.") for k in d):
        check_post(report, f"{tag} post", d, "post", out.final, pad, d["post.superpoints"])
        for task in ("res", "gres"):
            if f"post.{task}.sample_ind" in d:
                report.exact(f"{tag} post.{task}.sample_ind", out.sample_idx, d[f"post.{task}.sample_ind"])
            if f"post.{task}.seed_ind" in d:
                report.exact(f"{tag} post.{task}.seed_ind", out.seed_idx, d[f"post.{task}.seed_ind"])
    if any(k.startswith("crafted.") for k in d):
        masks = d["crafted.masks"]
        pred = LayerPrediction(masks=masks, scores=torch.zeros(masks.shape[:2]), indi=d["crafted.indis"])
        check_post(report, f"{tag} crafted", d, "crafted", pred, torch.zeros(masks.shape[0], masks.shape[2], dtype=torch.bool),
                   d["crafted.superpoints"])
    return out


def check_post(report: Report, tag: str, d: dict[str, Tensor], prefix: str, pred: LayerPrediction, pad: Tensor,
               superpoints: Tensor) -> None:
    """``predict_by_feat``'s outputs (``<prefix>.res.*`` / ``<prefix>.gres.*``) through heads.py."""
    sp = superpoints.long()
    gt_sp, gt_p = d[f"{prefix}.gt_spmasks"], d[f"{prefix}.gt_pmasks"]
    S = gt_sp.shape[1]
    pred = LayerPrediction(masks=pred.masks[..., :S], scores=pred.scores, indi=pred.indi)
    pad = pad[:, :S]
    if f"{prefix}.res.piou" in d:
        sel = select_res(pred, pad)
        report.floats(f"{tag}.res.indi", target_probability(pred), d[f"{prefix}.res.indi"])
        report.exact(f"{tag}.res argmax", sel.query, d[f"{prefix}.res.indi"].argmax(1))
        report.floats(f"{tag}.res.pred_pmask", sel.sp_prob[:, sp], d[f"{prefix}.res.pred_pmask"])
        report.floats(f"{tag}.res.spiou", official_iou(sel.sp_prob, gt_sp), d[f"{prefix}.res.spiou"])
        report.floats(f"{tag}.res.piou", official_iou(sel.sp_prob[:, sp], gt_p), d[f"{prefix}.res.piou"])
    if f"{prefix}.gres.piou" in d:
        sizes = torch.bincount(sp, minlength=S)
        sels = select_gres(pred, pad, sizes, min_points=50, mask_threshold=0.5)
        positive = pred.indi.argmax(-1) == 1
        report.exact(f"{tag}.gres.indi", positive, d[f"{prefix}.gres.indi"])
        report.exact(f"{tag}.gres.nt_label", torch.tensor([not s.found for s in sels]), d[f"{prefix}.gres.nt_label"])
        # No positive query: the official code scores IoU 0 and writes sigmoid(0) = 0.5 everywhere.
        pmask = torch.stack([s.union_prob[sp] if positive[t].any() else torch.full_like(s.union_prob[sp], 0.5)
                             for t, s in enumerate(sels)])
        spiou = torch.stack([official_iou(s.union_prob, gt_sp[t]) if positive[t].any() else torch.tensor(0.0)
                             for t, s in enumerate(sels)])
        piou = torch.stack([official_iou(s.union_prob[sp], gt_p[t]) if positive[t].any() else torch.tensor(0.0)
                            for t, s in enumerate(sels)])
        report.floats(f"{tag}.gres.pred_pmask", pmask, d[f"{prefix}.gres.pred_pmask"])
        report.floats(f"{tag}.gres.spiou", spiou, d[f"{prefix}.gres.spiou"])
        report.floats(f"{tag}.gres.piou", piou, d[f"{prefix}.gres.piou"])


def check_fake_checkpoint(fixture_dir: Path, reference: DecoderOutput, first_case: Path, report: Report) -> None:
    """The ``dec.*`` of the official-format file, loaded strictly, reproduce the first case bit for bit."""
    path = fixture_dir / "fake_official_checkpoint.pth"
    if not path.is_file():
        return
    sd = read_official_checkpoint(path)
    dec_sd = {k[len("dec."):]: v for k, v in sd.items() if k.startswith("dec.")}
    dec = BQNetDecoder(DecoderConfig.from_official(json.loads((fixture_dir / "dec_small_config.json").read_text())["model_cfg_res"]))
    try:
        dec.load_state_dict(dec_sd, strict=True)
    except RuntimeError as exc:
        report.fail("fake checkpoint strict load", str(exc).splitlines()[0])
        return
    dec.eval()
    with torch.no_grad():
        out = dec(**case_inputs(_load(first_case)), keep_all_layers=True)
    same = all(torch.equal(a.masks, b.masks) and torch.equal(a.indi, b.indi) and torch.equal(a.scores, b.scores)
               for a, b in zip(out.layers, reference.layers)) and len(out.layers) == len(reference.layers)
    report.exact(f"fake checkpoint -> {first_case.stem} bit-identical", torch.tensor(0 if same else 1), torch.tensor(0),
                 f"{len(dec_sd)} dec.* tensors")


def run_checks(fixture_dir: Path) -> Report:
    report = Report()
    dec = build_decoder(fixture_dir)
    files = case_files(fixture_dir)
    outs = [compare_case(dec, f, report) for f in files]
    check_fake_checkpoint(fixture_dir, outs[0], files[0], report)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fixture_dir", type=Path, help="folder of dec_small_config.json (golden outputs of the authors' code)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    report = run_checks(args.fixture_dir)
    print("\n".join(report.lines()))
    print("PASS" if report.ok else "FAIL")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
