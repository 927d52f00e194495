"""Sarathi-Serve: chunked prefills under a per-iteration token budget, stall-free.

Every iteration first includes all running decodes (one token each), then spends what is left of
``token_budget`` on prefill chunks — ongoing chunked prefills first, then new requests by
priority/FCFS — each chunk at most ``chunk_size`` tokens. Running decodes are never paused for a
prefill, which is what keeps time-between-tokens flat under load. KV is paged (blocks allocated
per chunk); a decode step that lacks blocks preempts as vLLM does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from goodput.sim.config import ConfigError, SchedulerConfig
from goodput.sim.engine.compiled import mypyc_attr
from goodput.sim.engine.kvcache import KVCapacity
from goodput.sim.engine.policies.base import BatchingPolicy, register_policy
from goodput.sim.engine.sequence import Sequence
from goodput.sim.engine.view import DECODE_ONLY, Plan, SchedulerView

#: most chunked iterations predicted at once (bounds a run's arrays)
MAX_RUN: Final = 256


@dataclass
class SarathiOptions:
    chunk_size: int = 512  # largest prefill chunk (tokens)
    token_budget: int = 512  # tokens per iteration, decodes + chunks


@mypyc_attr(allow_interpreted_subclasses=True)
class SarathiPolicy(BatchingPolicy):
    name = "sarathi"
    Options = SarathiOptions

    def __init__(self, cfg: SchedulerConfig, capacity: KVCapacity, max_context: int = 0) -> None:
        super().__init__(cfg, capacity, max_context)
        opt = self.options
        if opt.chunk_size < 1:
            raise ConfigError("scheduler.sarathi.chunk_size must be >= 1")
        if opt.token_budget < opt.chunk_size:
            raise ConfigError(f"scheduler.sarathi.token_budget ({opt.token_budget}) is below "
                              f"scheduler.sarathi.chunk_size ({opt.chunk_size}); raise the budget or "
                              "lower the chunk size")
        self.chunk_size: int = opt.chunk_size
        self.token_budget: int = opt.token_budget
        #: decodes that fit one iteration next to at least one prefill token
        self.max_running: int = min(cfg.max_batch_size, opt.token_budget - 1) if opt.token_budget > 1 else 1

    quiet_decode_only = True  # (BatchingPolicy.quiet_decode_only)

    def schedule(self, view: SchedulerView, now: float) -> Plan | None:
        chunk_size = self.chunk_size
        seqs = self._prepare_mixed_iteration(view, now)
        budget = self.token_budget - len(view.running)
        chunks: list[tuple[Sequence, int]] = []
        blocks_for = self.capacity.blocks_for
        # blocks this iteration's decode step will take are not available to prefill chunks
        free = view.free_blocks - (view.decode_step_blocks() if view.running else 0)
        for seq in view.prefilling:
            if budget <= 0:
                break
            n = min(min(chunk_size, seq.prefill_target - seq.prefilled), budget)
            need = blocks_for(seq.prefilled + n) - seq.blocks
            if need > free:
                break
            view.continue_prefill(seq, n)
            free -= need
            chunks.append((seq, n))
            budget -= n
        waiting = view.waiting
        max_running = self.max_running
        if waiting and budget > 0 and seqs < max_running and not view.swapped:
            free -= self.watermark_blocks
            # A new request is admitted only if its whole prompt fits next to what the prompts
            # already in prefill still need (vLLM allocates a prompt's blocks at admission);
            # otherwise several half-prefilled prompts can fill the cache with none able to
            # finish, and nothing runs. (Summed only when the queue could admit: most
            # boundaries of a saturated instance have nothing queued.)
            pending = sum(blocks_for(s.prefill_target) - s.blocks for s in view.prefilling)
            while waiting and budget > 0 and seqs < max_running and not view.swapped:
                seq = waiting[0]
                done, held = view.prefix_start(seq)  # cached prefix: computed tokens, blocks held
                n = min(min(chunk_size, seq.prefill_target - done), budget)
                need = blocks_for(done + n) - held
                whole = blocks_for(seq.prefill_target) - held
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
            return DECODE_ONLY
        return None

    def upcoming(self, view: SchedulerView, plan: Plan, limit: int = MAX_RUN) -> list[list[int]]:
        """The following iterations, worked out by replaying ``schedule``'s rules on the state
        each would start from: the same prompts in order (full chunks, then the last piece), the
        decodes' KV growing step by step, no preemption, and no admission -- the loop above
        stopped on a condition that lasts until an event the instance sees (an arrival to an
        empty queue, a decode finishing): no budget or batch slot, or a head that does not fit
        (free blocks minus what admitted prompts still need only shrink as decodes grow). A
        prefilling request left out of ``plan`` that would get a chunk, or a chunk that would not
        fit, ends the prediction before that iteration. Rows are worked out one after another,
        so a ``limit`` only cuts the list short."""
        chunks = plan.prefills
        if not chunks or view.swapped:
            return []
        m = len(chunks)
        done = [s.prefilled + n for s, n in chunks]  # computed tokens after this iteration
        target = [s.prefill_target for s, _ in chunks]
        for i in range(m):  # by index: compiled, a zip builds a tuple per prompt
            if done[i] >= target[i]:
                return []  # a prompt finishes now: the batch changes after this iteration
        bs = self.capacity.block_size
        prefilling = view.prefilling
        held = [-(-d // bs) for d in done]  # blocks of the plan's prompts once this one is done
        chunk_size, running = self.chunk_size, len(view.running)
        budget0 = self.token_budget - running
        decoding = bool(plan.decode_tokens and running)
        admit = bool(view.waiting) and running + len(prefilling) < self.max_running
        if m == 1 and not admit and len(prefilling) == 1 and prefilling[0] is chunks[0][0]:
            rows = self._one_prompt_rows(view, done[0], target[0], held[0], budget0, decoding, limit)
            if rows is not None:
                return rows
        # each prefilling request as (index in the plan or -1, the request)
        pos = {id(s): i for i, (s, _) in enumerate(chunks)}
        order = [(pos.get(id(s), -1), s) for s in prefilling]
        if admit:
            head = view.waiting[0]
            _, head_held = view.prefix_start(head)
            # blocks the head needs plus what prefilling prompts still need, once this one is done
            need_all = (-(-head.prefill_target // bs) - head_held
                        + sum(-(-s.prefill_target // bs) - (held[i] if i >= 0 else s.blocks)
                              for i, s in order))
        step0 = view.decode_step_blocks() if decoding else 0
        free = view.free_blocks - step0  # free blocks when the next iteration starts
        water = self.watermark_blocks
        limit = min(limit, MAX_RUN)
        out: list[list[int]] = []
        while len(out) < limit:
            # the blocks the decode step of the next iteration takes (its token position)
            step = view.decode_blocks_at(len(out) + 1) if decoding else 0
            if step > free:
                break  # a step engine would preempt here
            room = free - step
            budget = budget0
            row = [0] * m
            taken = 0  # blocks the chunks of this iteration take
            for i, s in order:
                if budget <= 0:
                    break
                if i < 0:
                    n = min(min(chunk_size, s.prefill_target - s.prefilled), budget)
                    if -(-(s.prefilled + n) // bs) - s.blocks > room:
                        break
                    return out  # a prompt left out of this plan would get a chunk
                n = min(min(chunk_size, target[i] - done[i]), budget)
                need = -(-(done[i] + n) // bs) - held[i]
                if need > room:
                    break
                row[i] = n
                room -= need
                taken += need
                budget -= n
            if 0 in row:
                break  # a prompt of the plan would get no chunk
            if admit and budget > 0 and need_all - taken <= room - water:
                break  # the head would be admitted
            out.append(row)
            finished = False
            for i in range(m):
                done[i] += row[i]
                held[i] = -(-done[i] // bs)
                finished = finished or done[i] >= target[i]
            if admit:
                need_all -= taken
            free -= taken + step
            if finished:
                break  # a prompt finished in this one
        return out

    def _one_prompt_rows(self, view: SchedulerView, done: int, target: int, held: int, budget: int,
                         decoding: bool, limit: int) -> list[list[int]] | None:
        """``upcoming``'s loop for its most common case -- one prompt in prefill, nothing to
        admit -- in closed form, when the free blocks cover the rest of the prompt and every
        decode step until it finishes: then no check of the loop can fail, and each row's chunk
        is ``min(chunk_size, budget)`` until the last piece. None: run the loop."""
        if budget <= 0:
            return []  # no prefill token fits next to the decodes
        c = min(self.chunk_size, budget)
        rest = target - done
        rows = -(-rest // c)
        step0 = view.decode_step_blocks() if decoding else 0
        steps = view.decode_step_blocks(rows + 1) - step0 if decoding else 0  # positions 1..rows
        if -(-target // self.capacity.block_size) - held + steps > view.free_blocks - step0:
            return None
        n = min(min(rows, limit), MAX_RUN)
        out = [[c] for _ in range(n)]
        if n == rows:
            out[-1] = [rest - c * (rows - 1)]
        return out


register_policy(SarathiPolicy)
