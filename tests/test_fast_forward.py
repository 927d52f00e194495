"""Fast-forwarding decode runs must give exactly the per-request results of stepping."""
from __future__ import annotations

import numpy as np
import pytest

from sim.config import InstanceGroupConfig, SimConfig
from sim.simulator import simulate
from tests.conftest import poisson_requests

COLUMNS = ["instance", "first_scheduled_s", "first_token_s", "completion_s", "generated_tokens",
           "preemptions", "max_tbt_s", "outcome"]


def run(df, fast, router="round_robin", count=2, mem=0.9, max_batch=256, cutoff=None,
        policy="vllm", preemption="recompute"):
    cfg = SimConfig(cluster=[InstanceGroupConfig(model="llama-3.1-8b", gpu="h100", count=count)])
    cfg.scheduler.policy = policy
    cfg.scheduler.preemption = preemption
    cfg.cost_model.kind = "roofline"
    cfg.router.name = router
    cfg.scheduler.gpu_memory_utilization = mem
    cfg.scheduler.max_batch_size = max_batch
    cfg.fast_forward = fast
    cfg.max_sim_time_s = cutoff
    return simulate(cfg, df)


def assert_same(a, b):
    for col in COLUMNS:
        x, y = a.requests[col], b.requests[col]
        if x.dtype.kind == "f":
            np.testing.assert_allclose(x.to_numpy(), y.to_numpy(), rtol=1e-9, atol=1e-9, err_msg=col)
        else:
            assert (x.astype(str) == y.astype(str)).all(), col


@pytest.mark.parametrize("router", ["round_robin", "least_outstanding_tokens"])
def test_equivalence_moderate_load(router):
    df = poisson_requests(1500, rate=25, seed=10)
    fast, step = run(df, True, router), run(df, False, router)
    assert_same(fast, step)
    # and fast-forward really skipped work
    assert fast.instances.iterations.sum() == step.instances.iterations.sum()


def test_equivalence_under_memory_pressure_with_preemption():
    df = poisson_requests(1200, rate=40, seed=11)
    fast, step = run(df, True, mem=0.3), run(df, False, mem=0.3)
    assert fast.instances.preemptions.sum() > 0
    assert_same(fast, step)


def test_equivalence_with_batch_limit_and_cutoff():
    df = poisson_requests(1000, rate=30, seed=12)
    fast, step = run(df, True, max_batch=8, cutoff=20.0), run(df, False, max_batch=8, cutoff=20.0)
    assert (fast.requests.outcome == "unfinished").any()
    assert_same(fast, step)


@pytest.mark.parametrize("policy,preemption", [("vllm", "swap"), ("sarathi", "recompute"),
                                               ("sarathi", "swap"), ("orca", "recompute"),
                                               ("static", "recompute"), ("decode_priority", "recompute")])
def test_equivalence_for_every_policy_under_pressure(policy, preemption):
    df = poisson_requests(600, rate=40, seed=13)
    fast = run(df, True, mem=0.3, policy=policy, preemption=preemption)
    step = run(df, False, mem=0.3, policy=policy, preemption=preemption)
    assert (fast.requests.outcome == "completed").sum() > 500
    assert_same(fast, step)
