"""Check every SDPA backend's attention over the paged cache against the reference on the GPU.

Why: ``goodput.profiler.attention_backends`` reads K/V in place through strided views and folds GQA
heads for decodes; a wrong view would time the wrong work. Run on the device before profiling
(``python -m goodput.profiler.attention_check``): each backend that runs a case must match the float32
reference; one that refuses a shape (an unsupported mask or GQA layout) is listed, not failed,
since the profiler then does not choose it for that shape. Exits non-zero on a mismatch.
"""
from __future__ import annotations

import sys

import torch

from goodput.profiler.attention_backends import (
    CPU_BACKENDS,
    CUDA_BACKENDS,
    contiguous_pages,
    layout,
    sdpa_group,
)
from goodput.profiler.batches import blocks_needed, build_meta
from goodput.profiler.paged_attention import paged_attention_ref
from goodput.profiler.shapes import PAGE_SIZE

CASES = [  # (q heads, kv heads, head dim, batch code)
    (32, 8, 128, "1x1@5000"),
    (32, 8, 128, "7x1@300+1x200@0"),
    (32, 8, 128, "1x257@1000+2x5@77"),
    (28, 4, 128, "1x130@0+3x1@4000"),
    (32, 32, 128, "4x5@129+1x200@0"),
    (32, 4, 64, "64x1@333+1x64@64"),
]


def check(device: torch.device, dtype=torch.bfloat16) -> int:
    backends = CUDA_BACKENDS if device.type == "cuda" else CPU_BACKENDS
    bad = 0
    gen = torch.Generator(device=device).manual_seed(0)
    for hq, hkv, d, code in CASES:
        blocks = blocks_needed(code) + 2
        kc = torch.randn(blocks, PAGE_SIZE, hkv, d, generator=gen, device=device).to(dtype)
        vc = torch.randn(blocks, PAGE_SIZE, hkv, d, generator=gen, device=device).to(dtype)
        meta = build_meta(code, hq // hkv, hkv, d, blocks, device, 132, 0,
                          pages=contiguous_pages(code))
        q = torch.randn(meta.num_tokens, hq, d, generator=gen, device=device).to(dtype)
        scale = d ** -0.5
        ref = paged_attention_ref(q.float(), kc.float(), vc.float(), meta.block_table,
                                  meta.q_start_host, meta.q_lens_host, meta.ctx_lens_host, scale)
        for g in layout(code):
            want = ref[g.t0:g.t0 + g.count * g.q]
            for b in backends:
                try:
                    got = sdpa_group(q, kc, vc, g, scale, b).float()
                except Exception as exc:  # a refusal is reported, not failed
                    print(f"  {code:24s} {g.code:12s} {b:9s} refused: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0][:70]}")
                    continue
                err = (got - want).abs().max().item()
                ok = err < 3e-2
                bad += not ok
                print(f"  {code:24s} {g.code:12s} {b:9s} max err {err:.2e} "
                      f"{'ok' if ok else 'MISMATCH'}")
    return bad


def main() -> int:
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"SDPA over the paged cache on {dev}: torch {torch.__version__}")
    bad = check(dev, torch.bfloat16 if dev.type == "cuda" else torch.float32)
    print("attention check:", "FAILED" if bad else "ok")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
