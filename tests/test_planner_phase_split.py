"""Phase split: the optimisation solved by hand, and the honest refusal to invent capacities."""
from __future__ import annotations

import pytest

from planner.errors import PlannerError
from planner.ilp import InstanceType
from planner.phase_split import plan_phase_split, solve_phase_split

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


def test_plan_phase_split_says_what_is_missing():
    with pytest.raises(PlannerError, match=r"disaggregated prefill/decode simulation.*KV-cache "
                                           r"transfer"):
        plan_phase_split(None, "llama-3.1-8b", 0.5, 0.05, ["l4", "h100"], cost_budget=100)
