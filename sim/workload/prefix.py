"""Prefix-block ids (`prefix_blocks`, Mooncake `hash_ids`): parse them fast and check them.

A row's ids name the consecutive `block_tokens`-token blocks its prompt starts with: id k covers
tokens [k*B, (k+1)*B). The simulator's prefix cache reuses only *full* blocks and keys them by
the whole chain of ids up to the block (a radix tree), so a trace is trusted only as far as these
rules hold (`check_blocks`, called by every loader through `validate.finalize`):

- the cell is a space-separated list of non-negative integers below 2^63;
- a row lists at most ceil(prompt_tokens / B) ids (one per block its prompt can fill);
- an id appears at most once in a row (a prompt cannot start with the same block twice);
- an id is never a row's *partial* last block (the prompt ends inside it) and elsewhere a full
  block: the two would claim different contents under one id (a partial block is never reused).

An id with different predecessors in different rows is *not* an error: a radix tree keyed by the
full path keeps the two chains apart, so nothing is reused wrongly; it only means the ids are
content ids rather than prefix hashes, and `prefix_stats` reports how many there are. (Mooncake's
ids are prefix hashes: no id there has two predecessors.)

Everything is vectorised over one flat array of ids (Arrow splits and converts the strings), so a
million-row trace validates in seconds, and a column without any ids costs one length check.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

_NOT_A_LIST = "is not a space-separated list of non-negative integer block ids"
_LIST_FIX = "Write the ids like '12 13 14' (Mooncake: a JSON list of integers in hash_ids)."

#: fail(row position in the frame, problem, fix) -> the error to raise
Fail = Callable[[int, str, str], Exception]


@dataclass
class Blocks:
    """The parsed ids of every row that lists any, as flat row-major arrays."""

    rows: np.ndarray  # frame positions of the rows that list blocks, ascending
    counts: np.ndarray  # ids listed by each of those rows
    ids: np.ndarray  # int64, all ids, row after row

    @property
    def offsets(self) -> np.ndarray:
        """Index in `ids` of each row's first id."""
        return np.concatenate(([0], np.cumsum(self.counts)[:-1])).astype(np.int64)

    def entry_rows(self) -> np.ndarray:
        """Frame position of the row each id belongs to."""
        return np.repeat(self.rows, self.counts)

    def positions(self) -> np.ndarray:
        """Block index of each id inside its row (0 = the prompt's first block)."""
        return np.arange(len(self.ids), dtype=np.int64) - np.repeat(self.offsets, self.counts)


def _cell(arr: pa.Array, row: int) -> str:
    return str(arr[row].as_py())


