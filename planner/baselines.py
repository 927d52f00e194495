"""Baselines: the cheapest allocation that uses a single instance type for everything.

Mélange's savings are measured against the best homogeneous cluster for the same workload and
SLOs; this computes it from the same capacity table and the same ILP (restricted to one type),
so the comparison differs only in the freedom to mix types. A type that misses the SLO on some
slice cannot be a single-type baseline; ``single_type_table`` says which limit rules it out.
"""
from __future__ import annotations

import pandas as pd

from goodput.planner.errors import PlannerError
from goodput.planner.ilp import InstanceType, Solution, solve


def single_type_table(types: list[InstanceType], rates: dict[str, float],
                      cap: dict[str, dict[str, float]], availability=None,
                      power_budget_w=None, solver: str = "cbc") -> pd.DataFrame:
    """One row per type: instances and $/h it needs alone, or why it cannot serve alone."""
    rows = []
    for t in types:
        try:
            sol = solve([t], rates, {s: {t.key: c.get(t.key, 0.0)} for s, c in cap.items()},
                        _only(availability, t), power_budget_w, solver=solver)
            rows.append({"type": t.key, "instances": sol.counts.get(t.key, 0),
                         "cost_per_hour": sol.cost_per_hour, "why_not": ""})
        except PlannerError as exc:
            rows.append({"type": t.key, "instances": None, "cost_per_hour": None,
                         "why_not": str(exc)})
    return pd.DataFrame(rows)


def best_single_type(types: list[InstanceType], rates: dict[str, float],
                     cap: dict[str, dict[str, float]], availability=None,
                     power_budget_w=None, solver: str = "cbc") -> tuple[InstanceType, Solution] | None:
    """The cheapest single-type solution (ties: the earlier type), or None if no type serves all."""
    best = None
    for t in types:
        try:
            sol = solve([t], rates, {s: {t.key: c.get(t.key, 0.0)} for s, c in cap.items()},
                        _only(availability, t), power_budget_w, solver=solver)
        except PlannerError:
            continue
        if best is None or sol.cost_per_hour < best[1].cost_per_hour - 1e-9:
            best = (t, sol)
    return best


def _only(availability, t: InstanceType):
    if not availability:
        return None
    return {k: v for k, v in availability.items() if k.lower() == t.gpu.lower()} or None


def savings(mixed_cost: float, single_cost: float | None) -> float | None:
    """Fraction of the single-type cost the mix saves (0.3 = 30% cheaper)."""
    if single_cost is None or single_cost <= 0:
        return None
    return 1.0 - mixed_cost / single_cost
