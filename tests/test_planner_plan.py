"""End to end on a small two-size workload: plan, prove, route, round-trip, and fail clearly."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from goodput.planner.errors import PlannerError
from goodput.planner.ilp import solve
from goodput.planner.pipeline import PlanOptions, build_plan, instance_types, make_plan, slice_inputs
from goodput.planner.plan import Plan, PlanGroup, PlanSlice
from goodput.planner.prove import prove
from goodput.planner.verify import simulate_plan

SHORT, LONG = (128, 32), (3000, 40)


def two_size_trace(n=240, rate=3.0, seed=0) -> pd.DataFrame:
    """Half short chat-like requests, half long-prompt ones, Poisson arrivals."""
    rng = np.random.default_rng(seed)
    long = rng.random(n) < 0.5
    return pd.DataFrame({"request_id": np.arange(n),
                         "arrival_s": np.cumsum(rng.exponential(1 / rate, n)),
                         "prompt_tokens": np.where(long, LONG[0], SHORT[0]),
                         "output_tokens": np.where(long, LONG[1], SHORT[1])})


def opts(tmp_path, **kw):
    base = {"model": "llama-3.1-8b", "ttft_s": 0.5, "tpot_s": 0.05, "gpus": ["a10g", "a100-80gb"],
            "input_edges": (1024,), "output_edges": (64,), "min_probe_requests": 40,
            "max_probe_requests": 600, "span_e2e": 10, "rel_tol": 0.1,
            "cost_model": {"kind": "roofline"}, "cache_dir": str(tmp_path), "workers": 1}
    base.update(kw)
    return PlanOptions(**base)


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    return make_plan(two_size_trace(), opts(tmp_path_factory.mktemp("cache")))


def test_plan_is_proved_by_simulation(outcome):
    plan, check = outcome.plan, outcome.check
    assert check.attainment >= 0.9 and plan.verification[-1]["meets_target"]
    assert plan.verification[-1]["attainment"] == pytest.approx(check.attainment, abs=1e-6)
    # A10G misses the 0.5 s TTFT on a 3000-token prompt even alone, so long requests go to A100
    assert "TTFT p90 at zero load" in outcome.reasons["in[1024,inf)out[0,64)"]["a10g-tp1"]
    long = next(s for s in plan.slices if s.bucket == "in[1024,inf)out[0,64)")
    assert long.shares == {"a100-80gb-tp1": pytest.approx(1.0)}
    served = check.requests
    assert (served.loc[served.bucket == long.bucket, "type"] == "a100-80gb-tp1").all()
    for g in plan.groups:
        assert g.load <= g.count + 1e-9 and g.price_per_hour == pytest.approx(
            {"a10g": 1.01, "a100-80gb": 3.43}[g.gpu])


def test_yaml_round_trip_and_deterministic_resimulation(outcome, tmp_path):
    path = outcome.plan.save(tmp_path / "plan.yaml")
    loaded = Plan.load(path)
    assert loaded.to_dict() == outcome.plan.to_dict()
    a = simulate_plan(loaded, two_size_trace())
    b = simulate_plan(loaded, two_size_trace())
    assert a.attainment == b.attainment == pytest.approx(outcome.check.attainment)
    assert a.per_slice["requests"].sum() == 240


def _manual_plan(shares_short: dict, counts: dict) -> Plan:
    groups = [PlanGroup(k.rsplit("-tp", 1)[0], 1, n, 1.0) for k, n in counts.items()]
    return Plan(model="llama-3.1-8b", slo={"ttft_s": 5.0, "tpot_s": 0.5}, groups=groups,
                slices=[PlanSlice("in[0,1024)out[0,64)", "in[0,1024)out[0,64)", 1.5, shares_short),
                        PlanSlice("in[1024,inf)out[0,64)", "in[1024,inf)out[0,64)", 1.5,
                                  {"a100-80gb-tp1": 1.0})],
                input_edges=[1024], output_edges=[64], cost_model={"kind": "roofline"})


def test_router_sends_each_bucket_to_its_types_with_the_planned_split():
    trace = two_size_trace(n=800)
    plan = _manual_plan({"a10g-tp1": 0.25, "a100-80gb-tp1": 0.75}, {"a10g-tp1": 2, "a100-80gb-tp1": 1})
    req = simulate_plan(plan, trace).requests
    short = req[req.bucket == "in[0,1024)out[0,64)"]
    assert (req.loc[req.bucket != short.bucket.iloc[0], "type"] == "a100-80gb-tp1").all()
    frac = (short["type"] == "a10g-tp1").mean()
    sd = (0.25 * 0.75 / len(short)) ** 0.5
    assert abs(frac - 0.25) < 4 * sd  # a seeded Bernoulli(0.25) per request
    # least-loaded within the type: both A10G instances get work
    assert short.loc[short.type == "a10g-tp1", "instance"].nunique() == 2
    # same seed, same routing; another seed, another draw
    again = simulate_plan(plan, trace).requests
    assert (again["type"].to_numpy() == req["type"].to_numpy()).all()
    other = simulate_plan(plan, trace, seed=7).requests
    assert (other["type"].to_numpy() != req["type"].to_numpy()).any()


def test_failed_verification_searches_for_a_proved_plan(tmp_path):
    """Capacities inflated 5x make the ILP under-provision; the search must find more capacity."""
    trace = two_size_trace(n=300, rate=6.0)
    o = opts(tmp_path, verify=False, verify_rounds=8, derate_step=0.5)
    out = make_plan(trace, o)
    inflated = {b: {g: c * 5 for g, c in caps.items()} for b, caps in out.cap.items()}
    rates, scap, _ = slice_inputs(out.slicing, inflated, out.reasons)
    plan = build_plan(out.slicing, out.types, solve(out.types, rates, scap), inflated, o, {})
    before = plan.cost_per_hour
    logs = []
    plan, check = prove(plan, trace, out.slicing, out.types, inflated, out.reasons, o,
                        logs.append)
    v = plan.verification
    assert v[0]["action"] == "initial plan (ILP)" and not v[0]["meets_target"]
    assert check.meets_target and v[-1]["meets_target"] and len(v) >= 2
    assert all(not r["meets_target"] for r in v[:-1])  # it stops at the first proved plan
    assert plan.cost_per_hour > before
    assert all(r["action"].startswith(("re-solved", "+1")) for r in v[1:])
    costs = [r["cost_per_hour"] for r in v]
    assert costs == sorted(costs)  # derating is monotone, so the cost never falls
    assert any("below target" in line for line in logs)


def test_unproved_plan_is_reported_not_hidden(tmp_path):
    trace = two_size_trace(n=300, rate=6.0)
    o = opts(tmp_path, verify=False, verify_rounds=0)  # the first simulation only
    out = make_plan(trace, o)
    inflated = {b: {g: c * 50 for g, c in caps.items()} for b, caps in out.cap.items()}
    rates, scap, _ = slice_inputs(out.slicing, inflated, out.reasons)
    plan = build_plan(out.slicing, out.types, solve(out.types, rates, scap), inflated, o, {})
    logs = []
    plan, check = prove(plan, trace, out.slicing, out.types, inflated, out.reasons, o,
                        logs.append)
    assert not check.meets_target and len(plan.verification) == 1
    assert plan.verification[0]["meets_target"] is False
    assert "NOT proved" in logs[-1]


def test_model_that_fits_nowhere_names_every_gpu():
    # 70B weights are 141 GB: no 24 GB GPU holds them at TP-1; an H100 (79.2 GiB as CUDA reports
    # it) holds them at TP-2 with room for KV, as vLLM and Vidur run it
    with pytest.raises(PlannerError, match=r"llama-3\.1-70b does not fit on any allowed "
                                           r"configuration: .*on l4 x tp=1: weights need 141\.1 GB"
                                           r".*on a10g x tp=1"):
        instance_types("llama-3.1-70b", ["l4", "a10g"], [1])
    types, unfit = instance_types("llama-3.1-70b", ["l4", "h100"], [1, 2, 4])
    assert [t.key for t in types] == ["h100-sxm-tp2", "h100-sxm-tp4"] and len(unfit) == 4


def test_unmeetable_slo_names_slice_and_limit(tmp_path):
    with pytest.raises(PlannerError, match=r"no GPU configuration meets the SLO for slice "
                                           r"in\[0,1024\)out\[0,64\).*a10g-tp1: TPOT p90 at "
                                           r"zero load [\d.]+ ms > SLO 10 ms"):
        make_plan(two_size_trace(), opts(tmp_path, gpus=["a10g"], tpot_s=0.01))


def test_zero_rate_trace_fails_before_any_simulation(tmp_path):
    df = two_size_trace(n=3)
    df["arrival_s"] = 1.0
    with pytest.raises(PlannerError, match="zero-rate trace"):
        make_plan(df, opts(tmp_path))


def test_bad_plan_files(tmp_path, outcome):
    with pytest.raises(PlannerError, match="no such plan file"):
        Plan.load(tmp_path / "missing.yaml")
    d = outcome.plan.to_dict()
    with pytest.raises(PlannerError, match=r"unknown plan field.*'gpu_count'"):
        Plan.from_dict({**d, "gpu_count": 3})
    bad = replace(outcome.plan, slices=[replace(s, shares={k: v / 2 for k, v in s.shares.items()})
                                        for s in outcome.plan.slices])
    with pytest.raises(PlannerError, match=r"shares sum to 0\.5"):
        Plan.from_dict(bad.to_dict())
    ghost = replace(outcome.plan, slices=[replace(s, shares={"h200-tp1": 1.0})
                                          for s in outcome.plan.slices])
    with pytest.raises(PlannerError, match="sends load to \\['h200-tp1'\\]"):
        Plan.from_dict(ghost.to_dict())
