"""The proof converges: monotone derating, then added instances; never a failing plan while a
feasible one exists within availability. A synthetic "simulator" (attainment from each type's
true load) makes the case fast and deterministic. The measured capacities overstate both types
(A by 30-43%, B by up to 67% on small requests), so that the previous cheapest-first candidate
search (per-type 10% derating, candidates re-solve / +1 worst type / best single type, 6 rounds)
oscillated on it: attainment 2.6, 30.6, 53.8, 39.3, 47.0, 63.7, 82.5% and NOT proved (checked by
running that prove.py against this fake simulator); the new search proves it in 4 simulations.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import goodput.planner.prove as prove_mod
from goodput.planner.assemble import PlanOptions, build_plan, slice_inputs
from goodput.planner.ilp import InstanceType, solve
from goodput.planner.prove import ProofState, derate_factor, prove
from goodput.planner.slices import Bucket, Slice, Slicing
from goodput.planner.verify import PlanCheck

A = InstanceType("a10g", 1, 1.0, 150.0)
B = InstanceType("a100-80gb", 1, 3.0, 400.0)
BUCKETS = ["small", "mid", "big"]
RATE = {"small": 6.0, "mid": 3.0, "big": 1.0}
#: measured capacity (req/s per instance) and the true one the fake simulator uses
MEASURED = {"small": {A.key: 2.0, B.key: 5.0}, "mid": {A.key: 1.0, B.key: 3.0},
            "big": {A.key: 0.0, B.key: 1.2}}
TRUE = {"small": {A.key: 1.4, B.key: 3.0}, "mid": {A.key: 0.7, B.key: 2.0},
        "big": {A.key: 0.0, B.key: 1.15}}


def slicing() -> Slicing:
    bs = [Bucket(b, (0, None), (0, None), 100, RATE[b], np.zeros((1, 2), np.int64)) for b in BUCKETS]
    return Slicing((1,), (1,), 1, bs, [Slice(b, b, RATE[b]) for b in BUCKETS], 10.0, 100.0, 1000)


def fake_simulate(plan, trace, seed=None, max_requests=None, **_):
    """Per type: utilisation u = true load / instances; attainment 1 below u=0.85, then falls."""
    counts = {g.key: g.count for g in plan.groups}
    load: dict[str, float] = {}
    for s in plan.slices:
        for g, sh in s.shares.items():
            load[g] = load.get(g, 0.0) + RATE[s.bucket] * sh / TRUE[s.bucket][g]
    att = {g: float(np.clip(1 - 2.5 * (load[g] / counts[g] - 0.85), 0, 1)) for g in load}
    rows = []
    for s in plan.slices:
        for g, sh in s.shares.items():
            n = round(1000 * sh * RATE[s.bucket] / 10)
            met = round(n * att[g])
            rows += [(s.bucket, g, True)] * met + [(s.bucket, g, False)] * (n - met)
    req = pd.DataFrame(rows, columns=["bucket", "type", "slo_met"])
    per_type = (req.groupby("type")["slo_met"].agg(requests="size", attainment="mean")
                .reset_index())
    per_type["instances"] = per_type["type"].map(counts)
    per_type["busy_fraction"] = per_type["type"].map(lambda g: min(1.0, load[g] / counts[g]))
    per_slice = req.groupby("bucket")["slo_met"].agg(requests="size", met="sum").reset_index()
    per_slice["attainment"] = per_slice["met"] / per_slice["requests"]
    return PlanCheck(float(req["slo_met"].mean()), 0.9, per_slice, per_type, {}, req)


def opts(**kw) -> PlanOptions:
    return PlanOptions(model="llama-3.1-8b", ttft_s=1.0, tpot_s=0.1, gpus=["a10g", "a100-80gb"],
                       **kw)


def initial(o: PlanOptions):
    sl = slicing()
    rates, scap, _ = slice_inputs(sl, MEASURED, {})
    return sl, build_plan(sl, [A, B], solve([A, B], rates, scap, o.availability), MEASURED, o, {})


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(prove_mod, "simulate_plan", fake_simulate)


def test_converges_with_monotone_cost_and_derating(fake):
    o = opts()
    sl, plan = initial(o)
    assert not fake_simulate(plan, None).meets_target  # the ILP's plan misses
    logs: list[str] = []
    plan, check = prove(plan, None, sl, [A, B], MEASURED, {}, o, logs.append)
    v = plan.verification
    assert check.meets_target and v[-1]["meets_target"]
    costs = [r["cost_per_hour"] for r in v]
    assert costs == sorted(costs), costs  # never cheaper (and weaker) after a failed round
    assert all(not r["meets_target"] for r in v[:-1])
    assert all("$" in line and "attainment" in line for line in logs if "round" in line)


def test_derating_never_undone():
    st = ProofState()
    pairs = pd.DataFrame({"bucket": ["x", "x"], "type": ["a", "b"], "requests": [10, 10],
                          "attainment": [0.5, 0.95]})
    st.tighten(pairs, 0.9, 0.05)
    first = st.derate[("x", "a")]
    assert first == pytest.approx(derate_factor(0.5, 0.9, 0.05)) and ("x", "b") not in st.derate
    st.tighten(pairs.assign(attainment=[0.89, 0.2]), 0.9, 0.05)
    assert st.derate[("x", "a")] < first  # a failing pair is cut again, never raised
    assert st.derate[("x", "a")] == pytest.approx(first * 0.95)


def test_adds_instances_when_derating_stops_changing_the_plan(fake):
    """Type A alone with rounding slack: a 5% derating leaves the count (4) and the shares as
    they were, so the re-solve repeats the plan and an instance must be added."""
    o = opts()
    sl = slicing()
    cap = {"small": {A.key: 3.0}, "mid": {A.key: 3.0}, "big": {A.key: 10.0}}  # load 3.1 -> 4
    true_a = {"small": {A.key: 2.5}, "mid": {A.key: 3.0}, "big": {A.key: 5.0}}  # u = 0.9
    rates, scap, _ = slice_inputs(sl, cap, {})
    plan = build_plan(sl, [A], solve([A], rates, scap), cap, o, {})
    old = dict(TRUE)
    try:
        TRUE.update(true_a)
        plan, check = prove(plan, None, sl, [A], cap, {}, o)
    finally:
        TRUE.update(old)
    assert check.meets_target
    assert any("+" in r["action"] for r in plan.verification[1:])


def test_stops_only_when_availability_is_exhausted(fake):
    """3 A10G + 2 A100 fit the measured capacities but not the true ones: no plan exists."""
    o = opts(availability={"a10g": 3, "a100-80gb": 2})
    sl, plan = initial(o)
    logs: list[str] = []
    plan, check = prove(plan, None, sl, [A, B], MEASURED, {}, o, logs.append)
    assert not check.meets_target
    assert "within availability" in logs[-1] and "NOT proved" in logs[-1]
