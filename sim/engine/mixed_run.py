"""A run of k predictable chunked-prefill iterations, executed as one event.

In a saturated Sarathi-Serve instance nearly every iteration carries a prompt chunk next to the
running decodes, so the decode-only closed form (``DecodeRun``) rarely applies. Yet the batch
composition still changes only when a decode finishes, a prompt finishes, or a request arrives:
until then the policy can say what each following iteration computes (the same prompts, chunk
sizes it can work out: full chunks, then the last piece), while every decode's context grows by
its tokens (``BatchingPolicy.upcoming``). The instance prices each iteration once
(``CostModel.iteration_time``, O(chunks) each) and schedules one event for the run's end.
Mixed-iteration costs are not linear in context (rooflines take maxima, profiles interpolate), so
the run keeps the iteration end times themselves and finds boundaries by bisection. It offers the
same reads as ``DecodeRun`` (``steps_done_by``, ``first_boundary_at_or_after``, ``span``,
``work_done``, ``chunk_blocks_started``), so load queries, truncation and the end of a run treat
both alike.
"""
from __future__ import annotations

import bisect
from collections.abc import Callable
from itertools import accumulate
from typing import TYPE_CHECKING, Final

from goodput.sim.costmodel.base import CostModel
from goodput.sim.engine.decode_set import DecodeSet
from goodput.sim.engine.view import Plan

#: as module constants, which a compiled build reads without a lookup per call
_accumulate: Final = accumulate
_bisect_left: Final = bisect.bisect_left
_bisect_right: Final = bisect.bisect_right

if TYPE_CHECKING:
    from goodput.sim.engine.instance import Instance
    from goodput.sim.engine.policies.base import BatchingPolicy


