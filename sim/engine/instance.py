"""One serving instance: a paged KV cache, a batching policy and an engine driven by SimPy events.

At every iteration boundary the policy forms a plan (prefill chunks to run, and whether the running
decode set produces a token). A plan that is *pure decode* and would repeat unchanged — no arrival,
completion, block shortage or chunk boundary in between — is executed as one closed-form run of k
iterations (fast-forward, see ``DecodeRun``). An event that could change the plan (an arrival the
policy might admit, a migration, a drain) truncates the run at the first iteration boundary at or
after it, which is exactly where a step-by-step engine would first see it. ``fast_forward=False``
runs one event per iteration; tests check both give the same per-request results.
"""
from __future__ import annotations

import heapq
import math
from collections import deque

import simpy

from sim.costmodel.base import Batch, CostModel
from sim.engine.decode_run import DecodeRun
from sim.engine.kvcache import DecodeBlockPhases, KVCapacity
from sim.engine.records import RecordSink
from sim.engine.sequence import COMPLETED, DECODING, DONE, PREFILLING, REJECTED, UNFINISHED, WAITING, Sequence
from sim.engine.tbt import TokenGaps


class Plan:
    """What one iteration computes: prefill chunks [(seq, tokens)] and whether decoders step."""

    __slots__ = ("prefills", "decode")

    def __init__(self, prefills: list, decode: bool):
        self.prefills = prefills
        self.decode = decode


#: the plan of a pure decode iteration (shared: plans are never mutated)
DECODE_ONLY = Plan([], True)


