"""Check the serving loop's FlashAttention prompt path on the GPU before serving with it.

``python -m goodput.profiler.serve.attention_check --model llama-3.1-8b --backend fast --out FILE.json``:
for a few mixed batches (fresh prompts, a chunk over a cached prefix next to decodes) it compares
the ``fast`` (or ``flash``) path's output with the Triton paged kernel's (max abs difference,
bf16) and times both per layer (CUDA events, eager: what the engine launches between graph
pieces). A failure (no such kernel in this torch, a wrong result) exits non-zero with one line
saying which.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from goodput.profiler.batches import build_meta_from_table, page_table
from goodput.profiler.layers import DecoderLayer
from goodput.profiler.measure import time_fn
from goodput.profiler.paged_attention import paged_attention
from goodput.profiler.serve.attention import FastAttention, IterationAttention, cudnn_chosen
from goodput.profiler.shapes import PAGE_SIZE, ShardShapes, resolve_model

#: (q_lens, ctx_lens, prompt chunks first): what the fidelity cases' iterations look like
BATCHES = [
    ([2048], [0]),
    ([512], [0]),
    ([1100], [0]),
    ([8192], [0]),
    ([2048, 300] + [1] * 32, [0, 1200] + [600] * 32),
    ([512] + [1] * 64, [3584] + [1000] * 64),
    ([512, 300] + [1] * 32, [0, 1200] + [600] * 32),
]


def check(model: str, device: str = "cuda", backend: str = "fast") -> list[dict]:
    dev = torch.device(device)
    s = ShardShapes.from_spec(resolve_model(model), 1)
    gen = torch.Generator(device=dev).manual_seed(0)
    need_max = max(sum(-(-(q + c) // PAGE_SIZE) for q, c in zip(ql, cl, strict=True))
                   for ql, cl in BATCHES)
    layer = DecoderLayer(s, need_max + 8, dev, gen)
    sm = torch.cuda.get_device_properties(dev).multi_processor_count if dev.type == "cuda" else 8
    rows = []
    for q_lens, ctx_lens in BATCHES:
        need = [-(-(q + c) // PAGE_SIZE) for q, c in zip(q_lens, ctx_lens, strict=True)]
        perm = np.random.default_rng(1).permutation(need_max + 8)[:sum(need)]
        table = page_table(need, perm)
        n_prompts = sum(1 for q in q_lens if q > 1)
        q = torch.randn(sum(q_lens), s.q_heads, s.head_dim, generator=gen, device=dev,
                        dtype=torch.bfloat16)
        meta = build_meta_from_table(q_lens, ctx_lens, table, s.group, s.kv_heads, s.head_dim,
                                     dev, sm)
        fa: IterationAttention | FastAttention
        if backend == "flash":
            fa = IterationAttention(q_lens, ctx_lens, table, n_prompts, s, dev, sm)
        else:
            chosen = cudnn_chosen(q_lens, ctx_lens, n_prompts)
            if not chosen:
                continue  # the fast backend runs this batch on Triton alone
            fa = FastAttention(q_lens, ctx_lens, table, chosen, s, dev, sm)
        ref = paged_attention(q, layer.k_cache, layer.v_cache, meta, layer.scale)
        got = fa(q, layer)
        err = float((got.float() - ref.float()).abs().max())
        t_tri = time_fn(lambda q=q, meta=meta: paged_attention(
            q, layer.k_cache, layer.v_cache, meta, layer.scale), dev, graph=False).median_s
        t_fa = time_fn(lambda q=q, fa=fa: fa(q, layer), dev, graph=False).median_s
        rows.append({"q_lens": f"{q_lens[:3]}{'...' if len(q_lens) > 3 else ''}",
                     "n_seqs": len(q_lens), "max_abs_diff": round(err, 4),
                     "triton_us": round(t_tri * 1e6, 1),
                     f"{backend}_path_us": round(t_fa * 1e6, 1)})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama-3.1-8b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--backend", default="fast", choices=["fast", "flash"])
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    try:
        rows = check(args.model, args.device, args.backend)
    except (RuntimeError, TypeError) as exc:
        print(f"attention_check: the flash path does not run here: {exc}".splitlines()[0])
        return 1
    doc = {"model": args.model, "backend": args.backend, "torch": torch.__version__,
           "rows": rows}
    print(json.dumps(doc, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=1)
    bad = [r for r in rows if r["max_abs_diff"] > 0.05]
    if bad:
        print(f"attention_check: flash path differs from the Triton kernel: {bad}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
