"""vLLM (v0 default scheduler): continuous batching, prefill-prioritised, paged KV, preemption.

At a boundary, swapped-out requests are resumed first; then, if waiting requests can be admitted
(by priority then FCFS, within max_batch_size, max_batched_tokens and free blocks above the
watermark), the iteration runs their whole prompts as one prefill batch and running decodes pause.
Otherwise every running sequence decodes one token; if the step needs more blocks than are free,
the lowest-priority, latest-arrived sequences are preempted (recompute or swap).
"""
from __future__ import annotations

from goodput.sim.engine.compiled import mypyc_attr
from goodput.sim.engine.policies.base import BatchingPolicy, register_policy
from goodput.sim.engine.sequence import Sequence
from goodput.sim.engine.view import DECODE_ONLY, Plan, SchedulerView


@mypyc_attr(allow_interpreted_subclasses=True)
class VLLMPolicy(BatchingPolicy):
    name = "vllm"

    def reject_reason(self, view: SchedulerView, seq: Sequence) -> str:
        reason = super().reject_reason(view, seq)
        if reason:
            return reason
        if seq.prompt + seq.output - 1 > self.max_batched_tokens:
            # a recompute after preemption prefills prompt + generated tokens in one iteration
            return "prompt + output exceeds scheduler.max_batched_tokens (needed to recompute)"
        return ""

    quiet_decode_only = True  # (BatchingPolicy.quiet_decode_only)

    def schedule(self, view: SchedulerView, now: float) -> Plan | None:
        if not view.waiting and not view.swapped and view.running and \
                view.decode_step_blocks() <= view.free_blocks:
            return DECODE_ONLY  # the common case, kept cheap: every running sequence decodes
        seqs = len(view.running) + len(view.prefilling)
        if view.swapped:
            seqs = self._resume_swapped(view, now, seqs)
        if view.waiting and not view.swapped:
            admitted = self.admit_prompts(view, now, seqs)
            if admitted:
                return Plan(admitted, decode_tokens=0)
        if view.running:
            self._ensure_decode_blocks(view)
            if view.running:
                return DECODE_ONLY
        return None

    def admit_prompts(self, view: SchedulerView, now: float, seqs: int) -> list[tuple[Sequence, int]]:
        """Admit whole prompts from the queue, in its order (priority, then FCFS), while the token
        budget, batch size and free blocks above the watermark allow; stops at the first that
        does not fit. Subclasses that order admission differently override this."""
        waiting = view.waiting
        budget = self.max_batched_tokens
        free = view.free_blocks - self.watermark_blocks
        admitted: list[tuple[Sequence, int]] = []
        blocks_for = self.capacity.blocks_for
        max_batch = self.cfg.max_batch_size
        while waiting:
            seq = waiting[0]
            done, held = view.prefix_start(seq)  # with a cached prefix: computed tokens, blocks held
            n = seq.prefill_target - done
            need = blocks_for(seq.prefill_target) - held
            if n > budget or seqs >= max_batch or need > free:
                break
            admitted.append((view.admit_next(n, now), n))
            budget -= n
            seqs += 1
            free -= need
        return admitted


register_policy(VLLMPolicy)
