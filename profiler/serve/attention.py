"""The serving engine's attention at production speed: FlashAttention for prompt chunks.

Why: the fidelity runs must check the simulator against an engine as fast as a production one,
and the profiles that price it (``profiles/h200-fastattn``) time attention with the fastest
kernel per shape (``goodput.profiler.attention_backends``). There the prompt shapes (a chunk of many
tokens, with or without a cached prefix) go to FlashAttention-class kernels, about twice as fast
as the Triton paged kernel on long prompts, while one-token decodes and short verifies are about
as fast in Triton (and SDPA cannot batch decodes of different lengths). The engine does the same
per iteration, with one call per kind:

* the iteration's prompt chunks (the plan lists them first): their K/V, prefix and chunk, are
  gathered from the paged cache into one packed buffer (``index_select``; O(context) bytes next
  to O(chunk x context) FLOPs, a few percent of the attention at 512-token chunks); a whole
  prompt then runs on cuDNN's fused attention (causal SDPA; the profile's fastest for prompts on
  the H200, about twice FlashAttention-2 there), a chunk over a cached prefix on FlashAttention-2
  varlen (``torch.ops.aten._flash_attention_forward``, causal aligned to the bottom right: the
  chunk attends to its whole prefix; cuDNN's SDPA has no such mask without materialising it);
* the decodes and verifies (the rest of the batch): the Triton paged kernel, as before.

The gather is timed with the attention, so it is part of what the engine measures. On the CPU
(tests) the same gather feeds a float32 causal reference, so the packed indices are checked
against the paged reference kernel.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from goodput.profiler.batches import build_meta_from_table
from goodput.profiler.paged_attention import paged_attention
from goodput.profiler.shapes import PAGE_SIZE

#: the serving loop's attention kernels: "triton" (the paged kernel for every row); "fast"
#: (cuDNN for whole prompts of >= CUDNN_MIN_TOKENS, padded to CUDNN_BUCKET, Triton for every
#: other row); "flash" (the first rule tried: cuDNN for every whole prompt, FlashAttention-2
#: for chunks over a prefix, Triton for decodes; kept to reproduce its committed run)
ATTENTION_BACKENDS = ("triton", "fast", "flash")
#: whole prompts shorter than this stay on Triton (no faster below it: attention_check.json)
CUDNN_MIN_TOKENS = 1024
#: cuDNN builds an execution plan per shape (tens of ms, mid-run): prompts are padded to a
#: multiple of this, and warm-up builds every bucket's plan before serving
CUDNN_BUCKET = 512


@dataclass
class PromptRows:
    """Device tensors of the prompt chunks of one iteration: their packed K/V indices and, per
    chunk, its rows and its one-sequence varlen offsets."""

    tokens: int  # query rows (the chunks' tokens; rows 0 .. tokens - 1 of the batch)
    kv_index: torch.Tensor  # [sum of (context + chunk)] flat cache slots, sequence after sequence
    q_host: list  # row offsets of each chunk in the batch (n + 1)
    k_host: list  # offsets of each chunk's K/V in the packed buffer (n + 1)
    fresh: list  # per chunk: no cached prefix (a whole prompt's first chunk)
    cu: list  # per chunk: (cu_q, cu_k) int32 device tensors [0, q] and [0, context + q]


def prompt_rows(q_lens, ctx_lens, table: np.ndarray, n: int, device) -> PromptRows:
    """The first ``n`` sequences' (prompt chunks') packed K/V indices and offsets."""
    q = np.asarray(q_lens[:n], dtype=np.int64)
    ctx = np.asarray(ctx_lens[:n], dtype=np.int64)
    kv = q + ctx
    pos = np.concatenate([np.arange(int(k)) for k in kv])
    seq = np.repeat(np.arange(n), kv)
    slots = table[seq, pos // PAGE_SIZE] * PAGE_SIZE + pos % PAGE_SIZE
    pairs = np.stack([np.zeros(n, dtype=np.int64), q, np.zeros(n, dtype=np.int64), kv], 1)
    buf = torch.from_numpy(np.concatenate([slots, pairs.ravel()])).to(device, non_blocking=True)
    m = slots.size
    cu32 = buf[m:].to(torch.int32).view(n, 4)
    cu = [(cu32[j, :2], cu32[j, 2:]) for j in range(n)]
    return PromptRows(int(q.sum()), buf[:m], np.concatenate([[0], np.cumsum(q)]).tolist(),
                      np.concatenate([[0], np.cumsum(kv)]).tolist(), (ctx == 0).tolist(), cu)


def _cudnn_causal(q, k, v, scale: float) -> torch.Tensor:
    """A whole prompt (no prefix): cuDNN's fused attention, the fastest on Hopper for prompts in
    the fast-attention profile's per-shape timings."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        o = F.scaled_dot_product_attention(q.transpose(0, 1)[None], k.transpose(0, 1)[None],
                                           v.transpose(0, 1)[None], is_causal=True, scale=scale,
                                           enable_gqa=True)
    return o[0].transpose(0, 1)


