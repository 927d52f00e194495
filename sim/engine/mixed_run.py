"""A run of k identical-shape chunked-prefill iterations, executed as one event.

In a saturated Sarathi-Serve instance nearly every iteration carries a prompt chunk next to the
running decodes, so the decode-only closed form (``DecodeRun``) rarely applies. Yet the batch
composition still changes only when a decode finishes, a prompt finishes, or a request arrives:
between those, iteration j of a long prompt computes the same chunk sizes over contexts that grow
by a known amount each step (prompt chunk j starts at ``prefilled + j * n``, every decode's context
grows by its tokens). The policy says how many iterations would repeat (``BatchingPolicy.repeats``);
the instance prices each of them once (``CostModel.iteration_time``, O(chunks) each) and schedules
one event for the run's end. Mixed-iteration costs are not linear in context (rooflines take
maxima, profiles interpolate), so the run keeps the iteration end times themselves and finds
boundaries by bisection. It offers the same reads as ``DecodeRun`` (``steps_done_by``,
``first_boundary_at_or_after``, ``span``), so load queries, truncation and the end of a run treat
both alike; ``chunk_tokens`` and ``chunk_blocks_started`` add what the prompt chunks take.
"""
from __future__ import annotations

import bisect
from collections.abc import Callable

from sim.costmodel.base import CostModel
from sim.engine.decode_set import DecodeSet
from sim.engine.view import Plan


class MixedRun:
    __slots__ = ("batch", "blocks_for", "chunk_tokens", "decode_q", "durs", "ends", "k", "plan",
                 "starts", "t0")

    def __init__(self, t0: float, plan: Plan, durs: list[float], blocks_for: Callable[[int], int],
                 decodes: int):
        self.t0 = t0
        self.plan = plan
        self.k = len(durs)
        self.durs = durs
        ends, acc = [], 0.0
        for d in durs:
            acc += d
            ends.append(acc)
        self.ends = ends
        #: each chunk's computed tokens when the run began (before its first iteration)
        self.starts = [seq.prefilled for seq, _ in plan.prefills]
        self.chunk_tokens = sum(n for _, n in plan.prefills)  # per iteration
        self.blocks_for = blocks_for
        #: tokens each decode produces per iteration (0: none running or paused) and the decode
        #: tokens of one iteration in all, as ``DecodeRun`` has them
        self.decode_q = plan.decode_tokens if decodes else 0
        self.batch = decodes * self.decode_q

    @classmethod
    def priced(cls, t0: float, plan: Plan, k: int, cost: CostModel, dset: DecodeSet,
               blocks_for: Callable[[int], int], extra: float = 0.0) -> MixedRun:
        """The run of ``k`` iterations of ``plan`` from ``t0``, each priced by ``cost``; a one-off
        ``extra`` (a swap transfer) lengthens the first, as it does a single iteration."""
        new = [n for _, n in plan.prefills]
        ctx0 = [seq.prefilled for seq, _ in plan.prefills]
        q = plan.decode_tokens
        bsz = len(dset.members) if q else 0
        csum, cmax = (dset.ctx_sum, dset.longest_context()) if bsz else (0, 0)
        durs = []
        for j in range(k):
            ctx = [c + j * n for c, n in zip(ctx0, new, strict=True)]
            if bsz:
                durs.append(cost.iteration_time(new, ctx, bsz, q, csum + j * q * bsz, cmax + j * q,
                                                _contexts_after(dset, j * q)))
            else:
                durs.append(cost.iteration_time(new, ctx))
        durs[0] += extra
        return cls(t0, plan, durs, blocks_for, bsz)

    def cut(self, j: int) -> None:
        """Keep the first ``j`` iterations (an event ends the run at that boundary)."""
        self.k = j
        del self.durs[j:]
        del self.ends[j:]

    def span(self, j: int) -> float:
        """Time from the run's start to the end of its j-th iteration."""
        return self.ends[j - 1] if j else 0.0

    @property
    def first(self) -> float:
        return self.durs[0]

    def first_boundary_at_or_after(self, delta: float) -> int:
        """Smallest j in [1, k] whose iteration ends at or after ``delta`` into the run."""
        if delta <= 0.0:
            return 1
        return min(self.k, bisect.bisect_left(self.ends, delta) + 1)

    def steps_done_by(self, now: float) -> int:
        return bisect.bisect_right(self.ends, now - self.t0)

    def chunk_blocks_started(self, j: int) -> int:
        """KV blocks the prompt chunks of iterations 2 .. j+1 take beyond what the first one
        holds: with j iterations done the next has started, and a step engine allocates a
        chunk's blocks when its iteration starts."""
        started = min(j + 1, self.k)
        if started <= 1:
            return 0
        bf = self.blocks_for
        return sum(bf(p + started * n) - bf(p + n)
                   for p, (_, n) in zip(self.starts, self.plan.prefills, strict=True))


def _contexts_after(dset: DecodeSet, tokens: int) -> Callable[[], list[int]]:
    """The decode set's contexts once every member has made ``tokens`` more (for cost models
    that price decodes one by one)."""
    return lambda: [c + tokens for c in dset.contexts()]
