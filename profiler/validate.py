"""Check that per-layer time x layers + measured extras matches a timed full-depth forward.

Why: the profile times a stack of a few layers and scales by depth; that is only acceptable if
it reproduces a real full-depth forward (embedding, every layer, final norm, LM head and
sampling, one CUDA graph) within a few percent. This builds the whole model on one GPU (small
models only: Llama-3.2-1B and TinyLlama fit easily), times a few representative batches, and
compares with the composition of the same run's measured rows.
"""
from __future__ import annotations

from pathlib import Path

import torch

from goodput.profiler.batches import InfeasiblePoint, build_meta, expand
from goodput.profiler.layers import LayerStack
from goodput.profiler.measure import time_fn

CODES = ("1x1@1024", "32x1@1024", "256x1@512", "1x512@0", "1x2048@0", "1x256@1024+32x1@1024")


def validate_full_depth(prof, out_dir: Path) -> dict:
    """Returns {code: measured full forward, composed estimate, error} for each CODES batch."""
    spec, s = prof.spec, prof.s
    need = max(sum(q + c for q, c in zip(*expand(code), strict=True)) for code in CODES)
    pool = -(-need // 16) + 512
    full = LayerStack(s, spec.layers, pool, spec.max_context + 1, prof.device, seed=7)
    results = {}
    for code in CODES:
        q_lens, ctx_lens = expand(code)
        if any(q + c > spec.max_context for q, c in zip(q_lens, ctx_lens, strict=True)):
            results[code] = {"skipped": f"beyond max_context={spec.max_context}"}
            continue
        try:
            meta = build_meta(code, s.group, s.kv_heads, s.head_dim, pool, prof.device,
                              prof.sm_count, seed=3)
            short_meta = prof._meta(code, 3)
        except InfeasiblePoint as exc:
            results[code] = {"infeasible": str(exc)}
            continue
        results[code] = _compare(prof, full, q_lens, meta, short_meta, spec.layers)
    del full
    if prof.cuda:
        torch.cuda.empty_cache()
    return results


def _compare(prof, full: LayerStack, q_lens, meta, short_meta, layers: int) -> dict:
    """Times one batch's full-depth forward and the profile's composition of the same batch."""
    t_new, n = sum(q_lens), len(q_lens)
    last = torch.tensor([sum(q_lens[:i + 1]) - 1 for i in range(n)], device=prof.device)

    def forward():
        h = prof.embed.forward(prof.tokens[:t_new])
        h = full.forward(h, prof.res_in[:t_new], meta)
        return prof.lmhead.forward(h[last], prof.res_in[:n])

    measured = time_fn(forward, prof.device, graph=full.capturable).median_s
    # The composition the profile uses: per-layer time of the short stack x depth, plus the
    # embedding and LM head timed on their own, all on the same batch.
    stack = time_fn(lambda: prof.stack.forward(prof.h_in[:t_new], prof.res_in[:t_new], short_meta),
                    prof.device, graph=prof.stack.capturable).median_s / prof.cfg.depth
    emb = time_fn(lambda: prof.embed.forward(prof.tokens[:t_new]), prof.device).median_s
    head = time_fn(lambda: prof.lmhead.forward(prof.h_in[:n], prof.res_in[:n]),
                   prof.device).median_s
    composed = layers * stack + emb + head
    return {"full_depth_s": measured, "composed_s": composed,
            "per_layer_s": stack, "embed_s": emb, "lmhead_s": head,
            "rel_error": composed / measured - 1, "layers": layers}
