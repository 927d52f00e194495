"""SDPA attention over the paged cache (goodput.profiler.attention_backends) matches the reference."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from goodput.profiler.attention_backends import (  # noqa: E402
    AttentionSelector,
    contiguous_pages,
    layout,
    sdpa_attention,
)
from goodput.profiler.batches import blocks_needed, build_meta  # noqa: E402
from goodput.profiler.paged_attention import paged_attention_ref  # noqa: E402
from goodput.profiler.shapes import PAGE_SIZE  # noqa: E402


def _case(code, hq=8, hkv=2, d=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    blocks = blocks_needed(code) + 3
    kc = torch.randn(blocks, PAGE_SIZE, hkv, d, generator=gen)
    vc = torch.randn(blocks, PAGE_SIZE, hkv, d, generator=gen)
    meta = build_meta(code, hq // hkv, hkv, d, blocks, torch.device("cpu"), 8, 0,
                      pages=contiguous_pages(code))
    q = torch.randn(meta.num_tokens, hq, d, generator=gen)
    return q, kc, vc, meta


@pytest.mark.parametrize("code", ["1x37@0", "3x1@40", "1x20@33", "4x1@17+1x23@0+2x5@30",
                                  "2x16@0+1x1@100+1x9@64"])
def test_sdpa_matches_paged_reference(code):
    q, kc, vc, meta = _case(code)
    scale = 0.25
    ref = paged_attention_ref(q, kc, vc, meta.block_table, meta.q_start_host, meta.q_lens_host,
                              meta.ctx_lens_host, scale)
    groups = layout(code)
    out = sdpa_attention(q, kc, vc, groups, ["math"] * len(groups), scale)
    assert out.shape == q.shape and out.is_contiguous()
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_layout_pages_are_contiguous_per_group():
    g = layout("4x1@17+1x23@0")
    assert [(x.t0, x.p0, x.count) for x in g] == [(0, 0, 4), (4, 8, 1)]
    assert contiguous_pages("4x1@17+1x23@0").tolist() == list(range(10))


def test_selector_picks_fastest_and_logs_errors():
    seq = [4.0, 1.0, 2.0, 1.0, RuntimeError("no kernel"), RuntimeError("no kernel")]
    times = iter(seq)

    def timer(fn):
        t = next(times)
        if isinstance(t, Exception):
            raise t
        return t

    sel = AttentionSelector(torch.device("cpu"), timer, backends=("math",))
    code = "2x1@40+1x9@20"
    q, kc, vc, meta = _case(code)

    class Layer:
        k_cache, v_cache, scale = kc, vc, 0.25

    ch = sel.choose(code, Layer, q, meta)  # triton 4.0 > 1.0 + 2.0 -> SDPA
    assert ch.kind == "sdpa" and ch.label == "sdpa:math,math"
    assert sel.log[code]["groups"][0] == {"group": "2x1@40", "math": 1.0}
    fn = AttentionSelector.attn_fn(ch, code)
    assert fn(q, Layer, meta).shape == q.shape
    ch = sel.choose("3x1@40", Layer, q, meta)  # SDPA fails -> Triton, error kept
    assert ch.kind == "triton" and sel.log["3x1@40"]["groups"][0]["math"].startswith("error")
    assert AttentionSelector.attn_fn(ch, "3x1@40") is None
    with pytest.raises(RuntimeError, match="no attention kernel"):
        sel.choose("3x1@40", Layer, q, meta)
