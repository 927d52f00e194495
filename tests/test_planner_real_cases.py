"""The two cases of issue 17 on the shared Azure conversation trace (skipped when it is absent),
cut to fit CI: the first requests of the trace, coarse buckets and short capacity probes. On
the full trace both used to end "MISSES the SLO target" (docs/planner.md quotes the commands);
NOTE: at this CI size the ILP's first plan already meets the target (the coarse probes are
conservative), so these tests check the end state (verified, monotone cost, verified headline)
but do not exercise the miss; tests/test_planner_converge.py does, on a synthetic simulator."""
from __future__ import annotations

import pytest
from conftest import shared_trace

from goodput.planner.cli import load_planning_trace
from goodput.planner.pipeline import PlanOptions, make_plan

FAST = {"input_edges": (1024,), "output_edges": (256,), "min_probe_requests": 60,
        "max_probe_requests": 1200, "span_e2e": 10, "rel_tol": 0.2, "workers": 2}


@pytest.mark.parametrize("case", [
    {"rate": None, "ttft_s": 1.0, "tpot_s": 0.1, "n": 1500},   # conv trace as replayed
    {"rate": 60.0, "ttft_s": 0.5, "tpot_s": 0.05, "n": 3000},  # README command with --rate 60
])
def test_issue_case_converges_to_a_verified_plan(case, tmp_path):
    path = shared_trace("AzureLLMInferenceTrace_conv.csv")
    trace = load_planning_trace(str(path), rate=case["rate"], max_requests=case["n"])
    o = PlanOptions(model="llama-3.1-8b", ttft_s=case["ttft_s"], tpot_s=case["tpot_s"],
                    gpus=["l4", "a10g", "a100-80gb", "h100", "h200"], cache_dir=str(tmp_path),
                    **FAST)
    out = make_plan(trace, o)
    v = out.plan.verification
    assert out.verified and v[-1]["meets_target"], v
    costs = [r["cost_per_hour"] for r in v]
    assert costs == sorted(costs), costs
    s = out.plan.summary
    assert s["verified"] and s["cost_per_hour"] == pytest.approx(out.plan.cost_per_hour)
    assert s["burst"]["peak_to_mean"] >= 1.0
