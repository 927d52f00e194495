"""Paged (block-table) attention for any mix of prefill chunks, decodes and verifies.

Why one kernel for all batch kinds: a continuous-batching engine runs prompt chunks, decodes and
speculative verifies in the same iteration over one paged KV cache (vLLM V1's unified Triton
attention does exactly this). The profile must time that, so the kernel takes a varlen batch where
sequence i has ``q_i`` new tokens whose K/V are already in the cache after ``ctx_i`` cached tokens,
and applies the causal mask ``key <= ctx_i + query_index``.

Layout: q [T, Hq, D]; caches [blocks, PAGE, Hkv, D]; block_table [S, max_blocks] (int32).
Work is split into query tiles; each tile packs ``BLOCK_M // G`` query tokens times the G query
heads that share one KV head, so GQA reads each KV block once per tile. Up to three launches, one
per tile height (``TILE_CLASSES``: 16 rows for decodes, 64 for verifies and short chunks, 128 for
prompt chunks). Tiles are ordered longest first, and when the work would not spread evenly over
the GPU (a long-context decode among short ones, or few sequences) each tile's KV range is cut
into chunks of about equal size, one program per chunk (flash-decoding, balanced per tile as
FlashInfer schedules it), and a second kernel merges the partial softmaxes of each tile. The
plan is made on the host per batch by ``plan_launches``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from goodput.profiler.kernels import HAVE_TRITON, use_triton

if HAVE_TRITON:
    import triton
    import triton.language as tl

BLOCK_N = 64  # keys per inner step (4 pages of 16)
#: Tile heights (query rows = tokens x G) of the three launches: decodes (and verifies that fit
#: in 16 rows), short chunks and verifies (<= 64 rows), prompt chunks. A sequence's class depends
#: only on its own q * G, so a decode runs the same kernel whatever else is in the batch.
TILE_CLASSES = (16, 64, 128)
MIN_CHUNK_BLOCKS = 4  # a split chunk streams at least 4 x 64 keys
WAVES = 4  # aim for this many programs per multiprocessor when splitting


@dataclass
class Launch:
    """One kernel launch over a set of query tiles (host-side plan, then device tensors).

    Tiles are (sequence, first query token). When ``split`` is set, work items are
    (tile, first KV block, end KV block) and every tile's items are merged afterwards.
    """

    block_m: int
    qpt: int  # query tokens per tile
    tile_seq: np.ndarray
    tile_q0: np.ndarray
    split: bool = False
    # the work items, set by _chunk when ``split`` (empty otherwise)
    item_tile: np.ndarray | list = field(default_factory=list)
    item_b0: np.ndarray | list = field(default_factory=list)
    item_b1: np.ndarray | list = field(default_factory=list)
    tile_item0: np.ndarray | list = field(default_factory=list)
    tile_nitems: np.ndarray | list = field(default_factory=list)
    tensors: dict = field(default_factory=dict)  # device copies of the arrays above
    acc: torch.Tensor | None = None
    ml: torch.Tensor | None = None

    @property
    def num_items(self) -> int:
        return len(self.item_tile) if self.split else len(self.tile_seq)


def tile_class(rows):
    """Tile height for sequences with ``rows`` = q * G query rows (numpy array or int)."""
    return np.where(rows <= 16, 16, np.where(rows <= 64, 64, 128))


def plan_launches(q_lens, ctx_lens, group: int, kv_heads: int, sm_count: int) -> list[Launch]:
    """Split sequences into small/large tile launches; order tiles; decide KV chunking.

    Vectorised with numpy: this runs on the host every iteration (its cost is part of the
    measured per-iteration overhead), so it must not loop in Python over sequences.
    """
    q = np.asarray(q_lens, dtype=np.int64)
    c = np.asarray(ctx_lens, dtype=np.int64)
    cls = tile_class(q * group)
    launches = []
    for bm in TILE_CLASSES:
        seqs = np.nonzero(cls == bm)[0]
        if seqs.size == 0:
            continue
        qpt = bm // group
        if qpt < 1:
            raise ValueError(f"GQA group {group} exceeds the tile height {bm}")
        n_t = -(-q[seqs] // qpt)
        tile_seq = np.repeat(seqs, n_t)
        first = np.repeat(np.cumsum(n_t) - n_t, n_t)
        tile_q0 = (np.arange(tile_seq.size) - first) * qpt
        kv_end = c[tile_seq] + np.minimum(tile_q0 + qpt, q[tile_seq])
        blocks = -(-kv_end // BLOCK_N)
        order = np.argsort(-blocks, kind="stable")  # longest first: the grid's tail is short
        ln = Launch(bm, qpt, tile_seq[order], tile_q0[order])
        _chunk(ln, blocks[order], kv_heads, sm_count)
        launches.append(ln)
    return launches


def _chunk(ln: Launch, blocks: np.ndarray, kv_heads: int, sm_count: int) -> None:
    """Cut tiles into KV chunks of ~equal size when that balances the grid better."""
    target_items = -(-WAVES * sm_count // kv_heads)
    chunk = max(MIN_CHUNK_BLOCKS, -(-int(blocks.sum()) // target_items))
    if int(blocks.max()) <= chunk:
        return  # every tile is already at most one chunk: no split, no merge
    ln.split = True
    n = -(-blocks // chunk)
    per = -(-blocks // n)
    ln.item_tile = np.repeat(np.arange(blocks.size), n)
    ln.tile_item0 = np.cumsum(n) - n
    local = np.arange(ln.item_tile.size) - np.repeat(ln.tile_item0, n)
    ln.item_b0 = local * per[ln.item_tile]
    ln.item_b1 = np.minimum(blocks[ln.item_tile], ln.item_b0 + per[ln.item_tile])
    ln.tile_nitems = n


# --------------------------------------------------------------------------- reference
def paged_attention_ref(q, k_cache, v_cache, block_table, q_start, q_lens, ctx_lens, scale):
    """Float32 reference: gather each sequence's pages, causal softmax, GQA by head grouping.

    Decodes (q = 1) are done together, padded to the longest context; other sequences one by
    one. Used by the CPU mode and as the ground truth for the Triton kernel.
    """
    out = torch.empty_like(q)
    dec = [i for i, ql in enumerate(q_lens) if ql == 1]
    if dec:
        _decode_ref(q, k_cache, v_cache, block_table, q_start, ctx_lens, dec, scale, out)
    for i, (qs, ql, cl) in enumerate(zip(q_start, q_lens, ctx_lens, strict=True)):
        if ql == 1:
            continue
        n = cl + ql
        k, v = _gather(k_cache, v_cache, block_table[i:i + 1], n)
        qq = q[qs:qs + ql].float()  # [q, Hq, D]
        s = torch.einsum("qkgd,nkd->kgqn", _group(qq, k.shape[-2]), k[0]) * scale
        pos = cl + torch.arange(ql, device=q.device)
        mask = torch.arange(n, device=q.device)[None, :] <= pos[:, None]
        p = torch.softmax(s.masked_fill(~mask, float("-inf")), dim=-1)
        o = torch.einsum("kgqn,nkd->qkgd", p, v[0])
        out[qs:qs + ql] = o.reshape(ql, -1, q.shape[-1]).to(q.dtype)
    return out


def _group(x, hkv):
    """[..., Hq, D] -> [..., Hkv, G, D] (query heads h = kv * G + g share KV head kv)."""
    return x.reshape(*x.shape[:-2], hkv, x.shape[-2] // hkv, x.shape[-1])


def _gather(k_cache, v_cache, table, n):
    page = k_cache.shape[1]
    nb = -(-n // page)
    blocks = table[:, :nb].long()
    shape = (table.shape[0], nb * page, k_cache.shape[2], k_cache.shape[3])
    k = k_cache[blocks].reshape(shape)[:, :n].float()
    v = v_cache[blocks].reshape(shape)[:, :n].float()
    return k, v


def _decode_ref(q, k_cache, v_cache, block_table, q_start, ctx_lens, dec, scale, out):
    idx = torch.tensor(dec, device=q.device)
    lens = torch.tensor([ctx_lens[i] + 1 for i in dec], device=q.device)
    n = int(lens.max())
    k, v = _gather(k_cache, v_cache, block_table[idx], n)  # [S, n, Hkv, D]
    rows = torch.tensor([q_start[i] for i in dec], device=q.device)
    qq = _group(q[rows].float(), k.shape[2])  # [S, Hkv, G, D]
    s = torch.einsum("skgd,snkd->skgn", qq, k) * scale
    valid = torch.arange(n, device=q.device)[None, :] < lens[:, None]
    p = torch.softmax(s.masked_fill(~valid[:, None, None, :], float("-inf")), dim=-1)
    o = torch.einsum("skgn,snkd->skgd", p, v)
    out[rows] = o.reshape(len(dec), -1, q.shape[-1]).to(q.dtype)


# --------------------------------------------------------------------------- Triton kernels
if HAVE_TRITON:

    @triton.jit
    def _attn_body(q, acc, m_i, l_i, b, k_cache_ptr, v_cache_ptr, bt_row_ptr, kvh, pos,
                   kv_end, scale_log2, stride_kb, stride_kt, stride_kh,
                   HEAD_DIM: tl.constexpr, PAGE: tl.constexpr, BLOCK_N: tl.constexpr,
                   MASKED: tl.constexpr):
        d = tl.arange(0, HEAD_DIM)
        n = b * BLOCK_N + tl.arange(0, BLOCK_N)
        if MASKED:
            in_range = n < kv_end
            page = tl.load(bt_row_ptr + n // PAGE, mask=in_range, other=0).to(tl.int64)
        else:
            page = tl.load(bt_row_ptr + n // PAGE).to(tl.int64)
        off = page * stride_kb + (n % PAGE) * stride_kt + kvh * stride_kh
        k = tl.load(k_cache_ptr + off[None, :] + d[:, None]).to(q.dtype)  # FP8 pages: upcast (KV_FP8)
        qk = tl.dot(q, k) * scale_log2
        if MASKED:
            ok = (n[None, :] <= pos[:, None]) & in_range[None, :]
            qk = tl.where(ok, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(qk - m_safe[:, None])
        alpha = tl.math.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_cache_ptr + off[:, None] + d[None, :]).to(q.dtype)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        return acc, m_new, l_i

    @triton.jit
    def _paged_attn_kernel(q_ptr, k_cache_ptr, v_cache_ptr, out_ptr, acc_ptr, ml_ptr,
                           bt_ptr, q_start_ptr, q_len_ptr, ctx_ptr, tile_seq_ptr, tile_q0_ptr,
                           item_tile_ptr, item_b0_ptr, item_b1_ptr, scale_log2, G, QPT,
                           stride_qt, stride_qh, stride_kb, stride_kt, stride_kh, stride_bt,
                           HEAD_DIM: tl.constexpr, PAGE: tl.constexpr, BLOCK_M: tl.constexpr,
                           BLOCK_N: tl.constexpr, SPLIT: tl.constexpr, KV_FP8: tl.constexpr):
        item = tl.program_id(0)
        kvh = tl.program_id(1)
        # statement form, not a conditional expression: SPLIT is a constexpr, and an `if` on it
        # is resolved at compile time, so the non-split variant never emits the load
        if SPLIT:  # noqa: SIM108
            tile = tl.load(item_tile_ptr + item)
        else:
            tile = item
        seq = tl.load(tile_seq_ptr + tile)
        q0 = tl.load(tile_q0_ptr + tile)
        qs = tl.load(q_start_ptr + seq)
        ql = tl.load(q_len_ptr + seq)
        ctx = tl.load(ctx_ptr + seq)
        rows = tl.arange(0, BLOCK_M)
        d = tl.arange(0, HEAD_DIM)
        tok = q0 + rows // G
        hq = kvh * G + rows % G
        row_ok = (rows < QPT * G) & (tok < ql)
        q_off = (qs + tok).to(tl.int64)[:, None] * stride_qt + hq[:, None] * stride_qh + d[None, :]
        q = tl.load(q_ptr + q_off, mask=row_ok[:, None], other=0.0)
        if KV_FP8:  # e4m3 pages convert natively to fp16 (to bf16 only through fp32): dot in fp16
            q = q.to(tl.float16)
        pos = ctx + tok
        kv_end = ctx + tl.minimum(q0 + QPT, ql)
        if SPLIT:
            b0 = tl.load(item_b0_ptr + item)
            b1 = tl.load(item_b1_ptr + item)
        else:
            b0 = 0
            b1 = tl.cdiv(kv_end, BLOCK_N)
        full_end = (ctx + q0 + 1) // BLOCK_N  # blocks wholly at or before the first query
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        bt_row = bt_ptr + seq.to(tl.int64) * stride_bt
        for b in range(b0, tl.minimum(b1, full_end)):
            acc, m_i, l_i = _attn_body(q, acc, m_i, l_i, b, k_cache_ptr, v_cache_ptr, bt_row,
                                       kvh, pos, kv_end, scale_log2, stride_kb, stride_kt,
                                       stride_kh, HEAD_DIM, PAGE, BLOCK_N, False)
        for b in range(tl.maximum(b0, full_end), b1):
            acc, m_i, l_i = _attn_body(q, acc, m_i, l_i, b, k_cache_ptr, v_cache_ptr, bt_row,
                                       kvh, pos, kv_end, scale_log2, stride_kb, stride_kt,
                                       stride_kh, HEAD_DIM, PAGE, BLOCK_N, True)
        if SPLIT:
            slot = (item * tl.num_programs(1) + kvh).to(tl.int64) * BLOCK_M + rows
            tl.store(acc_ptr + slot[:, None] * HEAD_DIM + d[None, :], acc)
            tl.store(ml_ptr + slot * 2, m_i)
            tl.store(ml_ptr + slot * 2 + 1, l_i)
        else:
            o = acc / l_i[:, None]
            tl.store(out_ptr + q_off, o.to(out_ptr.dtype.element_ty), mask=row_ok[:, None])

    @triton.jit
    def _merge_splits_kernel(out_ptr, acc_ptr, ml_ptr, q_start_ptr, q_len_ptr, tile_seq_ptr,
                             tile_q0_ptr, tile_item0_ptr, tile_nitems_ptr, G, QPT,
                             stride_qt, stride_qh, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
        tile = tl.program_id(0)
        kvh = tl.program_id(1)
        n_kvh = tl.num_programs(1)
        seq = tl.load(tile_seq_ptr + tile)
        q0 = tl.load(tile_q0_ptr + tile)
        qs = tl.load(q_start_ptr + seq)
        ql = tl.load(q_len_ptr + seq)
        i0 = tl.load(tile_item0_ptr + tile)
        n_items = tl.load(tile_nitems_ptr + tile)
        rows = tl.arange(0, BLOCK_M)
        d = tl.arange(0, HEAD_DIM)
        tok = q0 + rows // G
        hq = kvh * G + rows % G
        row_ok = (rows < QPT * G) & (tok < ql)
        m_run = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_run = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        for i in range(i0, i0 + n_items):
            slot = (i * n_kvh + kvh).to(tl.int64) * BLOCK_M + rows
            m_s = tl.load(ml_ptr + slot * 2)
            l_s = tl.load(ml_ptr + slot * 2 + 1)
            a_s = tl.load(acc_ptr + slot[:, None] * HEAD_DIM + d[None, :])
            m_new = tl.maximum(m_run, m_s)
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            w_old = tl.math.exp2(m_run - m_safe)
            w_s = tl.math.exp2(m_s - m_safe)
            l_run = l_run * w_old + l_s * w_s
            acc = acc * w_old[:, None] + a_s * w_s[:, None]
            m_run = m_new
        o = acc / l_run[:, None]
        q_off = (qs + tok).to(tl.int64)[:, None] * stride_qt + hq[:, None] * stride_qh + d[None, :]
        tl.store(out_ptr + q_off, o.to(out_ptr.dtype.element_ty), mask=row_ok[:, None])


LOG2E = 1.4426950408889634


def paged_attention(q, k_cache, v_cache, meta, scale, out=None):
    """Attention output [T, Hq, D] for the batch described by ``meta`` (see batches.AttnMeta).

    ``out``: where to write it (same shape and strides as ``q``), e.g. the static buffer a
    piecewise CUDA graph reads (goodput.profiler.serve.runner); a new tensor when not given.
    """
    if not use_triton(q):
        ref = paged_attention_ref(q, k_cache, v_cache, meta.block_table, meta.q_start_host,
                                  meta.q_lens_host, meta.ctx_lens_host, scale)
        return ref if out is None else out.copy_(ref)
    _, hq, d = q.shape
    hkv = k_cache.shape[2]
    g = hq // hkv
    if out is None:
        out = torch.empty_like(q)
    elif out.shape != q.shape or out.stride() != q.stride():
        raise ValueError("paged_attention: out must have the shape and strides of q")
    for ln in meta.launches:
        n_tiles = len(ln.tile_seq)
        tt = ln.tensors
        dummy = tt["tile_seq"]
        _paged_attn_kernel[(ln.num_items, hkv)](
            q, k_cache, v_cache, out, ln.acc if ln.split else out, ln.ml if ln.split else out,
            meta.block_table, meta.q_start, meta.q_lens, meta.ctx_lens,
            tt["tile_seq"], tt["tile_q0"], tt.get("item_tile", dummy), tt.get("item_b0", dummy),
            tt.get("item_b1", dummy), scale * LOG2E, g, ln.qpt,
            q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
            meta.block_table.stride(0),
            HEAD_DIM=d, PAGE=k_cache.shape[1], BLOCK_M=ln.block_m, BLOCK_N=BLOCK_N,
            SPLIT=ln.split, KV_FP8=k_cache.dtype == torch.float8_e4m3fn,
            num_warps=8 if ln.block_m >= 128 else 4, num_stages=2)
        if ln.split:
            _merge_splits_kernel[(n_tiles, hkv)](
                out, ln.acc, ln.ml, meta.q_start, meta.q_lens, tt["tile_seq"], tt["tile_q0"],
                tt["tile_item0"], tt["tile_nitems"], g, ln.qpt, q.stride(0), q.stride(1),
                HEAD_DIM=d, BLOCK_M=ln.block_m, num_warps=4)
    return out
