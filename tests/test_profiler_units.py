"""Profiler building blocks: batch codes, grids, TP shard shapes, attention reference, tiling."""
from __future__ import annotations

from itertools import pairwise

import pytest

from goodput.profiler.batches import blocks_needed, decode, encode, expand, kv_tokens
from goodput.profiler.grids import GridConfig, build_grid, log_grid
from goodput.profiler.shapes import TINY_CPU_MODEL, ShardShapes
from goodput.sim.catalog import get_model
from goodput.sim.costmodel.profiled import FEATURES, attention_features, logit_rows, ring_allreduce_s

torch = pytest.importorskip("torch")


def test_batch_code_round_trip_and_counts():
    groups = [(64, 1, 1024), (1, 512, 2048)]
    code = encode(groups)
    assert code == "64x1@1024+1x512@2048"
    assert decode(code) == groups
    q, c = expand(code)
    assert len(q) == 65 and sum(q) == 64 + 512 and sum(c) == 64 * 1024 + 2048
    assert kv_tokens(code) == 64 * 1025 + 2560
    assert blocks_needed(code) == 64 * 65 + 160  # ceil(1025/16)=65, 2560/16=160
    with pytest.raises(ValueError, match="COUNTxQ@CTX"):
        decode("64x1")


def test_log_grid_is_log_spaced_and_inclusive():
    g = log_grid(1, 16, 1)
    assert g == [1, 2, 4, 8, 16]
    g = log_grid(16, 100, 2)
    assert g[0] == 16 and g[-1] == 100 and all(b > a for a, b in pairwise(g))


def test_grid_same_seed_same_points_and_limits():
    a = build_grid(4096, GridConfig(), seed=0, token_budget=60000)
    b = build_grid(4096, GridConfig(), seed=0, token_budget=60000)
    assert [p.code for p in a] == [p.code for p in b]
    batches = [p for p in a if p.kind == "batch"]
    for p in batches:
        q, c = expand(p.code)
        assert all(x + y <= 4096 for x, y in zip(q, c, strict=True)), p.code  # within the context limit
        assert sum(q) <= GridConfig().max_tokens, p.code
    kinds = {p.subkind for p in batches}
    assert kinds == {"prefill", "decode", "verify", "mixed", "sarathi", "random"}
    # Sarathi's mixes: a chunk filling the 512-token budget beside nd decodes, or a 200-token tail
    sar = [expand(p.code)[0] for p in batches if p.subkind == "sarathi"]
    assert len(sar) == 5 * 2 * 3 * 3
    assert all(q[0] + len(q) - 1 == 512 or q[0] == 200 for q in sar)
    # verify points cover k = 1..8
    ks = {expand(p.code)[0][0] - 1 for p in batches if p.subkind == "verify"}
    assert ks == set(range(1, 9))
    # each batch size keeps >= 4 contexts inside the token budget for its decode line
    for bsz in GridConfig().batch_sizes:
        ctxs = [expand(p.code)[1][0] for p in batches
                if p.subkind == "decode" and len(expand(p.code)[0]) == bsz]
        assert sum(1 for c in ctxs if bsz * (c + 1) <= 60000) >= 4, bsz


def test_shard_shapes_tp2_of_70b():
    s = ShardShapes.from_spec(get_model("llama-3.1-70b"), 2)
    assert (s.q_heads, s.kv_heads, s.ffn, s.group) == (32, 4, 14336, 8)
    assert s.vocab == 128256 // 2
    one = ShardShapes.from_spec(get_model("llama-3.1-70b"), 1)
    assert s.layer_params() * 2 == one.layer_params()  # every matrix is split evenly
    with pytest.raises(ValueError, match="tp=3"):
        ShardShapes.from_spec(get_model("llama-3.1-70b"), 3)


def test_kv_heads_replicated_when_tp_exceeds_them():
    s = ShardShapes.from_spec(get_model("llama-3.1-8b"), 16) if False else None
    s = ShardShapes.from_spec(get_model("tinyllama-1.1b"), 8)  # 4 KV heads, 32 q heads
    assert s.kv_heads == 1 and s.q_heads == 4


def test_attention_features_by_hand():
    # group 4: q=3 -> 12 rows (16-row class); q=9 -> 36 rows (64-row class); q=200 -> 128-row
    # class in tiles of 32 tokens (7 tiles); decodes contribute nothing of their own.
    f = dict(zip(FEATURES, attention_features([1, 3, 9, 200], [100, 7, 50, 10], 4, 8, 132), strict=True))
    assert (f["t16_launch"], f["t16_blocks"], f["t16_tiles"]) == (1.0, (7 + 3) / 64, 1.0)
    assert (f["t64_launch"], f["t64_blocks"], f["t64_tiles"]) == (1.0, (50 + 9) / 64, 1.0)
    streamed = sum(10 + min(32 * (j + 1), 200) for j in range(7))  # keys per tile, summed
    assert f["t128_blocks"] == pytest.approx(streamed / 64) and f["t128_tiles"] == 7.0
    assert f["t128_attn_work"] == 200 * (10 + 100.5)
    # Short tiles (at most 4 blocks) are never split.
    assert f["t16_split"] == f["t64_split"] == f["t128_split"] == 0.0
    assert attention_features([1, 1], [5, 6], 4) == [0.0] * len(FEATURES)


