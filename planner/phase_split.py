"""Splitwise-style phase-split provisioning: prompt machines and token machines, chosen apart.

Splitwise runs the prefill (prompt) phase and the decode (token) phase of each request on
different machine pools, possibly of different GPU types, and moves the KV cache between them.
Provisioning it means choosing how many machines of which type go to each pool, under a cost or
power budget, to maximise the throughput the pair sustains within the SLOs.

What exists here is the optimisation, which is exact given per-phase capacities:
``solve_phase_split`` maximises z (req/s) subject to z <= sum_p n_p * prompt_cap_p,
z <= sum_t m_t * token_cap_t, and the budget, with integer machine counts (PuLP, CBC).

What does not exist yet is an honest source of those capacities. A prompt machine's capacity
needs TTFT including the KV transfer to a token machine; a token machine's capacity needs decode
iterations fed by transferred KV caches rather than local prefills. Both need the disaggregated
prefill/decode simulation (separate pools, a KV-transfer link model, a two-stage router), which
the simulator does not have. ``plan_phase_split`` therefore raises PlannerError naming exactly
that, instead of estimating capacities from the colocated simulation, which would be the number
Splitwise exists to beat.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import pulp

from planner.errors import PlannerError
from planner.ilp import InstanceType, cbc, new_var

MISSING = ("the disaggregated prefill/decode simulation: prompt-only and token-only instance "
           "pools, a KV-cache transfer model between them (link bandwidth and latency per GPU "
           "pair), and a two-stage router; sim/ simulates colocated instances only")


@dataclass
class PhaseSplitSolution:
    prompt: dict[str, int]  # type key -> prompt machines
    token: dict[str, int]  # type key -> token machines
    throughput: float  # req/s the pair sustains
    cost_per_hour: float
    power_w: float
    solve_s: float


def solve_phase_split(types: list[InstanceType], prompt_cap: dict[str, float],
                      token_cap: dict[str, float], cost_budget: float | None = None,
                      power_budget_w: float | None = None) -> PhaseSplitSolution:
    """Maximise sustained req/s given per-machine phase capacities (req/s) and a budget."""
    if cost_budget is None and power_budget_w is None:
        raise PlannerError("phase split: give cost_budget ($/h) or power_budget_w (W); without "
                           "a budget throughput is unbounded")
    for name, b in (("cost_budget", cost_budget), ("power_budget_w", power_budget_w)):
        if b is not None and not b > 0:
            raise PlannerError(f"phase split: {name} must be > 0, got {b}")
    prob = pulp.LpProblem("phase_split", pulp.LpMaximize)
    z = new_var(prob, "z", 0)
    p = {t.key: new_var(prob, f"p_{i}", 0, None, "Integer") for i, t in enumerate(types)}
    m = {t.key: new_var(prob, f"m_{i}", 0, None, "Integer") for i, t in enumerate(types)}
    prob += z
    prob += z <= pulp.lpSum(prompt_cap.get(k, 0.0) * v for k, v in p.items())
    prob += z <= pulp.lpSum(token_cap.get(k, 0.0) * v for k, v in m.items())
    if cost_budget is not None:
        prob += pulp.lpSum(t.instance_price * (p[t.key] + m[t.key]) for t in types) <= cost_budget
    if power_budget_w is not None:
        prob += pulp.lpSum(t.instance_power_w * (p[t.key] + m[t.key]) for t in types) \
            <= power_budget_w
    t0 = time.perf_counter()
    prob.solve(cbc())
    if pulp.LpStatus[prob.status] != "Optimal":
        raise PlannerError(f"phase split: solver status {pulp.LpStatus[prob.status]}")
    pc = {k: round(v.value() or 0) for k, v in p.items() if round(v.value() or 0)}
    tc = {k: round(v.value() or 0) for k, v in m.items() if round(v.value() or 0)}
    by = {t.key: t for t in types}
    both = [(k, n) for k, n in list(pc.items()) + list(tc.items())]
    return PhaseSplitSolution(pc, tc, float(z.value() or 0.0),
                              sum(by[k].instance_price * n for k, n in both),
                              sum(by[k].instance_power_w * n for k, n in both),
                              time.perf_counter() - t0)


def plan_phase_split(trace, model: str, ttft_s: float, tpot_s: float, gpus: list[str],
                     cost_budget: float | None = None, power_budget_w: float | None = None):
    """Not available until the simulator can run disaggregated prefill/decode pools."""
    raise PlannerError(f"phase-split (Splitwise) provisioning for {model} on {gpus} needs "
                       f"per-phase capacities measured by simulation, which needs {MISSING}. "
                       f"solve_phase_split() takes such capacities once they can be measured; "
                       f"until then use the colocated plan (goodput plan)")
