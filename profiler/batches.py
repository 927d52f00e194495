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

from goodput.profiler.paged_attention import Launch, plan_launches
from goodput.profiler.shapes import PAGE_SIZE


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
    """Device tensors (and host copies) describing one batch for the layer forward.

    All integer metadata lives in one int64 device buffer (``buf``) uploaded with a single copy,
    as engines keep persistent input buffers; the named tensors are views into it.
    """

    buf: torch.Tensor
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
    extra: dict = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return int(self.positions.shape[0])

    def copy_from(self, other: AttnMeta) -> None:
        """Refresh this (graph-captured, static) metadata from a freshly built one."""
        self.buf.copy_(other.buf, non_blocking=True)


#: int64 elements each part of the metadata buffer is aligned to (128 bytes)
ALIGN = 16
_LAUNCH_ARRAYS = ("tile_seq", "tile_q0", "item_tile", "item_b0", "item_b1", "tile_item0",
                  "tile_nitems")
#: a part of the metadata buffer: an AttnMeta field, ("extra", name) or (launch index, array)
_PartKey = str | tuple[str, str] | tuple[int, str]


def draw_pages(code: str, pool_blocks: int, seed: int) -> np.ndarray:
    """Random distinct pages for the batch (a fragmented cache, as a long-running server's)."""
    need = blocks_needed(code)
    if need > pool_blocks:
        raise InfeasiblePoint(f"needs {need} KV pages, pool holds {pool_blocks}")
    return np.random.default_rng(seed).choice(pool_blocks, size=need, replace=False)


def build_meta(code: str, group: int, kv_heads: int, head_dim: int, pool_blocks: int,
               device: torch.device, sm_count: int, seed: int,
               pages: np.ndarray | None = None) -> AttnMeta:
    """Host-side preparation of one batch, as an engine does each iteration (vectorised).

    ``pages``: the sequences' KV pages in order (an engine keeps these between iterations);
    drawn with ``draw_pages(code, pool_blocks, seed)`` when not given.
    """
    q_lens, ctx_lens = expand(code)
    q = np.asarray(q_lens, dtype=np.int64)
    c = np.asarray(ctx_lens, dtype=np.int64)
    nb = -(-(q + c) // PAGE_SIZE)
    if pages is None:
        pages = draw_pages(code, pool_blocks, seed)
    return build_meta_from_table(q_lens, ctx_lens, page_table(nb, pages), group, kv_heads,
                                 head_dim, device, sm_count)


def page_table(pages_per_seq, pages) -> np.ndarray:
    """Block table rows from each sequence's page count and all pages in order (row-major:
    sequence 0's pages first), zero-padded to the longest row."""
    nb = np.asarray(pages_per_seq, dtype=np.int64)
    width = int(nb.max())
    table = np.zeros((nb.size, width), dtype=np.int64)
    table[np.arange(width)[None, :] < nb[:, None]] = pages
    return table


def build_meta_from_table(q_lens, ctx_lens, table: np.ndarray, group: int, kv_heads: int,
                          head_dim: int, device: torch.device, sm_count: int, pad_to: int = 0,
                          pad_slot: int = 0, extra: dict | None = None) -> AttnMeta:
    """``build_meta`` for a batch whose block table rows (one per sequence) are given.

    ``pad_to`` > number of tokens pads ``positions`` (with 0) and ``slots`` (with ``pad_slot``,
    a scratch page's first slot) to that length, for a CUDA graph captured at that size.
    ``extra``: further int64 arrays uploaded in the same copy (``meta.extra[name]``).
    """
    q = np.asarray(q_lens, dtype=np.int64)
    c = np.asarray(ctx_lens, dtype=np.int64)
    if table.shape[1] % ALIGN:
        # the table's row stride is a kernel argument: a multiple of 16 keeps one specialisation
        table = np.pad(table, ((0, 0), (0, ALIGN - table.shape[1] % ALIGN)))
    starts = np.cumsum(q) - q
    seq_of_tok = np.repeat(np.arange(q.size), q)
    positions = np.arange(int(q.sum())) - starts[seq_of_tok] + c[seq_of_tok]
    slots = table[seq_of_tok, positions // PAGE_SIZE] * PAGE_SIZE + positions % PAGE_SIZE
    if pad_to > positions.size:
        pad = pad_to - positions.size
        positions = np.concatenate([positions, np.zeros(pad, dtype=np.int64)])
        slots = np.concatenate([slots, np.full(pad, pad_slot, dtype=np.int64)])
    launches = plan_launches(q_lens, ctx_lens, group, kv_heads, sm_count)

    parts: list[tuple[_PartKey, np.ndarray]] = [
        ("q_start", starts), ("q_lens", q), ("ctx_lens", c), ("block_table", table),
        ("positions", positions), ("slots", slots)]
    parts += [(("extra", k), np.asarray(v, dtype=np.int64)) for k, v in (extra or {}).items()]
    for i, ln in enumerate(launches):
        names = _LAUNCH_ARRAYS if ln.split else _LAUNCH_ARRAYS[:2]
        parts += [((i, n), np.asarray(getattr(ln, n), dtype=np.int64)) for n in names]
    # Every part starts on a 128-byte boundary: Triton specialises a kernel on whether each
    # pointer argument is 16-byte aligned, so views at arbitrary offsets would compile a new
    # kernel variant (seconds, mid-run) for each new combination of alignments.
    sizes = [a.size for _, a in parts]
    padded = [-(-n // ALIGN) * ALIGN for n in sizes]
    host = np.zeros(sum(padded), dtype=np.int64)
    views: dict[_PartKey, torch.Tensor] = {}
    off = 0
    for (_, a), n in zip(parts, padded, strict=True):
        host[off:off + a.size] = a.ravel()
        off += n
    buf = torch.from_numpy(host).to(device, non_blocking=True)
    off = 0
    for (name, a), n in zip(parts, padded, strict=True):
        views[name] = buf[off:off + a.size].view(a.shape)
        off += n
    keyed = [(k, v) for k, v in views.items() if isinstance(k, tuple)]
    for i, ln in enumerate(launches):
        ln.tensors = {n: v for (j, n), v in keyed if j == i}
        if ln.split:
            rows = ln.num_items * kv_heads * ln.block_m
            ln.acc = torch.empty(rows, head_dim, dtype=torch.float32, device=device)
            ln.ml = torch.empty(rows, 2, dtype=torch.float32, device=device)
    return AttnMeta(buf=buf, launches=launches, q_start_host=starts.tolist(),
                    q_lens_host=list(q_lens), ctx_lens_host=list(ctx_lens),
                    extra={n: v for (j, n), v in keyed if j == "extra"},
                    **{k: v for k, v in views.items() if isinstance(k, str)})
