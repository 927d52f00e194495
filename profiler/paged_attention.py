"""Paged (block-table) attention for any mix of prefill chunks, decodes and verifies.

Why one kernel for all batch kinds: a continuous-batching engine runs prompt chunks, decodes and
speculative verifies in the same iteration over one paged KV cache (vLLM V1's unified Triton
attention does exactly this). The profile must time that, so the kernel takes a varlen batch where
sequence i has ``q_i`` new tokens whose K/V are already in the cache after ``ctx_i`` cached tokens,
and applies the causal mask ``key <= ctx_i + query_index``.

Layout: q [T, Hq, D]; caches [blocks, PAGE, Hkv, D]; block_table [S, max_blocks] (int32).
Work is split into query tiles; each tile packs ``BLOCK_M // G`` query tokens times the G query
heads that share one KV head, so GQA reads each KV block once per tile. Two launches: "small"
tiles (q * G <= 64, i.e. decodes and verifies, BLOCK_M 16..64) and "large" tiles (prompt chunks,
BLOCK_M 128). When tiles x KV heads cannot fill the GPU (small-batch long-context decode), the
KV range is split across programs (flash-decoding) and a second kernel merges the partial
softmaxes; the split count is chosen per launch by ``plan_launches``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from profiler.kernels import HAVE_TRITON, use_triton

if HAVE_TRITON:
    import triton
    import triton.language as tl

BLOCK_N = 64  # keys per inner step (4 pages of 16)
SMALL_MAX_ROWS = 64  # q * G at or below this -> small-tile launch
LARGE_BLOCK_M = 128
MAX_SPLITS = 32
MIN_BLOCKS_PER_SPLIT = 4


@dataclass
class Launch:
    """One kernel launch over a set of query tiles (host-side plan, then device tensors)."""

    block_m: int
    qpt: int  # query tokens per tile
    tile_seq: list
    tile_q0: list
    num_splits: int
    tile_seq_t: torch.Tensor | None = None
    tile_q0_t: torch.Tensor | None = None
    acc: torch.Tensor | None = None
    ml: torch.Tensor | None = None


def _pow2(n: int) -> int:
    return 1 << (max(1, n) - 1).bit_length()


def plan_launches(q_lens, ctx_lens, group: int, kv_heads: int, sm_count: int) -> list[Launch]:
    """Split sequences into small/large tile launches and choose each launch's KV split count."""
    small = [i for i, q in enumerate(q_lens) if q * group <= SMALL_MAX_ROWS]
    large = [i for i, q in enumerate(q_lens) if q * group > SMALL_MAX_ROWS]
    launches = []
    for seqs, is_small in ((small, True), (large, False)):
        if not seqs:
            continue
        if is_small:
            bm = min(SMALL_MAX_ROWS, max(16, _pow2(max(q_lens[i] for i in seqs) * group)))
        else:
            bm = LARGE_BLOCK_M
        qpt = bm // group
        if qpt < 1:
            raise ValueError(f"GQA group {group} exceeds the tile height {bm}")
        tseq, tq0 = [], []
        for i in seqs:
            for q0 in range(0, q_lens[i], qpt):
                tseq.append(i)
                tq0.append(q0)
        kv_blocks = max(-(-(ctx_lens[i] + q_lens[i]) // BLOCK_N) for i in seqs)
        ln = Launch(bm, qpt, tseq, tq0, 1)
        ln.num_splits = choose_splits(len(tseq), kv_heads, kv_blocks, sm_count)
        launches.append(ln)
    return launches


def choose_splits(n_tiles: int, kv_heads: int, kv_blocks: int, sm_count: int) -> int:
    """Flash-decoding split count: enough programs for ~2 waves, >= 4 KV blocks per split."""
    work = n_tiles * kv_heads
    if work >= sm_count:
        return 1
    by_occupancy = -(-2 * sm_count // work)
    by_length = max(1, kv_blocks // MIN_BLOCKS_PER_SPLIT)
    return max(1, min(by_occupancy, by_length, MAX_SPLITS))


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
    for i, (qs, ql, cl) in enumerate(zip(q_start, q_lens, ctx_lens)):
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
        k = tl.load(k_cache_ptr + off[None, :] + d[:, None])
        qk = tl.dot(q, k) * scale_log2
        if MASKED:
            ok = (n[None, :] <= pos[:, None]) & in_range[None, :]
            qk = tl.where(ok, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(qk - m_safe[:, None])
        alpha = tl.math.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_cache_ptr + off[:, None] + d[None, :])
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        return acc, m_new, l_i

    @triton.jit
    def _paged_attn_kernel(q_ptr, k_cache_ptr, v_cache_ptr, out_ptr, acc_ptr, ml_ptr,
                           bt_ptr, q_start_ptr, q_len_ptr, ctx_ptr, tile_seq_ptr, tile_q0_ptr,
                           scale_log2, G, QPT, num_splits,
                           stride_qt, stride_qh, stride_kb, stride_kt, stride_kh, stride_bt,
                           HEAD_DIM: tl.constexpr, PAGE: tl.constexpr, BLOCK_M: tl.constexpr,
                           BLOCK_N: tl.constexpr, SPLIT: tl.constexpr):
        tile = tl.program_id(0)
        kvh = tl.program_id(1)
        split = tl.program_id(2)
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
        pos = ctx + tok
        kv_end = ctx + tl.minimum(q0 + QPT, ql)
        n_blocks = tl.cdiv(kv_end, BLOCK_N)
        if SPLIT:
            per = tl.cdiv(n_blocks, num_splits)
            b0 = split * per
            b1 = tl.minimum(n_blocks, b0 + per)
        else:
            b0 = 0
            b1 = n_blocks
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
            n_tiles = tl.num_programs(0)
            n_kvh = tl.num_programs(1)
            slot = ((split * n_tiles + tile) * n_kvh + kvh).to(tl.int64) * BLOCK_M + rows
            tl.store(acc_ptr + slot[:, None] * HEAD_DIM + d[None, :], acc)
            tl.store(ml_ptr + slot * 2, m_i)
            tl.store(ml_ptr + slot * 2 + 1, l_i)
        else:
            o = acc / l_i[:, None]
            tl.store(out_ptr + q_off, o.to(out_ptr.dtype.element_ty), mask=row_ok[:, None])

    @triton.jit
    def _merge_splits_kernel(out_ptr, acc_ptr, ml_ptr, q_start_ptr, q_len_ptr, tile_seq_ptr,
                             tile_q0_ptr, G, QPT, num_splits, stride_qt, stride_qh,
                             HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
        tile = tl.program_id(0)
        kvh = tl.program_id(1)
        n_tiles = tl.num_programs(0)
        n_kvh = tl.num_programs(1)
        seq = tl.load(tile_seq_ptr + tile)
        q0 = tl.load(tile_q0_ptr + tile)
        qs = tl.load(q_start_ptr + seq)
        ql = tl.load(q_len_ptr + seq)
        rows = tl.arange(0, BLOCK_M)
        d = tl.arange(0, HEAD_DIM)
        tok = q0 + rows // G
        hq = kvh * G + rows % G
        row_ok = (rows < QPT * G) & (tok < ql)
        m_run = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_run = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        for s in range(0, num_splits):
            slot = ((s * n_tiles + tile) * n_kvh + kvh).to(tl.int64) * BLOCK_M + rows
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


def paged_attention(q, k_cache, v_cache, meta, scale):
    """Attention output [T, Hq, D] for the batch described by ``meta`` (see batches.AttnMeta)."""
    if not use_triton(q):
        return paged_attention_ref(q, k_cache, v_cache, meta.block_table, meta.q_start_host,
                                   meta.q_lens_host, meta.ctx_lens_host, scale)
    t, hq, d = q.shape
    hkv = k_cache.shape[2]
    g = hq // hkv
    out = torch.empty_like(q)
    for ln in meta.launches:
        n_tiles = len(ln.tile_seq)
        split = ln.num_splits > 1
        _paged_attn_kernel[(n_tiles, hkv, ln.num_splits)](
            q, k_cache, v_cache, out, ln.acc if split else out, ln.ml if split else out,
            meta.block_table, meta.q_start, meta.q_lens, meta.ctx_lens,
            ln.tile_seq_t, ln.tile_q0_t, scale * LOG2E, g, ln.qpt, ln.num_splits,
            q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
            meta.block_table.stride(0),
            HEAD_DIM=d, PAGE=k_cache.shape[1], BLOCK_M=ln.block_m, BLOCK_N=BLOCK_N, SPLIT=split,
            num_warps=8 if ln.block_m >= 128 else 4, num_stages=2)
        if split:
            _merge_splits_kernel[(n_tiles, hkv)](
                out, ln.acc, ln.ml, meta.q_start, meta.q_lens, ln.tile_seq_t, ln.tile_q0_t,
                g, ln.qpt, ln.num_splits, q.stride(0), q.stride(1),
                HEAD_DIM=d, BLOCK_M=ln.block_m, num_warps=4)
    return out
