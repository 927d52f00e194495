"""Runs a scheduled iteration on the real model: token ids, KV pages, sampling, timing.

``SequenceStore`` is the engine's memory side of what ``Instance`` accounts for logically: each
live request holds a row (slot) with its token ids (random prompt ids, then every sampled token)
and its physical KV pages. Pages are taken from a free list when an iteration's tokens need them
and returned when the request completes or is preempted (recompute), so the pages in use always
equal the Instance's ``used_blocks`` accounting; a mismatch raises rather than corrupting memory.
"""
from __future__ import annotations

import numpy as np

from goodput.profiler.shapes import PAGE_SIZE


class SequenceStore:
    # per-slot tables, (re)allocated by _grow
    tokens: np.ndarray  # [slot, position] token ids
    pages: np.ndarray  # [slot, i] physical KV page of the slot's i-th block
    npages: np.ndarray  # [slot] pages the slot holds

    def __init__(self, num_blocks: int, vocab: int, max_tokens: int, seed: int = 0,
                 lookahead: int = 0):
        """``lookahead``: token positions a speculative step may write past a request's end
        (its k + 1 verified tokens), so the table is that much wider."""
        self.free_pages = list(range(num_blocks - 1, -1, -1))  # pop() hands out page 0 first
        self.num_blocks = num_blocks
        self.vocab, self.seed = vocab, seed
        self.max_tokens = max_tokens + 1 + lookahead
        self.max_pages = -(-self.max_tokens // PAGE_SIZE)
        self.slot_of: dict[int, int] = {}
        self.free_slots: list[int] = []
        self._grow(64)

    def _grow(self, cap: int) -> None:
        old = getattr(self, "tokens", None)
        n_old = 0 if old is None else old.shape[0]
        tokens = np.zeros((cap, self.max_tokens), dtype=np.int64)
        pages = np.zeros((cap, self.max_pages), dtype=np.int64)
        npages = np.zeros(cap, dtype=np.int64)
        if old is not None:
            tokens[:n_old], pages[:n_old], npages[:n_old] = old, self.pages, self.npages
        self.tokens, self.pages, self.npages = tokens, pages, npages
        self.free_slots.extend(range(cap - 1, n_old - 1, -1))

    def slot(self, seq) -> int:
        """The request's row, created (with its random prompt ids) on first use."""
        s = self.slot_of.get(seq.rid)
        if s is not None:
            return s
        if seq.prompt + seq.output > self.max_tokens:
            raise ValueError(f"request {seq.rid}: prompt + output = {seq.prompt + seq.output} "
                             f"tokens exceeds the store's max_tokens {self.max_tokens - 1}")
        if not self.free_slots:
            self._grow(2 * self.tokens.shape[0])
        s = self.slot_of[seq.rid] = self.free_slots.pop()
        rng = np.random.default_rng((self.seed, seq.rid))
        self.tokens[s, :seq.prompt] = rng.integers(0, self.vocab, seq.prompt)
        return s

    def ensure_pages(self, slots: np.ndarray, tokens: np.ndarray) -> None:
        """Give each slot enough pages for ``tokens`` KV entries."""
        need = -(-tokens // PAGE_SIZE)
        short = np.nonzero(need > self.npages[slots])[0]
        for j in short.tolist():
            s = int(slots[j])
            have, want = int(self.npages[s]), int(need[j])
            if want - have > len(self.free_pages):
                raise RuntimeError(f"KV pool exhausted: {want - have} pages needed, "
                                   f"{len(self.free_pages)} free; the engine's block accounting "
                                   "and the physical pool disagree")
            for k in range(have, want):
                self.pages[s, k] = self.free_pages.pop()
            self.npages[s] = want

    def trim_pages(self, slots: np.ndarray, tokens: np.ndarray) -> None:
        """Give back each slot's pages beyond ``tokens`` KV entries (a speculative step's
        rejected lookahead: those positions are written again later)."""
        need = -(-tokens // PAGE_SIZE)
        extra = np.nonzero(self.npages[slots] > need)[0]
        for j in extra.tolist():
            s, n = int(slots[j]), int(need[j])
            self.free_pages.extend(self.pages[s, n:int(self.npages[s])].tolist())
            self.npages[s] = n

    def release_pages(self, rid: int) -> None:
        s = self.slot_of.get(rid)
        if s is None:
            return
        n = int(self.npages[s])
        self.free_pages.extend(self.pages[s, :n].tolist())
        self.npages[s] = 0

    def release(self, rid: int) -> None:
        self.release_pages(rid)
        s = self.slot_of.pop(rid, None)
        if s is not None:
            self.free_slots.append(s)

    @property
    def pages_in_use(self) -> int:
        return self.num_blocks - len(self.free_pages)


class ModelExecutor:
    """Builds the iteration's inputs from the store, runs the model, writes sampled tokens back.

    Returns the GPU time of the forward (CUDA events around it; NaN on the CPU). The wall time of
    the whole iteration (scheduling, input preparation, launches, the token copy that waits for
    the GPU) is measured by the loop's clock.
    """

    def __init__(self, runner, store: SequenceStore, draft=None):
        """``draft``: the draft model's ``ModelRunner`` (speculative decoding), its KV pool the
        same page count as the target's, addressed by the same page table."""
        self.runner, self.store, self.draft = runner, store, draft
        self.cuda = runner.cuda
        if self.cuda:
            import torch

            self._events = tuple(torch.cuda.Event(enable_timing=True) for _ in range(3))

    def execute(self, seqs, q_lens, ctx_lens, n_prefills: int) -> float:
        store = self.store
        slot = store.slot
        slots = np.fromiter((slot(s) for s in seqs), dtype=np.int64, count=len(seqs))
        q = np.asarray(q_lens, dtype=np.int64)
        c = np.asarray(ctx_lens, dtype=np.int64)
        store.ensure_pages(slots, q + c)
        # input ids: prompt (or recompute) chunks token by token, decodes their last token
        toks = store.tokens
        parts = [toks[slots[j], c[j]:c[j] + q[j]] for j in range(n_prefills)]
        if len(seqs) > n_prefills:
            parts.append(toks[slots[n_prefills:], c[n_prefills:]])
        ids = np.concatenate(parts) if len(parts) > 1 else parts[0].reshape(-1)
        # rows that sample: each decode, and each chunk that completes its prompt (or recompute)
        samples = np.ones(len(seqs), dtype=bool)
        for j in range(n_prefills):
            samples[j] = c[j] + q[j] >= seqs[j].prefill_target
        rows = (np.cumsum(q) - 1)[samples]
        width = int(store.npages[slots].max())
        table = store.pages[slots, :width]
        if self.cuda:
            ev0, ev1, _ = self._events
            ev0.record()
        out = self.runner.step(ids, q, c, table, rows, n_prefills)
        if self.cuda:
            ev1.record()
        sampled = out.cpu().numpy()  # waits for the GPU (unless no row samples)
        toks[slots[samples], (c + q)[samples]] = sampled
        if not self.cuda:
            return float("nan")
        ev1.synchronize()  # an iteration whose chunks all stop mid-prompt copies nothing back
        return ev0.elapsed_time(ev1) * 1e-3

    def execute_spec(self, step) -> tuple[float, float]:
        """One speculative step (``goodput.profiler.serve.spec_step.SpecStep``): k one-token passes of
        the draft over the decode set, pass i reading position c + i and proposing c + i + 1,
        then one target pass verifying the k + 1 positions c .. c + k of every sequence (a
        chunk of k + 1 tokens over its context). Acceptance is the simulator's: each member
        keeps ``advance`` tokens, the drafted ones it accepted and the target's own token
        sampled after them; KV pages beyond what it keeps go back (rejected positions are
        written again by later steps). Returns (GPU span, drafting GPU span) in seconds."""
        if self.draft is None:
            raise ValueError("scheduler.speculation: the engine was built without a draft "
                             "model; set scheduler.speculation.draft_model")
        store, k = self.store, step.k
        slot = store.slot
        slots = np.fromiter((slot(s) for s in step.seqs), dtype=np.int64, count=len(step.seqs))
        c, adv = step.contexts, step.advance
        n = len(slots)
        store.ensure_pages(slots, c + k + 1)
        toks = store.tokens
        table = store.pages[slots, :int(store.npages[slots].max())]
        ones, every = np.ones(n, dtype=np.int64), np.arange(n)
        if self.cuda:
            ev0, ev1, ev2 = self._events
            ev0.record()
        for i in range(k):
            drafted = self.draft.step(toks[slots, c + i], ones, c + i, table, every)
            toks[slots, c + i + 1] = drafted.cpu().numpy()
        if self.cuda:
            ev1.record()
        pos = c[:, None] + np.arange(k + 1)[None, :]
        ids = toks[slots[:, None], pos].reshape(-1)
        out = self.runner.step(ids, np.full(n, k + 1, dtype=np.int64), c, table,
                               np.arange(n * (k + 1)))
        if self.cuda:
            ev2.record()
        sampled = out.cpu().numpy().reshape(n, k + 1)
        toks[slots, c + adv] = sampled[every, adv - 1]
        store.trim_pages(slots, c + adv)
        if not self.cuda:
            return float("nan"), float("nan")
        ev2.synchronize()
        return ev0.elapsed_time(ev2) * 1e-3, ev0.elapsed_time(ev1) * 1e-3
