"""The one interface between the simulator and every cost model.

The simulator never asks *how* a batch is executed; it describes the batch (per sequence: how many
new tokens it computes this iteration and how many cached tokens it attends to) and asks how long
the iteration takes. Roofline, profiled and calibrated models all answer the same two questions, so
they are interchangeable by name in config.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Batch:
    """One engine iteration.

    new_tokens[i]: tokens sequence i computes this iteration (a prompt chunk, 1 for a decode,
    k+1 for a speculative verify).
    context_tokens[i]: tokens of sequence i already in the KV cache that it attends to.
    """

    new_tokens: Sequence[int]
    context_tokens: Sequence[int]

    def __post_init__(self) -> None:
        if len(self.new_tokens) != len(self.context_tokens):
            raise ValueError("Batch: new_tokens and context_tokens must have one entry per sequence")

    @property
    def size(self) -> int:
        return len(self.new_tokens)

    @property
    def total_new_tokens(self) -> int:
        return int(sum(self.new_tokens))

    @classmethod
    def decode(cls, contexts: Sequence[int]) -> Batch:
        """A pure decode batch: every sequence computes one token over its cached context."""
        return cls(new_tokens=[1] * len(contexts), context_tokens=list(contexts))


class CostModel(ABC):
    """Predicts the wall-clock duration of one engine iteration on one instance.

    Contract used by the simulator's fast-forward: for a pure decode batch of B sequences,
    ``batch_time(Batch.decode(ctx)) == a + b * sum(ctx)`` with ``(a, b) = decode_coefficients(B)``.
    That linearity in total context is what lets the engine advance over a run of identical-shape
    decode iterations in closed form instead of one Python step per token.
    """

    #: where the numbers come from, e.g. "roofline" or "profile:h100/llama-3.1-8b/tp1@v1".
    source: str = "unknown"

    @abstractmethod
    def batch_time(self, batch: Batch) -> float:
        """Seconds one iteration of ``batch`` takes (including per-iteration overhead)."""

    @abstractmethod
    def decode_coefficients(self, batch_size: int) -> tuple[float, float]:
        """(a, b) with decode-iteration time = a + b * total cached context tokens."""

    def describe(self) -> dict:
        """Machine-readable summary of the model, stored with every simulation result."""
        return {"source": self.source}
