"""Policies that reserve KV memory for a request's whole length at admission (no preemption).

Static batching (FasterTransformer): a batch is formed only when the previous one has fully
finished; its prompts run as one prefill, then it decodes until every member is done. New requests
wait for the whole batch, and memory is reserved for prompt + output up front.

Orca: iteration-level scheduling with selective batching — at every iteration new requests join
(their whole prompt computed in the same iteration as the running decodes), as long as memory for
their maximum length can be reserved. ``scheduler.reserve_output_tokens`` is the max_tokens a
client asked for (None: exactly the request's output length, an optimistic lower bound).
"""
from __future__ import annotations

from sim.engine.instance import Plan
from sim.engine.policies.base import BatchingPolicy


class _Reserving(BatchingPolicy):
    def reserve_tokens(self, seq) -> int:
        extra = self.cfg.reserve_output_tokens
        tokens = seq.prompt + (seq.output if extra is None else max(extra, seq.output))
        return min(tokens, self.max_context) if self.max_context else tokens

    def reject_reason(self, inst, seq) -> str:
        reason = super().reject_reason(inst, seq)
        if reason:
            return reason
        if self.capacity.blocks_for(self.reserve_tokens(seq)) > self.capacity.total_blocks:
            return "reserved length (prompt + max output) larger than the instance's KV cache"
        if seq.prompt > self.max_batched_tokens:
            return "prompt exceeds scheduler.max_batched_tokens"
        return ""

    def _admit(self, inst, now, budget: int, seqs: int) -> list:
        admitted = []
        free = inst.free_blocks
        waiting = inst.waiting
        while waiting and seqs < self.cfg.max_batch_size:
            seq = waiting[0]
            need = self.capacity.blocks_for(self.reserve_tokens(seq))
            if seq.prompt > budget or need > free:
                break
            waiting.popleft()
            inst.admit(seq, seq.prompt, now, reserve_tokens=self.reserve_tokens(seq))
            admitted.append((seq, seq.prompt))
            budget -= seq.prompt
            free -= need
            seqs += 1
        return admitted


class StaticBatchingPolicy(_Reserving):
    name = "static"
    accepts_migration = False  # a running batch never takes new members

    def schedule(self, inst, now: float):
        if inst.running:
            return Plan([], decode=True)
        admitted = self._admit(inst, now, self.max_batched_tokens, 0)
        return Plan(admitted, decode=False) if admitted else None

    def arrival_may_change_plan(self, inst, seq) -> bool:
        return False  # a running batch never takes new members


class OrcaPolicy(_Reserving):
    name = "orca"

    def schedule(self, inst, now: float):
        seqs = len(inst.running)
        admitted = self._admit(inst, now, self.max_batched_tokens - seqs, seqs)
        if admitted:
            return Plan(admitted, decode=bool(inst.running))
        return Plan([], decode=True) if inst.running else None
