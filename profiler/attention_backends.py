"""The fastest attention kernel an engine would run for each batch: Triton paged vs torch SDPA.

Why: the profiler's own paged Triton kernel (``goodput.profiler.paged_attention``) is correct for every
batch mix but is not what production engines run. vLLM, SGLang and TensorRT-LLM use
FlashAttention-class kernels (FA2/FA3, FlashInfer, cuDNN), which on long prompts are about twice
as fast, so a profile timed with the Triton kernel alone overstates long-prompt prefill. Here
each batch's attention is timed with every candidate and the fastest is what the profile's row
measures:

* ``triton``: the paged kernel over a fragmented cache (random pages, one launch per batch);
* ``sdpa``: torch's ``scaled_dot_product_attention``, one call per group of equal sequences of
  the batch code, each group on the fastest of the ``flash``, ``cudnn`` and ``efficient``
  backends (``torch.nn.attention.sdpa_kernel``). Its K/V are read in place from the same paged
  cache with each sequence's pages contiguous (an engine's paged FlashAttention reads 16-token
  pages at about the speed of a contiguous cache). Decodes fold the G query heads of a KV head
  into G query rows (no mask; what FlashInfer and FA's GQA decode path do); prompts run causal
  with ``enable_gqa``; chunks over a cached prefix use the lower-right causal mask
  (``causal_lower_right``), which only the flash backend runs without materialising a mask.

The choice and every candidate's time are kept per batch code (``Choice.to_dict``) and written
to the profile's provenance. On the CPU the ``math`` backend stands in for the SDPA ones;
``PROFILER_SDPA_BACKENDS=flash,efficient`` restricts the candidates.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from goodput.profiler.batches import blocks_needed, decode
from goodput.profiler.paged_attention import paged_attention
from goodput.profiler.shapes import PAGE_SIZE

#: SDPA backends tried on CUDA (in this order); the CPU mode uses "math" alone.
CUDA_BACKENDS = ("flash", "cudnn", "efficient")
CPU_BACKENDS = ("math",)


def _sdpa_backend(name: str):
    from torch.nn.attention import SDPBackend

    return {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}[name]


@dataclass(frozen=True)
class Group:
    """One group of a batch code laid out for SDPA: ``count`` sequences of ``q`` new tokens
    over ``ctx`` cached ones; queries from token ``t0``, K/V from page ``p0`` (contiguous)."""

    t0: int
    p0: int
    count: int
    q: int
    ctx: int

    @property
    def code(self) -> str:
        return f"{self.count}x{self.q}@{self.ctx}"

    @property
    def pages_per_seq(self) -> int:
        return -(-(self.q + self.ctx) // PAGE_SIZE)


def contiguous_pages(code: str) -> np.ndarray:
    """Pages 0, 1, 2, ... in order: every sequence's KV pages back to back (the SDPA layout)."""
    return np.arange(blocks_needed(code), dtype=np.int64)


def layout(code: str) -> list[Group]:
    """The groups of ``code`` with their first token and first page under ``contiguous_pages``."""
    out, t0, p0 = [], 0, 0
    for cnt, q, ctx in decode(code):
        g = Group(t0, p0, cnt, q, ctx)
        out.append(g)
        t0 += cnt * q
        p0 += cnt * g.pages_per_seq
    return out