def parse_blocks(col: pd.Series, fail: Fail) -> Blocks:
    """Parse a `prefix_blocks` column (strings; "" = no blocks). Raises fail(...) on a bad cell.

    Arrow's string kernels split and convert in C++ (about 3 s for 30M ids on one core); Python
    touches only the cells an error message quotes."""
    arr = pa.array(col.astype(str))
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    if n == 0 or not pc.max(pc.binary_length(arr)).as_py():
        return Blocks(*(np.zeros(0, dtype=np.int64) for _ in range(3)))
    lists = pc.ascii_split_whitespace(arr)
    offsets = lists.offsets.to_numpy().astype(np.int64)
    flat = lists.flatten()
    counts = np.diff(offsets)
    empty = pc.binary_length(flat).to_numpy() == 0  # "" cells, and leading/trailing spaces
    digits = pc.ascii_is_decimal(flat).to_numpy(zero_copy_only=False)
    bad = ~digits & ~empty
    if bad.any():
        row = int(np.searchsorted(offsets, int(bad.argmax()), side="right") - 1)
        raise fail(row, f"value {_cell(arr, row)!r} {_NOT_A_LIST}", _LIST_FIX)
    if empty.any():
        at = np.flatnonzero(empty)
        counts = counts - np.bincount(np.searchsorted(offsets, at, side="right") - 1, minlength=n)
        flat = flat.filter(pa.array(~empty))
    try:
        ids = pc.cast(flat, pa.int64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:  # only digits remain, so the only failure is an id of 2^63 or more
        lens = pc.binary_length(flat).to_numpy()
        k = next(int(i) for i in np.flatnonzero(lens >= 19) if int(flat[int(i)].as_py()) >= 2**63)
        row = int(np.searchsorted(np.cumsum(counts), k, side="right"))
        raise fail(row, f"value {_cell(arr, row)!r} holds an id of 2^63 or more",
                   "Block ids must be < 2^63.") from None
    rows = np.flatnonzero(counts > 0)
    return Blocks(rows=rows.astype(np.int64), counts=counts[rows].astype(np.int64),
                  ids=ids.astype(np.int64, copy=False))


def id_codes(ids: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense codes 0..n-1 for ids (the ids themselves when they are small, as Mooncake's are)."""
    if len(ids) == 0:
        return ids, 0
    top = int(ids.max())
    if top < 4 * len(ids) + 4096:
        return ids, top + 1
    codes, uniques = pd.factorize(ids)
    return codes.astype(np.int64), len(uniques)


def full_mask(blocks: Blocks, prompts: np.ndarray, block_tokens: int) -> np.ndarray:
    """Per id: does the prompt fill its block (True) or end inside it (False: the partial one)?"""
    return (blocks.positions() + 1) * block_tokens <= np.repeat(prompts[blocks.rows], blocks.counts)


def check_blocks(blocks: Blocks, prompts: np.ndarray, block_tokens: int, fail: Fail,
                 prompt_col: str = "prompt_tokens",
                 where: Callable[[int], str] = lambda pos: f"row {pos}") -> None:
    """Raise for the first row breaking a rule in the module docstring.

    prompts: every frame row's prompt tokens; `where(position)` names a row in a message."""
    if len(blocks.rows) == 0:
        return
    room = -(-prompts[blocks.rows] // block_tokens)  # ceil: blocks the prompt reaches into
    over = blocks.counts > room
    if over.any():
        i = int(over.argmax())
        raise fail(int(blocks.rows[i]),
                   f"lists {int(blocks.counts[i])} block ids but {prompt_col} "
                   f"{int(prompts[blocks.rows[i]])} spans only {int(room[i])} block(s) of "
                   f"{block_tokens} tokens", "List at most one id per block of the prompt "
                   f"(ceil({prompt_col} / {block_tokens}); Mooncake traces list exactly that many).")
    codes, n = id_codes(blocks.ids)
    _check_repeats(blocks, codes, n, fail)
    full = full_mask(blocks, prompts, block_tokens)
    used_full = np.zeros(n, dtype=bool)
    used_full[codes[full]] = True
    clash = ~full & used_full[codes]
    if clash.any():
        e = int(clash.argmax())
        other = int(np.flatnonzero(full & (codes == codes[e]))[0])
        rows = blocks.entry_rows()
        raise fail(int(rows[e]),
                   f"block id {int(blocks.ids[e])} is this row's partial last block "
                   f"({prompt_col} {int(prompts[rows[e]])} ends inside it) but "
                   f"{where(int(rows[other]))} uses it as a full {block_tokens}-token block, so the id "
                   f"names two different contents", "Give a partial last block an id of its own "
                   "(or leave it out: only full blocks are reused).")


def _check_repeats(blocks: Blocks, codes: np.ndarray, n: int, fail: Fail) -> None:
    """An id twice in one row. Rows whose ids strictly increase (Mooncake's do) need no sort;
    the others are sorted by (row, id) and checked for equal neighbours."""
    ids, off = blocks.ids, blocks.offsets
    step_up = np.ones(len(ids), dtype=bool)
    step_up[1:] = ids[1:] > ids[:-1]
    step_up[off] = True  # a row's first id has nothing before it in its row
    if step_up.all():
        return
    suspect = np.zeros(len(blocks.rows), dtype=bool)
    suspect[np.searchsorted(off, np.flatnonzero(~step_up), side="right") - 1] = True
    sel = np.repeat(suspect, blocks.counts)
    key = np.sort(np.repeat(np.arange(len(blocks.rows), dtype=np.int64), blocks.counts)[sel] * n
                  + codes[sel], kind="stable")  # stable: timsort, fast on rows already in runs
    same = np.flatnonzero(key[1:] == key[:-1])
    if len(same):
        r, code = divmod(int(key[same[0]]), n)
        lo = int(off[r])
        e = lo + int(np.flatnonzero(codes[lo : lo + int(blocks.counts[r])] == code)[1])
        raise fail(int(blocks.rows[r]), f"block id {int(ids[e])} appears twice in this row",
                   "A prompt's blocks are consecutive and distinct; list each id once.")


def _first_seen(codes: np.ndarray, n: int) -> np.ndarray:
    """Per entry: is this the first occurrence of its code (in row-major = arrival order)?"""
    at = np.arange(len(codes), dtype=np.int64)
    first = np.full(n, len(codes), dtype=np.int64)
    np.minimum.at(first, codes, at)
    return first[codes] == at


def _path_codes(blocks: Blocks, codes: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """A code per (row, position) for the whole chain of ids up to it: what a radix-tree cache
    keys a block by. One pass per block position, each vectorised over the rows that long."""
    counts, off = blocks.counts, blocks.offsets
    order = np.argsort(-counts, kind="stable")
    desc = -counts[order]  # ascending
    path = np.empty(len(codes), dtype=np.int64)
    path[off] = codes[off]  # a one-block chain is its id
    top = n
    for k in range(1, int(counts.max())):
        e = off[order[: int(np.searchsorted(desc, -k, side="left"))]] + k  # rows longer than k
        local, uniques = pd.factorize(path[e - 1] * n + codes[e])
        path[e] = top + local
        top += len(uniques)
    return path, top


def sharing(blocks: Blocks, prompts: np.ndarray, block_tokens: int) -> dict:
    """Prefix-sharing facts of a parsed trace (prompts: every row's prompt tokens, arrival order).

    reusable_fraction: prompt tokens an unbounded prefix cache could serve, as a share of all
    prompt tokens: full blocks whose chain of ids an earlier request already had (first come,
    first computed; with no eviction the order only decides who pays). repeated_block_fraction:
    block ids that repeat an earlier id (partial blocks included). distinct_blocks /
    distinct_block_tokens: every id once, with the tokens it holds (a partial block its fill);
    cacheable_blocks / cacheable_tokens: the distinct full-block chains, the cache's working set.
    """
    total_prompt = int(prompts.sum())
    codes, n = id_codes(blocks.ids)
    pos = blocks.positions()
    full = full_mask(blocks, prompts, block_tokens)
    pred = np.where(pos > 0, np.roll(codes, 1), -1)  # -1: the block starts its prompt
    lo = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    hi = np.full(n, -2, dtype=np.int64)
    np.minimum.at(lo, codes, pred)
    np.maximum.at(hi, codes, pred)
    several = int((hi > lo).sum())
    paths, npaths = (codes, n) if several == 0 else _path_codes(blocks, codes, n)
    new_path = _first_seen(paths, npaths)
    new_id = _first_seen(codes, n)
    reusable = int((full & ~new_path).sum()) * block_tokens
    fill = np.minimum(block_tokens, np.repeat(prompts[blocks.rows], blocks.counts) - pos * block_tokens)
    held = np.zeros(n, dtype=np.int64)
    np.maximum.at(held, codes, fill)
    refs = len(codes)
    return {
        "block_tokens": int(block_tokens),
        "rows_with_blocks": len(blocks.rows),
        "block_refs": refs,
        "distinct_blocks": int(new_id.sum()),
        "distinct_block_tokens": int(held.sum()),
        "repeated_block_fraction": float(1 - new_id.sum() / refs) if refs else 0.0,
        "reusable_tokens": reusable,
        "reusable_fraction": reusable / total_prompt if total_prompt else 0.0,
        "cacheable_blocks": int((full & new_path).sum()),
        "cacheable_tokens": int((full & new_path).sum()) * block_tokens,
        "ids_with_several_predecessors": several,
    }
