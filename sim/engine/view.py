"""The contract between an instance and its batching policy: what a policy sees and may do.

vLLM's v1 scheduler talks to one KV-cache manager and emits one scheduler output per step; here a
policy sees a ``SchedulerView`` (the queues, free blocks, and the few operations that change
them) and returns a ``Plan``: which sequences advance by how many tokens this iteration. Prompt
chunks, decodes (one token), speculative verifies (k+1 tokens) and recomputes are one mechanism:
every entry is "sequence advances by q tokens". A policy never writes instance or KV state
directly, so the instance can keep its fast-forward invariants and the pool its block counts.
"""
from __future__ import annotations

from collections.abc import Sequence as Seq
from typing import Final

from goodput.sim.engine.sequence import Sequence


class Plan:
    """One iteration: ``prefills`` = [(sequence, tokens)] outside the decode set (prompt chunks,
    recomputes), and ``decode_tokens`` = tokens every running decode advances (0: decodes pause)."""

    __slots__ = ("decode_tokens", "prefills")

    def __init__(self, prefills: list[tuple[Sequence, int]], decode_tokens: int = 1):
        self.prefills = prefills
        self.decode_tokens = decode_tokens

    @property
    def decode(self) -> bool:
        return self.decode_tokens > 0


#: the plan of a pure decode iteration (shared: plans are never mutated)
DECODE_ONLY: Final = Plan([], 1)


class SchedulerView:
    """What a batching policy may read and do at an iteration boundary.

    A base class the instance's admission part (``goodput.sim.engine.admission.Admission``)
    implements, rather than a ``Protocol``: compiled (``make compiled``), a policy's reads and
    calls through it are then direct, where a protocol would make each a generic attribute
    lookup. The four queues are plain attributes bound once to their owners' containers
    (read-only for a policy: use ``admit_next``, ``resume_swapped``, ...)."""

    #: queued requests, by priority then FCFS (read-only: use ``admit_next``)
    waiting: Seq[Sequence]
    #: swap-preempted requests, FCFS (read-only: use ``resume_swapped``)
    swapped: Seq[Sequence]
    #: admitted requests whose prompt (or recompute) is not finished, in admission order
    prefilling: Seq[Sequence]
    #: the decode set, in join order
    running: Seq[Sequence]

    @property
    def free_blocks(self) -> int:
        raise NotImplementedError

    @property
    def total_blocks(self) -> int:
        raise NotImplementedError

    @property
    def growing_decodes(self) -> int:
        """Decode-set members whose KV grows block by block (not reserved up front)."""
        raise NotImplementedError

    def decode_step_blocks(self, tokens: int = 1) -> int:
        """Blocks the decode set takes if every member advances ``tokens`` tokens now."""
        raise NotImplementedError

    def decode_blocks_at(self, position: int) -> int:
        """Blocks the decode set takes at its ``position``-th next token (0: the next step's),
        so ``decode_step_blocks(n) == sum(decode_blocks_at(j) for j in range(n))``: one count
        per iteration for a policy predicting iterations one by one (``upcoming``)."""
        raise NotImplementedError

    def prefix_start(self, seq: Sequence) -> tuple[int, int]:
        """(computed tokens, blocks held) a waiting request would start from if admitted now:
        size its prefill as ``prefill_target - tokens`` and its memory as ``blocks_for(...) -
        held`` (prefix caching makes both smaller; without it they are ``prefilled`` and
        ``blocks``). Read-only."""
        raise NotImplementedError

    def admit_next(self, tokens: int, now: float, reserve_tokens: int = 0) -> Sequence:
        """Pop the head of ``waiting`` and start its (re)prefill with a first chunk of ``tokens``;
        ``reserve_tokens`` > 0 reserves KV for that many tokens up front (Orca, static)."""
        raise NotImplementedError

    def admit_waiting(self, seq: Sequence, tokens: int, now: float, reserve_tokens: int = 0) -> Sequence:
        """As ``admit_next``, for any queued request (policies that reorder the queue)."""
        raise NotImplementedError

    def continue_prefill(self, seq: Sequence, tokens: int) -> None:
        """Hold blocks for the next ``tokens`` of a request already in ``prefilling``."""
        raise NotImplementedError

    def preempt(self, seq: Sequence, swap: bool = False) -> None:
        """Free a running or prefilling request's GPU memory: swap to host or drop (recompute)."""
        raise NotImplementedError

    def resume_swapped(self, now: float) -> Sequence:
        """Swap the head of ``swapped`` back in; it rejoins the decode set."""
        raise NotImplementedError
