"""An instance's running decode set, advanced for all members at once.

Every member produces the same number of tokens per producing iteration (one for a plain decode,
more for a multi-token step), so the set keeps one counter, ``tokens``, and each member only
remembers where it joined (``token_base``, ``gen_base``): its progress is virtual and costs nothing
per iteration. A heap keyed by the counter value at which each member finishes gives the next
completion in O(log n); ``TokenGaps`` keeps time-between-tokens without per-token work. This is
what lets the instance execute k identical iterations as one closed-form run.
"""
from __future__ import annotations

import heapq
import math
from typing import Final

from goodput.sim.engine.kvpool import KVPool
from goodput.sim.engine.sequence import DECODING, WAITING, Sequence
from goodput.sim.engine.tbt import TokenGaps

#: the heap operations as module constants: a compiled build reads a constant where
#: ``heapq.heappush`` costs an attribute lookup per call
_heappush: Final = heapq.heappush
_heappop: Final = heapq.heappop
_heapify: Final = heapq.heapify


class DecodeSet:
    def __init__(self, pool: KVPool, instance_index: int):
        self.pool = pool
        self.phases = pool.phases
        self.index = instance_index
        self.members: list[Sequence] = []  # join order
        self._heap: list[tuple[int, int, Sequence]] = []  # (finish_at, rid, seq); stale entries skipped
        #: (-(context - tokens), rid, seq): the member with the longest context on top (members
        #: advance together, so the order only changes when members join or leave); stale
        #: entries are skipped on top and dropped when the heap outgrows the set
        self._longest: list[tuple[int, int, Sequence]] = []
        self.tokens = 0  # tokens each member has advanced since the set began
        self.ctx_sum = 0  # stored KV tokens of all members at ``tokens``
        self._new: list[Sequence] = []  # joined since the last producing iteration
        self.gaps = TokenGaps()
        self.run_index = 0
        self.last_end = math.nan  # when the last producing iteration ended
        #: bumped whenever a member joins or leaves (speculation re-decides its length on a change)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.members)

    # ------------------------------------------------------------------ progress reads
    def generated(self, seq: Sequence, extra_tokens: int = 0) -> int:
        """Output tokens ``seq`` has produced, ``extra_tokens`` set tokens beyond the counter."""
        return min(seq.output, seq.gen_base + self.tokens + extra_tokens - seq.token_base)

    def context_of(self, seq: Sequence) -> int:
        """KV tokens ``seq`` has stored now (the input context of its next step)."""
        return seq.prompt + seq.gen_base + (self.tokens - seq.token_base) - 1

    def longest_context(self) -> int:
        """The largest cached context among the members (0 for an empty set), O(log n)."""
        heap, t = self._longest, self.tokens
        while heap:
            neg, _, seq = heap[0]
            if (seq.state == DECODING and seq.instance == self.index
                    and seq.prompt + seq.gen_base - seq.token_base == -neg):
                return t - 1 - neg
            _heappop(heap)
        return 0

    def contexts(self) -> list[int]:
        base = self.tokens - 1
        return [s.prompt + s.gen_base + base - s.token_base for s in self.members]

    def steps_to_completion(self, q: int = 1) -> int:
        """Producing iterations of ``q`` tokens until the next member finishes."""
        heap = self._heap
        while heap:
            at, _, seq = heap[0]
            if seq.state == DECODING and seq.finish_at == at and seq.instance == self.index:
                return at - self.tokens if q == 1 else -(-(at - self.tokens) // q)
            _heappop(heap)
        return 1 << 60

    def steps_until_shortage(self, free_blocks: int, q: int = 1) -> int:
        """Producing iterations of ``q`` tokens that fit in ``free_blocks``."""
        return self.phases.steps_until_shortage(self.tokens, free_blocks) // q

    def step_blocks(self, q: int = 1) -> int:
        return self.phases.blocks_needed(self.tokens, q)

    # ------------------------------------------------------------------ membership
    def join(self, seq: Sequence) -> None:
        kv = seq.prompt + seq.generated - 1
        t = self.tokens
        seq.state = DECODING
        seq.token_base = t
        seq.gen_base = seq.generated
        seq.finish_at = t + seq.output - seq.generated
        seq.join_run = -1  # its first gap is measured from its own last token
        self.epoch += 1
        self.ctx_sum += kv
        if not seq.reserved:
            seq.phase = (t - kv) % self.pool.block_size
            self.phases.add(seq.phase)
        self.members.append(seq)
        self._new.append(seq)
        _heappush(self._heap, (seq.finish_at, seq.rid, seq))
        longest = self._longest
        if len(longest) > 2 * len(self.members) + 32:  # mostly entries of members that left
            longest[:] = [(s.token_base - s.prompt - s.gen_base, s.rid, s) for s in self.members[:-1]]
            _heapify(longest)
        _heappush(longest, (t - kv - 1, seq.rid, seq))

    def leave(self, seq: Sequence) -> int:
        """Materialise ``seq``'s counters and remove it; returns tokens produced beyond its output
        (a multi-token step can overshoot the last token; the caller corrects its accounting)."""
        advanced = self.tokens - seq.token_base
        produced = seq.gen_base + advanced
        kv = seq.prompt + produced - 1
        self.epoch += 1
        self.ctx_sum -= kv
        if not seq.reserved:
            self.pool.settle(seq, kv)
            self.phases.remove(seq.phase)
        self.members.remove(seq)
        if seq.join_run < 0:
            self._new.remove(seq)
        else:
            seq.max_tbt = nanmax(seq.max_tbt, self.gaps.max_since(seq.join_run))
        if advanced:
            seq.last_token = self.last_end
        seq.generated = min(produced, seq.output)
        seq.state = WAITING
        return produced - seq.generated

    def credit(self, extra: list[int]) -> None:
        """Move each member (``extra[i]`` for ``members[i]``) on by tokens beyond the common
        counter: the accepted drafts of speculative steps, where every member keeps its own
        count. Call before ``advance`` applies the steps' common token (so completions and block
        phases see both). O(members with extra tokens): the members keep their virtual counters,
        shifted (``token_base``, ``finish_at``, block ``phase``); the tokens arrive together with
        their step's first one (zero gaps) and take their blocks now."""
        t, bs = self.tokens, self.pool.block_size
        heap, longest, phases = self._heap, self._longest, self.phases
        grown = total = 0
        for seq, a in zip(self.members, extra, strict=True):
            if not a:
                continue
            total += a
            if not seq.reserved:
                kv = seq.prompt + seq.gen_base + t - seq.token_base - 1
                grown += -(-(kv + a) // bs) - -(-kv // bs)
                phases.remove(seq.phase)
                seq.phase = (seq.phase - a) % bs
                phases.add(seq.phase)
            seq.token_base -= a
            seq.finish_at -= a
            _heappush(heap, (seq.finish_at, seq.rid, seq))
            _heappush(longest, (seq.token_base - seq.prompt - seq.gen_base, seq.rid, seq))
        if not total:
            return
        self.ctx_sum += total
        if grown:
            self.pool.grow(grown)
        self.gaps.add(0.0, total)
        n = len(self.members)
        if len(heap) > 4 * n + 64:  # mostly superseded entries: keep the live ones
            heap[:] = [(s.finish_at, s.rid, s) for s in self.members]
            _heapify(heap)
        if len(longest) > 4 * n + 64:
            longest[:] = [(s.token_base - s.prompt - s.gen_base, s.rid, s) for s in self.members]
            _heapify(longest)

    # ------------------------------------------------------------------ producing iterations
    def advance(self, t0: float, k: int, q: int, d0: float, step: float,
                now: float, durs: list[float] | None = None,
                total: int | None = None) -> tuple[list[Sequence], int]:
        """Apply k producing iterations of ``q`` tokens each (durations d0 + j*step, or the
        listed ``durs`` when they are not an arithmetic series, the last ending at ``now``);
        returns the members that finished (already removed) and the tokens they were advanced
        past their last one. ``total`` (speculative runs) gives the tokens of all k iterations
        together when they differ from one iteration to the next (each at least 1)."""
        bsz = len(self.members)
        tokens = k * q if total is None else total
        t = self.tokens
        blocks = self.phases.blocks_needed(t, tokens) if self.phases.size else 0
        if blocks:
            self.pool.grow(blocks)
        t += tokens
        self.tokens = t
        self.ctx_sum += bsz * tokens
        gaps = self.gaps
        if durs is not None:
            d0 = durs[0]
            d_in = max(durs[1:]) if k > 1 else -math.inf
        elif k > 1:
            d_in = max(d0 + step, d0 + step * (k - 1))
        else:
            d_in = -math.inf
        old_gap = (t0 - self.last_end) + d0
        gaps.push_run_max(self.run_index, old_gap if old_gap > d_in else d_in)
        new = self._new
        if old_gap == old_gap and bsz > len(new):
            gaps.add(old_gap, bsz - len(new))
        if new:
            nxt = self.run_index + 1
            for seq in new:
                g = (t0 - seq.last_token) + d0
                gaps.add(g, 1)
                seq.max_tbt = nanmax(seq.max_tbt, g if g > d_in else d_in)
                seq.join_run = nxt
            new.clear()
        if k > 1:
            if durs is not None:
                for d in durs[1:]:
                    gaps.add(d, bsz)
            else:
                gaps.add_arithmetic(d0 + step, step, k - 1, bsz)
        if total is not None:  # as below, for steps of varying tokens
            if tokens > k:
                gaps.add(0.0, bsz * (tokens - k))
        elif q > 1:  # the other tokens of a multi-token step arrive together with the first
            gaps.add(0.0, k * bsz * (q - 1))
        self.run_index += 1
        self.last_end = now
        heap = self._heap
        if not heap or heap[0][0] > t:
            return _NONE_DONE
        done: list[Sequence] = []
        overshoot = 0
        index = self.index
        while heap and heap[0][0] <= t:
            at, _, seq = _heappop(heap)
            if seq.state == DECODING and seq.finish_at == at and seq.instance == index:
                over = self.leave(seq)
                if over:  # tokens past the output were counted above as zero gaps: take them back
                    self.gaps.take_back_zero_gaps(over)
                    overshoot += over
                done.append(seq)
        return done, overshoot


#: what ``advance`` returns when no member finished (shared: never mutated)
_NONE_DONE: Final[tuple[list[Sequence], int]] = ([], 0)


def nanmax(a: float, b: float) -> float:
    if a != a:
        return b
    if b != b:
        return a
    return a if a > b else b
