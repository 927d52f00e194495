"""Queues and admission: how requests enter, wait, start, are preempted and move between instances.

This is the part of an instance a batching policy talks to (the ``SchedulerView`` operations) and
the part other components use to move requests (``detach`` / ``attach`` for live migration and KV
transfer, ``requeue_for_recompute``, ``drain``), plus exact-at-any-instant load reads for routers.
It is a base class of ``Instance`` and works on state owned elsewhere only through the owners'
methods: blocks through ``KVPool``, queues and load through ``RequestQueues``, the decode set through
``DecodeSet``, counters through ``InstanceStats``. The iteration loop lives in ``instance.py``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

from goodput.sim.costmodel.base import CostModel
from goodput.sim.costmodel.scaled import ScaledCostModel
from goodput.sim.engine.clock import Clock
from goodput.sim.engine.decode_run import DecodeRun
from goodput.sim.engine.decode_set import DecodeSet
from goodput.sim.engine.kvcache import KVCapacity
from goodput.sim.engine.kvpool import KVPool, Reservation
from goodput.sim.engine.mixed_run import MixedRun
from goodput.sim.engine.observer import InstanceObserver
from goodput.sim.engine.policies.base import BatchingPolicy
from goodput.sim.engine.queues import RequestQueues, work_left
from goodput.sim.engine.sequence import DECODING, PREFILLING, REJECTED, TRANSFERRING, WAITING, Sequence
from goodput.sim.engine.stats import InstanceStats
from goodput.sim.engine.view import SchedulerView


class KVHandoff(Protocol):
    """Where a prefill-only instance sends prefilled requests (goodput.sim.engine.disagg.KVDispatcher)."""

    early: bool  # wants ``prefill_finishing`` (layer-by-layer transfer)

    def prefill_finishing(self, src: Admission, seq: Sequence, t0: float, t1: float) -> None: ...

    def prefilled(self, src: Admission, seq: Sequence) -> None: ...

    def reject_reason(self, seq: Sequence) -> str: ...


class Admission(SchedulerView):
    # state provided by Instance.__init__
    clock: Clock
    index: int
    capacity: KVCapacity
    policy: BatchingPolicy
    kv: KVPool
    queues: RequestQueues
    decode: DecodeSet
    stats: InstanceStats
    observers: tuple[InstanceObserver, ...]
    draining: bool
    retired_at: float
    _run: DecodeRun | MixedRun | None  # a SpecRun is a MixedRun
    _truncatable: bool
    idle: bool  # nothing in flight: the engine waits for a wake() (written by the instance only)
    _hooks: list[Callable[[], None]]
    _overhead_s: float
    _preempted: bool
    outgoing: dict[int, Sequence]
    cost: CostModel
    base_cost: CostModel  # the cost model before any slow-down
    _coeff_cache: dict[int, tuple[float, float]]
    failed: bool
    down_since: float
    downtime_s: float
    handoff: KVHandoff | None  # where a prefill-only instance hands prefilled requests

    def _truncate(self, now: float) -> None:
        raise NotImplementedError

    def settle_in_flight(self, now: float) -> None:
        raise NotImplementedError

    def _boundary(self) -> None:
        raise NotImplementedError

    def _end(self, seq: Sequence, outcome: int, now: float, reason: str = "") -> None:
        raise NotImplementedError

    def _notify_preempted(self, seq: Sequence, mode: str) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ SchedulerView
    # ``waiting``, ``swapped``, ``prefilling`` and ``running`` (declared by SchedulerView) are
    # plain attributes bound in Instance.__init__ to the owners' containers (never rebound):
    # policies read them at every boundary, and a property per read would cost the hot path.

    @property
    def free_blocks(self) -> int:
        return self.kv.total - self.kv.used

    @property
    def total_blocks(self) -> int:
        return self.kv.total

    @property
    def growing_decodes(self) -> int:
        return self.kv.phases.size

    def decode_step_blocks(self, tokens: int = 1) -> int:
        if tokens == 1:  # the common case, asked at every boundary: one phase count
            phases = self.kv.phases
            return phases.count[self.decode.tokens % phases.bs]
        return self.decode.step_blocks(tokens)

    def decode_blocks_at(self, position: int) -> int:
        return self.kv.phases.count[(self.decode.tokens + position) % self.kv.phases.bs]

    def prefix_start(self, seq: Sequence) -> tuple[int, int]:
        """(computed tokens, blocks held) that waiting request ``seq`` would start its prefill
        from if admitted now: with prefix caching, the prompt tokens the cache holds and the
        cached blocks it would share, less those it would take from the free pool (idle units,
        reloads from lower tiers), so that ``blocks_for(tokens) - held`` is what admission takes
        from the free pool. Read-only; ``admit_next`` applies it. Without a cache or a prefix:
        ``(seq.prefilled, seq.blocks)``."""
        if seq.prefix is None or self.kv.cache is None or seq.blocks:
            return seq.prefilled, seq.blocks
        tokens, shared, taken, _ = self.kv.peek_prefix(seq)
        return tokens, shared - taken

    def cached_prefix_tokens(self, seq: Sequence, now: float) -> int:
        """Prompt tokens of ``seq`` this instance's prefix cache holds at ``now``, in any tier
        (cache-aware routers). 0 without prefix caching. Exact at any instant: a run in flight
        has taken the blocks of the iterations done or started by ``now`` (``used_blocks_now``),
        and a step engine would have evicted idle units for them as it went, least recent first
        with nothing released in between; those evictions are made now, so the cache routers
        see is the same with and without fast-forwarding."""
        cache = self.kv.cache
        if cache is None or seq.prefix is None:
            return 0
        if self._run is not None:
            self.kv.evict_for(self.used_blocks_now(now))
        return cache.peek(seq.prefix, seq.prompt)

    def admit_next(self, tokens: int, now: float, reserve_tokens: int = 0) -> Sequence:
        return self._admit(self.queues.waiting.popleft(), tokens, now, reserve_tokens)

    def admit_waiting(self, seq: Sequence, tokens: int, now: float, reserve_tokens: int = 0) -> Sequence:
        self.queues.waiting.remove(seq)
        return self._admit(seq, tokens, now, reserve_tokens)

    def _admit(self, seq: Sequence, tokens: int, now: float, reserve_tokens: int) -> Sequence:
        if seq.prefix is not None and self.kv.cache is not None and not seq.blocks:
            cached, seconds = self.kv.match_prefix(seq)  # what ``prefix_start`` promised
            if cached != seq.prefilled:
                self.queues.remove_work(cached - seq.prefilled)
                seq.prefilled = cached
            seq.cached = cached
            self._overhead_s += seconds  # reloading lower-tier units delays this iteration
        if reserve_tokens:
            seq.reserved = True
            self.kv.allocate_to(seq, reserve_tokens)
        else:
            self.kv.allocate_to(seq, seq.prefilled + tokens)
        seq.state = PREFILLING
        self.queues.prefilling.append(seq)
        if seq.first_scheduled != seq.first_scheduled:  # NaN: first time scheduled
            seq.first_scheduled = now
            for ob in self.observers:
                ob.scheduled(seq, self.index, now)
        return seq

    def continue_prefill(self, seq: Sequence, tokens: int) -> None:
        if not seq.reserved:
            self.kv.allocate_to(seq, seq.prefilled + tokens)

    def preempt(self, seq: Sequence, swap: bool = False) -> None:
        if seq.state == DECODING:
            self.decode.leave(seq)
        else:
            self.queues.prefilling.remove(seq)
        seq.preemptions += 1
        seq.state = WAITING
        self._preempted = True  # this boundary's plan is not a repeating one (see Instance._boundary)
        if swap and seq.generated:
            transfer = self.kv.swap_out(seq)
            if transfer is not None:
                self._overhead_s += transfer
                seq.swapped = True
                self.stats.preempted(swapped=True)
                self.queues.swapped.append(seq)
                self._notify_preempted(seq, "swap")
                return
        self.kv.free_from(seq)
        self.stats.preempted(swapped=False)
        self._notify_preempted(seq, "recompute")
        self.requeue_for_recompute(seq)

    def resume_swapped(self, now: float) -> Sequence:
        seq = self.queues.swapped.popleft()
        self._overhead_s += self.kv.swap_in(seq)
        seq.swapped = False
        self.decode.join(seq)
        return seq

    # ------------------------------------------------------------------ reads for routers
    @property
    def outstanding_tokens(self) -> int:
        return self.queues.outstanding_tokens

    @property
    def queued_demand_blocks(self) -> int:
        """Blocks the queued requests would need to start (Llumnix counts these as load)."""
        blocks_for = self.kv.blocks_for
        return sum(blocks_for(s.prefill_target) for s in self.queues.waiting)

    def hosted(self) -> int:
        """Requests here: running, in prefill, queued or swapped out."""
        return len(self.running) + self.queues.hosted()

    def has_work(self) -> bool:
        return bool(self.decode.members or self.queues.hosted() or self.outgoing)

    def load_tokens(self, now: float) -> int:
        """Tokens of work still to do here (prefill + decode), exact at any instant."""
        run = self._run
        if run is None:
            return self.queues.outstanding_tokens
        return self.queues.outstanding_tokens - run.work_done(run.steps_done_by(now))

    def used_blocks_now(self, now: float) -> int:
        """KV blocks in use at ``now``, counting blocks taken by the iterations a run has done
        (decode steps) or started (prompt chunks)."""
        run = self._run
        if run is None:
            return self.kv.used
        j = run.steps_done_by(now)
        grown = self.kv.phases.blocks_needed(self.decode.tokens, j * run.decode_q) if run.decode_q else 0
        return self.kv.used + grown + run.chunk_blocks_started(j)

    def generated_now(self, seq: Sequence, now: float) -> int:
        """Output tokens ``seq`` (in the decode set) has produced by ``now``."""
        run = self._run
        if run is None:
            return self.decode.generated(seq)
        tokens_of = getattr(run, "tokens_of", None)  # a SpecRun: each member keeps its own count
        return self.decode.generated(seq, tokens_of(seq, now) if tokens_of is not None
                                     else run.steps_done_by(now) * run.decode_q)

    # ------------------------------------------------------------------ arrivals and moves
    def submit(self, seq: Sequence) -> None:
        """A request routed here. Rejected at once if it could never run on this instance."""
        seq.instance = self.index
        if self.observers:
            for ob in self.observers:
                ob.queued(seq, self.index, self.clock.now)
        reason = self.policy.reject_reason(self, seq)
        if not reason and self.handoff is not None:
            reason = self.handoff.reject_reason(seq)
        if reason:
            self._end(seq, REJECTED, self.clock.now, reason)
            return
        queues = self.queues
        queues.add_work(seq.prompt + seq.output)
        queues.enqueue(seq)
        if self._truncatable and self.policy.arrival_may_change_plan(self, seq):
            self._truncate(self.clock.now)

    def hand_off(self, seq: Sequence, now: float) -> int:
        """A prefill-only instance finished ``seq``'s prompt: it keeps the KV until the request
        lands on a decode instance; returns the decode work that leaves with it."""
        assert self.handoff is not None
        seq.state = TRANSFERRING
        seq.kv_handoff = now
        self.outgoing[seq.rid] = seq
        self.handoff.prefilled(self, seq)
        return seq.output - seq.generated

    def release_outgoing(self, seq: Sequence) -> None:
        """The KV of a handed-off request has landed elsewhere (or is given up): free it here."""
        del self.outgoing[seq.rid]
        self.kv.free_from(seq)
        if self.draining and self.idle and not self.has_work() and not self.kv.reserved:
            self.retired_at = self.clock.now
        elif self.idle and self.queues.waiting:
            self.wake()  # the blocks it held may admit a queued prompt

    def requeue_for_recompute(self, seq: Sequence) -> None:
        """``seq`` holds no KV here: its next prefill recomputes prompt + generated tokens."""
        seq.reserved = False
        left_before = seq.prefill_target - seq.prefilled
        seq.prefill_target = seq.prompt + seq.generated if seq.generated else seq.prompt
        seq.prefilled = 0
        self.queues.add_work(seq.prefill_target - left_before)
        self.queues.requeue_front(seq)

    def detach(self, seq: Sequence) -> int:
        """Take a running request out at this boundary (its KV leaves with it); returns its KV
        tokens. Used by live migration and, next, by KV transfer between pools."""
        self.decode.leave(seq)
        self.kv.free_from(seq)
        self.queues.remove_work(seq.output - seq.generated)
        return seq.prompt + seq.generated - 1

    def reserve_incoming(self, blocks: int) -> Reservation:
        """Hold blocks for a request on its way here, so it is sure to fit when it lands. Fewer
        free blocks can change the next plan (a decode step that no longer fits preempts), so a
        run in flight ends at its next boundary, where a step engine would first see them."""
        r = self.kv.reserve(blocks)
        if self._truncatable:
            self._truncate(self.clock.now)
        return r

    def cancel_incoming(self, r: Reservation) -> None:
        self.kv.release(r)

    def attach(self, seq: Sequence, r: Reservation, blocks: int) -> bool:
        """Land a request whose KV arrived here (call at a boundary). It joins the decode set if
        the pool can give it ``blocks``; otherwise it recomputes here. Returns whether it joined."""
        seq.instance = self.index
        self.retired_at = math.nan  # work arrived (a migration started before a drain)
        if seq.generated == 0:
            raise ValueError("attach: only requests that produced a token carry KV to decode")
        if self.kv.claim(r, seq, blocks):
            self.queues.add_work(seq.output - seq.generated)
            self.decode.join(seq)
            return True
        self.recompute_incoming(seq)
        return False

    def recompute_incoming(self, seq: Sequence) -> None:
        """A request that arrived here without usable KV (it did not fit, or its transfer
        failed) recomputes its prompt and tokens here; counted as a preemption."""
        seq.instance = self.index
        seq.state = WAITING
        seq.preemptions += 1
        seq.prefill_target = seq.prefilled = 0  # nothing left of the old prefill to count
        self.queues.add_work(seq.output - seq.generated)
        self.requeue_for_recompute(seq)
        if self.idle:
            self.wake()

    def drain(self) -> list[Sequence]:
        """Stop taking requests; returns the queued ones (no longer counted here) to re-route."""
        self.draining = True
        if self.idle and not self.has_work() and not self.kv.reserved:
            self.retired_at = self.clock.now
        out = list(self.queues.waiting)
        self.queues.waiting.clear()
        for seq in out:
            self.queues.remove_work(work_left(seq))
        return out

    # ------------------------------------------------------------------ faults
    def fail(self, now: float) -> list[Sequence]:
        """The instance fails at ``now``: what it was computing is lost with its GPU and host
        memory. Tokens already produced stay produced (they reached the user); every request
        here is returned, holding no KV, to be routed elsewhere and recompute its prompt and
        tokens (counted as a preemption). It takes nothing new until ``recover``, and is not
        billed while down."""
        self.settle_in_flight(now)
        self._hooks.clear()
        lost = []
        for seq in list(self.decode.members):
            self.decode.leave(seq)
            lost.append(seq)
        q = self.queues
        lost += q.prefilling + list(q.swapped) + list(q.waiting)
        q.prefilling.clear()
        q.swapped.clear()
        q.waiting.clear()
        for seq in lost:
            if seq.swapped:
                self.kv.drop_swapped(seq)
                seq.swapped = False
            else:
                self.kv.free_from(seq)
            q.remove_work(work_left(seq))
            seq.reserved = False
            seq.state = WAITING
            seq.preemptions += 1
            seq.prefill_target = seq.prompt + seq.generated if seq.generated else seq.prompt
            seq.prefilled = 0
        self.kv.drop_cache()
        self.failed = self.draining = True
        self.idle = True
        self.down_since = now
        self.stats.failures += 1
        return lost

    def recover(self, now: float) -> None:
        """A failed instance is back, empty, and takes requests again."""
        if not self.failed:
            return
        self.failed = self.draining = False
        self.downtime_s += now - self.down_since
        self.down_since = math.nan

    def slow_down(self, factor: float) -> None:
        """From the next iteration on, every iteration takes ``factor`` x the base cost model's
        time (1 restores it): a straggler."""
        def apply() -> None:
            self.cost = self.base_cost if factor == 1 else ScaledCostModel(self.base_cost, factor)
            self._coeff_cache.clear()
        self.at_next_boundary(apply)

    def downtime_until(self, now: float) -> float:
        """Seconds this instance has been failed by ``now`` (not billed)."""
        down = self.downtime_s
        return down + (now - self.down_since) if self.failed else down

    def at_next_boundary(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` at the next iteration boundary (truncating a decode run in flight)."""
        self._hooks.append(fn)
        if self.idle:
            self.wake()
        elif self._truncatable:
            self._truncate(self.clock.now)

    def wake(self) -> None:
        """Called after requests were queued here; starts the engine if it was idle."""
        if self.idle and not self.failed:
            self.idle = False
            self._boundary()
