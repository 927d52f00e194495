"""The batching-policy interface: one small strategy class per policy, registered by name.

A policy is consulted at every iteration boundary of an instance through a ``SchedulerView``: it
may admit waiting requests (``view.admit_next``), extend prefills (``view.continue_prefill``),
preempt (``view.preempt``) or resume swapped ones (``view.resume_swapped``), and returns a Plan, or
None when there is nothing to run. Policies must be *stationary*: with no arrival, completion or
block shortage, a pure-decode plan is returned again unchanged — that is what makes
fast-forwarding exact.

Options: a policy that has its own settings declares an ``Options`` dataclass; it is read from the
config section named after the policy (``scheduler.sarathi.chunk_size``), validated strictly like
every other section, and handed to the policy as ``self.options``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from goodput.sim.config import ConfigError, SchedulerConfig, register_strategy
from goodput.sim.engine.compiled import mypyc_attr
from goodput.sim.engine.kvcache import KVCapacity
from goodput.sim.engine.sequence import Sequence
from goodput.sim.engine.view import Plan, SchedulerView

#: every batching policy by ``scheduler.policy`` name
POLICIES: dict[str, type[BatchingPolicy]] = {}


def quiet_schedule(policy_type: type[BatchingPolicy]) -> bool:
    """Does the ``schedule`` a policy of ``policy_type`` runs carry the ``quiet_decode_only``
    mark? The mark belongs to the class that defines ``schedule``: a subclass that overrides it
    without setting the mark again is always asked."""
    for cls in policy_type.__mro__:
        if "schedule" in cls.__dict__:
            return bool(cls.__dict__.get("quiet_decode_only", False))
    return False


def register_policy(cls: type[BatchingPolicy]) -> type[BatchingPolicy]:
    """Class decorator: make a policy available by its ``name``, with its options section."""
    return register_strategy(POLICIES, SchedulerConfig, cls, "batching policy")


@mypyc_attr(allow_interpreted_subclasses=True)
class BatchingPolicy(ABC):
    name: ClassVar[str] = "base"
    #: set by a class whose ``schedule``, with nothing waiting, swapped or in prefill, running
    #: decodes and their next step's blocks free, returns the one-token decode-only plan and
    #: changes nothing: the instance then skips the call at such boundaries
    #: (``Instance._boundary``, ``quiet_schedule``)
    quiet_decode_only: ClassVar[bool] = False
    #: dataclass of this policy's own options (its config section), or None
    Options: ClassVar[Any] = None
    #: may a live-migrated request join the running batch? (not for static batching)
    accepts_migration: ClassVar[bool] = True

    def __init__(self, cfg: SchedulerConfig, capacity: KVCapacity, max_context: int = 0):
        if cfg.max_batch_size < 1:
            raise ConfigError("scheduler.max_batch_size must be >= 1")
        if cfg.max_batched_tokens is not None and cfg.max_batched_tokens < 1:
            raise ConfigError("scheduler.max_batched_tokens must be >= 1")
        if not 0 <= cfg.watermark < 1:
            raise ConfigError("scheduler.watermark must be in [0, 1)")
        self.cfg = cfg
        #: this policy's ``Options`` instance (None for a policy without options)
        self.options: Any = cfg.section(self.name) if self.Options is not None else None
        self.capacity = capacity
        self.max_context = max_context
        #: tokens one iteration may compute; unset = vLLM's default, max(model context, 2048)
        self.max_batched_tokens = (cfg.max_batched_tokens if cfg.max_batched_tokens is not None
                                   else max(max_context, 2048))
        self.watermark_blocks = int(cfg.watermark * capacity.total_blocks)
        if cfg.preemption not in ("recompute", "swap"):
            raise ConfigError(f"scheduler.preemption must be 'recompute' or 'swap', got '{cfg.preemption}'")

    def reject_reason(self, view: SchedulerView, seq: Sequence) -> str:
        """Why ``seq`` can never run here ('' if it can). Checked once, on arrival."""
        if self.max_context and seq.prompt + seq.output > self.max_context:
            return "prompt + output exceeds the model's max context"
        usable = self.capacity.total_blocks - self.watermark_blocks
        if self.capacity.blocks_for(seq.prompt + seq.output) > usable:
            return "prompt + output larger than the instance's KV cache"
        return ""

    def arrival_may_change_plan(self, view: SchedulerView, seq: Sequence) -> bool:
        """Could ``seq`` (just queued) be scheduled at the next boundary? Used to truncate runs.

        Default: only if it is now the head of the queue (it arrived to an empty queue, or its
        priority put it first); otherwise the head was already blocked (memory or batch size) and
        stays blocked until something completes.
        """
        return view.waiting[0] is seq

    def upcoming(self, view: SchedulerView, plan: Plan, limit: int = 1 << 30) -> list[list[int]]:
        """The iterations after the one ``plan`` describes that this policy would plan with the
        same prompt chunks and decode step, if meanwhile no request arrives, moves or finishes
        decoding (the instance bounds those itself): for each, every chunk's tokens, aligned with
        ``plan.prefills`` (each at least 1). Stop at the iteration in which a prompt finishes (it
        joins the decodes after it) or before one whose plan would differ in any other way.
        Called right after ``schedule`` returned ``plan``; at most ``limit`` iterations are
        wanted (the instance cuts the run where a decode finishes, so predicting beyond is waste);
        when a prompt of ``plan`` finishes in that iteration the answer is ``[]`` and the instance
        does not ask (``mixed_run.run_sizes``).

        ``[]``, the default, is always correct: the instance asks again at every boundary. A
        policy that answers lets the instance execute those iterations as one run
        (``MixedRun``); the answer must be exact, and fast-forward tests compare it with step mode.
        """
        return []

    def landing_tokens(self, seq: Sequence, kv_tokens: int) -> int:
        """KV tokens a request arriving with ``kv_tokens`` must hold here (migration, transfer)."""
        return kv_tokens

    @abstractmethod
    def schedule(self, view: SchedulerView, now: float) -> Plan | None:
        """Return the Plan for the next iteration (or None if idle)."""

    def _ensure_decode_blocks(self, view: SchedulerView) -> None:
        """Preempt (lowest priority, latest arrival first) until the next decode step fits.

        ``scheduler.preemption``: recompute drops the victim's KV; swap moves it to host memory
        over the host link (its transfer time is charged to the next iteration) while swap space
        lasts, then falls back to recompute.
        """
        swap = self.cfg.preemption == "swap"
        need = view.decode_step_blocks()
        while need > view.free_blocks and view.running:
            # ties (equal arrival) go to the most recently joined, as vLLM pops its running queue
            victim = max(reversed(view.running), key=lambda s: (-s.priority, s.arrival))
            view.preempt(victim, swap=swap)
            need = view.decode_step_blocks()

    def _prepare_mixed_iteration(self, view: SchedulerView, now: float) -> int:
        """For policies whose decodes never pause: secure the decode step's blocks (preempting if
        needed), resume swapped requests, and return how many sequences the iteration holds."""
        if view.running and view.decode_step_blocks() > view.free_blocks:
            self._ensure_decode_blocks(view)  # (the common case, the step fits, skips the call)
        seqs = len(view.running) + len(view.prefilling)
        if view.swapped:
            seqs = self._resume_swapped(view, now, seqs)
        return seqs

    def _resume_swapped(self, view: SchedulerView, now: float, seqs: int) -> int:
        """Swap requests back in (FCFS) while blocks and batch slots allow; returns new seq count."""
        while view.swapped and seqs < self.cfg.max_batch_size:
            seq = view.swapped[0]
            if seq.blocks + view.growing_decodes + 1 > view.free_blocks - self.watermark_blocks:
                break
            view.resume_swapped(now)
            seqs += 1
        return seqs
