"""Fast-forwarded speculative runs give exactly the per-request results of stepping.

The matrix of tests/test_fast_forward.py (its config and checks reused) with speculation on:
fixed k, a table and SmartSpec's adaptive k (also re-deciding every 3 steps over per-request
rates, and per-request rates from the trace column ``alpha``), every batching policy x
preemption mode, every router,
swap space that runs out, Llumnix migration, drain / scale-out and ``max_sim_time_s`` cuts.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from goodput.sim.engine.proposers import HeadsOptions
from goodput.sim.engine.speculation import FixedOptions, SmartSpecOptions, SpeculationConfig, TableOptions
from goodput.sim.simulator import simulate
from tests.conftest import poisson_requests, with_priorities
from tests.test_fast_forward import (
    COLUMNS,
    MIGRATION_COLUMNS,
    PAGED,
    POLICY_MODES,
    ROUTERS,
    assert_conserved,
    assert_same,
    completed,
    make_cfg,
    preemptions,
    swaps,
)

METHODS = {
    "fixed3": SpeculationConfig(method="fixed", alpha=0.7, draft_model="llama-3.2-1b",
                                sections={"fixed": FixedOptions(k=3)}),
    "smartspec": SpeculationConfig(method="smartspec", alpha=0.8, draft_model="llama-3.2-1b",
                                   sections={"smartspec": SmartSpecOptions(max_k=6)}),
    "pass_cost": SpeculationConfig(method="fixed", alpha=0.6, draft_pass_s=0.0007,
                                   sections={"fixed": FixedOptions(k=2)}),
    "ngram_table": SpeculationConfig(method="table", alpha=0.5, proposer="ngram",
                                     sections={"table": TableOptions([[1, 4], [8, 2], [24, 0]])}),
    # re-decided every 3 steps from each request's moving average, requests accepting at their
    # own Beta-drawn rates along a position profile
    "smartspec_n3": SpeculationConfig(method="smartspec", alpha=0.7, draft_model="llama-3.2-1b",
                                      alpha_dist="beta:6,3", alpha_by_position=[0.85, 0.7, 0.6], seed=4,
                                      sections={"smartspec": SmartSpecOptions(max_k=5, redecide_steps=3)}),
    "mtp_tree": SpeculationConfig(method="fixed", alpha=0.6, proposer="heads", tree_width=2,
                                  sections={"fixed": FixedOptions(k=2),
                                            "heads": HeadsOptions(layers_per_pass=1.0)}),
}


def spec_cfg(fast, method, **kw):
    cfg = make_cfg(fast, **kw)
    cfg.scheduler.sections["speculation"] = METHODS[method]
    return cfg


def both(df, method, **kw):
    fast, step = simulate(spec_cfg(True, method, **kw), df), simulate(spec_cfg(False, method, **kw), df)
    for name, res in (("fast-forward", fast), ("step", step)):
        assert_conserved(df, res, name)
    return fast, step


def case(case_id, *args):
    return pytest.param(*args, id=case_id)


MATRIX = ([case(f"{m}-{p}-{pm}", m, "round_robin", p, pm) for m in METHODS for p, pm in POLICY_MODES]
          + [case(f"smartspec-{r}", "smartspec", r, "vllm", "swap") for r in ROUTERS[1:]])


@pytest.mark.parametrize("method,router,policy,preemption", MATRIX)
def test_policy_router_preemption_matrix(method, router, policy, preemption):
    df = poisson_requests(300, rate=20, seed=13)
    # a tree's verify (1 + k w tokens a sequence) is capped by Sarathi's token budget, so it
    # grows the KV more slowly there: a smaller cache keeps the memory pressure
    blocks = 700 if method == "mtp_tree" else 800
    fast, step = both(df, method, router=router, policy=policy, preemption=preemption, blocks=blocks)
    assert completed(step) == len(df)
    if policy in PAGED:
        assert preemptions(step) > 0
    if preemption == "swap":
        assert swaps(step) > 0
    assert_same(fast, step, COLUMNS + MIGRATION_COLUMNS)
    # speculation ran: fewer iterations than tokens decoded
    decoded = int(step.requests.generated_tokens.sum()) - len(df)
    assert step.instances.iterations.sum() < decoded


@pytest.mark.parametrize("router", ["round_robin", "least_kv", "llumnix"])
def test_swap_space_exhaustion(router):
    df = poisson_requests(300, rate=20, seed=14)
    fast, step = both(df, "fixed3", router=router, preemption="swap", blocks=700, swap_gb=0.04)
    assert 0 < swaps(step) < preemptions(step)
    assert_same(fast, step, COLUMNS + MIGRATION_COLUMNS)


@pytest.mark.parametrize("method,policy", [("smartspec", "vllm"), ("fixed3", "sarathi")])
def test_llumnix_migration_under_overload(method, policy):
    df = with_priorities(poisson_requests(300, rate=80, seed=15), 0.2, seed=15)
    fast, step = both(df, method, router="llumnix", policy=policy, count=4, blocks=600)
    assert step.migration["completed"] > 0
    assert_same(fast, step, COLUMNS + MIGRATION_COLUMNS)


@pytest.mark.parametrize("events", [
    [{"time_s": 2.0, "action": "drain", "instance": 1}, {"time_s": 4.0, "action": "scale_out", "group": 0}],
])
@pytest.mark.parametrize("router", ["least_outstanding_tokens", "llumnix"])
def test_drain_and_scale_out(router, events):
    df = poisson_requests(300, rate=40, seed=17)
    fast, step = both(df, "smartspec", router=router, preemption="swap", count=3, blocks=600, events=events)
    assert completed(step) == len(df)
    assert_same(fast, step, COLUMNS + MIGRATION_COLUMNS)


@pytest.mark.parametrize("cut", [0.5, 2.0, 4.5])
@pytest.mark.parametrize("method,policy",
                         [("fixed3", "vllm"), ("smartspec", "sarathi"), ("pass_cost", "orca")])
def test_max_sim_time_cut(method, policy, cut):
    df = with_priorities(poisson_requests(300, rate=60, seed=18), 0.2, seed=18)
    fast, step = both(df, method, policy=policy, cutoff=cut, router="least_kv")
    assert (step.requests.outcome == "unfinished").any()
    assert_same(fast, step, COLUMNS + MIGRATION_COLUMNS)


@pytest.mark.parametrize("method,policy,preemption",
                         [("smartspec", "vllm", "swap"), ("fixed3", "sarathi", "recompute"),
                          ("smartspec_n3", "decode_priority", "recompute")])
def test_trace_alpha_column(method, policy, preemption):
    """Per-request rates from the trace (some empty: the config's) give the same per-request
    results in both modes, and change them (against the config's rate for every request)."""
    df = poisson_requests(300, rate=20, seed=19)
    rng = np.random.default_rng(19)
    df["alpha"] = np.where(rng.random(len(df)) < 0.3, np.nan, rng.uniform(0.0, 1.0, len(df)))
    fast, step = both(df, method, policy=policy, preemption=preemption, blocks=800)
    assert completed(step) == len(df) and preemptions(step) > 0
    assert_same(fast, step, COLUMNS + MIGRATION_COLUMNS)
    plain = simulate(spec_cfg(True, method, policy=policy, preemption=preemption, blocks=800),
                     df.drop(columns="alpha"))
    assert not np.allclose(plain.requests.completion_s, fast.requests.completion_s)


@pytest.mark.parametrize("output", [16, 17, 18, 33, 200])
@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
def test_lone_request_across_planning_windows(alpha, output):
    """A run is planned a window of steps at a time (``WINDOW_STEPS``): a request finishing on,
    just after or well past a window's last step finishes at the same step in both modes."""
    df = pd.DataFrame({"request_id": [3], "arrival_s": [0.0], "prompt_tokens": [40],
                       "output_tokens": [output]})
    cfgs = []
    for fast in (True, False):
        cfg = make_cfg(fast, count=1)
        cfg.scheduler.sections["speculation"] = SpeculationConfig(
            method="fixed", alpha=alpha, draft_pass_s=5e-4, sections={"fixed": FixedOptions(k=1)})
        cfgs.append(cfg)
    fast, step = simulate(cfgs[0], df), simulate(cfgs[1], df)
    assert fast.requests.generated_tokens.iloc[0] == output
    assert fast.instances.iterations.iloc[0] == step.instances.iterations.iloc[0]
    assert_same(fast, step, COLUMNS)
