"""Phase split: the optimisation solved by hand, and capacities measured by simulation."""
from __future__ import annotations

import pytest

from goodput.planner.errors import PlannerError
from goodput.planner.ilp import InstanceType
from goodput.planner.phase_split import plan_phase_split, solve_phase_split
from tests.conftest import poisson_requests

A = InstanceType("a", 1, 1.0, 100.0)  # good at prompts: 10 req/s of prefill, 2 of decode
B = InstanceType("b", 1, 2.0, 300.0)  # good at tokens: 4 req/s of prefill, 10 of decode
PROMPT = {"a-tp1": 10.0, "b-tp1": 4.0}
TOKEN = {"a-tp1": 2.0, "b-tp1": 10.0}


def test_cost_budget_by_hand():
    # prompt capacity per $: A 10, B 2; token per $: A 2, B 5 -> prompts on A, tokens on B.
    # $6: 2 A ($2, 20 req/s of prompts) + 2 B ($4, 20 req/s of tokens) -> 20 req/s
    sol = solve_phase_split([A, B], PROMPT, TOKEN, cost_budget=6.0)
    assert sol.prompt == {"a-tp1": 2} and sol.token == {"b-tp1": 2}
    assert sol.throughput == pytest.approx(20.0) and sol.cost_per_hour == pytest.approx(6.0)


def test_power_budget_by_hand():
    # prompts per W: A 0.1, B 0.013 -> prompts on A; tokens per W: A 0.02, B 0.033.
    # 2 A on prompts (200 W, 20 req/s) leave 500 W: 1 B + 2 A on tokens = 10 + 4 = 14 req/s.
    # 3 A on prompts leave 400 W: 1 B + 1 A = 12; 1 A on prompts caps z at 10. So 14.
    sol = solve_phase_split([A, B], PROMPT, TOKEN, power_budget_w=700.0)
    assert sol.throughput == pytest.approx(14.0) and sol.power_w == pytest.approx(700.0)
    assert sol.prompt == {"a-tp1": 2} and sol.token == {"a-tp1": 2, "b-tp1": 1}


def test_budget_required_and_positive():
    with pytest.raises(PlannerError, match="give cost_budget"):
        solve_phase_split([A, B], PROMPT, TOKEN)
    with pytest.raises(PlannerError, match="power_budget_w must be > 0"):
        solve_phase_split([A, B], PROMPT, TOKEN, power_budget_w=0)


SMALL = {"cost_model": "roofline", "min_requests": 40, "max_requests": 300,
         "span_lifetimes": 10.0, "min_span_s": 5.0, "verify_span_s": 20.0, "rel_tol": 0.2}


def test_plan_phase_split_measures_capacities_by_simulation():
    trace = poisson_requests(200, 5.0, prompt=(50, 1500), output=(5, 100))
    plan = plan_phase_split(trace, "llama-3.2-1b", 0.1, 0.01, ["h100", "a100-80gb"],
                            cost_budget=12.0, **SMALL)
    assert set(plan.prompt_cap) == {"h100-sxm-tp1", "a100-80gb-tp1"}
    assert all(v > 0 for v in plan.prompt_cap.values()) and all(v > 0 for v in plan.token_cap.values())
    sol = plan.solution
    assert sol.cost_per_hour <= 12.0 and sol.throughput > 0
    # the ILP's throughput is what the measured capacities allow
    assert sol.throughput <= sum(plan.prompt_cap[k] * n for k, n in sol.prompt.items()) + 1e-6
    assert sol.throughput <= sum(plan.token_cap[k] * n for k, n in sol.token.items()) + 1e-6
    assert plan.check is not None and 0 <= plan.check.attainment <= 1


def test_plan_phase_split_bad_input():
    trace = poisson_requests(50, 5.0)
    with pytest.raises(PlannerError, match="at least one GPU"):
        plan_phase_split(trace, "llama-3.2-1b", 0.1, 0.01, [], cost_budget=10)
    with pytest.raises(PlannerError, match=r"phase split: .*unknown"):
        plan_phase_split(trace, "llama-3.2-1b", 0.1, 0.01, ["nope"], cost_budget=10)
