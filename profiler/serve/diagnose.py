"""Where does a real iteration's time go, next to the profile's prediction? (GPU only)

For a few batches (decodes at one context, one prompt) it times, with CUDA events, the same
full-depth model four ways:

* ``step``: ``ModelRunner.step`` as the serving loop calls it (host metadata, piecewise graphs,
  eager attention, sampling), events around the call;
* ``piecewise``: the same with the metadata built beforehand (GPU work and launches only);
* ``full_graph``: the whole forward (attention included) captured as ONE graph for this batch
  and replayed: no launch gaps at all, the profiler's timing method at full depth;
* ``predicted``: the profiled cost model's GPU part (iteration time minus its host overhead).

full_graph vs predicted isolates the profile's error at full depth (per-layer x layers, memory
footprint, clocks); piecewise vs full_graph isolates the engine's launch gaps between graph
pieces; step vs piecewise the host preparation that the GPU waits for.

    python3 -m goodput.profiler.serve.diagnose --model llama-3.1-8b --gpu h200
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys


def _events_median(fn, reps: int) -> float:
    import torch

    fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        out.append(s.elapsed_time(e) * 1e-3)
    return statistics.median(out)


def diagnose(model: str, gpu: str, batches, reps: int = 30) -> list[dict]:
    import numpy as np

    from goodput.profiler.serve.runner import ModelRunner
    from goodput.sim.catalog import get_gpu, get_model
    from goodput.sim.costmodel.profiled import ProfiledCostModel, find_profile
    from goodput.sim.engine.kvcache import kv_capacity

    spec = get_model(model)
    blocks = kv_capacity(spec, get_gpu(gpu), 1, 16, 0.9, 2.0).total_blocks
    runner = ModelRunner(spec, blocks, "cuda", max_position=16384)
    runner.capture()
    cost = ProfiledCostModel.from_dir(find_profile(gpu, model, 1))
    rows = []
    rng = np.random.default_rng(0)
    for q_lens, ctx_lens in batches:
        rows.append(_diagnose_batch(runner, cost, blocks, rng, q_lens, ctx_lens, reps))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _diagnose_batch(runner, cost, blocks: int, rng, q_lens, ctx_lens, reps: int) -> dict:
    """Times one batch the four ways of the module docstring; returns its row."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from goodput.profiler.batches import build_meta_from_table, page_table
    from goodput.profiler.kernels import add_rmsnorm
    from goodput.profiler.paged_attention import paged_attention
    from goodput.sim.costmodel.base import Batch

    spec = runner.spec
    n = len(q_lens)
    need = [-(-(q + c) // 16) for q, c in zip(q_lens, ctx_lens, strict=True)]
    table = page_table(need, rng.choice(blocks, size=sum(need), replace=False))
    t = sum(q_lens)
    ids = rng.integers(0, spec.vocab_size, t)
    sample = np.cumsum(q_lens) - 1
    step = _events_median(lambda: runner.step(ids, q_lens, ctx_lens, table, sample), reps)
    s = runner.s
    size = runner._bucket(t)
    meta = build_meta_from_table(q_lens, ctx_lens, table, s.group, s.kv_heads, s.head_dim,
                                 runner.device, runner.sm_count, pad_to=size,
                                 pad_slot=runner.scratch_slot,
                                 extra={"ids": np.concatenate([ids, np.zeros(
                                     max(0, size - t), dtype=np.int64)]), "rows": sample})

    def piecewise():
        gs = runner._sets[size]
        for i, layer in enumerate(runner.layers):
            gs.graphs[i].replay()
            paged_attention(gs.q[i][:t], layer.k_cache, layer.v_cache, meta, layer.scale,
                            out=gs.attn[:t])
        gs.graphs[-1].replay()
        return F.linear(gs.final.index_select(0, meta.extra["rows"]), runner.head.w).argmax(-1)

    def forward():
        h = runner.embed.forward(meta.extra["ids"][:t])
        res = torch.zeros_like(h)
        for layer in runner.layers:
            q, res = layer.pre_attention(h, res, meta.positions[:t], meta.slots[:t],
                                         runner.cos_sin)
            a = paged_attention(q, layer.k_cache, layer.v_cache, meta, layer.scale)
            h, res = layer.post_attention(a, res)
        x, _ = add_rmsnorm(h, res, runner.head.norm)
        return F.linear(x.index_select(0, meta.extra["rows"]), runner.head.w).argmax(-1)

    pw = _events_median(piecewise, reps) if size else float("nan")
    eager = _events_median(forward, reps)
    forward()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        forward()
        g.capture_begin()
        forward()
        g.capture_end()
    torch.cuda.current_stream().wait_stream(side)
    full = _events_median(g.replay, reps)
    del g
    total = cost.batch_time(Batch(list(q_lens), list(ctx_lens)))
    gpu_pred = total - cost._overhead(n)
    return {"batch": f"{n} seqs, {t} new tokens, ctx {ctx_lens[0]}",
            "step_ms": round(step * 1e3, 3), "piecewise_ms": round(pw * 1e3, 3),
            "eager_ms": round(eager * 1e3, 3), "full_graph_ms": round(full * 1e3, 3),
            "predicted_gpu_ms": round(gpu_pred * 1e3, 3),
            "full_graph_vs_predicted_pct": round((full / gpu_pred - 1) * 100, 1),
            "piecewise_vs_full_graph_pct": round((pw / full - 1) * 100, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m goodput.profiler.serve.diagnose")
    p.add_argument("--model", required=True)
    p.add_argument("--gpu", required=True, help="catalog GPU of the profile to compare with")
    p.add_argument("--out", help="write the rows as JSON here")
    args = p.parse_args(argv)
    batches = [([1] * b, [1024] * b) for b in (1, 16, 64, 256)] + [([512], [0]), ([2048], [0])]
    rows = diagnose(args.model, args.gpu, batches)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