def _flash_chunk(q, k, v, cu, scale: float) -> torch.Tensor:
    """A chunk over a cached prefix: FlashAttention-2 varlen, causal aligned bottom-right."""
    out = torch.ops.aten._flash_attention_forward(q, k, v, cu[0], cu[1], q.shape[0], k.shape[0],
                                                  0.0, True, False, scale=scale)
    return out[0]


def _reference(q, k, v, scale: float) -> torch.Tensor:
    """CPU: float32 causal attention, bottom-right aligned, GQA by head grouping."""
    group = q.shape[1] // k.shape[1]
    qq = q.float().transpose(0, 1)
    kk = k.float().repeat_interleave(group, 1).transpose(0, 1)
    vv = v.float().repeat_interleave(group, 1).transpose(0, 1)
    n_q, n_k = q.shape[0], k.shape[0]
    mask = torch.ones(n_q, n_k, dtype=torch.bool).tril(n_k - n_q)
    o = F.scaled_dot_product_attention(qq, kk, vv, attn_mask=mask, scale=scale)
    return o.transpose(0, 1).to(q.dtype)


def prompt_attention(q, k, v, rows: PromptRows, scale: float, out: torch.Tensor) -> None:
    """Each prompt chunk's attention into ``out`` rows (cuDNN for a fresh prompt, FlashAttention
    for a chunk over its prefix, the reference on the CPU)."""
    cuda = q.is_cuda
    for j, fresh in enumerate(rows.fresh):
        qs, qe, ks, ke = rows.q_host[j], rows.q_host[j + 1], rows.k_host[j], rows.k_host[j + 1]
        qj, kj, vj = q[qs:qe].contiguous(), k[ks:ke], v[ks:ke]
        if not cuda:
            o = _reference(qj, kj, vj, scale)
        elif fresh and qe - qs > 1:
            o = _cudnn_causal(qj, kj, vj, scale)
        else:
            o = _flash_chunk(qj, kj, vj, rows.cu[j], scale)
        out[qs:qe] = o


class IterationAttention:
    """One iteration's attention under the ``flash`` backend: prompt rows by FlashAttention,
    the other rows by the Triton kernel over a metadata of their own."""

    def __init__(self, q_lens, ctx_lens, table: np.ndarray, n_prompts: int, s, device,
                 sm_count: int):
        self.rows = prompt_rows(q_lens, ctx_lens, table, n_prompts, device)
        self.rest = None
        if n_prompts < len(q_lens):
            self.rest = build_meta_from_table(q_lens[n_prompts:], ctx_lens[n_prompts:],
                                              table[n_prompts:], s.group, s.kv_heads,
                                              s.head_dim, device, sm_count)

    def __call__(self, q, layer, out=None):
        hkv, d = layer.k_cache.shape[2], layer.k_cache.shape[3]
        rows = self.rows
        k = layer.k_cache.view(-1, hkv, d).index_select(0, rows.kv_index)
        v = layer.v_cache.view(-1, hkv, d).index_select(0, rows.kv_index)
        if out is None:
            out = torch.empty_like(q)
        prompt_attention(q, k, v, rows, layer.scale, out)
        if self.rest is not None:
            paged_attention(q[rows.tokens:], layer.k_cache, layer.v_cache, self.rest,
                            layer.scale, out=out[rows.tokens:])
        return out


