"""Multi-token steps: a policy may advance every decode by q > 1 tokens per iteration (the seam
speculative decoding and multi-token prediction use), with no special case in the engine."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from goodput.sim.catalog import get_gpu, get_model
from goodput.sim.config import SimConfig
from goodput.sim.costmodel.base import Batch
from goodput.sim.costmodel.roofline import RooflineCostModel
from goodput.sim.engine.policies import register_policy
from goodput.sim.engine.policies.vllm import VLLMPolicy
from goodput.sim.engine.view import Plan
from goodput.sim.metrics import request_metrics
from goodput.sim.simulator import simulate
from tests.conftest import poisson_requests

Q = 3


@register_policy
class MultiTokenPolicy(VLLMPolicy):
    """vLLM, but every decode iteration produces Q tokens per sequence."""

    name = "test_multi_token"

    def schedule(self, view, now):
        plan = super().schedule(view, now)
        if plan is not None and not plan.prefills and plan.decode_tokens == 1:
            return Plan([], Q)
        return plan

    def _ensure_decode_blocks(self, view):
        swap = self.cfg.preemption == "swap"
        while view.running and view.decode_step_blocks(Q) > view.free_blocks:
            victim = max(reversed(view.running), key=lambda s: (-s.priority, s.arrival))
            view.preempt(victim, swap=swap)


def cfg(fast=True, **sched) -> SimConfig:
    c = SimConfig()
    c.cost_model.kind = "roofline"
    c.scheduler.policy = "test_multi_token"
    c.fast_forward = fast
    for k, v in sched.items():
        setattr(c.scheduler, k, v)
    return c


@pytest.mark.parametrize("output", [10, 11, 12])
def test_single_request_latency_with_q_tokens_per_step(output):
    cost = RooflineCostModel(get_model("llama-3.1-8b"), get_gpu("h100"), 1)
    prompt = 300
    df = pd.DataFrame({"request_id": [0], "arrival_s": [0.0], "prompt_tokens": [prompt],
                       "output_tokens": [output]})
    res = simulate(cfg(), df)
    r = request_metrics(res.requests).iloc[0]
    ttft = cost.batch_time(Batch([prompt], [0]))
    steps = math.ceil((output - 1) / Q)  # the prefill makes token 1, each step Q more (last may overshoot)
    decode = [cost.batch_time(Batch([Q], [prompt + i * Q])) for i in range(steps)]
    assert r.generated_tokens == output and r.outcome == "completed"
    assert r.ttft_s == pytest.approx(ttft, rel=1e-12)
    assert r.e2e_s == pytest.approx(ttft + sum(decode), rel=1e-12)
    assert res.instances.iterations.iloc[0] == 1 + steps
    # every token but the first has a gap: one per step sees the step time, the rest arrive with it
    assert res.tbt_hist.sum() == pytest.approx(output - 1)
    assert r.max_tbt_s == pytest.approx(max(decode), rel=1e-12)


def test_q_token_steps_conserve_tokens_and_blocks_under_pressure():
    df = poisson_requests(300, rate=30, seed=21)
    fast = simulate(cfg(True, gpu_memory_utilization=0.3), df)
    step = simulate(cfg(False, gpu_memory_utilization=0.3), df)
    for res in (fast, step):
        out = res.requests
        assert (out.outcome == "completed").all()
        assert (out.generated_tokens == out.output_tokens).all()
        # tokens after each request's first (from prefill or recompute) all have a gap recorded
        assert res.tbt_hist.sum() == pytest.approx(float((out.output_tokens - 1).sum()))
    assert fast.instances.preemptions.sum() > 0
    for col in ("first_token_s", "completion_s", "max_tbt_s"):
        np.testing.assert_allclose(fast.requests[col], step.requests[col], rtol=1e-9)
