"""Policies that reserve KV memory for a request's whole length at admission (no preemption).

Static batching (FasterTransformer): a batch is formed only when the previous one has fully
finished; its prompts run as one prefill, then it decodes until every member is done. New requests
wait for the whole batch, and memory is reserved for prompt + output up front.

Orca: iteration-level scheduling with selective batching — at every iteration new requests join
(their whole prompt computed in the same iteration as the running decodes), as long as memory for
their maximum length can be reserved. ``scheduler.<policy>.reserve_output_tokens`` is the
max_tokens a client asked for (None: exactly the request's output length, an optimistic bound).
"""
from __future__ import annotations

from dataclasses import dataclass

from goodput.sim.config import SchedulerConfig
from goodput.sim.engine.compiled import mypyc_attr
from goodput.sim.engine.kvcache import KVCapacity
from goodput.sim.engine.policies.base import BatchingPolicy, register_policy
from goodput.sim.engine.sequence import Sequence
from goodput.sim.engine.view import Plan, SchedulerView


@dataclass
class ReservingOptions:
    #: output tokens reserved per request (client max_tokens); None = its real output length
    reserve_output_tokens: int | None = None


@mypyc_attr(allow_interpreted_subclasses=True)
class _Reserving(BatchingPolicy):
    Options = ReservingOptions

    def __init__(self, cfg: SchedulerConfig, capacity: KVCapacity, max_context: int = 0) -> None:
        super().__init__(cfg, capacity, max_context)
        extra = self.options.reserve_output_tokens
        if extra is not None and extra < 1:
            from goodput.sim.config import ConfigError
            raise ConfigError(f"scheduler.{self.name}.reserve_output_tokens must be >= 1 (or null)")

    def reserve_tokens(self, seq: Sequence) -> int:
        extra = self.options.reserve_output_tokens
        tokens = seq.prompt + (seq.output if extra is None else max(extra, seq.output))
        return min(tokens, self.max_context) if self.max_context else tokens

    def landing_tokens(self, seq: Sequence, kv_tokens: int) -> int:
        """A request reserved for its maximum length lands with that whole reservation again."""
        return self.reserve_tokens(seq)

    def reject_reason(self, view: SchedulerView, seq: Sequence) -> str:
        reason = super().reject_reason(view, seq)
        if reason:
            return reason
        if self.capacity.blocks_for(self.reserve_tokens(seq)) > self.capacity.total_blocks:
            return "reserved length (prompt + max output) larger than the instance's KV cache"
        if seq.prompt > self.max_batched_tokens:
            return "prompt exceeds scheduler.max_batched_tokens"
        return ""

    def _admit(self, view: SchedulerView, now: float, budget: int,
               seqs: int) -> list[tuple[Sequence, int]]:
        admitted: list[tuple[Sequence, int]] = []
        free = view.free_blocks
        waiting = view.waiting
        while waiting and seqs < self.cfg.max_batch_size:
            seq = waiting[0]
            done, held = view.prefix_start(seq)  # with a cached prefix: computed tokens, blocks held
            reserve = self.reserve_tokens(seq)
            need = self.capacity.blocks_for(reserve) - held
            # the whole (re)prefill in one iteration: the prompt, plus the tokens already produced
            # when it recomputes after losing its KV (a failed instance, a landing that did not fit)
            n = seq.prefill_target - done
            if n > budget or need > free:
                break
            admitted.append((view.admit_next(n, now, reserve_tokens=reserve), n))
            budget -= n
            free -= need
            seqs += 1
        return admitted


@mypyc_attr(allow_interpreted_subclasses=True)
class StaticBatchingPolicy(_Reserving):
    name = "static"
    accepts_migration = False  # a running batch never takes new members

    quiet_decode_only = True  # (BatchingPolicy.quiet_decode_only)

    def schedule(self, view: SchedulerView, now: float) -> Plan | None:
        if view.running:
            return Plan([], 1)
        admitted = self._admit(view, now, self.max_batched_tokens, 0)
        return Plan(admitted, decode_tokens=0) if admitted else None

    def arrival_may_change_plan(self, view: SchedulerView, seq: Sequence) -> bool:
        return False  # a running batch never takes new members


@mypyc_attr(allow_interpreted_subclasses=True)
class OrcaPolicy(_Reserving):
    name = "orca"

    quiet_decode_only = True  # (BatchingPolicy.quiet_decode_only)

    def schedule(self, view: SchedulerView, now: float) -> Plan | None:
        seqs = len(view.running)
        admitted = self._admit(view, now, self.max_batched_tokens - seqs, seqs)
        if admitted:
            return Plan(admitted, decode_tokens=1 if view.running else 0)
        return Plan([], 1) if view.running else None


register_policy(StaticBatchingPolicy)
register_policy(OrcaPolicy)
