"""One serving instance: a paged KV cache, a batching policy and an engine driven by SimPy events.

At every iteration boundary the policy forms a plan (prefill chunks to run, and whether the running
decode set produces a token). A plan that is *pure decode* and would repeat unchanged — no arrival,
completion, block shortage or chunk boundary in between — is executed as one closed-form run of k
iterations (fast-forward). The cost model's linearity contract makes the run's duration exact:
``sum_{j<k} a + b*(C + j*B) = k*a + b*(k*C + B*k*(k-1)/2)``. An arrival that could change the plan
truncates the run at the first iteration boundary at or after it, which is exactly where a
step-by-step engine would first see it. ``fast_forward=False`` runs one event per iteration; tests
check both give the same per-request results.
"""
from __future__ import annotations

import bisect
import heapq
import math
from collections import deque

import simpy

from sim.costmodel.base import Batch, CostModel
from sim.engine.kvcache import DecodeBlockPhases, KVCapacity
from sim.engine.records import RecordSink
from sim.engine.sequence import COMPLETED, DECODING, DONE, PREFILLING, REJECTED, UNFINISHED, WAITING, Sequence


class Plan:
    """What one iteration computes: prefill chunks [(seq, tokens)] and whether decoders step."""

    __slots__ = ("prefills", "decode")

    def __init__(self, prefills: list, decode: bool):
        self.prefills = prefills
        self.decode = decode


