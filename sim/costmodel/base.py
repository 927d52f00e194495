"""The one interface between the simulator and every cost model.

The simulator never asks *how* a batch is executed; it describes the batch (per sequence: how many
new tokens it computes this iteration and how many cached tokens it attends to) and asks how long
the iteration takes. Roofline, profiled and calibrated models all answer the same two questions, so
they are interchangeable by name in config.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
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

    def iteration_time(self, new_tokens: Sequence[int], context_tokens: Sequence[int],
                       decodes: int = 0, decode_tokens: int = 1, decode_ctx_sum: int = 0,
                       decode_ctx_max: int = 0,
                       decode_contexts: Callable[[], list[int]] | None = None) -> float:
        """``batch_time`` of an iteration given as its few listed sequences (prompt chunks,
        recomputes) plus a *decode group*: ``decodes`` running sequences that each compute
        ``decode_tokens`` new tokens, described by the sum and the largest of their cached
        contexts rather than one entry each.

        Why: a chunked-prefill engine runs a mixed iteration every few decode steps, and listing
        a hundred decodes to price each one is most of its simulation cost. A model whose decode
        work depends on the group only through those totals (roofline, profiled) overrides this
        in O(listed sequences); the default builds the full ``Batch`` (``decode_contexts()``
        gives the group's contexts), so any model stays correct.
        """
        new, ctx = list(new_tokens), list(context_tokens)
        if decodes:
            if decode_contexts is None:
                raise ValueError("iteration_time: this cost model needs decode_contexts to price "
                                 "a decode group")
            new += [decode_tokens] * decodes
            ctx += decode_contexts()
        return self.batch_time(Batch(new, ctx))

    def run_times(self, sizes: Sequence[Sequence[int]], context_tokens: Sequence[int],
                  decodes: int = 0, decode_tokens: int = 1, decode_ctx_sum: int = 0,
                  decode_ctx_max: int = 0,
                  decode_contexts: Callable[[int], list[int]] | None = None) -> list[float]:
        """``iteration_time`` of each iteration of a run (``MixedRun``): iteration j computes
        the chunks ``sizes[j]`` over contexts grown by the chunks before it, next to the decode
        group grown by ``j * decode_tokens`` tokens a member (``decode_contexts(extra)`` lists
        the group's contexts grown by ``extra``). One call per run rather than per iteration,
        so a model can price the run in one tight loop (roofline); this default asks
        ``iteration_time`` for each, so any model stays correct."""
        durs = []
        ctx = list(context_tokens)
        for j, new in enumerate(sizes):
            if decodes:
                grown = j * decode_tokens
                listed = None if decode_contexts is None else _grown(decode_contexts, grown)
                durs.append(self.iteration_time(new, ctx, decodes, decode_tokens,
                                                decode_ctx_sum + grown * decodes,
                                                decode_ctx_max + grown, listed))
            else:
                durs.append(self.iteration_time(new, ctx))
            ctx = [c + n for c, n in zip(ctx, new, strict=True)]
        return durs

    def verify_time(self, decodes: int, q: int, ctx_sum: int, ctx_max: int,
                    contexts: Callable[[], list[int]] | None = None) -> float:
        """One iteration in which ``decodes`` sequences each compute ``q`` tokens (a speculative
        verify of q - 1 drafts), given by their context sum and longest context. Roofline and
        profiled models price it from those totals; the default lists ``contexts()``."""
        return self.iteration_time([], [], decodes, q, ctx_sum, ctx_max, contexts)

    def describe(self) -> dict:
        """Machine-readable summary of the model, stored with every simulation result."""
        return {"source": self.source}


def _grown(contexts: Callable[[int], list[int]], extra: int) -> Callable[[], list[int]]:
    """``contexts(extra)`` as the no-argument callable ``iteration_time`` takes."""
    return lambda: contexts(extra)
