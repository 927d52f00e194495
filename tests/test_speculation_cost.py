"""Verify groups priced from their totals equal the listed batch, and draft cost models."""
from __future__ import annotations

import random

import pytest

from goodput.sim.catalog import get_gpu, get_model
from goodput.sim.config import CostModelConfig
from goodput.sim.costmodel.base import Batch
from goodput.sim.costmodel.factory import make_cost_model
from goodput.sim.costmodel.profiled import ProfiledCostModel
from goodput.sim.costmodel.roofline import RooflineCostModel
from goodput.sim.costmodel.scaled import ScaledCostModel
from goodput.sim.costmodel.speculative import draft_cost_model

CASES = [(kind, model, gpu, tp) for kind in ("roofline", "profiled")
         for model, gpu, tp in (("llama-3.1-8b", "h100", 1), ("llama-3.1-8b", "h200", 1),
                                ("llama-3.1-70b", "h100", 4))]


def _cost(kind, model, gpu, tp):
    try:
        return make_cost_model(get_model(model), get_gpu(gpu), tp, CostModelConfig(kind=kind))
    except Exception as exc:  # a profile that is not shipped
        pytest.skip(str(exc))


@pytest.mark.parametrize(("kind", "model", "gpu", "tp"), CASES)
def test_verify_group_equals_listing(kind, model, gpu, tp):
    cost = _cost(kind, model, gpu, tp)
    rng = random.Random(7)
    for _ in range(200):
        q = rng.randrange(2, 10)
        ctx = [rng.randrange(0, 12000) for _ in range(rng.randrange(1, 300))]
        listed = cost.batch_time(Batch([q] * len(ctx), ctx))
        grouped = cost.verify_time(len(ctx), q, sum(ctx), max(ctx), lambda c=ctx: list(c))
        assert grouped == pytest.approx(listed, rel=1e-12)


def test_one_token_verify_is_a_decode_and_scaled_models_list():
    cost = _cost("roofline", "llama-3.1-8b", "h100", 1)
    ctx = [10, 500, 3000]
    assert cost.verify_time(3, 1, sum(ctx), max(ctx)) == pytest.approx(cost.batch_time(Batch.decode(ctx)))
    slow = ScaledCostModel(cost, 2.0)
    assert slow.verify_time(3, 4, sum(ctx), max(ctx), lambda: ctx) == \
        pytest.approx(2.0 * cost.batch_time(Batch([4] * 3, ctx)), rel=1e-12)


def test_draft_cost_model_follows_the_target():
    draft = get_model("llama-3.2-1b")
    roof = _cost("roofline", "llama-3.1-8b", "h100", 1)
    d = draft_cost_model(roof, draft, get_gpu)
    assert isinstance(d, RooflineCostModel) and d.model.name == "llama-3.2-1b" and d.gpu is roof.gpu
    prof = _cost("profiled", "llama-3.1-8b", "h100", 1)
    d = draft_cost_model(prof, draft, get_gpu)
    assert isinstance(d, ProfiledCostModel) and d.fit["model"] == "llama-3.2-1b"
    assert d.decode_coefficients(8)[0] < prof.decode_coefficients(8)[0]


def test_roofline_verify_line_equals_verify_time():
    """The line a run of speculative steps is priced by is the roofline's verify time itself."""
    from goodput.sim.catalog import get_gpu, get_model
    from goodput.sim.config import CostModelConfig
    from goodput.sim.costmodel.factory import make_cost_model
    from goodput.sim.costmodel.scaled import ScaledCostModel

    for model, gpu, tp in (("llama-3.1-8b", "h100", 1), ("llama-3.1-70b", "a100-80gb", 2)):
        cost = make_cost_model(get_model(model), get_gpu(gpu), tp, CostModelConfig(kind="roofline"))
        for c in (cost, ScaledCostModel(cost, 1.7)):
            for batch, q in ((1, 2), (16, 5), (128, 9)):
                line = c.verify_coefficients(batch, q)
                assert line is not None
                a, b = line
                for ctx in (0, 1000 * batch, 37_000 * batch):
                    direct = c.verify_time(batch, q, ctx, ctx // batch)
                    assert a + b * ctx == pytest.approx(direct, rel=1e-12)
