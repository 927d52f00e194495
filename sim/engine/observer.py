"""Observers of an instance: who wants to know what happened, without being asked to decide.

The event-trace export (goodput.sim.engine.trace_events) and the real-GPU serving loop's memory store
(goodput.profiler.serve) watch an instance through this one interface instead of overriding its methods.
Observers are told, never consulted: they cannot change a scheduling decision.
"""
from __future__ import annotations

from typing import Protocol

from goodput.sim.engine.sequence import Sequence


class InstanceObserver(Protocol):
    def queued(self, seq: Sequence, inst: int, t: float) -> None: ...

    def scheduled(self, seq: Sequence, inst: int, t: float) -> None: ...

    def first_token(self, seq: Sequence, inst: int, t: float) -> None: ...

    def preempted(self, seq: Sequence, inst: int, t: float, mode: str) -> None:
        """``mode``: 'swap' (KV kept in host memory) or 'recompute' (KV dropped)."""
        ...

    def ended(self, seq: Sequence, inst: int, t: float, outcome: str, reason: str) -> None: ...

    def iteration(self, inst: int, t0: float, t1: float, iterations: int, prefill_seqs: int,
                  prefill_tokens: int, decode_seqs: int, decode_tokens: int) -> None: ...


class NullObserver:
    """Base with every hook a no-op: subclass and override what you need."""

    def queued(self, seq: Sequence, inst: int, t: float) -> None:
        pass

    def scheduled(self, seq: Sequence, inst: int, t: float) -> None:
        pass

    def first_token(self, seq: Sequence, inst: int, t: float) -> None:
        pass

    def preempted(self, seq: Sequence, inst: int, t: float, mode: str) -> None:
        pass

    def ended(self, seq: Sequence, inst: int, t: float, outcome: str, reason: str) -> None:
        pass

    def iteration(self, inst: int, t0: float, t1: float, iterations: int, prefill_seqs: int,
                  prefill_tokens: int, decode_seqs: int, decode_tokens: int) -> None:
        pass
