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

#: most chunked iterations predicted at once (bounds a run's arrays)
MAX_RUN = 256


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

    def upcoming(self, view: SchedulerView, plan: Plan) -> list[list[int]]:
        """The following iterations, worked out by replaying ``schedule``'s rules on the state
        each would start from: the same prompts in order (full chunks, then the last piece), the
        decodes' KV growing step by step, no preemption, and no admission -- the loop above
        stopped on a condition that lasts until an event the instance sees (an arrival to an
        empty queue, a decode finishing): no budget or batch slot, or a head that does not fit
        (free blocks minus what admitted prompts still need only shrink as decodes grow). A
        prefilling request left out of ``plan`` that would get a chunk, or a chunk that would not
        fit, ends the prediction before that iteration."""
        chunks = plan.prefills
        if not chunks or view.swapped:
            return []
        prefilling = list(view.prefilling)
        in_plan = {id(s): i for i, (s, _) in enumerate(chunks)}
        if len(in_plan) != len(chunks):
            return []
        done = [s.prefilled + n for s, n in chunks]  # computed tokens after this iteration
        if any(d >= s.prefill_target for d, (s, _) in zip(done, chunks, strict=True)):
            return []  # a prompt finishes now: the batch changes after this iteration
        blocks_for = self.capacity.blocks_for
        chunk_size, running = self.chunk_size, len(view.running)
        decoding = bool(plan.decode_tokens and running)
        seqs = running + len(prefilling)
        admit_possible = bool(view.waiting) and seqs < self.max_running
        head_whole = blocks_for(view.waiting[0].prefill_target) - view.waiting[0].blocks \
            if admit_possible else 0
        # free blocks when iteration j starts: this one's decode step is still to be taken
        step0 = view.decode_step_blocks() if decoding else 0
        free = view.free_blocks - step0
        held = {id(s): s.blocks for s in prefilling}
        for (s, _), d in zip(chunks, done, strict=True):
            held[id(s)] = blocks_for(d)
        grown = step0  # decode blocks taken by iterations 0 .. j-1
        out: list[list[int]] = []
        while len(out) < MAX_RUN:
            j = len(out) + 1
            step = view.decode_step_blocks(j + 1) - grown if decoding else 0
            if step > free:
                break  # a step engine would preempt here
            room = free - step
            budget = self.token_budget - running
            row = [0] * len(chunks)
            for s in prefilling:
                if budget <= 0:
                    break
                i = in_plan.get(id(s))
                prefilled = done[i] if i is not None else s.prefilled
                n = min(chunk_size, s.prefill_target - prefilled, budget)
                need = blocks_for(prefilled + n) - held[id(s)]
                if need > room:
                    break
                if i is None:
                    return out  # a prompt left out of this plan would get a chunk
                row[i] = n
                room -= need
                budget -= n
            if 0 in row:
                break  # a prompt of the plan would get no chunk
            if budget > 0 and admit_possible:
                pending = sum(blocks_for(s.prefill_target) - held[id(s)] for s in prefilling)
                for i, (s, _) in enumerate(chunks):  # the chunks planned above are held by then
                    pending -= blocks_for(done[i] + row[i]) - held[id(s)]
                if head_whole + pending <= room - self.watermark_blocks:
                    break  # the head would be admitted
            out.append(row)
            for i, (s, _) in enumerate(chunks):
                free -= blocks_for(done[i] + row[i]) - held[id(s)]
                done[i] += row[i]
                held[id(s)] = blocks_for(done[i])
            free -= step
            grown += step
            if any(d >= s.prefill_target for d, (s, _) in zip(done, chunks, strict=True)):
                break  # a prompt finished in this one
        return out
