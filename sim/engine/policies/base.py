"""The batching-policy interface: one small strategy class per policy, chosen by name in config.

A policy is consulted at every iteration boundary of an instance. It may admit waiting requests
(``inst.admit``), preempt running ones (``inst.preempt``) and returns a Plan, or None when there is
nothing to run. Policies must be *stationary*: with no arrival, completion or block shortage, a
pure-decode plan is returned again unchanged — that is what makes fast-forwarding exact.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

from sim.config import ConfigError, SchedulerConfig
from sim.engine.kvcache import KVCapacity
from sim.engine.sequence import Sequence


class BatchingPolicy(ABC):
    name = "base"
    #: may a live-migrated request join the running batch? (not for static batching)
    accepts_migration = True

    def __init__(self, cfg: SchedulerConfig, capacity: KVCapacity, max_context: int = 0):
        if cfg.max_batch_size < 1:
            raise ConfigError("scheduler.max_batch_size must be >= 1")
        if cfg.max_batched_tokens is not None and cfg.max_batched_tokens < 1:
            raise ConfigError("scheduler.max_batched_tokens must be >= 1")
        if not 0 <= cfg.watermark < 1:
            raise ConfigError("scheduler.watermark must be in [0, 1)")
        self.cfg = cfg
        self.capacity = capacity
        self.max_context = max_context
        #: tokens one iteration may compute; unset = vLLM's default, max(model context, 2048)
        self.max_batched_tokens = (cfg.max_batched_tokens if cfg.max_batched_tokens is not None
                                   else max(max_context, 2048))
        self.watermark_blocks = int(cfg.watermark * capacity.total_blocks)
        if cfg.preemption not in ("recompute", "swap"):
            raise ConfigError(f"scheduler.preemption must be 'recompute' or 'swap', got '{cfg.preemption}'")

    def reject_reason(self, inst, seq: Sequence) -> str:
        """Why ``seq`` can never run here ('' if it can). Checked once, on arrival."""
        if inst.max_context and seq.prompt + seq.output > inst.max_context:
            return "prompt + output exceeds the model's max context"
        usable = self.capacity.total_blocks - self.watermark_blocks
        if self.capacity.blocks_for(seq.prompt + seq.output) > usable:
            return "prompt + output larger than the instance's KV cache"
        return ""

    def arrival_may_change_plan(self, inst, seq: Sequence) -> bool:
        """Could ``seq`` (just queued) be scheduled at the next boundary? Used to truncate runs.

        Default: only if it is now the head of the queue (it arrived to an empty queue, or its
        priority put it first); otherwise the head was already blocked (memory or batch size) and
        stays blocked until something completes.
        """
        return inst.waiting[0] is seq

    @abstractmethod
    def schedule(self, inst, now: float):
        """Return the Plan for the next iteration (or None if idle)."""

    def _ensure_decode_blocks(self, inst) -> None:
        """Preempt (lowest priority, latest arrival first) until the next decode step fits.

        ``scheduler.preemption``: recompute drops the victim's KV; swap moves it to host memory
        over the host link (its transfer time is charged to the next iteration) while swap space
        lasts, then falls back to recompute.
        """
        swap = self.cfg.preemption == "swap"
        need = inst.phases.needed_at(inst.decode_steps)
        while need > inst.free_blocks and inst.running:
            # ties (equal arrival) go to the most recently joined, as vLLM pops its running queue
            victim = max(reversed(inst.running), key=lambda s: (-s.priority, s.arrival))
            inst.preempt(victim, swap=swap)
            need = inst.phases.needed_at(inst.decode_steps)

    def _prepare_mixed_iteration(self, inst, now: float) -> int:
        """For policies whose decodes never pause: secure the decode step's blocks (preempting if
        needed), resume swapped requests, and return how many sequences the iteration holds."""
        if inst.running:
            self._ensure_decode_blocks(inst)
        seqs = len(inst.running) + len(inst.prefilling)
        if inst.swapped:
            seqs = self._resume_swapped(inst, now, seqs)
        return seqs

    def _resume_swapped(self, inst, now: float, seqs: int) -> int:
        """Swap requests back in (FCFS) while blocks and batch slots allow; returns new seq count."""
        while inst.swapped and seqs < self.cfg.max_batch_size:
            seq = inst.swapped[0]
            if seq.blocks + inst.phases.size + 1 > inst.free_blocks - self.watermark_blocks:
                break
            inst.swap_in(seq, now)
            seqs += 1
        return seqs