def sdpa_group(q, k_cache, v_cache, g: Group, scale: float, backend: str) -> torch.Tensor:
    """Attention of one group on one SDPA backend: [count * q, Hq, D] (may be a view)."""
    hkv, d = k_cache.shape[2], k_cache.shape[3]
    hq = q.shape[1]
    span = g.pages_per_seq * PAGE_SIZE
    n_kv = g.q + g.ctx

    def kv(cache):  # [count, Hkv, n_kv, D], a strided view of the cache
        flat = cache.view(-1, hkv, d)[g.p0 * PAGE_SIZE:(g.p0 + g.count * g.pages_per_seq)
                                      * PAGE_SIZE]
        return flat.view(g.count, span, hkv, d)[:, :n_kv].transpose(1, 2)

    k, v = kv(k_cache), kv(v_cache)
    qg = q[g.t0:g.t0 + g.count * g.q]
    from torch.nn.attention import sdpa_kernel

    with sdpa_kernel(_sdpa_backend(backend)):
        if g.q == 1:  # decode: the G heads sharing a KV head become G query rows, no mask
            o = F.scaled_dot_product_attention(qg.view(g.count, hkv, hq // hkv, d), k, v,
                                               scale=scale)
            return o.reshape(g.count, hq, d)
        qq = qg.view(g.count, g.q, hq, d).transpose(1, 2)
        if g.ctx == 0:
            o = F.scaled_dot_product_attention(qq, k, v, is_causal=True, scale=scale,
                                               enable_gqa=True)
        else:
            if backend not in ("flash", "math"):
                # CausalBias dispatches to flash whatever sdpa_kernel says: no honest timing
                raise NotImplementedError(f"{backend}: no lower-right causal mask without "
                                          "materialising it")
            from torch.nn.attention.bias import causal_lower_right

            o = F.scaled_dot_product_attention(qq, k, v, attn_mask=causal_lower_right(g.q, n_kv),
                                               scale=scale, enable_gqa=True)
    return o.transpose(1, 2).reshape(g.count * g.q, hq, d)


def sdpa_attention(q, k_cache, v_cache, groups: list[Group], backends: list[str],
                   scale: float) -> torch.Tensor:
    """The batch's attention, group by group on the given backends: [T, Hq, D] contiguous."""
    outs = [sdpa_group(q, k_cache, v_cache, g, scale, b)
            for g, b in zip(groups, backends, strict=True)]
    return outs[0].contiguous() if len(outs) == 1 else torch.cat(outs, 0)


@dataclass
class Choice:
    """The attention a batch row was measured with, and the per-candidate times (seconds)."""

    kind: str  # "triton" or "sdpa"
    backends: list[str] = field(default_factory=list)  # per group, for "sdpa"
    triton_s: float | None = None
    groups: list[dict] = field(default_factory=list)  # {"group", <backend>: s or "error: .."}

    @property
    def label(self) -> str:
        return "triton" if self.kind == "triton" else "sdpa:" + ",".join(self.backends)

    def to_dict(self) -> dict:
        return {"choice": self.label, "triton_s": self.triton_s, "groups": self.groups}


class AttentionSelector:
    """Times the candidates of each batch on one layer's cache and builds the chosen kernel.

    ``timer(fn) -> seconds`` times a callable (``goodput.profiler.measure.time_fn`` on the device).
    A backend that raises on some shape is recorded as an error for that shape and not used.
    """

    def __init__(self, device: torch.device, timer, backends: tuple[str, ...] | None = None):
        self.device = device
        self.timer = timer
        env = tuple(b for b in os.environ.get("PROFILER_SDPA_BACKENDS", "").split(",") if b)
        self.backends = backends or env or (CUDA_BACKENDS if device.type == "cuda"
                                            else CPU_BACKENDS)
        self.log: dict[str, dict] = {}

    def _try(self, fn):
        try:
            return float(self.timer(fn))
        except Exception as exc:  # any failure means: not a candidate for this shape
            if self.device.type == "cuda":
                with contextlib.suppress(Exception):
                    torch.cuda.synchronize()
            return "error: " + f"{type(exc).__name__}: {exc}".splitlines()[0][:120]

    def choose(self, code: str, layer, q, meta_triton) -> Choice:
        """Time Triton (on ``meta_triton``'s fragmented pages) and every SDPA backend per group
        (contiguous pages, see ``layout``) for attention alone; pick the fastest total."""
        kc, vc, scale = layer.k_cache, layer.v_cache, layer.scale
        triton_s = self._try(lambda: paged_attention(q, kc, vc, meta_triton, scale))
        groups, picks, total = layout(code), [], 0.0
        rows = []
        for g in groups:
            row: dict = {"group": g.code}
            for b in self.backends:
                row[b] = self._try(lambda g=g, b=b: sdpa_group(q, kc, vc, g, scale, b))
            ok = {b: t for b, t in row.items() if b != "group" and isinstance(t, float)}
            rows.append(row)
            if not ok:
                total = float("inf")
                picks.append("")
                continue
            best = min(ok, key=lambda b: ok[b])
            picks.append(best)
            total += ok[best]
        tri = triton_s if isinstance(triton_s, float) else float("inf")
        if tri == float("inf") and total == float("inf"):
            raise RuntimeError(f"no attention kernel ran batch {code}: triton {triton_s}, "
                               f"sdpa {rows}")
        kind = "triton" if tri <= total else "sdpa"
        ch = Choice(kind, picks if kind == "sdpa" else [],
                    triton_s if isinstance(triton_s, float) else None, rows)
        self.log[code] = ch.to_dict() | ({"triton_error": triton_s}
                                         if isinstance(triton_s, str) else {})
        return ch

    @staticmethod
    def attn_fn(choice: Choice, code: str):
        """``fn(q, layer, meta) -> attention output`` for the layer forward (None: Triton)."""
        if choice.kind == "triton":
            return None
        groups = layout(code)

        def fn(q, layer, meta):
            return sdpa_attention(q, layer.k_cache, layer.v_cache, groups, choice.backends,
                                  layer.scale)
        return fn

    def provenance(self) -> dict:
        return {"rule": "per batch code, the faster of the Triton paged kernel (whole batch) "
                        "and torch SDPA (per group, fastest backend); attention alone, one "
                        "layer, CUDA-graph replays; the row then times the full layer with it",
                "backends": ["triton", *self.backends], "per_shape": self.log}


__all__ = [
    "CPU_BACKENDS",
    "CUDA_BACKENDS",
    "AttentionSelector",
    "Choice",
    "Group",
    "contiguous_pages",
    "layout",
    "sdpa_attention",
    "sdpa_group",
]
