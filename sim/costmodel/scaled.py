"""A cost model slowed by a constant factor: a straggler (thermal throttling, a noisy neighbour,
a degraded NVLink) injected as a fault (``events: [{action: slow, factor: 1.5}]``).

Every iteration takes ``factor`` times what the model it wraps says, so the decode linearity
contract holds with ``(a, b)`` scaled alike and fast-forward stays exact.
"""
from __future__ import annotations

from goodput.sim.costmodel.base import Batch, CostModel


class ScaledCostModel(CostModel):
    def __init__(self, inner: CostModel, factor: float):
        if not factor > 0:
            raise ValueError(f"ScaledCostModel: factor={factor!r} must be > 0")
        self.inner, self.factor = inner, factor
        self.source = f"{inner.source} x{factor:g} (slowed)"

    def batch_time(self, batch: Batch) -> float:
        return self.factor * self.inner.batch_time(batch)

    def decode_coefficients(self, batch_size: int) -> tuple[float, float]:
        a, b = self.inner.decode_coefficients(batch_size)
        return self.factor * a, self.factor * b

    def iteration_time(self, new_tokens, context_tokens, decodes=0, decode_tokens=1, decode_ctx_sum=0,
                       decode_ctx_max=0, decode_contexts=None) -> float:
        return self.factor * self.inner.iteration_time(new_tokens, context_tokens, decodes, decode_tokens,
                                                       decode_ctx_sum, decode_ctx_max, decode_contexts)

    def verify_time(self, decodes, q, ctx_sum, ctx_max, contexts=None) -> float:
        return self.factor * self.inner.verify_time(decodes, q, ctx_sum, ctx_max, contexts)

    def verify_coefficients(self, decodes: int, q: int) -> tuple[float, float] | None:
        line = getattr(self.inner, "verify_coefficients", lambda d, q: None)(decodes, q)
        return None if line is None else (self.factor * line[0], self.factor * line[1])

    def describe(self) -> dict:
        return {**self.inner.describe(), "slowed_by": self.factor}