def test_attention_split_rule_matches_the_kernel_planner():
    from goodput.profiler.paged_attention import plan_launches

    for q, c in (([3], [20000]), ([9, 9], [300, 40000]), ([1] * 64 + [2], [100] * 64 + [5000]),
                 ([500], [0]), ([300], [100000])):
        f = dict(zip(FEATURES, attention_features(q, c, 4, 8, 132), strict=True))
        for ln in plan_launches(q, c, 4, 8, 132):
            if any(q[s] > 1 for s in ln.tile_seq):
                assert f[f"t{ln.block_m}_split"] == float(ln.split), (q, c, ln.block_m)
                if ln.split:  # chunks of the non-decode tiles (decodes have their own line)
                    own = sum(n for t, n in zip(ln.tile_seq, ln.tile_nitems, strict=True) if q[t] > 1)
                    assert f[f"t{ln.block_m}_items"] == pytest.approx(own, rel=0.35)


def test_logit_rows_and_ring_allreduce():
    assert logit_rows([1, 1, 5, 300]) == 1 + 1 + 5 + 1
    assert ring_allreduce_s(1e6, 1, 1e11, 1e-5) == 0.0
    assert ring_allreduce_s(1e6, 2, 1e11, 1e-5) == pytest.approx(1e-5 + 1e6 / 1e11)


def test_reference_attention_matches_dense_causal_softmax():
    from goodput.profiler.batches import build_meta
    from goodput.profiler.paged_attention import paged_attention_ref

    gen = torch.Generator().manual_seed(0)
    hq, hkv, d = 4, 2, 8
    code = "2x1@20+1x5@3"
    meta = build_meta(code, hq // hkv, hkv, d, 40, torch.device("cpu"), 8, seed=1)
    q = torch.randn(7, hq, d, generator=gen)
    kc = torch.randn(40, 16, hkv, d, generator=gen)
    vc = torch.randn(40, 16, hkv, d, generator=gen)
    out = paged_attention_ref(q, kc, vc, meta.block_table, meta.q_start_host,
                              meta.q_lens_host, meta.ctx_lens_host, 0.5)
    # Hand-rolled check of the chunk's 3rd token (position 3 + 2 = 5, sees keys 0..5), head 3.
    seq, tok, head = 2, 2, 3
    pages = meta.block_table[seq, :1].long()
    k = kc[pages].reshape(-1, hkv, d)[:6, head // 2]
    v = vc[pages].reshape(-1, hkv, d)[:6, head // 2]
    row = meta.q_start_host[seq] + tok
    p = torch.softmax(q[row, head] @ k.T * 0.5, 0)
    torch.testing.assert_close(out[row, head], p @ v)


def test_layer_stack_runs_on_cpu_and_writes_kv():
    from goodput.profiler.batches import build_meta
    from goodput.profiler.layers import LayerStack

    s = ShardShapes.from_spec(TINY_CPU_MODEL, 1)
    stack = LayerStack(s, 2, 64, 512, torch.device("cpu"), seed=0)
    meta = build_meta("3x1@10+1x6@0", s.group, s.kv_heads, s.head_dim, 64,
                      torch.device("cpu"), 8, seed=0)
    before = stack.layers[0].k_cache.clone()
    h = torch.randn(9, s.hidden).to(torch.bfloat16)
    out = stack.forward(h, h.clone(), meta)
    assert out.shape == (9, s.hidden) and torch.isfinite(out.float()).all()
    changed = (stack.layers[0].k_cache != before).flatten(1).any(1).nonzero().flatten()
    assert set(changed.tolist()) <= set(meta.block_table.flatten().tolist())


def test_allreduce_estimate_and_measured_path_on_cpu():
    from goodput.profiler.collectives import estimate_allreduce_s, measure_allreduce
    from goodput.sim.catalog import get_gpu
    from goodput.sim.costmodel.roofline import RooflineParams

    p = RooflineParams()
    h100 = get_gpu("h100-sxm")
    expected = p.allreduce_latency_s + 1e6 / (h100.nvlink_gbs * 1e9 * p.nvlink_efficiency)
    assert estimate_allreduce_s(1e6, 2, h100) == pytest.approx(expected)
    assert estimate_allreduce_s(1e6, 1, h100) == 0.0
    # The measuring code path (NCCL on GPUs) runs with gloo on the CPU: 2 processes.
    rows = measure_allreduce(2, backend="gloo", sizes=[4096, 1 << 16], port=29533)
    assert [r["bytes"] for r in rows] == [4096, 1 << 16]
    assert all(r["median_s"] > 0 for r in rows)
