"""Check the FP8 kernels against their references on the GPU before an FP8 profile is timed.

Why: the Triton kernels for FP8 (row quantisation, the fused norm + quantisation, rotary writes
into an e4m3 cache, paged attention that upcasts e4m3 pages) and cuBLASLt's row-scaled FP8 GEMM
run only on a GPU, so CI checks their torch references alone. Run on the device first
(``python -m goodput.profiler.fp8_check``): every kernel must match its reference, a Llama-3.1-8B
layer stack in each FP8 variant must stay within FP8 rounding of the bf16 stack, and each must
replay from a CUDA graph (the profiler times graph replays). Prints a few per-layer timings
beside the bf16 ones as a sanity reading. Exits non-zero on a mismatch.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial

import torch

from goodput.profiler.batches import build_meta
from goodput.profiler.fp8 import (
    FP8,
    Fp8Weight,
    fp8_linear,
    quantize,
    quantize_ref,
    scaled_mm,
    static_scale,
)
from goodput.profiler.kernels import (
    add_rmsnorm_quant,
    add_rmsnorm_quant_ref,
    rope_cache,
    rope_cache_ref,
    silu_mul_quant,
    silu_mul_quant_ref,
)
from goodput.profiler.layers import LayerStack, rope_table
from goodput.profiler.measure import time_fn
from goodput.profiler.paged_attention import paged_attention, paged_attention_ref
from goodput.profiler.shapes import PAGE_SIZE, ShardShapes, resolve_model


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.float(), want.float()
    return float((got - want).norm() / want.norm().clamp(min=1e-30))


def _report(name: str, err: float, tol: float) -> int:
    ok = err <= tol
    print(f"  {name:44s} rel err {err:.2e} (tol {tol:.0e}) {'ok' if ok else 'MISMATCH'}")
    return 0 if ok else 1


def check_kernels(dev: torch.device) -> int:
    gen = torch.Generator(device=dev).manual_seed(0)
    bad = 0
    scale = torch.full((), 0.02, device=dev)  # a static scale that some values saturate at
    x = torch.randn(37, 14336, generator=gen, device=dev).to(torch.bfloat16)
    bad += _report("quantize (static scale, saturating)",
                   _rel(quantize(x, scale).float(), quantize_ref(x, scale).float()), 1e-6)
    res = torch.randn(37, 4096, generator=gen, device=dev).to(torch.bfloat16)
    h = torch.randn(37, 4096, generator=gen, device=dev).to(torch.bfloat16)
    w = torch.rand(4096, generator=gen, device=dev).to(torch.bfloat16) + 0.5
    one = static_scale(dev)
    q, r = add_rmsnorm_quant(h, res, w, one)
    qr, rr = add_rmsnorm_quant_ref(h, res, w, 1e-5, one)
    bad += _report("add_rmsnorm_quant residual", _rel(r, rr), 1e-6)
    bad += _report("add_rmsnorm_quant values", _rel(q.float(), qr.float()), 2e-2)
    gu = torch.randn(37, 2 * 14336, generator=gen, device=dev).to(torch.bfloat16)
    bad += _report("silu_mul_quant values",
                   _rel(silu_mul_quant(gu, one).float(), silu_mul_quant_ref(gu, one).float()), 2e-2)
    wt = (torch.randn(6144, 4096, generator=gen, device=dev) / 64).to(torch.bfloat16)
    y = fp8_linear(h, one, Fp8Weight.from_bf16(wt))
    bad += _report("fp8_linear vs bf16 GEMM", _rel(y, torch.nn.functional.linear(h, wt)), 8e-2)
    # rotary + KV write into an e4m3 cache, then paged attention over it
    hq, hkv, d, blocks = 32, 8, 128, 256
    code = "5x1@300+1x70@100"
    meta = build_meta(code, hq // hkv, hkv, d, blocks, dev, 132, 0)
    t = meta.num_tokens
    qkv = torch.randn(t, (hq + 2 * hkv) * d, generator=gen, device=dev).to(torch.bfloat16)
    cs = rope_table(4096, d, dev)
    caches = [torch.randn(blocks, PAGE_SIZE, hkv, d, generator=gen, device=dev).to(FP8)
              for _ in range(2)]
    kc, vc = caches[0].clone(), caches[1].clone()
    kr, vr = caches[0].clone(), caches[1].clone()
    qa = rope_cache(qkv, meta.positions, cs, kc, vc, meta.slots, hq, hkv, d)
    qb = rope_cache_ref(qkv, meta.positions, cs, kr, vr, meta.slots, hq, hkv, d)
    bad += _report("rope_cache queries", _rel(qa, qb), 1e-2)
    bad += _report("rope_cache into an e4m3 K cache", _rel(kc.float(), kr.float()), 2e-2)
    bad += _report("rope_cache into an e4m3 V cache", _rel(vc.float(), vr.float()), 1e-6)
    out = paged_attention(qa, kc, vc, meta, d ** -0.5)
    ref = paged_attention_ref(qa.float(), kc.float(), vc.float(), meta.block_table,
                              meta.q_start_host, meta.q_lens_host, meta.ctx_lens_host, d ** -0.5)
    bad += _report("paged attention over an e4m3 cache", _rel(out, ref), 2e-2)
    return bad


def check_stacks(dev: torch.device, model: str = "llama-3.1-8b") -> int:
    """Each FP8 variant's 2-layer stack against the bf16 one (same seed, same weights), replayed
    from a CUDA graph, with per-layer times."""
    bad = 0
    base = ShardShapes.from_spec(resolve_model(model), 1)
    codes = ("32x1@2048", "1x4096@0", "1x512@2048+32x1@1024")
    blocks = 8192
    hs = torch.randn(4096 + 64, base.hidden, generator=torch.Generator(device=dev).manual_seed(1),
                     device=dev).to(torch.bfloat16)
    outs: dict[str, dict[str, torch.Tensor]] = {}
    for variant in ("", "-fp8", "-kvfp8", "-fp8-kvfp8"):
        outs[variant] = _run_variant(dev, model + variant, codes, blocks, hs)
        torch.cuda.empty_cache()  # the variant's stack is gone: free its weights
    for variant in ("-fp8", "-kvfp8", "-fp8-kvfp8"):
        for code in codes:
            # the bf16 stack read a bf16 random cache: the KV variants read its e4m3 rounding,
            # so compare outputs loosely (the cached keys differ by one e4m3 rounding)
            bad += _report(f"{model + variant} stack {code}",
                           _rel(outs[variant][code], outs[""][code]), 0.15)
    return bad


def _run_variant(dev, name: str, codes, blocks: int, hs) -> dict[str, torch.Tensor]:
    """The 2-layer stack of model ``name``: its output per batch code, and per-layer times."""
    s = ShardShapes.from_spec(resolve_model(name), 1)
    stack = LayerStack(s, 2, blocks, 8192, dev, seed=0)
    times, out = [], {}
    for code in codes:
        meta = build_meta(code, s.group, s.kv_heads, s.head_dim, blocks, dev, 132, 7)
        n = meta.num_tokens
        out[code] = stack.forward(hs[:n], hs[:n].clone(), meta)
        t = time_fn(lambda m=meta, n=n: stack.forward(hs[:n], hs[:n].clone(), m), dev,
                    graph=True, budget_s=0.2)
        times.append(f"{code} {t.median_s / 2 * 1e6:.0f} us")
    print(f"  {name:24s} per layer: " + ", ".join(times))
    return out


def bench(dev: torch.device) -> None:
    """Per-call GPU time of the GEMM scaling schemes and of attention over a bf16 vs an e4m3
    cache at Llama-3.1-8B shapes (CUDA-graph replays), to choose the schemes the profile times."""
    gen = torch.Generator(device=dev).manual_seed(0)
    for n, k in ((6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336)):
        w = (torch.randn(n, k, generator=gen, device=dev) / 64).to(torch.bfloat16)
        w8 = Fp8Weight.from_bf16(w)
        row = []
        for m in (1, 32, 128, 512, 4096):
            x = torch.randn(m, k, generator=gen, device=dev).to(torch.bfloat16)
            one = static_scale(dev)
            xq = quantize(x, one)
            sa = torch.ones(m, 1, device=dev)
            wr = torch.ones(1, n, device=dev)
            cands: dict[str, Callable[[], object]] = {
                "bf16": partial(torch.nn.functional.linear, x, w),
                "rowwise": partial(torch._scaled_mm, xq, w8.t, scale_a=sa, scale_b=wr,
                                   out_dtype=torch.bfloat16),
                "tensorwise": partial(scaled_mm, xq, one, w8),
                "cast": partial(quantize, x, one),
            }
            ts = {name: time_fn(fn, dev, graph=True, budget_s=0.1).median_s * 1e6
                  for name, fn in cands.items()}
            row.append(f"M={m}: " + " ".join(f"{a} {b:.1f}" for a, b in ts.items()))
        print(f"  GEMM {n}x{k} (us): " + " | ".join(row))
    hq, hkv, d, blocks = 32, 8, 128, 20000
    for code in ("128x1@1024", "32x1@4096", "8x1@16384", "1x512@2048+32x1@1024"):
        meta = build_meta(code, hq // hkv, hkv, d, blocks, dev, 132, 0)
        q = torch.randn(meta.num_tokens, hq, d, generator=gen, device=dev).to(torch.bfloat16)
        cells = []
        for dtype in (torch.bfloat16, FP8):
            kc = torch.randn(blocks, PAGE_SIZE, hkv, d, generator=gen, device=dev).to(dtype)
            vc = torch.randn(blocks, PAGE_SIZE, hkv, d, generator=gen, device=dev).to(dtype)
            t = time_fn(lambda kc=kc, vc=vc, q=q, m=meta: paged_attention(q, kc, vc, m, d ** -0.5), dev,
                        graph=True, budget_s=0.1).median_s * 1e6
            cells.append(f"{str(dtype).split('.')[-1]} {t:.1f}")
            del kc, vc
        print(f"  attention {code} (us): " + ", ".join(cells))


def main() -> int:
    if "--bench" in sys.argv[1:] and torch.cuda.is_available():
        bench(torch.device("cuda"))
        return 0
    if not torch.cuda.is_available():
        print("fp8 check: needs a CUDA GPU (the CPU references are tested by tests/test_profiler_fp8.py)")
        return 0
    dev = torch.device("cuda")
    print(f"FP8 kernels on {torch.cuda.get_device_name(dev)}: torch {torch.__version__}")
    bad = check_kernels(dev) + check_stacks(dev)
    print("fp8 check:", "FAILED" if bad else "ok")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
