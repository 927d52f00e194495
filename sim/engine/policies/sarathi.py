"""Sarathi-Serve: chunked prefills under a per-iteration token budget, stall-free.

Every iteration first includes all running decodes (one token each), then spends what is left of
``token_budget`` on prefill chunks — ongoing chunked prefills first, then new requests by
priority/FCFS — each chunk at most ``chunk_size`` tokens. Running decodes are never paused for a
prefill, which is what keeps time-between-tokens flat under load. KV is paged (blocks allocated
per chunk); a decode step that lacks blocks preempts as vLLM does.
"""
from __future__ import annotations

from dataclasses import dataclass

from sim.config import ConfigError
from sim.engine.policies.base import BatchingPolicy, register_policy
from sim.engine.view import Plan, SchedulerView

#: longest run of identical chunked iterations executed as one event (bounds the run's arrays)
MAX_REPEATS = 256


@dataclass
class SarathiOptions:
    chunk_size: int = 512  # largest prefill chunk (tokens)
    token_budget: int = 512  # tokens per iteration, decodes + chunks


@register_policy
class SarathiPolicy(BatchingPolicy):
    name = "sarathi"
    Options = SarathiOptions

    def __init__(self, cfg, capacity, max_context=0):
        super().__init__(cfg, capacity, max_context)
        opt = self.options
        if opt.chunk_size < 1:
            raise ConfigError("scheduler.sarathi.chunk_size must be >= 1")
        if opt.token_budget < opt.chunk_size:
            raise ConfigError(f"scheduler.sarathi.token_budget ({opt.token_budget}) is below "
                              f"scheduler.sarathi.chunk_size ({opt.chunk_size}); raise the budget or "
                              "lower the chunk size")
        self.chunk_size, self.token_budget = opt.chunk_size, opt.token_budget
        #: decodes that fit one iteration next to at least one prefill token
        self.max_running = min(cfg.max_batch_size, opt.token_budget - 1) if opt.token_budget > 1 else 1

    def schedule(self, view: SchedulerView, now: float) -> Plan | None:
        chunk_size = self.chunk_size
        seqs = self._prepare_mixed_iteration(view, now)
        budget = self.token_budget - len(view.running)
        chunks = []
        blocks_for = self.capacity.blocks_for
        # blocks this iteration's decode step will take are not available to prefill chunks
        free = view.free_blocks - (view.decode_step_blocks() if view.running else 0)
        for seq in view.prefilling:
            if budget <= 0:
                break
            n = min(chunk_size, seq.prefill_target - seq.prefilled, budget)
            need = blocks_for(seq.prefilled + n) - seq.blocks
            if need > free:
                break
            view.continue_prefill(seq, n)
            free -= need
            chunks.append((seq, n))
            budget -= n
        waiting = view.waiting
        free -= self.watermark_blocks
        # A new request is admitted only if its whole prompt fits next to what the prompts already
        # in prefill still need (vLLM allocates a prompt's blocks at admission); otherwise several
        # half-prefilled prompts can fill the cache with none able to finish, and nothing runs.
        pending = sum(blocks_for(s.prefill_target) - s.blocks for s in view.prefilling)
        while waiting and budget > 0 and seqs < self.max_running and not view.swapped:
            seq = waiting[0]
            n = min(chunk_size, seq.prefill_target - seq.prefilled, budget)
            need = blocks_for(seq.prefilled + n) - seq.blocks
            whole = blocks_for(seq.prefill_target) - seq.blocks
            if whole + pending > free:
                break
            view.admit_next(n, now)
            free -= need
            pending += whole - need
            chunks.append((seq, n))
            budget -= n
            seqs += 1
        if chunks:
            return Plan(chunks, decode_tokens=1 if view.running else 0)
        if view.running:
            return Plan([], 1)
        return None

    def repeats(self, view: SchedulerView, plan: Plan) -> int:
        """Iterations after this one that would carry the same chunks: each prompt keeps getting
        its chunk while at least that much is left, and nothing else can change the plan without
        an event the instance sees (an arrival, a decode finishing). The admission loop above
        stopped on a condition that holds until then: no budget or batch slot left, an empty
        queue, or a head that does not fit -- and free blocks minus what admitted prompts still
        need only shrink as the decodes grow. Bounded by the blocks the run's chunks and decode
        steps take, which must all fit (a step engine would otherwise stop or preempt)."""
        if not plan.prefills or view.swapped:
            return 0
        r = MAX_REPEATS
        for seq, n in plan.prefills:
            r = min(r, (seq.prefill_target - seq.prefilled - n) // n)
        if r <= 0:
            return 0
        blocks_for = self.capacity.blocks_for
        decoding = plan.decode_tokens and view.running
        step_now = view.decode_step_blocks() if decoding else 0
        free = view.free_blocks - step_now  # after this iteration's own decode step

        def fits(m: int) -> bool:  # m more iterations: their chunks and decode steps
            need = sum(blocks_for(s.prefilled + n * (m + 1)) - blocks_for(s.prefilled + n)
                       for s, n in plan.prefills)
            if decoding:
                need += view.decode_step_blocks(m + 1) - step_now
            return need <= free

        if fits(r):
            return r
        lo, hi = 0, r  # fits(lo), not fits(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if fits(mid):
                lo = mid
            else:
                hi = mid
        return lo
