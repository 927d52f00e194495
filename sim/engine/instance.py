"""One serving instance: the iteration loop and fast-forward, over a KV pool, queues and a policy.

At every iteration boundary the policy forms a ``Plan`` (sequences and the tokens each advances).
A plan that repeats unchanged runs as one event of k iterations (``DecodeRun``; ``SpecRun`` when
speculating, ``MixedRun`` for predictable chunked prefills); an event that could change the plan
truncates it at the first boundary at or after it, where a step engine would first see it.
``fast_forward=False`` runs one event per iteration; tests check both agree per request. State has
one owner each: ``KVPool``, ``RequestQueues``, ``DecodeSet``, ``InstanceStats``, ``Speculation``.
"""
from __future__ import annotations

import math
from collections.abc import Callable

from goodput.sim.costmodel.base import CostModel
from goodput.sim.engine.admission import Admission, KVHandoff
from goodput.sim.engine.clock import Clock
from goodput.sim.engine.decode_run import DecodeRun
from goodput.sim.engine.decode_set import DecodeSet, nanmax
from goodput.sim.engine.kvcache import KVCapacity
from goodput.sim.engine.kvpool import KVPool
from goodput.sim.engine.mixed_run import MixedRun, run_sizes
from goodput.sim.engine.observer import InstanceObserver
from goodput.sim.engine.policies.base import BatchingPolicy, quiet_schedule
from goodput.sim.engine.prefix_cache import make_prefix_cache
from goodput.sim.engine.queues import RequestQueues, work_left
from goodput.sim.engine.records import RecordSink
from goodput.sim.engine.sequence import COMPLETED, DONE, OUTCOMES, REJECTED, UNFINISHED, Sequence
from goodput.sim.engine.speculation import make_speculation
from goodput.sim.engine.speculation_run import SpecRun, finish_spec_run, plan_spec_run
from goodput.sim.engine.stats import InstanceStats
from goodput.sim.engine.view import DECODE_ONLY, Plan


