"""Check the Triton kernels against the torch references before timing anything.

Why: a fast kernel that computes the wrong thing (a missed page, a wrong causal bound) would time
the wrong work. Run on the device first (``python -m goodput.profiler.selfcheck``); it draws fresh
random inputs, poisons outputs, covers every GQA group size and head size of the catalog's
profiled models, both tile classes and the split-KV path, and exits non-zero on a mismatch.
With ``TRITON_INTERPRET=1`` it runs on the CPU through Triton's interpreter (float16/32 there:
the interpreter has no bfloat16 arithmetic).
"""
from __future__ import annotations

import os
import sys

import torch

from goodput.profiler import kernels as K
from goodput.profiler.batches import build_meta, expand
from goodput.profiler.paged_attention import paged_attention, paged_attention_ref

CASES = [  # (q heads, kv heads, head dim, batch code)
    (32, 8, 128, "1x1@5000"),  # long-context decode -> split KV
    (32, 8, 128, "3x1@37+1x20@5+2x9@300"),
    (28, 4, 128, "1x300@1000+8x1@700"),  # G = 7
    (32, 32, 128, "4x5@129+1x200@0"),  # MHA
    (32, 4, 64, "64x1@333+1x64@64"),  # G = 8, D = 64
    (32, 8, 64, "1x1023@1+16x2@2000"),
    (32, 8, 128, "100x1@1473+1x2@26527"),  # one long sequence among short ones
    (32, 8, 128, "1x130@0+1x1@20000+3x1@0"),  # contexts shorter than a KV block
]


def rel(a, b) -> float:
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def run(device: torch.device, dtype=torch.bfloat16, tol=2e-2, cases=CASES,
        pool: int = 16384) -> list[tuple[str, float]]:
    gen = torch.Generator(device=device)
    gen.manual_seed(1234)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen, device=device, dtype=torch.float32).to(dtype)

    results = []
    x, r, w = rnd(37, 4096), rnd(37, 4096), rnd(4096)
    (a, ra), (b, rb) = K.add_rmsnorm(x, r, w), K.add_rmsnorm_ref(x, r, w, 1e-5)
    results += [("add_rmsnorm", rel(a, b)), ("add_rmsnorm.residual", rel(ra, rb))]
    gu = rnd(19, 2 * 1000)
    results.append(("silu_mul", rel(K.silu_mul(gu), K.silu_mul_ref(gu))))
    for hq, hkv, d, code in cases:
        q_lens, ctx_lens = expand(code)
        t = sum(q_lens)
        meta = build_meta(code, hq // hkv, hkv, d, pool, device, sm_count=132, seed=5)
        qkv = rnd(t, (hq + 2 * hkv) * d)
        max_pos = max(q + c for q, c in zip(q_lens, ctx_lens, strict=True))
        cs = torch.randn(max_pos, d, generator=gen, device=device)
        kc, vc = rnd(pool, 16, hkv, d), rnd(pool, 16, hkv, d)
        kc2, vc2 = kc.clone(), vc.clone()
        q1 = K.rope_cache(qkv, meta.positions, cs, kc, vc, meta.slots, hq, hkv, d)
        q2 = K.rope_cache_ref(qkv, meta.positions, cs, kc2, vc2, meta.slots, hq, hkv, d)
        results += [(f"rope_cache q {code}", rel(q1, q2)), (f"rope_cache k {code}", rel(kc, kc2)),
                    (f"rope_cache v {code}", rel(vc, vc2))]
        o = paged_attention(q1, kc, vc, meta, d ** -0.5)
        ref = paged_attention_ref(q1, kc, vc, meta.block_table, meta.q_start_host, q_lens,
                                  ctx_lens, d ** -0.5)
        tag = ",".join(f"bm{ln.block_m}/{ln.num_items}{'s' if ln.split else ''}"
                       for ln in meta.launches)
        results.append((f"attention G={hq // hkv} D={d} {code} [{tag}]", rel(o, ref)))
    bad = [(n, e) for n, e in results if not (e <= tol)]  # NaN fails too
    for n, e in results:
        print(f"{'FAIL' if (n, e) in bad else 'ok  '} {e:.2e}  {n}")
    if bad:
        raise SystemExit(f"selfcheck: {len(bad)} kernel(s) disagree with the reference")
    return results


if __name__ == "__main__":
    if torch.cuda.is_available():
        run(torch.device("cuda"))
    elif os.environ.get("TRITON_INTERPRET") == "1":
        run(torch.device("cpu"), dtype=torch.float16, tol=5e-3)
    else:
        sys.exit("selfcheck: needs a GPU, or TRITON_INTERPRET=1 with Triton installed")
