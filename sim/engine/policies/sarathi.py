"""Sarathi-Serve: chunked prefills under a per-iteration token budget, stall-free.

Every iteration first includes all running decodes (one token each), then spends what is left of
``token_budget`` on prefill chunks — ongoing chunked prefills first, then new requests by
priority/FCFS — each chunk at most ``chunk_size`` tokens. Running decodes are never paused for a
prefill, which is what keeps time-between-tokens flat under load. KV is paged (blocks allocated
per chunk); a decode step that lacks blocks preempts as vLLM does.
"""
from __future__ import annotations

from sim.config import ConfigError
from sim.engine.instance import Plan
from sim.engine.policies.base import BatchingPolicy


class SarathiPolicy(BatchingPolicy):
    name = "sarathi"

    def __init__(self, cfg, capacity, max_context=0):
        super().__init__(cfg, capacity, max_context)
        if cfg.chunk_size < 1:
            raise ConfigError("scheduler.chunk_size must be >= 1")
        if cfg.token_budget < cfg.chunk_size:
            raise ConfigError(f"scheduler.token_budget ({cfg.token_budget}) is below "
                              f"scheduler.chunk_size ({cfg.chunk_size}); raise the budget or lower "
                              "the chunk size")
        #: decodes that fit one iteration next to at least one prefill token
        self.max_running = min(cfg.max_batch_size, cfg.token_budget - 1) if cfg.token_budget > 1 else 1

    def schedule(self, inst, now: float):
        cfg = self.cfg
        seqs = self._prepare_mixed_iteration(inst, now)
        budget = cfg.token_budget - len(inst.running)
        chunks = []
        # blocks this iteration's decode step will take are not available to prefill chunks
        free = inst.free_blocks - (inst.phases.needed_at(inst.decode_steps) if inst.running else 0)
        for seq in inst.prefilling:
            if budget <= 0:
                break
            n = min(cfg.chunk_size, seq.prefill_target - seq.prefilled, budget)
            need = self.capacity.blocks_for(seq.prefilled + n) - seq.blocks
            if need > free:
                break
            inst.admit(seq, n, now)
            free -= need
            chunks.append((seq, n))
            budget -= n
        waiting = inst.waiting
        free -= self.watermark_blocks
        # A new request is admitted only if its whole prompt fits next to what the prompts already
        # in prefill still need (vLLM allocates a prompt's blocks at admission); otherwise several
        # half-prefilled prompts can fill the cache with none able to finish, and nothing runs.
        blocks_for = self.capacity.blocks_for
        pending = sum(blocks_for(s.prefill_target) - s.blocks for s in inst.prefilling)
        while waiting and budget > 0 and seqs < self.max_running and not inst.swapped:
            seq = waiting[0]
            n = min(cfg.chunk_size, seq.prefill_target - seq.prefilled, budget)
            need = blocks_for(seq.prefilled + n) - seq.blocks
            whole = blocks_for(seq.prefill_target) - seq.blocks
            if whole + pending > free:
                break
            waiting.popleft()
            inst.admit(seq, n, now)
            free -= need
            pending += whole - need
            chunks.append((seq, n))
            budget -= n
            seqs += 1
        if chunks:
            return Plan(chunks, decode=bool(inst.running))
        if inst.running:
            return Plan([], decode=True)
        return None