class FastAttention:
    """One iteration's attention under the ``fast`` backend: the whole prompts of at least
    ``CUDNN_MIN_TOKENS`` tokens on cuDNN (each padded to a multiple of ``CUDNN_BUCKET``: padded
    keys come after every real query, so the causal mask hides them; padded query rows are
    dropped), every other row (chunks over a prefix, short prompts, decodes, verifies) on the
    Triton paged kernel over a metadata of its own."""

    def __init__(self, q_lens, ctx_lens, table: np.ndarray, chosen: list[int], s, device,
                 sm_count: int):
        q = np.asarray(q_lens, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(q)])
        self.spans = []  # (first row, rows, padded length, offset in the packed K/V)
        idx, off = [], 0
        for j in chosen:
            n = int(q[j])
            padded = -(-n // CUDNN_BUCKET) * CUDNN_BUCKET
            pos = np.minimum(np.arange(padded), n - 1)  # pads repeat the last key (masked)
            idx.append(table[j, pos // PAGE_SIZE] * PAGE_SIZE + pos % PAGE_SIZE)
            self.spans.append((int(starts[j]), n, padded, off))
            off += padded
        rest = [j for j in range(len(q)) if j not in set(chosen)]
        rows = np.concatenate([np.arange(starts[j], starts[j + 1]) for j in rest]) if rest \
            else np.zeros(0, dtype=np.int64)
        buf = torch.from_numpy(np.concatenate([*idx, rows])).to(device, non_blocking=True)
        self.kv_index = buf[:off]
        #: the other rows: a slice when they are the batch's tail (prompts come first), else
        #: gathered and scattered back
        self.tail = int(rows[0]) if rest and np.array_equal(rows, np.arange(rows[0], q.sum())) \
            else None
        self.rows = buf[off:]
        self.rest = None
        if rest:
            self.rest = build_meta_from_table(q[rest], np.asarray(ctx_lens)[rest], table[rest],
                                              s.group, s.kv_heads, s.head_dim, device, sm_count)

    def __call__(self, q, layer, out=None):
        hkv, d = layer.k_cache.shape[2], layer.k_cache.shape[3]
        k = layer.k_cache.view(-1, hkv, d).index_select(0, self.kv_index)
        v = layer.v_cache.view(-1, hkv, d).index_select(0, self.kv_index)
        if out is None:
            out = torch.empty_like(q)
        for r0, n, padded, off in self.spans:
            qp = q.new_zeros(padded, q.shape[1], q.shape[2])
            qp[:n] = q[r0:r0 + n]
            kj, vj = k[off:off + padded], v[off:off + padded]
            o = _cudnn_causal(qp, kj, vj, layer.scale) if q.is_cuda else \
                _reference(qp, kj, vj, layer.scale)
            out[r0:r0 + n] = o[:n]
        if self.rest is not None:
            if self.tail is not None:
                paged_attention(q[self.tail:], layer.k_cache, layer.v_cache, self.rest,
                                layer.scale, out=out[self.tail:])
            else:
                o = paged_attention(q.index_select(0, self.rows), layer.k_cache, layer.v_cache,
                                    self.rest, layer.scale)
                out.index_copy_(0, self.rows, o)
        return out


def cudnn_chosen(q_lens, ctx_lens, n_prompts: int) -> list[int]:
    """The prompt chunks the ``fast`` backend runs on cuDNN: whole prompts of at least
    ``CUDNN_MIN_TOKENS`` tokens."""
    return [j for j in range(n_prompts) if ctx_lens[j] == 0 and q_lens[j] >= CUDNN_MIN_TOKENS]


def build_cudnn_plans(s, max_tokens: int, device) -> int:
    """Run cuDNN once per padded prompt length up to ``max_tokens`` (its plan cache then holds
    every shape the ``fast`` backend launches); returns the buckets built."""
    n = 0
    for size in range(CUDNN_BUCKET * -(-CUDNN_MIN_TOKENS // CUDNN_BUCKET), max_tokens + 1,
                      CUDNN_BUCKET):
        qq = torch.zeros(size, s.q_heads, s.head_dim, dtype=torch.bfloat16, device=device)
        kk = torch.zeros(size, s.kv_heads, s.head_dim, dtype=torch.bfloat16, device=device)
        _cudnn_causal(qq, kk, kk, 1.0)
        n += 1
    return n
