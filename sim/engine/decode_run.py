"""Closed-form arithmetic of a run of k identical-shape decode iterations.

Iteration j (0-based) of a run over a decode set of B sequences holding C cached tokens costs
``d_j = a + b*(C + j*B)`` (the cost model's linearity contract), so the run's first j iterations
take ``S(j) = j*(a + b*C + (b*B/2)*(j-1))``.
"""
from __future__ import annotations

import math


class DecodeRun:
    """k decode iterations of a batch of ``batch`` sequences holding ``ctx`` cached tokens, the
    first starting at ``t0`` (after any one-off overhead such as a swap-in), iteration j
    costing ``a + b * (ctx + j * batch)``. A plain class with slots rather than a NamedTuple:
    built at most boundaries, and cheaper to build and read either way (compiled, a native
    object)."""

    __slots__ = ("a", "b", "batch", "ctx", "k", "t0")

    def __init__(self, t0: float, k: int, a: float, b: float, batch: int, ctx: int) -> None:
        self.t0 = t0
        self.k = k
        self.a = a
        self.b = b
        self.batch = batch
        self.ctx = ctx

    # the reads ``MixedRun`` also offers: each decode makes one token a step, no prompt chunks
    @property
    def decode_q(self) -> int:
        return 1

    def work_done(self, j: int) -> int:
        """Tokens of work the first j iterations did (one per member each)."""
        return self.batch * j

    def chunk_blocks_started(self, j: int) -> int:
        return 0

    def span(self, j: int) -> float:
        return j * (self.a + self.b * self.ctx + self.b * self.batch * 0.5 * (j - 1))

    @property
    def first(self) -> float:
        return self.a + self.b * self.ctx

    @property
    def step(self) -> float:
        return self.b * self.batch

    def first_boundary_at_or_after(self, delta: float) -> int:
        """Smallest j in [1, k] with S(j) >= delta (ceiling of the positive root, then a
        one-step correction for floating-point rounding)."""
        k = self.k
        if delta <= 0.0:
            return 1
        p = self.b * self.batch * 0.5
        q = self.a + self.b * self.ctx - p
        if p > 0.0:
            j = math.ceil((math.sqrt(q * q + 4.0 * p * delta) - q) / (2.0 * p))
        else:
            j = math.ceil(delta / q)
        if j >= k:
            return k - 1 if k > 1 and self.span(k - 1) >= delta else k
        if j < 1:
            j = 1
        if self.span(j) < delta:
            return j + 1
        if j > 1 and self.span(j - 1) >= delta:
            return j - 1
        return j

    def steps_done_by(self, now: float) -> int:
        delta = now - self.t0
        if delta <= 0.0:
            return 0
        j = self.first_boundary_at_or_after(delta)
        return j if self.span(j) <= delta else j - 1