class MixedRun:
    __slots__ = ("batch", "blocks_for", "decode_q", "durs", "ends", "k", "plan", "sizes", "starts",
                 "t0", "work")

    def __init__(self, t0: float, plan: Plan, sizes: list[list[int]], durs: list[float],
                 blocks_for: Callable[[int], int], decodes: int):
        self.t0 = t0
        self.plan = plan  # the first iteration's plan: which sequences get chunks
        self.sizes = sizes  # per iteration, each chunk's tokens (aligned with plan.prefills)
        self.k = len(durs)
        self.durs = durs
        #: tokens each decode produces per iteration (0: none running or paused) and the decode
        #: tokens of one iteration in all, as ``DecodeRun`` has them
        self.decode_q = plan.decode_tokens if decodes else 0
        self.batch = decodes * self.decode_q
        if len(sizes) != len(durs):
            raise ValueError("MixedRun: one row of chunk sizes per iteration duration")
        self.ends = list(_accumulate(durs))  # the same left-to-right sums as a loop, at C speed
        #: tokens of work (chunks + decodes) done by the end of iteration j; worked out on the
        #: first load query (``work_done``), which most runs never see
        self.work: list[int] | None = None
        #: each chunk's computed tokens when the run began (before its first iteration)
        self.starts = [seq.prefilled for seq, _ in plan.prefills]
        self.blocks_for = blocks_for

    @classmethod
    def priced(cls, t0: float, plan: Plan, sizes: list[list[int]], cost: CostModel, dset: DecodeSet,
               blocks_for: Callable[[int], int], extra: float = 0.0) -> MixedRun:
        """The run of the iterations ``sizes`` describes from ``t0``, each priced by ``cost``; a
        one-off ``extra`` (a swap transfer) lengthens the first, as it does a single iteration."""
        ctx = [seq.prefilled for seq, _ in plan.prefills]
        q = plan.decode_tokens
        bsz = len(dset.members) if q else 0
        if bsz:
            durs = cost.run_times(sizes, ctx, bsz, q, dset.ctx_sum, dset.longest_context(),
                                  _contexts_after(dset))
        else:
            durs = cost.run_times(sizes, ctx)
        durs[0] += extra
        return cls(t0, plan, sizes, durs, blocks_for, bsz)

    def cut(self, j: int) -> None:
        """Keep the first ``j`` iterations (an event ends the run at that boundary)."""
        self.k = j
        del self.durs[j:]
        del self.ends[j:]
        del self.sizes[j:]
        if self.work is not None:
            del self.work[j + 1:]

    def span(self, j: int) -> float:
        """Time from the run's start to the end of its j-th iteration."""
        return self.ends[j - 1] if j else 0.0

    def first_boundary_at_or_after(self, delta: float) -> int:
        """Smallest j in [1, k] whose iteration ends at or after ``delta`` into the run."""
        if delta <= 0.0:
            return 1
        return min(self.k, _bisect_left(self.ends, delta) + 1)

    def steps_done_by(self, now: float) -> int:
        return _bisect_right(self.ends, now - self.t0)

    def steps_by(self, now: float) -> int:
        """Iterations done by ``now`` (``SpecRun`` counts ``steps_done_by`` in tokens)."""
        return _bisect_right(self.ends, now - self.t0)

    def work_done(self, j: int) -> int:
        """Tokens of work (prompt chunks and decode tokens) the first j iterations did."""
        work = self.work
        if work is None:
            b, sizes = self.batch, self.sizes
            work = self.work = (list(accumulate((sum(row) + b for row in sizes), initial=0))
                                if self.plan.prefills else list(range(0, b * self.k + 1, b)) if b
                                else [0] * (self.k + 1))
        return work[j]

    def chunk_tokens(self, j: int) -> list[int]:
        """Each chunk's tokens over the first j iterations."""
        sizes, m = self.sizes, len(self.starts)
        totals = [0] * m
        for r in range(j):  # by index: compiled, a transposing zip builds a tuple per row
            row = sizes[r]
            if len(row) != m:
                raise ValueError(f"MixedRun: iteration {r} has {len(row)} chunk sizes for {m} prompts")
            for i in range(m):
                totals[i] += row[i]
        return totals

    def chunk_blocks_started(self, j: int) -> int:
        """KV blocks the prompt chunks of iterations 2 .. j+1 take beyond what the first one
        holds: with j iterations done the next has started, and a step engine allocates a
        chunk's blocks when its iteration starts."""
        started = min(j + 1, self.k)
        if started <= 1:
            return 0
        bf = self.blocks_for
        first = self.sizes[0]
        return sum(bf(p + n) - bf(p + n0) for p, n, n0 in
                   zip(self.starts, self.chunk_tokens(started), first, strict=True))


def run_sizes(inst: Instance, policy: BatchingPolicy, plan: Plan,
              first: list[int]) -> list[list[int]] | None:
    """Chunk sizes of the iterations from this one to execute as one run on instance ``inst``:
    what ``policy`` predicts (``BatchingPolicy.upcoming``), cut where a decode finishes (the batch
    changes there); None for a single one."""
    if not plan.prefills:
        return None
    for seq, n in plan.prefills:
        if seq.prefilled + n >= seq.prefill_target:
            return None  # a prompt finishes in this one: ``upcoming`` stops there by contract
    dset = inst.decode
    q = plan.decode_tokens  # the run ends where a decode finishes: predict no further
    limit = dset.steps_to_completion(q) - 1 if q and dset.members else 1 << 30
    sizes = [first, *policy.upcoming(inst, plan, limit)] if limit > 0 else [first]
    handoff = inst.handoff
    if len(sizes) > 1 and handoff is not None and handoff.early:
        # the iteration that finishes a prompt runs alone: its KV leaves as it computes
        totals = [sum(col) for col in zip(*sizes, strict=True)]
        chunks = zip(plan.prefills, totals, strict=True)
        if any(s.prefilled + n >= s.prefill_target for (s, _), n in chunks):
            sizes.pop()
    return sizes if len(sizes) > 1 else None


def _contexts_after(dset: DecodeSet) -> Callable[[int], list[int]]:
    """The decode set's contexts once every member has made ``tokens`` more (for cost models
    that price decodes one by one)."""
    return lambda tokens: [c + tokens for c in dset.contexts()]
