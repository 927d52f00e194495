"""``CostModel.iteration_time`` (a decode group priced by its totals) equals ``batch_time`` of the
same iteration listed sequence by sequence, for every cost model the simulator ships."""
from __future__ import annotations

import random

import pytest

from goodput.sim.catalog import get_gpu, get_model
from goodput.sim.config import CostModelConfig
from goodput.sim.costmodel.base import Batch, CostModel
from goodput.sim.costmodel.factory import make_cost_model
from goodput.sim.costmodel.profiled import find_profile


def _models() -> list[tuple[str, CostModel]]:
    out = []
    for model, gpu, tp in (("llama-3.1-8b", "h100", 1), ("llama-3.1-70b", "a100-80gb", 2),
                           ("llama-3.1-8b", "h200", 1)):
        out.append((f"roofline/{model}/{gpu}/tp{tp}",
                    make_cost_model(get_model(model), get_gpu(gpu), tp, CostModelConfig(kind="roofline"))))
        if find_profile(gpu, model, tp) is not None:
            profiled = make_cost_model(get_model(model), get_gpu(gpu), tp, CostModelConfig(kind="profiled"))
            out.append((f"profiled/{model}/{gpu}/tp{tp}", profiled))
    return out


MODELS = _models()


class Listed(CostModel):
    """A model with only ``batch_time``: the interface's default must build the full batch."""

    def __init__(self, inner: CostModel):
        self.inner = inner

    def batch_time(self, batch):
        return self.inner.batch_time(batch)

    def decode_coefficients(self, batch_size):
        return self.inner.decode_coefficients(batch_size)


def _cases(seed: int, n: int = 60):
    rng = random.Random(seed)
    for _ in range(n):
        chunks = [(rng.choice([1, 2, 5, 64, 300, 512, 2048]), rng.randrange(0, 6000))
                  for _ in range(rng.randrange(0, 4))]
        decodes = [rng.randrange(1, 9000) for _ in range(rng.randrange(0 if chunks else 1, 200))]
        yield chunks, decodes


@pytest.mark.parametrize(("name", "cost"), MODELS, ids=[m[0] for m in MODELS])
def test_decode_group_by_totals_equals_listed(name, cost):
    assert any(n.startswith("profiled") for n, _ in MODELS), "no measured profile found to test"
    for chunks, decodes in _cases(hash(name) % 1000):
        listed = cost.batch_time(Batch([q for q, _ in chunks] + [1] * len(decodes),
                                       [c for _, c in chunks] + decodes))
        grouped = cost.iteration_time([q for q, _ in chunks], [c for _, c in chunks], len(decodes), 1,
                                      sum(decodes), max(decodes, default=0), lambda d=decodes: list(d))
        assert grouped == pytest.approx(listed, rel=1e-12, abs=1e-15), (chunks, len(decodes))
        default = Listed(cost).iteration_time([q for q, _ in chunks], [c for _, c in chunks],
                                              len(decodes), 1, sum(decodes), max(decodes, default=0),
                                              lambda d=decodes: list(d))
        assert default == listed


@pytest.mark.parametrize(("name", "cost"), MODELS[:2], ids=[m[0] for m in MODELS[:2]])
def test_multi_token_group_falls_back_to_listing(name, cost):
    decodes = [100, 2000, 37]
    listed = cost.batch_time(Batch([300, 4, 4, 4], [50, *decodes]))
    assert cost.iteration_time([300], [50], 3, 4, sum(decodes), max(decodes), lambda: decodes) == listed


def test_empty_and_bad_iterations_are_refused():
    cost = MODELS[0][1]
    with pytest.raises(ValueError, match="no sequences"):
        cost.iteration_time([], [])
    with pytest.raises(ValueError, match="new_tokens >= 1"):
        cost.iteration_time([0], [5], 2, 1, 10, 6)
