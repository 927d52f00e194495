"""Batch compositions: a compact text code per batch, and the device metadata a batch needs.

Why a text code: every measured point is one row of a CSV table, and the composition of its
batch must survive in that row so the fit (and anyone reading the table) can recompute any
feature of it later. ``"64x1@1024+1x512@2048"`` is 64 decodes over 1024 cached tokens each plus
one 512-token prompt chunk over 2048 cached tokens. The same code drives metadata building here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from profiler.paged_attention import Launch, plan_launches
from profiler.shapes import PAGE_SIZE


class InfeasiblePoint(Exception):
    """A grid point that cannot run here (e.g. its KV cache exceeds the memory budget)."""


def encode(groups) -> str:
    """[(count, q, ctx), ...] -> "countxq@ctx+..." (groups kept in the given order)."""
    return "+".join(f"{c}x{q}@{x}" for c, q, x in groups)


def decode(code: str) -> list[tuple[int, int, int]]:
    """Inverse of ``encode``; raises ValueError naming the bad part."""
    out = []
    for part in code.split("+"):
        try:
            cnt, rest = part.split("x")
            q, ctx = rest.split("@")
            out.append((int(cnt), int(q), int(ctx)))
        except ValueError as exc:
            raise ValueError(f"bad batch code part '{part}' in '{code}'; expected COUNTxQ@CTX") \
                from exc
    return out


def expand(code: str) -> tuple[list[int], list[int]]:
    """Per-sequence (new_tokens, context_tokens) lists of a batch code."""
    qs, cs = [], []
    for cnt, q, ctx in decode(code):
        qs += [q] * cnt
        cs += [ctx] * cnt
    return qs, cs


def kv_tokens(code: str) -> int:
    """Tokens the batch holds in the KV cache (cached context plus the new tokens)."""
    return sum(c * (q + x) for c, q, x in decode(code))


def blocks_needed(code: str) -> int:
    return sum(c * -(-(q + x) // PAGE_SIZE) for c, q, x in decode(code))


@dataclass
class AttnMeta:
    """Device tensors (and host copies) describing one batch for the layer forward."""

    q_start: torch.Tensor
    q_lens: torch.Tensor
    ctx_lens: torch.Tensor
    block_table: torch.Tensor
    positions: torch.Tensor
    slots: torch.Tensor
    launches: list[Launch]
    q_start_host: list = field(default_factory=list)
    q_lens_host: list = field(default_factory=list)
    ctx_lens_host: list = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return int(self.positions.shape[0])

    def copy_from(self, other: "AttnMeta") -> None:
        """Refresh this (graph-captured, static) metadata from a freshly built one."""
        for name in ("q_start", "q_lens", "ctx_lens", "block_table", "positions", "slots"):
            getattr(self, name).copy_(getattr(other, name), non_blocking=True)
        for mine, theirs in zip(self.launches, other.launches):
            mine.tile_seq_t.copy_(theirs.tile_seq_t, non_blocking=True)
            mine.tile_q0_t.copy_(theirs.tile_q0_t, non_blocking=True)


def build_meta(code: str, group: int, kv_heads: int, head_dim: int, pool_blocks: int,
               device: torch.device, sm_count: int, seed: int) -> AttnMeta:
    """Host-side preparation of one batch, as an engine does each iteration.

    Pages are drawn at random from the pool (seeded) so the kernel sees a fragmented cache, as a
    long-running server's is.
    """
    q_lens, ctx_lens = expand(code)
    nb = [-(-(q + c) // PAGE_SIZE) for q, c in zip(q_lens, ctx_lens)]
    need = sum(nb)
    if need > pool_blocks:
        raise InfeasiblePoint(f"needs {need} KV pages, pool holds {pool_blocks}")
    rng = np.random.default_rng(seed)
    pages = rng.choice(pool_blocks, size=need, replace=False).astype(np.int32)
    width = max(nb)
    table = np.zeros((len(q_lens), width), dtype=np.int32)
    starts = np.zeros(len(q_lens), dtype=np.int32)
    total = int(sum(q_lens))
    positions = np.empty(total, dtype=np.int64)
    slots = np.empty(total, dtype=np.int64)
    off = tok = 0
    for i, (q, c, n) in enumerate(zip(q_lens, ctx_lens, nb)):
        table[i, :n] = pages[off:off + n]
        off += n
        starts[i] = tok
        pos = np.arange(c, c + q, dtype=np.int64)
        positions[tok:tok + q] = pos
        slots[tok:tok + q] = table[i, pos // PAGE_SIZE].astype(np.int64) * PAGE_SIZE \
            + pos % PAGE_SIZE
        tok += q

    def dev(a):
        return torch.from_numpy(a).to(device, non_blocking=True)

    launches = plan_launches(q_lens, ctx_lens, group, kv_heads, sm_count)
    for ln in launches:
        ln.tile_seq_t = dev(np.asarray(ln.tile_seq, dtype=np.int32))
        ln.tile_q0_t = dev(np.asarray(ln.tile_q0, dtype=np.int32))
        if ln.num_splits > 1:
            rows = ln.num_splits * len(ln.tile_seq) * kv_heads * ln.block_m
            ln.acc = torch.empty(rows, head_dim, dtype=torch.float32, device=device)
            ln.ml = torch.empty(rows, 2, dtype=torch.float32, device=device)
    return AttnMeta(
        q_start=dev(starts), q_lens=dev(np.asarray(q_lens, dtype=np.int32)),
        ctx_lens=dev(np.asarray(ctx_lens, dtype=np.int32)), block_table=dev(table),
        positions=dev(positions), slots=dev(slots), launches=launches,
        q_start_host=starts.tolist(), q_lens_host=q_lens, ctx_lens_host=ctx_lens)