class Instance(Admission):
    def __init__(self, clock: Clock, index: int, group: str, cost_model: CostModel,
                 capacity: KVCapacity, policy: BatchingPolicy, records: RecordSink, fast_forward: bool = True,
                 timeseries_interval_s: float = 0.5, max_context: int | None = None,
                 host_link_gbs: float = 25.0, swap_space_gb: float = 0.0,
                 observers: tuple[InstanceObserver, ...] = (), role: str = "mixed",
                 prefix_unit_tokens: int | None = None):
        self.clock = clock
        self.index = index
        self.group = group
        self.cost = cost_model
        self.base_cost = cost_model  # what ``slow_down`` scales
        self.failed = False
        self.down_since = math.nan
        self.downtime_s = 0.0
        self.capacity = capacity
        self.policy = policy
        self.records = records
        self.fast_forward = fast_forward
        self.max_context = max_context
        self.bs = capacity.block_size
        block_bytes = capacity.bytes_per_token * capacity.block_size
        host_blocks = int(swap_space_gb * 1e9 // block_bytes) if block_bytes else 0
        cache = make_prefix_cache(policy.cfg.section("prefix_cache"), capacity.block_size, block_bytes,
                                  host_link_gbs, prefix_unit_tokens)
        self.kv = KVPool(capacity, host_blocks, host_link_gbs, cache)
        self.queues = RequestQueues()
        self.decode = DecodeSet(self.kv, index)
        self.stats = InstanceStats(index, timeseries_interval_s)
        self.spec = make_speculation(policy.cfg, cost_model)  # speculative decoding (method none: off)
        # the policy's read-only view of the queues (the owners' containers, never rebound)
        self.waiting = self.queues.waiting
        self.swapped = self.queues.swapped
        self.prefilling = self.queues.prefilling
        self.running = self.decode.members
        self.observers = tuple(observers)
        self.draining = False
        self.retired_at = math.nan  # when a drained instance had nothing left (NaN: never)
        self._coeff_cache: dict[int, tuple[float, float]] = {}
        #: the policy's plan at a quiet boundary is known without asking it (``quiet_decode_only``)
        self._quiet = quiet_schedule(type(policy))
        self._run: DecodeRun | MixedRun | None = None  # the decode run in flight
        self._iteration: tuple[float, float, Plan] | None = None  # a single general iteration
        self._pending: object = None  # end event of what is in flight; a truncation supersedes it
        #: the bound method scheduled at every iteration's end, made once (compiled, reading
        #: ``self._on_iteration_end`` builds a new bound-method object each time)
        self._end_callback = self._on_iteration_end
        self._truncatable = False
        self.idle = True
        self._hooks: list[Callable[[], None]] = []  # run at the next boundary (migration, drain)
        self._overhead_s = 0.0  # one-off time charged to the next iteration (swap transfers)
        self._preempted = False  # a preemption happened while planning this boundary
        #: mixed | prefill | decode (disaggregated pools); routers send new requests to the first two
        self.role = role
        #: where a prefill-only instance hands prefilled requests (a KVDispatcher), else None
        self.handoff: KVHandoff | None = None
        self.outgoing: dict[int, Sequence] = {}  # handed off, KV still held here until it lands

    # ------------------------------------------------------------------ planning (shared)
    def next_plan(self, now: float) -> Plan | None:
        """Run pending hooks, then the policy's plan for the iteration starting at ``now``.

        None means nothing can run: the instance goes idle until something arrives. Shared by the
        simulated engine and the real GPU serving loop (goodput.profiler.serve), so both take exactly the
        same scheduling decisions.
        """
        while self._hooks:
            self._hooks.pop(0)()
        while True:
            plan = self.policy.schedule(self, now)
            if plan is not None:
                return plan
            q = self.queues
            if q.waiting and not self.decode.members and not q.prefilling and not self.kv.reserved \
                    and not self.outgoing:
                # nothing runs yet the head cannot be scheduled: it never will be
                seq = q.waiting.popleft()
                self.kv.free_from(seq)
                q.remove_work(work_left(seq))
                self._end(seq, REJECTED, now, "cannot be scheduled on an empty instance")
                continue
            return None

    def plan_members(self, plan: Plan) -> tuple[list, list, list]:
        """(sequences, new tokens, cached context tokens) of the iteration ``plan`` describes:
        prefill chunks first, then the running decodes (``decode_tokens`` new tokens each)."""
        seqs = [s for s, _ in plan.prefills]
        new = [n for _, n in plan.prefills]
        ctx = [s.prefilled for s, _ in plan.prefills]
        if plan.decode_tokens and self.decode.members:
            seqs.extend(self.decode.members)
            new.extend([plan.decode_tokens] * len(self.running))
            ctx.extend(self.decode.contexts())
        return seqs, new, ctx

    def _iteration_time(self, plan: Plan, new: list[int]) -> float:
        """Duration of a general iteration: its prompt chunks (``new`` tokens each) listed, the
        decode set priced by its totals (``CostModel.iteration_time``), so the work does not
        grow with the batch."""
        ctx = [s.prefilled for s, _ in plan.prefills]
        q = plan.decode_tokens
        dset = self.decode
        if not (q and dset.members):
            return self.cost.iteration_time(new, ctx)
        return self.cost.iteration_time(new, ctx, len(dset.members), q, dset.ctx_sum,
                                        dset.longest_context(), dset.contexts)

    def finish_iteration(self, plan: Plan, t0: float, now: float) -> None:
        """Apply one executed iteration of ``plan`` that ran from ``t0`` to ``now`` (step mode)."""
        self._finish_iteration(plan, t0, now - t0)

    # ------------------------------------------------------------------ the simulated engine
    def _boundary(self) -> None:
        """An iteration boundary: ask the policy for a plan and start executing it."""
        now = self.clock.now
        self._preempted = False
        q, dset, kv = self.queues, self.decode, self.kv
        if (self._quiet and dset.members and not q.waiting and not q.prefilling and not q.swapped
                and not self._hooks and self.decode_step_blocks() <= kv.total - kv.used):
            plan: Plan | None = DECODE_ONLY  # what the policy would plan (``quiet_decode_only``)
        else:
            plan = self.next_plan(now)
        stats = self.stats
        if plan is None:
            self._sample(now, 0)
            self.idle = True
            if self.draining and not self.has_work() and not kv.reserved:
                self.retired_at = now  # drained and empty: its GPUs are released (and unbilled)
            return
        extra, self._overhead_s = self._overhead_s, 0.0
        members = dset.members
        if plan.prefills or plan.decode_tokens != 1:
            new = [n for _, n in plan.prefills]
            if now - stats.last_sample >= stats.interval:  # the common case skips the call
                self._sample(now, sum(new))
            sizes = (run_sizes(self, self.policy, plan, new)
                     if self.fast_forward and not self._preempted else None)
            if sizes is not None:
                self._run = run = MixedRun.priced(now, plan, sizes, self.cost, dset, kv.blocks_for,
                                                  extra)
                self._truncatable = True
                self._schedule_end(run.span(run.k))
                return
            dur = extra + self._iteration_time(plan, new)
            self._iteration = (now, dur, plan)
            self._schedule_end(dur)
            if self.handoff is not None and self.handoff.early:
                for seq, n in plan.prefills:  # layer-by-layer KV can leave as this one computes
                    if seq.prefilled + n >= seq.prefill_target and seq.generated + 1 < seq.output:
                        self.handoff.prefill_finishing(self, seq, now, now + dur)
            return
        bsz, ctx_sum = len(members), dset.ctx_sum
        ab = self._coeff_cache.get(bsz)
        if ab is None:
            ab = self._coeff_cache[bsz] = self.cost.decode_coefficients(bsz)
        a, b = ab
        if now - stats.last_sample >= stats.interval:
            self._sample(now, 0)
        if self.spec.active and (spec := plan_spec_run(self, now, extra, self.fast_forward)) is not None:
            self._run, self._truncatable = spec, spec.k > 1
            self._schedule_end(spec.span(spec.k))
            return
        k = 1
        # A boundary that preempted is not a repeating plan: the blocks it freed can change the
        # next decision (vLLM resumes a swapped request as soon as they fit), so it runs once.
        if self.fast_forward and not self._preempted:
            k = dset.steps_to_completion()
            growing, free = kv.phases.size, kv.total - kv.used
            if growing and free < growing * (k // self.bs + 1):
                k = min(k, dset.steps_until_shortage(free))
            k = max(k, 1)
        self._run = DecodeRun(now + extra, k, a, b, bsz, ctx_sum)
        self._truncatable = k > 1
        self._pending = self.clock.call_later(extra + k * (a + b * ctx_sum + b * bsz * 0.5 * (k - 1)),
                                              self._end_callback)

    def _schedule_end(self, delay: float) -> None:
        self._pending = self.clock.call_later(delay, self._end_callback)

    def _truncate(self, now: float) -> None:
        """End the decode run in flight at the first boundary at or after ``now``."""
        self._truncatable = False
        run = self._run
        assert run is not None
        j = run.first_boundary_at_or_after(now - run.t0)
        if j < run.k:
            if isinstance(run, MixedRun):
                run.cut(j)
            else:
                self._run = DecodeRun(run.t0, j, run.a, run.b, run.batch, run.ctx)
            self._schedule_end(max(0.0, run.t0 + run.span(j) - now))

    def _on_iteration_end(self, ev) -> None:
        if ev is not self._pending:  # superseded by a truncation
            return
        self._truncatable = False
        run = self._run
        if isinstance(run, MixedRun):
            self._run = None
            self._finish_run(run)
        elif run is not None:
            self._run = None
            t0, k, a, b, bsz, ctx = run.t0, run.k, run.a, run.b, run.batch, run.ctx
            first = a + b * ctx
            dur = k * (first + b * bsz * 0.5 * (k - 1))
            now = self.clock.now
            if self.observers:
                self._notify_decode_run(now - dur, now, k)
            self._finish_decode_run(t0, k, first, b * bsz, dur, now)
        else:
            assert self._iteration is not None
            (t0, dur, plan), self._iteration = self._iteration, None
            self._finish_iteration(plan, t0, dur)
        self._boundary()

    def _finish_run(self, run: MixedRun) -> None:
        """Apply a mixed or speculative run (ending after its ``run.k`` iterations)."""
        if isinstance(run, SpecRun):
            finish_spec_run(self, run, run.t0 + run.span(run.k))
        else:
            self._finish_iteration(run.plan, run.t0, run.span(run.k), run)

    def _finish_decode_run(self, t0: float, k: int, d0: float, step: float, dur: float,
                           now: float, q: int = 1, durs: list[float] | None = None) -> None:
        """Apply k producing iterations of the decode set (gaps d0 + j*step, or ``durs``), ending
        at ``now`` (the state only: callers tell observers what the iteration held)."""
        bsz = len(self.running)
        done, overshoot = self.decode.advance(t0, k, q, d0, step, now, durs)
        self.queues.remove_work(bsz * k * q - overshoot)
        self.stats.iteration(dur, k)
        for seq in done:
            self._complete(seq, now)

    def _notify_iterations(self, sizes: list[list[int]], t0: float, durs: list[float], decodes: int,
                           q: int) -> None:
        """Tell observers about each iteration (one span each, as a step engine)."""
        for row, d in zip(sizes, durs, strict=True):
            for ob in self.observers:
                ob.iteration(self.index, t0, t0 + d, 1, len(row), sum(row), decodes, q)
            t0 += d

    def _notify_decode_run(self, t0: float, t1: float, k: int) -> None:
        for ob in self.observers:
            ob.iteration(self.index, t0, t1, k, 0, 0, len(self.running), 1)

    def _finish_iteration(self, plan: Plan, t0: float, dur: float, run: MixedRun | None = None) -> None:
        """Apply a general iteration (or the ``run`` of them that ``plan`` begins): prefill
        chunks, and a decode step if the plan has one. A run's prompts and decodes finish only in
        its last iteration (``BatchingPolicy.upcoming``, ``mixed_run.run_sizes``)."""
        now = t0 + dur
        q = plan.decode_tokens
        members = self.decode.members
        durs = run.durs if run is not None else [dur]
        k = len(durs)
        if self.observers:
            self._notify_iterations(run.sizes if run is not None else [[n for _, n in plan.prefills]],
                                    t0, durs, len(members) if q else 0, q)
        kv = self.kv
        prefills = plan.prefills
        tokens = run.chunk_tokens(k) if run is not None else [n for _, n in prefills]
        chunks = len(prefills)
        if len(tokens) != chunks:
            raise AssertionError("a run's chunk tokens are one per prompt of its plan")
        # the prompts by index below: compiled, a zip builds an iterator and a tuple per prompt
        if run is not None:
            for i in range(chunks):
                seq, n0 = prefills[i]
                n = tokens[i]
                if n != n0 and not seq.reserved:  # iterations 2..k's chunks (the first is held)
                    # taken before the decode steps' blocks and before anything finishes, as a
                    # step engine takes them at each boundary: prefix-cache evictions then match
                    kv.allocate_to(seq, seq.prefilled + n)
        if q and members:
            if run is None:
                self._finish_decode_run(t0, 1, dur, 0.0, dur, now, q)
            else:
                self._finish_decode_run(t0, k, durs[0], 0.0, dur, now, q, durs)
        else:
            self.stats.iteration(dur, k)
            if members:
                for d in durs:
                    self.stats.stall(d)
        queues = self.queues
        prefilling = queues.prefilling
        done_work = 0
        cache = kv.cache
        for i in range(chunks):
            seq = prefills[i][0]
            n = tokens[i]
            seq.prefilled += n
            done_work += n
            if seq.prefilled < seq.prefill_target:
                continue
            prefilling.remove(seq)
            if cache is not None and seq.prefix is not None:
                kv.insert_prefix(seq)  # its full prefix units are cached from now on
            # the prefill (or recompute) samples the next output token
            if seq.generated == 0:
                seq.first_token = now
                for ob in self.observers:
                    ob.first_token(seq, self.index, now)
            else:
                seq.max_tbt = nanmax(seq.max_tbt, now - seq.last_token)
                self.decode.gaps.add(now - seq.last_token, 1)
            seq.generated += 1
            done_work += 1
            seq.last_token = now
            seq.prefill_instance = self.index
            if seq.generated >= seq.output:
                self._complete(seq, now)
            elif self.handoff is not None:
                done_work += self.hand_off(seq, now)
            else:
                self.decode.join(seq)
        queues.remove_work(done_work)

    def _complete(self, seq: Sequence, now: float) -> None:
        self.kv.free_from(seq)
        seq.last_token = now
        self._end(seq, COMPLETED, now)

    def _end(self, seq: Sequence, outcome: int, now: float, reason: str = "") -> None:
        seq.state = DONE
        self.records.add(seq, outcome, completion=now if outcome == COMPLETED else math.nan,
                         reason=reason)
        for ob in self.observers:
            ob.ended(seq, self.index, now, OUTCOMES[outcome], reason)

    def _notify_preempted(self, seq: Sequence, mode: str) -> None:
        for ob in self.observers:
            ob.preempted(seq, self.index, self.clock.now, mode)

    def _sample(self, now: float, prefill_tokens: int) -> None:
        q, running = self.queues, len(self.running)
        self.stats.sample(now, running + len(q.prefilling), prefill_tokens, running,
                          len(q.waiting) + len(q.swapped), self.kv.used, self.kv.total)

    # ------------------------------------------------------------------ end of run
    def settle_in_flight(self, now: float) -> None:
        """Stop what is executing: apply the iterations of a run that ended by ``now`` (a step
        engine has applied them), drop the one in progress, schedule nothing more (the end of
        the run, an instance failure)."""
        run = self._run
        if isinstance(run, MixedRun):  # apply the iterations of the run already done
            j = run.steps_by(now)
            if j:
                run.cut(j)
                self._finish_run(run)
        elif run is not None:  # apply the decode steps of the run already done
            j = run.steps_done_by(now)
            if j:
                end = run.t0 + run.span(j)
                if self.observers:
                    self._notify_decode_run(run.t0, end, j)
                self._finish_decode_run(run.t0, j, run.first, run.step, run.span(j), end)
        self._run = self._iteration = self._pending = None
        self._truncatable = False

    def drain_unfinished(self, now: float) -> None:
        """Count every request still here as unfinished, with the tokens it produced by ``now``."""
        self.settle_in_flight(now)
        for seq in list(self.decode.members):
            self.decode.leave(seq)
            self._end(seq, UNFINISHED, now, "still running at end of simulation")
        for seq in self.outgoing.values():
            self._end(seq, UNFINISHED, now, "KV on its way to a decode instance at end of simulation")
        self.outgoing.clear()
        q = self.queues
        for group, reason in ((q.prefilling, "still in prefill at end of simulation"),
                              (q.swapped, "swapped out at end of simulation"),
                              (q.waiting, "still queued at end of simulation")):
            for seq in group:
                self._end(seq, UNFINISHED, now, reason)
            group.clear()

    def check_conservation(self) -> None:
        """KV blocks held by sequences + reservations equal the pool's count (tests call this)."""
        q, dset = self.queues, self.decode
        outside = [*q.prefilling, *q.waiting, *self.outgoing.values()]
        held = sum(s.blocks - s.shared for s in outside)
        in_set = sum((s.blocks if s.reserved else -(-dset.context_of(s) // self.bs)) - s.shared
                     for s in dset.members)
        self.kv.check(held, in_set, [*outside, *dset.members])
