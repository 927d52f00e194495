"""vLLM (v0 default scheduler): continuous batching, prefill-prioritised, paged KV, preemption.

At a boundary, swapped-out requests are resumed first; then, if waiting requests can be admitted
(by priority then FCFS, within max_batch_size, max_batched_tokens and free blocks above the
watermark), the iteration runs their whole prompts as one prefill batch and running decodes pause.
Otherwise every running sequence decodes one token; if the step needs more blocks than are free,
the lowest-priority, latest-arrived sequences are preempted (recompute or swap).
"""
from __future__ import annotations

from sim.engine.instance import DECODE_ONLY, Plan
from sim.engine.policies.base import BatchingPolicy


class VLLMPolicy(BatchingPolicy):
    name = "vllm"

    def reject_reason(self, inst, seq) -> str:
        reason = super().reject_reason(inst, seq)
        if reason:
            return reason
        if seq.prompt + seq.output - 1 > self.max_batched_tokens:
            # a recompute after preemption prefills prompt + generated tokens in one iteration
            return "prompt + output exceeds scheduler.max_batched_tokens (needed to recompute)"
        return ""

    def schedule(self, inst, now: float):
        if not inst.waiting and not inst.swapped and inst.running and \
                inst.phases.needed_at(inst.decode_steps) <= inst.free_blocks:
            return DECODE_ONLY  # the common case, kept cheap: every running sequence decodes
        seqs = len(inst.running) + len(inst.prefilling)
        if inst.swapped:
            seqs = self._resume_swapped(inst, now, seqs)
        waiting = inst.waiting
        if waiting and not inst.swapped:
            cfg = self.cfg
            budget = self.max_batched_tokens
            free = inst.free_blocks - self.watermark_blocks
            admitted = []
            while waiting:
                seq = waiting[0]
                n = seq.prefill_target - seq.prefilled
                need = self.capacity.blocks_for(seq.prefill_target) - seq.blocks
                if n > budget or seqs >= cfg.max_batch_size or need > free:
                    break
                waiting.popleft()
                inst.admit(seq, n, now)
                admitted.append((seq, n))
                budget -= n
                seqs += 1
                free -= need
            if admitted:
                return Plan(admitted, decode=False)
        if inst.running:
            self._ensure_decode_blocks(inst)
            if inst.running:
                return DECODE_ONLY
        return None