class Instance:
    def __init__(self, env: simpy.Environment, index: int, group: str, cost_model: CostModel,
                 capacity: KVCapacity, policy, records: RecordSink, fast_forward: bool = True,
                 timeseries_interval_s: float = 0.5, max_context: int | None = None,
                 host_link_gbs: float = 25.0, swap_space_gb: float = 0.0):
        self.env = env
        self.index = index
        self.group = group
        self.cost = cost_model
        self.capacity = capacity
        self.policy = policy
        self.records = records
        self.fast_forward = fast_forward
        self.max_context = max_context
        self.bs = capacity.block_size
        self.total_blocks = capacity.total_blocks
        self.used_blocks = 0
        self.waiting: deque[Sequence] = deque()  # by priority, then FCFS
        self.swapped: deque[Sequence] = deque()  # swap-preempted, resumed before new admissions
        self.prefilling: list[Sequence] = []  # admitted, prompt (re)computation not finished
        self.running: list[Sequence] = []  # decode set, in join order
        self._heap: list = []  # (finish_step, rid, seq)
        self.phases = DecodeBlockPhases(self.bs)  # growing members only (not reserved ones)
        self.decode_steps = 0  # decode iterations executed by the decode set so far
        self.ctx_sum = 0  # stored KV tokens of the decode set at decode_steps
        self.run_index = 0
        self._new_members: list[Sequence] = []
        self.gaps = TokenGaps()
        self.last_decode_end = math.nan
        self._coeff_cache: dict[int, tuple[float, float]] = {}
        self._run: DecodeRun | None = None  # the decode run in flight
        self._iteration = None  # (t0, duration, plan) of a single non-fast-forwarded iteration
        self._pending = None  # end event of what is in flight; a truncation supersedes it
        self._truncatable = False
        self._idle = True
        self._hooks: list = []  # callables to run at the next boundary (migration, drain)
        self.overhead_s = 0.0  # one-off time charged to the next iteration (swap transfers)
        # host memory for swapping: bytes per block over the host link
        self.host_link_bps = host_link_gbs * 1e9
        self.block_bytes = capacity.bytes_per_token * self.bs
        self.host_blocks_total = int(swap_space_gb * 1e9 // self.block_bytes) if self.block_bytes else 0
        self.host_blocks_used = 0
        self.draining = False
        self.reserved_blocks = 0  # held for incoming migrations
        # load accounting (for routers): work left in tokens as of the last boundary
        self.outstanding_tokens = 0
        # statistics
        self.busy_s = 0.0
        self.iterations = 0
        self.preemptions = 0
        self.swaps = 0
        self.stall_s = 0.0  # time running decodes were paused by prefill-only iterations
        self.stall_iterations = 0
        self.ts_interval = timeseries_interval_s
        self._ts_last = -math.inf
        self.ts: list[tuple] = []

    # ------------------------------------------------------------------ admission / arrival
    @property
    def free_blocks(self) -> int:
        return self.total_blocks - self.used_blocks

    @property
    def queued_demand_blocks(self) -> int:
        """Blocks the queued requests would need to start (Llumnix counts these as load)."""
        return sum(self.capacity.blocks_for(s.prefill_target) for s in self.waiting)

    def submit(self, seq: Sequence) -> None:
        """A request routed here. Rejected at once if it could never run on this instance."""
        seq.instance = self.index
        reason = self.policy.reject_reason(self, seq)
        if reason:
            self.records.add(seq, REJECTED, reason=reason)
            return
        self.outstanding_tokens += seq.prompt + seq.output
        self.enqueue(seq)
        if self._truncatable and self.policy.arrival_may_change_plan(self, seq):
            self._truncate(self.env.now)

    def enqueue(self, seq: Sequence) -> None:
        """Queue by priority (higher first), FCFS within a priority."""
        w = self.waiting
        if not w or seq.priority <= w[-1].priority:
            w.append(seq)
            return
        i = len(w)
        while i > 0 and w[i - 1].priority < seq.priority:
            i -= 1
        w.insert(i, seq)

    def admit(self, seq: Sequence, tokens: int, now: float, reserve_tokens: int = 0) -> None:
        """Move ``seq`` (already popped from waiting) into prefill, holding blocks for its KV.

        ``reserve_tokens`` > 0 reserves KV for that many tokens up front (Orca, static batching).
        """
        if reserve_tokens:
            need = self.capacity.blocks_for(reserve_tokens) - seq.blocks
            seq.reserved = True
        else:
            need = self.capacity.blocks_for(seq.prefilled + tokens) - seq.blocks
        if need > 0:
            self.used_blocks += need
            seq.blocks += need
        if seq.state == WAITING:
            seq.state = PREFILLING
            self.prefilling.append(seq)
            if seq.first_scheduled != seq.first_scheduled:  # NaN: first time scheduled
                seq.first_scheduled = now

    def preempt(self, seq: Sequence, swap: bool = False) -> None:
        """Free ``seq``'s GPU memory: by swap to host (keeps its KV) or by recompute (drops it)."""
        if seq.state == DECODING:
            self._leave_decode(seq)
        else:
            self.prefilling.remove(seq)
        self.used_blocks -= seq.blocks
        seq.preemptions += 1
        self.preemptions += 1
        seq.state = WAITING
        if swap and seq.generated and self.host_blocks_used + seq.blocks <= self.host_blocks_total:
            self.host_blocks_used += seq.blocks
            self.overhead_s += seq.blocks * self.block_bytes / self.host_link_bps
            seq.swapped = True
            self.swaps += 1
            self.swapped.append(seq)
            return
        seq.blocks = 0
        seq.reserved = False
        left_before = seq.prefill_target - seq.prefilled
        seq.prefill_target = seq.prompt + seq.generated if seq.generated else seq.prompt
        self.outstanding_tokens += seq.prefill_target - left_before  # recompute is work again
        seq.prefilled = 0
        self.waiting.appendleft(seq)

    def swap_in(self, seq: Sequence, now: float) -> None:
        """Bring a swapped request's KV back from host memory; it rejoins the decode set."""
        self.swapped.remove(seq)
        self.host_blocks_used -= seq.blocks
        self.used_blocks += seq.blocks
        self.overhead_s += seq.blocks * self.block_bytes / self.host_link_bps
        seq.swapped = False
        self._join_decode(seq, now)

    # ------------------------------------------------------------------ decode-set membership
    def _join_decode(self, seq: Sequence, now: float) -> None:
        kv = seq.prompt + seq.generated - 1
        s = self.decode_steps
        seq.state = DECODING
        seq.step_base = s
        seq.gen_base = seq.generated
        seq.finish_step = s + seq.output - seq.generated
        seq.join_run = -1  # new member: its first gap is computed from its own last token
        self.ctx_sum += kv
        if not seq.reserved:
            seq.phase = (s - kv) % self.bs
            self.phases.add(seq.phase)
        self.running.append(seq)
        self._new_members.append(seq)
        heapq.heappush(self._heap, (seq.finish_step, seq.rid, seq))

    def _leave_decode(self, seq: Sequence) -> None:
        steps = self.decode_steps - seq.step_base
        seq.generated = seq.gen_base + steps
        kv = seq.prompt + seq.generated - 1
        self.ctx_sum -= kv
        if not seq.reserved:
            seq.blocks = -(-kv // self.bs)
            self.phases.remove(seq.phase)
        self.running.remove(seq)
        if seq.join_run < 0:
            self._new_members.remove(seq)
        else:
            seq.max_tbt = _nanmax(seq.max_tbt, self.gaps.max_since(seq.join_run))
        if steps:
            seq.last_token = self.last_decode_end
        seq.state = WAITING

    # ------------------------------------------------------------------ external changes
    def at_next_boundary(self, fn) -> None:
        """Run ``fn()`` at the next iteration boundary (truncating a decode run in flight)."""
        self._hooks.append(fn)
        if self._idle:
            self.wake()
        elif self._truncatable:
            self._truncate(self.env.now)

    def wake(self) -> None:
        """Called after requests were queued here; starts the engine if it was idle."""
        if self._idle:
            self._idle = False
            self._boundary()

    def _truncate(self, now: float) -> None:
        """End the decode run in flight at the first boundary at or after ``now``."""
        self._truncatable = False
        run = self._run
        j = run.first_boundary_at_or_after(now - run.t0)
        if j < run.k:
            self._run = DecodeRun(run.t0, j, run.a, run.b, run.batch, run.ctx)
            self._schedule_end(max(0.0, run.t0 + run.span(j) - now))

    # ------------------------------------------------------------------ engine
    def _coeffs(self, batch_size: int) -> tuple[float, float]:
        c = self._coeff_cache.get(batch_size)
        if c is None:
            c = self._coeff_cache[batch_size] = self.cost.decode_coefficients(batch_size)
        return c

    def _sample(self, now: float, prefill_tokens: int) -> None:
        if now - self._ts_last >= self.ts_interval:
            self._ts_last = now
            self.ts.append((now, self.index, len(self.running) + len(self.prefilling), prefill_tokens,
                            len(self.running), len(self.waiting) + len(self.swapped), self.used_blocks,
                            self.total_blocks))

    def _schedule_end(self, delay: float) -> None:
        ev = self.env.timeout(delay)
        ev.callbacks.append(self._on_iteration_end)
        self._pending = ev

    def next_plan(self, now: float) -> Plan | None:
        """Run pending hooks, then the policy's plan for the iteration starting at ``now``.

        None means nothing can run: the instance goes idle until something arrives. Shared by the
        simulated engine and the real GPU serving loop (profiler.serve), so both take exactly the
        same scheduling decisions.
        """
        while self._hooks:
            self._hooks.pop(0)()
        while True:
            plan = self.policy.schedule(self, now)
            if plan is not None:
                return plan
            if self.waiting and not self.running and not self.prefilling and not self.reserved_blocks:
                # nothing runs yet the head cannot be scheduled: it never will be
                self._reject_late(self.waiting.popleft(), "cannot be scheduled on an empty instance")
                continue
            return None

    def plan_members(self, plan: Plan) -> tuple[list, list, list]:
        """(sequences, new tokens, cached context tokens) of the iteration ``plan`` describes:
        prefill chunks first, then the running decodes (one new token each)."""
        seqs = [s for s, _ in plan.prefills]
        new = [n for _, n in plan.prefills]
        ctx = [s.prefilled for s, _ in plan.prefills]
        if plan.decode and self.running:
            steps = self.decode_steps
            seqs.extend(self.running)
            new.extend([1] * len(self.running))
            ctx.extend(s.prompt + s.gen_base + (steps - s.step_base) - 1 for s in self.running)
        return seqs, new, ctx

    def finish_iteration(self, plan: Plan, t0: float, now: float) -> None:
        """Apply one executed iteration of ``plan`` that ran from ``t0`` to ``now`` (step mode)."""
        if plan.prefills or not plan.decode:
            self._finish_prefill_iteration(plan, t0, now - t0)
        else:
            self._finish_decode_run(t0, 1, now - t0, 0.0, now - t0, len(self.running), now=now)

    def _boundary(self) -> None:
        """An iteration boundary: ask the policy for a plan and start executing it."""
        now = self.env.now
        plan = self.next_plan(now)
        if plan is None:
            self._sample(now, 0)
            self._idle = True
            return
        extra, self.overhead_s = self.overhead_s, 0.0
        if plan.prefills or not plan.decode:
            batch = self._build_batch(plan)
            self._sample(now, batch.total_new_tokens - (len(self.running) if plan.decode else 0))
            dur = extra + self.cost.batch_time(batch)
            self._iteration = (now, dur, plan)
            self._schedule_end(dur)
            return
        bsz, ctx = len(self.running), self.ctx_sum
        ab = self._coeff_cache.get(bsz)
        a, b = ab if ab is not None else self._coeffs(bsz)
        if now - self._ts_last >= self.ts_interval:
            self._sample(now, 0)
        k = 1
        if self.fast_forward:
            k = self._steps_to_completion()
            phases = self.phases
            if phases.size and self.free_blocks < phases.size * (k // self.bs + 1):
                k = min(k, phases.steps_until_shortage(self.decode_steps, self.free_blocks))
            if k < 1:
                k = 1
        self._run = DecodeRun(now + extra, k, a, b, bsz, ctx)
        self._truncatable = k > 1
        self._schedule_end(extra + k * (a + b * ctx + b * bsz * 0.5 * (k - 1)))

    def _on_iteration_end(self, ev) -> None:
        if ev is not self._pending:  # superseded by a truncation
            return
        self._truncatable = False
        run = self._run
        if run is not None:
            self._run = None
            t0, k, a, b, bsz, ctx = run
            first = a + b * ctx
            self._finish_decode_run(t0, k, first, b * bsz, k * (first + b * bsz * 0.5 * (k - 1)), bsz)
        else:
            (t0, dur, plan), self._iteration = self._iteration, None
            self._finish_prefill_iteration(plan, t0, dur)
        self._boundary()

    def _build_batch(self, plan: Plan) -> Batch:
        _, new, ctx = self.plan_members(plan)
        return Batch(new, ctx)

    def _steps_to_completion(self) -> int:
        heap = self._heap
        while heap:
            step, _, seq = heap[0]
            if seq.state == DECODING and seq.finish_step == step and seq.instance == self.index:
                return step - self.decode_steps
            heapq.heappop(heap)
        return 1 << 60

    def steps_done_by(self, now: float) -> int:
        """Decode iterations of the in-flight run already finished at ``now`` (for load queries)."""
        return self._run.steps_done_by(now) if self._run is not None else 0

    def load_tokens(self, now: float) -> int:
        """Tokens of work still to do here (prefill + decode), as of the last finished iteration."""
        if self._run is None:
            return self.outstanding_tokens
        return self.outstanding_tokens - len(self.running) * self._run.steps_done_by(now)

    def _finish_decode_run(self, t0: float, k: int, d0: float, step: float, dur: float, bsz: int,
                           now: float | None = None) -> None:
        """Apply k producing iterations of the whole decode set (gaps d0 + j*step), ending now."""
        if now is None:
            now = self.env.now
        s0 = self.decode_steps
        self.used_blocks += self.phases.blocks_needed(s0, k)
        self.decode_steps = s0 + k
        self.ctx_sum += bsz * k
        self.outstanding_tokens -= bsz * k
        gaps = self.gaps
        buf = gaps.buf  # (first gap, step, count, tokens seeing each): binned in bulk later
        d_in = max(d0 + step, d0 + step * (k - 1)) if k > 1 else -math.inf
        old_gap = (t0 - self.last_decode_end) + d0
        gaps.push_run_max(self.run_index, old_gap if old_gap > d_in else d_in)
        new = self._new_members
        if old_gap == old_gap and bsz > len(new):
            buf.append((old_gap, 0.0, 1, bsz - len(new)))
        if new:
            nxt = self.run_index + 1
            for seq in new:
                g = (t0 - seq.last_token) + d0
                buf.append((g, 0.0, 1, 1))
                seq.max_tbt = _nanmax(seq.max_tbt, g if g > d_in else d_in)
                seq.join_run = nxt
            new.clear()
        if k > 1:
            buf.append((d0 + step, step, k - 1, bsz))
        if len(buf) >= 8192:
            gaps.flush()
        self.run_index += 1
        self.last_decode_end = now
        self.busy_s += dur
        self.iterations += k
        heap = self._heap
        steps = self.decode_steps
        while heap and heap[0][0] <= steps:
            step_, _, seq = heapq.heappop(heap)
            if seq.state == DECODING and seq.finish_step == step_ and seq.instance == self.index:
                self._leave_decode(seq)
                self._complete(seq, now)

    def _finish_prefill_iteration(self, plan: Plan, t0: float, dur: float) -> None:
        now = t0 + dur
        if plan.decode and self.running:
            self._finish_decode_run(t0, 1, dur, 0.0, dur, len(self.running), now=now)
        else:
            self.busy_s += dur
            self.iterations += 1
            if self.running:
                self.stall_s += dur
                self.stall_iterations += 1
        for seq, n in plan.prefills:
            seq.prefilled += n
            self.outstanding_tokens -= n
            if seq.prefilled < seq.prefill_target:
                continue
            self.prefilling.remove(seq)
            # the prefill (or recompute) samples the next output token
            if seq.generated == 0:
                seq.first_token = now
            else:
                seq.max_tbt = _nanmax(seq.max_tbt, now - seq.last_token)
                self.gaps.add(now - seq.last_token, 1)
            seq.generated += 1
            self.outstanding_tokens -= 1
            seq.last_token = now
            if seq.generated >= seq.output:
                self._complete(seq, now)
            else:
                self._join_decode(seq, now)

    def _complete(self, seq: Sequence, now: float) -> None:
        self.used_blocks -= seq.blocks
        seq.blocks = 0
        seq.state = DONE
        seq.last_token = now
        self.records.add(seq, COMPLETED, completion=now)

    def _reject_late(self, seq: Sequence, reason: str) -> None:
        self.used_blocks -= seq.blocks
        seq.blocks = 0
        seq.state = DONE
        self.outstanding_tokens -= seq.prefill_target - seq.prefilled + seq.output - seq.generated
        self.records.add(seq, REJECTED, reason=reason)

    # ------------------------------------------------------------------ end of run
    def drain_unfinished(self, now: float) -> None:
        """Count every request still here as unfinished, with the tokens it produced by ``now``."""
        run = self._run
        if run is not None:  # apply the decode steps of the run already done
            j = run.steps_done_by(now)
            if j:
                self._finish_decode_run(run.t0, j, run.first, run.step, run.span(j), run.batch,
                                        now=run.t0 + run.span(j))
        self._run = None
        for seq in list(self.running):
            self._leave_decode(seq)
            seq.state = DONE
            self.records.add(seq, UNFINISHED, reason="still running at end of simulation")
        for group, reason in ((self.prefilling, "still in prefill at end of simulation"),
                              (self.swapped, "swapped out at end of simulation"),
                              (self.waiting, "still queued at end of simulation")):
            for seq in group:
                self.records.add(seq, UNFINISHED, reason=reason)
            group.clear()


def _nanmax(a: float, b: float) -> float:
    if a != a:
        return b
    if b != b:
        return a
    return a if a > b else b
