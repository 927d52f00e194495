"""Decode-prioritised continuous batching: running decodes are never paused for a prefill.

New requests join an iteration with their whole prompt only while the iteration stays within
``max_batched_tokens`` (decodes count one token each); an empty instance admits a prompt of any
allowed size. Unlike Sarathi-Serve, prompts are not chunked, so one long prompt still lengthens the
iteration every decode waits for — the contrast the Sarathi-Serve paper draws.
"""
from __future__ import annotations

from sim.engine.instance import Plan
from sim.engine.policies.vllm import VLLMPolicy


class DecodePriorityPolicy(VLLMPolicy):
    name = "decode_priority"

    def schedule(self, inst, now: float):
        seqs = self._prepare_mixed_iteration(inst, now)
        budget = self.max_batched_tokens - len(inst.running)
        free = inst.free_blocks - self.watermark_blocks
        if inst.running:  # the blocks this iteration's decode step takes are not for prefills
            free -= inst.phases.needed_at(inst.decode_steps)
        admitted = []
        waiting = inst.waiting
        while waiting and seqs < self.cfg.max_batch_size and not inst.swapped:
            seq = waiting[0]
            n = seq.prefill_target - seq.prefilled
            need = self.capacity.blocks_for(seq.prefill_target) - seq.blocks
            if n > budget or need > free:
                break
            waiting.popleft()
            inst.admit(seq, n, now)
            admitted.append((seq, n))
            budget -= n
            free -= need
            seqs += 1
        if admitted:
            return Plan(admitted, decode=bool(inst.running))
        return Plan([], decode=True) if inst.running else None
