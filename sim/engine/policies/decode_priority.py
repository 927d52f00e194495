"""Decode-prioritised continuous batching: running decodes are never paused for a prefill.

New requests join an iteration with their whole prompt only while the iteration stays within
``max_batched_tokens`` (decodes count one token each); an empty instance admits a prompt of any
allowed size. Unlike Sarathi-Serve, prompts are not chunked, so one long prompt still lengthens the
iteration every decode waits for — the contrast the Sarathi-Serve paper draws.
"""
from __future__ import annotations

from goodput.sim.engine.compiled import mypyc_attr
from goodput.sim.engine.policies.base import register_policy
from goodput.sim.engine.policies.vllm import VLLMPolicy
from goodput.sim.engine.sequence import Sequence
from goodput.sim.engine.view import Plan, SchedulerView


@mypyc_attr(allow_interpreted_subclasses=True)
class DecodePriorityPolicy(VLLMPolicy):
    name = "decode_priority"

    quiet_decode_only = True  # (BatchingPolicy.quiet_decode_only)

    def schedule(self, view: SchedulerView, now: float) -> Plan | None:
        seqs = self._prepare_mixed_iteration(view, now)
        budget = self.max_batched_tokens - len(view.running)
        free = view.free_blocks - self.watermark_blocks
        if view.running:  # the blocks this iteration's decode step takes are not for prefills
            free -= view.decode_step_blocks()
        admitted: list[tuple[Sequence, int]] = []
        waiting = view.waiting
        while waiting and seqs < self.cfg.max_batch_size and not view.swapped:
            seq = waiting[0]
            done, held = view.prefix_start(seq)  # with a cached prefix: computed tokens, blocks held
            n = seq.prefill_target - done
            need = self.capacity.blocks_for(seq.prefill_target) - held
            if n > budget or need > free:
                break
            admitted.append((view.admit_next(n, now), n))
            budget -= n
            free -= need
            seqs += 1
        if admitted:
            return Plan(admitted, decode_tokens=1 if view.running else 0)
        return Plan([], 1) if view.running else None


register_policy(DecodePriorityPolicy)
