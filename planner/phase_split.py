"""Splitwise-style phase-split provisioning: prompt machines and token machines, chosen apart.

Splitwise runs the prefill (prompt) phase and the decode (token) phase of each request on
different machine pools, possibly of different GPU types, and moves the KV cache between them.
Provisioning it means choosing how many machines of which type go to each pool, under a cost or
power budget, to maximise the throughput the pair sustains within the SLOs.

What exists here is the optimisation, which is exact given per-phase capacities:
``solve_phase_split`` maximises z (req/s) subject to z <= sum_p n_p * prompt_cap_p,
z <= sum_t m_t * token_cap_t, and the budget, with integer machine counts (PuLP, CBC).

``plan_phase_split`` measures those capacities by simulation (goodput.planner.placement): a prompt
machine's capacity is the largest rate one prefill-only instance of that type sustains with TTFT
attainment at the target, its KV handed over the modelled fabric to a decode pool that is never
the bottleneck; a token machine's is the largest rate one decode-only instance sustains with TPOT
attainment at the target (TPOT counted from the first token, so the KV hand-off is in it), fed by
enough prompt machines. Then it solves, and re-simulates the chosen pools once (``check``).
Mixed (colocated) machines are not in the optimisation: compare against goodput.planner.capacity's
colocated capacity at the same budget (benchmarks/splitwise.py does).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import pulp

from goodput.planner.errors import PlannerError
from goodput.planner.ilp import InstanceType, cbc, new_var


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


@dataclass
class PhaseSplitPlan:
    solution: PhaseSplitSolution
    prompt_cap: dict[str, float]  # type key -> req/s of one prompt machine
    token_cap: dict[str, float]  # type key -> req/s of one token machine
    check: object | None  # goodput.planner.placement.Check of the chosen pools at solution.throughput


def measure_phase_caps(lengths, model: str, ttft_s: float, tpot_s: float, types: list[InstanceType],
                       **task_options) -> tuple[dict[str, float], dict[str, float]]:
    """Prompt and token capacity (req/s) of one machine of each type, by simulation."""
    from goodput.planner.placement import PlacementTask, decode_capacity, prefill_capacity

    def task(prefill_gpu: str, decode_gpu: str) -> PlacementTask:
        return PlacementTask(model, prefill_gpu, decode_gpu, lengths, ttft_s, tpot_s,
                             **task_options)

    prompt = {t.key: prefill_capacity(task(t.gpu, t.gpu), t.tp) for t in types}
    feed = max(prompt.values(), key=lambda c: c.rate)
    token = {t.key: decode_capacity(task(feed.gpu, t.gpu), t.tp, feed) for t in types}
    return {k: c.rate for k, c in prompt.items()}, {k: c.rate for k, c in token.items()}


def plan_phase_split(trace, model: str, ttft_s: float, tpot_s: float, gpus: list[str],
                     cost_budget: float | None = None, power_budget_w: float | None = None,
                     tps: tuple[int, ...] = (1,), verify: bool = True,
                     **task_options) -> PhaseSplitPlan:
    """Splitwise provisioning: measure per-phase capacities of every (GPU, TP) machine type by
    simulation, maximise throughput within the budget, re-simulate the chosen pools once."""
    from goodput.sim.catalog import get_gpu

    if not gpus:
        raise PlannerError("phase split: give at least one GPU type")
    try:
        specs = [get_gpu(g) for g in gpus]
    except ValueError as exc:
        raise PlannerError(f"phase split: {exc}") from None
    types = [InstanceType(g.name, tp, g.price_per_hour, g.tdp_w) for g in specs for tp in tps]
    df = trace.df if hasattr(trace, "df") else trace
    lengths = df[["prompt_tokens", "output_tokens"]].to_numpy()
    prompt_cap, token_cap = measure_phase_caps(lengths, model, ttft_s, tpot_s, types,
                                               **task_options)
    if not any(prompt_cap.values()) or not any(token_cap.values()):
        raise PlannerError(f"phase split: no machine type meets the SLO in the "
                           f"{'prompt' if not any(prompt_cap.values()) else 'token'} phase "
                           f"(TTFT {ttft_s} s, TPOT {tpot_s} s) for {model} on {gpus}")
    sol = solve_phase_split(types, prompt_cap, token_cap, cost_budget, power_budget_w)
    check = None
    if verify and sol.throughput > 0:
        check = verify_split(sol, types, lengths, model, ttft_s, tpot_s, **task_options)
    return PhaseSplitPlan(sol, prompt_cap, token_cap, check)


def verify_split(sol: PhaseSplitSolution, types: list[InstanceType], lengths, model: str,
                 ttft_s: float, tpot_s: float, rate: float | None = None, **task_options):
    """One full simulation of the solution's pools at ``rate`` (default: its throughput)."""
    from goodput.planner.placement import PlacementTask, Sample, config, run_check

    by = {t.key: t for t in types}
    groups = ([("prefill", by[k].gpu, by[k].tp, n) for k, n in sol.prompt.items()]
              + [("decode", by[k].gpu, by[k].tp, n) for k, n in sol.token.items()])
    task = PlacementTask(model, groups[0][1], groups[-1][1], lengths, ttft_s, tpot_s,
                         **task_options)
    r = rate or sol.throughput
    n = min(task.max_requests, max(task.min_requests, math.ceil(task.verify_span_s * r)))
    return run_check(config(task, groups), Sample(task).at(r, n), task)
