#!/usr/bin/env python3
"""The aten ops of one captured decoder call (what ``DecoderGraphs`` captures: text features ->
decoder -> answer summary), counted on the CPU: how many kernels a CUDA graph of it launches.

Why: under a CUDA graph the decoder's time is the sum of its kernels, most of them small; the count
of operators that reach a kernel (views excluded: they launch none) is the cost that fusing or removing
ops lowers. Counted with a ``TorchDispatchMode`` (every aten overload that reaches the backend, after
composite ops such as ``linear`` have decomposed), on a random map of ``--superpoints`` superpoints
(padded to the graph's bucket of 128, as a capture does) with random weights (the count does not
depend on them). ``--time`` adds the median wall time of the call on this machine's CPU.

    python bench/decoder_ops.py --config config/res.yaml --superpoints 2563 --top 30
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from bqnet_model.cuda_graphs import SUPERPOINT_BUCKET, TOKEN_BUCKET, _padded_scene, token_bucket  # noqa: E402
from bqnet_model.model.bqnet import SceneFeatures  # noqa: E402
from bqnet_model.model.config import load_config  # noqa: E402
from bqnet_model.pipeline import Segmenter  # noqa: E402


class OpCounter(TorchDispatchMode):
    """Counts every aten overload dispatched inside it; ``views``: those that only make a view."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()
        self.views: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - the mode's protocol
        name = str(func.overloadpacket.__name__)
        (self.views if func.is_view else self.ops)[name] += 1
        return func(*args, **(kwargs or {}))


def random_scene(seg: Segmenter, n_superpoints: int, seed: int = 0) -> SceneFeatures:
    """A one-map scene of random superpoint features, centres in a 5 x 4 x 2.5 m room, FPS-like
    seeds (distinct random superpoints), and image features when the model has a 2D branch."""
    d = seg.model.cfg.decoder
    g = torch.Generator().manual_seed(seed)
    S = n_superpoints
    img = torch.randn((1, S, d.image_channels), generator=g) if d.image_channels else None
    return SceneFeatures(
        sp_feats=torch.randn((1, S, d.in_channels), generator=g),
        sp_xyz=torch.rand((1, S, 3), generator=g) * torch.tensor([5.0, 4.0, 2.5]),
        sp_pad=torch.zeros((1, S), dtype=torch.bool),
        seed_idx=torch.randperm(S, generator=g)[: min(d.fps_num, S)].unsqueeze(0),
        sp_sizes=torch.randint(1, 200, (1, S), generator=g),
        image_feats=img,
    )


def count_ops(seg: Segmenter, n_superpoints: int, n_sentences: int, n_words: int) -> dict[str, Any]:
    """Op counts of one call of ``seg.summary_fn()`` on the padded inputs a graph captures."""
    scene = random_scene(seg, n_superpoints)
    static = _padded_scene(scene, token_bucket(n_superpoints, SUPERPOINT_BUCKET))
    Lb = token_bucket(n_words, TOKEN_BUCKET)
    C = seg.model.cfg.decoder.text_channels
    words = torch.randn((n_sentences, Lb, C), generator=torch.Generator().manual_seed(1))
    mask = torch.zeros((n_sentences, Lb), dtype=torch.bool)
    mask[:, :n_words] = True
    fn = seg.summary_fn()
    # no_grad rather than the query's inference mode: with autograd's keys on, composite ops (linear,
    # layer_norm, matmul, scaled_dot_product_attention, dropout) reach the mode decomposed into the
    # ops that launch kernels; the computation is the same
    with torch.no_grad():
        fn(static, words, mask)  # first call: one-time warnings and caches out of the count
        counter = OpCounter()
        with counter:
            fn(static, words, mask)
    return {"scene": static, "words": words, "mask": mask, "fn": fn, "ops": counter.ops, "views": counter.views}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "config" / "res.yaml"))
    ap.add_argument("--text-encoder", default="minilm", help="override model.text.encoder")
    ap.add_argument("--superpoints", type=int, default=2563, help="real superpoints of the map")
    ap.add_argument("--sentences", type=int, default=1)
    ap.add_argument("--words", type=int, default=12, help="real words per sentence (padded to a bucket of 16)")
    ap.add_argument("--top", type=int, default=25, help="print the most frequent ops")
    ap.add_argument("--time", type=int, default=0, help="also time this many calls (median, CPU)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="write the counts as JSON here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    if args.text_encoder:
        cfg.model.text.encoder = args.text_encoder
    cfg.model.text.official_prep = False
    cfg.inference.unknown_object = "answer"
    seg = Segmenter.from_config(cfg, device="cpu", seed=0, text_pretrained=False)
    r = count_ops(seg, args.superpoints, args.sentences, args.words)
    ops, views = r["ops"], r["views"]
    d = seg.model.cfg.decoder
    print(f"{Path(args.config).name}: {d.num_layers} layers, d_model {d.d_model}, {d.num_proposal} queries, "
          f"{args.superpoints} superpoints (padded to {r['scene'].sp_feats.shape[1]}), {args.sentences} sentence(s) "
          f"of {args.words} words (padded to {r['words'].shape[1]})")
    print(f"ops that reach a kernel: {sum(ops.values())} ({len(ops)} kinds); views: {sum(views.values())}")
    for name, n in ops.most_common(args.top):
        print(f"  {n:5d}  {name}")
    out: dict[str, Any] = {"config": Path(args.config).name, "superpoints": args.superpoints,
                           "sentences": args.sentences, "words": args.words, "ops_total": sum(ops.values()),
                           "views_total": sum(views.values()), "ops": dict(ops.most_common()),
                           "views": dict(views.most_common())}
    if args.time:
        with torch.inference_mode():
            ms = []
            for _ in range(args.time):
                t0 = time.perf_counter()
                r["fn"](r["scene"], r["words"], r["mask"])
                ms.append((time.perf_counter() - t0) * 1e3)
        out["cpu_ms"] = statistics.median(ms)
        print(f"one call on this CPU ({torch.get_num_threads()} threads): {out['cpu_ms']:.1f} ms (median of {args.time})")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