class Instance:
    def __init__(self, env: simpy.Environment, index: int, group: str, cost_model: CostModel,
                 capacity: KVCapacity, policy, records: RecordSink, fast_forward: bool = True,
                 timeseries_interval_s: float = 0.5, max_context: int | None = None):
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
        self.waiting: deque[Sequence] = deque()
        self.prefilling: list[Sequence] = []  # admitted, prompt (re)computation not finished
        self.running: list[Sequence] = []  # decode set, in join order
        self._heap: list = []  # (finish_step, rid, seq)
        self.phases = DecodeBlockPhases(self.bs)
        self.decode_steps = 0  # decode iterations executed by the decode set so far
        self.ctx_sum = 0  # stored KV tokens of the decode set at decode_steps
        self.run_index = 0
        self._new_members: list[Sequence] = []
        self._tbt_runs: list[int] = []  # monotone stack: run index ...
        self._tbt_vals: list[float] = []  # ... and the max token gap from that run onwards
        self.last_decode_end = math.nan
        self._coeff_cache: dict[int, tuple[float, float]] = {}
        # the iteration in flight: (t0, k, a, b, B, C, plan); for a non-decode plan a = duration
        self._run = None
        self._pending = None  # its end event; a truncation supersedes it
        self._truncatable = False
        self._idle = True
        # load accounting (for routers): work left in tokens as of the last boundary
        self.outstanding_tokens = 0
        self.assigned = 0
        # statistics
        self.busy_s = 0.0
        self.iterations = 0
        self.preemptions = 0
        self.ts_interval = timeseries_interval_s
        self._ts_last = -math.inf
        self.ts: list[tuple] = []

    # ------------------------------------------------------------------ admission / arrival
    @property
    def free_blocks(self) -> int:
        return self.total_blocks - self.used_blocks

    def submit(self, seq: Sequence) -> None:
        """A request routed here. Rejected at once if it could never run on this instance."""
        seq.instance = self.index
        reason = self.policy.reject_reason(self, seq)
        if reason:
            self.records.add(seq, REJECTED, reason=reason)
            return
        self.assigned += 1
        self.outstanding_tokens += seq.prompt + seq.output
        self.waiting.append(seq)
        if self._truncatable and self.policy.arrival_may_change_plan(self, seq):
            self._truncate(self.env.now)

    def admit(self, seq: Sequence, tokens: int, now: float) -> None:
        """Move ``seq`` (already popped from waiting) into prefill, holding blocks for its KV."""
        need = self.capacity.blocks_for(seq.prefilled + tokens) - seq.blocks
        self.used_blocks += need
        seq.blocks += need
        if seq.state == WAITING:
            seq.state = PREFILLING
            self.prefilling.append(seq)
            if seq.first_scheduled != seq.first_scheduled:  # NaN: first time scheduled
                seq.first_scheduled = now

    def preempt(self, seq: Sequence) -> None:
        """Preemption by recompute: drop the KV, requeue at the head to recompute later."""
        if seq.state == DECODING:
            self._leave_decode(seq)
        else:
            self.prefilling.remove(seq)
        self.used_blocks -= seq.blocks
        seq.blocks = 0
        left_before = seq.prefill_target - seq.prefilled
        seq.prefill_target = seq.prompt + seq.generated if seq.generated else seq.prompt
        self.outstanding_tokens += seq.prefill_target - left_before  # recompute is work again
        seq.prefilled = 0
        seq.preemptions += 1
        seq.state = WAITING
        self.preemptions += 1
        self.waiting.appendleft(seq)

    # ------------------------------------------------------------------ decode-set membership
    def _join_decode(self, seq: Sequence, now: float) -> None:
        kv = seq.prompt + seq.generated - 1
        s = self.decode_steps
        seq.state = DECODING
        seq.step_base = s
        seq.gen_base = seq.generated
        seq.finish_step = s + seq.output - seq.generated
        seq.phase = (s - kv) % self.bs
        seq.join_run = -1  # new member: its first gap is computed from its own last token
        self.ctx_sum += kv
        self.phases.add(seq.phase)
        self.running.append(seq)
        self._new_members.append(seq)
        heapq.heappush(self._heap, (seq.finish_step, seq.rid, seq))

    def _leave_decode(self, seq: Sequence) -> None:
        steps = self.decode_steps - seq.step_base
        seq.generated = seq.gen_base + steps
        kv = seq.prompt + seq.generated - 1
        seq.blocks = -(-kv // self.bs)
        self.ctx_sum -= kv
        self.phases.remove(seq.phase)
        self.running.remove(seq)
        if seq.join_run < 0:
            self._new_members.remove(seq)
        else:
            seq.max_tbt = _nanmax(seq.max_tbt, self._suffix_max(seq.join_run))
        if steps:
            seq.last_token = self.last_decode_end
        seq.state = WAITING

    def _suffix_max(self, run: int) -> float:
        i = bisect.bisect_left(self._tbt_runs, run)
        return self._tbt_vals[i] if i < len(self._tbt_vals) else math.nan

    def _push_tbt(self, run: int, value: float) -> None:
        if not value > -math.inf:  # no gap in this run (no member had produced a token before)
            return
        vals, runs = self._tbt_vals, self._tbt_runs
        while vals and vals[-1] <= value:
            vals.pop()
            runs.pop()
        vals.append(value)
        runs.append(run)

    # ------------------------------------------------------------------ engine loop
    def _coeffs(self, batch_size: int) -> tuple[float, float]:
        c = self._coeff_cache.get(batch_size)
        if c is None:
            c = self._coeff_cache[batch_size] = self.cost.decode_coefficients(batch_size)
        return c

    def _sample(self, now: float, prefill_tokens: int) -> None:
        if now - self._ts_last >= self.ts_interval:
            self._ts_last = now
            self.ts.append((now, self.index, len(self.running) + len(self.prefilling), prefill_tokens,
                            len(self.running), len(self.waiting), self.used_blocks, self.total_blocks))

    def wake(self) -> None:
        """Called after requests were queued here; starts the engine if it was idle."""
        if self._idle:
            self._idle = False
            self._boundary()

    def _schedule_end(self, delay: float) -> None:
        ev = self.env.timeout(delay)
        ev.callbacks.append(self._on_iteration_end)
        self._pending = ev

    def _boundary(self) -> None:
        """An iteration boundary: ask the policy for a plan and start executing it."""
        now = self.env.now
        while True:
            plan = self.policy.schedule(self, now)
            if plan is not None:
                break
            if self.waiting and not self.running and not self.prefilling:
                # nothing runs yet the head cannot be scheduled: it never will be
                self._reject_late(self.waiting.popleft(), "cannot be scheduled on an empty instance")
                continue
            self._sample(now, 0)
            self._idle = True
            return
        if plan.prefills or not plan.decode:
            batch = self._build_batch(plan)
            self._sample(now, batch.total_new_tokens - (len(self.running) if plan.decode else 0))
            dur = self.cost.batch_time(batch)
            self._run = (now, 1, dur, 0.0, 0, 0, plan)
            self._schedule_end(dur)
            return
        bsz, ctx = len(self.running), self.ctx_sum
        a, b = self._coeffs(bsz)
        self._sample(now, 0)
        k = 1
        if self.fast_forward:
            k = self._steps_to_completion()
            if self.free_blocks < bsz * (k // self.bs + 1):
                k = min(k, self.phases.steps_until_shortage(self.decode_steps, self.free_blocks))
            if k < 1:
                k = 1
        self._run = (now, k, a, b, bsz, ctx, None)
        self._truncatable = k > 1
        self._schedule_end(k * a + b * (k * ctx + bsz * k * (k - 1) / 2))

    def _truncate(self, now: float) -> None:
        """A request arrived that may join at the next boundary: end the run there."""
        self._truncatable = False
        t0, k, a, b, bsz, ctx, plan = self._run
        j = self._first_boundary_at_or_after(now - t0)
        if j < k:
            self._run = (t0, j, a, b, bsz, ctx, plan)
            end = t0 + j * a + b * (j * ctx + bsz * j * (j - 1) / 2)
            self._schedule_end(max(0.0, end - now))

    def _on_iteration_end(self, ev) -> None:
        if ev is not self._pending:  # superseded by a truncation
            return
        t0, k, a, b, bsz, ctx, plan = self._run
        self._run = None
        self._truncatable = False
        if plan is not None:
            self._finish_prefill_iteration(plan, t0, a)
        else:
            dur = k * a + b * (k * ctx + bsz * k * (k - 1) / 2)
            d0 = a + b * ctx
            d_in = max(a + b * (ctx + bsz), a + b * (ctx + (k - 1) * bsz)) if k > 1 else -math.inf
            self._finish_decode_run(t0, k, d0, d_in, dur, bsz)
        self._boundary()

    def _build_batch(self, plan: Plan) -> Batch:
        new = [n for _, n in plan.prefills]
        ctx = [s.prefilled for s, _ in plan.prefills]
        if plan.decode and self.running:
            steps = self.decode_steps
            bs_new = [1] * len(self.running)
            new.extend(bs_new)
            ctx.extend(s.prompt + s.gen_base + (steps - s.step_base) - 1 for s in self.running)
        return Batch(new, ctx)

    def _steps_to_completion(self) -> int:
        heap = self._heap
        while heap:
            step, _, seq = heap[0]
            if seq.state == DECODING and seq.finish_step == step:
                return step - self.decode_steps
            heapq.heappop(heap)
        return 1 << 60

    def _first_boundary_at_or_after(self, delta: float) -> int:
        """Smallest j in [1, k] whose boundary t0 + S(j) is >= t0 + delta.

        S(j) = j*a + b*(j*C + B*j*(j-1)/2) is increasing, so j is the ceiling of the positive
        root of S(j) = delta, corrected by one step for floating-point rounding.
        """
        _, k, a, b, bsz, ctx, _ = self._run
        if delta <= 0.0:
            return 1
        p = b * bsz * 0.5
        q = a + b * ctx - p
        if p > 0.0:
            j = math.ceil((math.sqrt(q * q + 4.0 * p * delta) - q) / (2.0 * p))
        else:
            j = math.ceil(delta / q)
        if j >= k:
            j = k
            if k > 1 and (k - 1) * (a + b * ctx + p * (k - 2)) >= delta:
                j = k - 1
            return j
        if j < 1:
            j = 1
        if j * (a + b * ctx + p * (j - 1)) < delta:  # S(j) < delta: rounding put us one short
            return j + 1
        if j > 1 and (j - 1) * (a + b * ctx + p * (j - 2)) >= delta:
            return j - 1
        return j

    def steps_done_by(self, now: float) -> int:
        """Decode iterations of the in-flight run already finished at ``now`` (for load queries)."""
        run = self._run
        if run is None or run[6] is not None:
            return 0
        t0, k, a, b, bsz, ctx, _ = run
        j = self._first_boundary_at_or_after(now - t0)
        return j if j * (a + b * ctx + b * bsz * 0.5 * (j - 1)) <= now - t0 else j - 1

    def load_tokens(self, now: float) -> int:
        """Tokens of work still to do here (prefill + decode), as of the last finished iteration."""
        return self.outstanding_tokens - len(self.running) * self.steps_done_by(now)

    def _finish_decode_run(self, t0: float, k: int, d0: float, d_in: float, dur: float, bsz: int,
                           now: float | None = None) -> None:
        """Apply k decode iterations of the whole decode set, ending now (or at ``now``)."""
        if now is None:
            now = self.env.now
        s0 = self.decode_steps
        self.used_blocks += self.phases.blocks_needed(s0, k)
        self.decode_steps = s0 + k
        self.ctx_sum += bsz * k
        self.outstanding_tokens -= bsz * k
        old_gap = (t0 - self.last_decode_end) + d0
        self._push_tbt(self.run_index, old_gap if old_gap > d_in else d_in)
        if self._new_members:
            nxt = self.run_index + 1
            for seq in self._new_members:
                g = (t0 - seq.last_token) + d0
                seq.max_tbt = _nanmax(seq.max_tbt, g if g > d_in else d_in)
                seq.join_run = nxt
            self._new_members.clear()
        self.run_index += 1
        self.last_decode_end = now
        self.busy_s += dur
        self.iterations += k
        heap = self._heap
        steps = self.decode_steps
        while heap and heap[0][0] <= steps:
            step, _, seq = heapq.heappop(heap)
            if seq.state == DECODING and seq.finish_step == step:
                self._leave_decode(seq)
                self._complete(seq, now)

    def _finish_prefill_iteration(self, plan: Plan, t0: float, dur: float) -> None:
        now = self.env.now
        if plan.decode and self.running:
            self._finish_decode_run(t0, 1, dur, -math.inf, dur, len(self.running))
        else:
            self.busy_s += dur
            self.iterations += 1
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
        self.assigned -= 1
        self.records.add(seq, COMPLETED, completion=now)

    def _reject_late(self, seq: Sequence, reason: str) -> None:
        self.used_blocks -= seq.blocks
        seq.blocks = 0
        seq.state = DONE
        self.assigned -= 1
        self.outstanding_tokens -= seq.prefill_target - seq.prefilled + seq.output - seq.generated
        self.records.add(seq, REJECTED, reason=reason)

    # ------------------------------------------------------------------ end of run
    def drain_unfinished(self, now: float) -> None:
        """Count every request still here as unfinished, with the tokens it produced by ``now``."""
        run = self._run
        if run is not None and run[6] is None:  # apply the decode steps of the run already done
            j = self.steps_done_by(now)
            if j:
                t0, _, a, b, bsz, ctx, _ = run
                d_in = max(a + b * (ctx + bsz), a + b * (ctx + (j - 1) * bsz)) if j > 1 else -math.inf
                dur = j * a + b * (j * ctx + bsz * j * (j - 1) / 2)
                self._finish_decode_run(t0, j, a + b * ctx, d_in, dur, bsz, now=t0 + dur)
        self._run = None
        for seq in list(self.running):
            self._leave_decode(seq)
            seq.state = DONE
            self.records.add(seq, UNFINISHED, reason="still running at end of simulation")
        for seq in self.prefilling:
            self.records.add(seq, UNFINISHED, reason="still in prefill at end of simulation")
        for seq in self.waiting:
            self.records.add(seq, UNFINISHED, reason="still queued at end of simulation")
        self.prefilling.clear()
        self.waiting.clear()


def _nanmax(a: float, b: float) -> float:
    if a != a:
        return b
    if b != b:
        return a
    return a if a > b else b
