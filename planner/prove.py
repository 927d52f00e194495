"""Prove a plan by simulation, and when it falls short, converge on one that does not.

The ILP fills instance types up to their measured capacity, and a type run at exactly its
capacity meets the SLO only about as often as the target demands, so a first plan can miss; the
load model (additive fractions of per-slice capacities) and bursty real traces can make it miss
further. ``prove`` walks one trajectory whose state only ever tightens, so it cannot oscillate:

* **derate** (monotone): after a failed simulation, every (bucket, type) pair whose simulated
  attainment is below the target has its capacity multiplied by
  ``clip(1 - (target - attainment) / 2, 0.75, 1 - derate_step)``; a derating is never undone, so the
  re-solved ILP's feasible set only shrinks and its cost never falls from round to round;
* **add** (if still short): when the re-solved ILP returns a plan already simulated, or cannot
  be solved within availability/power, every type serving a failing pair gets one more instance
  (a lower bound on its count, kept in every later solve), and the ILP is solved again; if that
  too repeats a plan, the instance is added with the plan's shares kept;
* it stops at the first plan that meets the target, or when no instance can be added within
  availability and power (reported: no plan within the limits met the target), or at the round
  or ``max_minutes`` budget, which returns the best plan so far, flagged when it is not proved.

Every simulation is recorded in ``plan.verification`` (round, action, cost, attainment) and
logged, so a reader sees each round's cost and attainment.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pandas as pd

from goodput.planner.assemble import PlanOptions, build_plan, slice_inputs
from goodput.planner.errors import PlannerError
from goodput.planner.ilp import solve
from goodput.planner.plan import Plan
from goodput.planner.verify import PlanCheck, simulate_plan


def _signature(plan: Plan) -> str:
    return json.dumps([sorted((g.key, g.count) for g in plan.groups),
                       sorted((s.name, sorted((k, round(v, 6)) for k, v in s.shares.items()))
                              for s in plan.slices)])


def _record(i: int, plan: Plan, check: PlanCheck, action: str) -> dict:
    return {"round": i, "action": action, "cost_per_hour": round(plan.cost_per_hour, 4),
            "instances": {g.key: g.count for g in plan.groups},
            "attainment": round(check.attainment, 6), "meets_target": bool(check.meets_target)}


def pair_attainment(check: PlanCheck) -> pd.DataFrame:
    """Simulated attainment per (bucket, type) pair: bucket, type, requests, attainment."""
    req = check.requests
    if req.empty or "type" not in req:
        return pd.DataFrame(columns=["bucket", "type", "requests", "attainment"])
    df = req.assign(type=req["type"].fillna("(unserved)"))
    return (df.groupby(["bucket", "type"], sort=False)["slo_met"]
            .agg(requests="size", attainment="mean").reset_index())


def derate_factor(attainment: float, target: float, step: float) -> float:
    """How much one failed round cuts a pair's capacity: by half its shortfall, at least
    ``step``, at most a quarter (an overloaded instance fails every pair it serves, so a full
    shortfall would overshoot; the cut repeats while the pair still fails)."""
    return min(1 - step, max(0.75, 1 - 0.5 * (target - attainment)))


@dataclass
class ProofState:
    """What the search has learned; both maps only ever tighten."""

    derate: dict[tuple[str, str], float] = field(default_factory=dict)  # (bucket, type) -> factor
    floor: dict[str, int] = field(default_factory=dict)  # type key -> min instances

    def capacities(self, cap: dict) -> dict:
        return {b: {g: c * self.derate.get((b, g), 1.0) for g, c in caps.items()}
                for b, caps in cap.items()}

    def tighten(self, pairs: pd.DataFrame, target: float, step: float) -> list[str]:
        """Derate every failing pair (never raising a factor); returns what changed, as text."""
        changed = []
        for bucket, typ, att in zip(pairs["bucket"].astype(str), pairs["type"].astype(str),
                                    pairs["attainment"].astype(float), strict=True):
            if att >= target or typ == "(unserved)":
                continue
            key = (bucket, typ)
            new = self.derate.get(key, 1.0) * derate_factor(att, target, step)
            self.derate[key] = min(self.derate.get(key, 1.0), new)
            changed.append(f"{typ}@{bucket} to {self.derate[key]:.0%}")
        return changed


def _fits(plan: Plan, types, opts: PlanOptions, add: dict[str, int]) -> bool:
    """Whether ``plan`` plus ``add`` instances stays within availability and the power budget."""
    by_key = {t.key: t for t in types}
    counts = {g.key: g.count for g in plan.groups}
    for k, n in add.items():
        counts[k] = counts.get(k, 0) + n
    for gpu, limit in (opts.availability or {}).items():
        used = sum(by_key[k].tp * n for k, n in counts.items() if by_key[k].gpu.lower() == gpu.lower())
        if used > limit:
            return False
    if opts.power_budget_w is not None:
        return sum(by_key[k].instance_power_w * n for k, n in counts.items()) <= opts.power_budget_w
    return True


def _failing_types(pairs: pd.DataFrame, target: float) -> list[str]:
    bad = pairs[(pairs["attainment"] < target) & (pairs["type"] != "(unserved)")]
    if bad.empty:  # overall short but every pair fine (or unserved requests): the worst type
        served = pairs[pairs["type"] != "(unserved)"]
        return [] if served.empty else [str(served.sort_values("attainment").iloc[0]["type"])]
    missed = bad.assign(miss=bad["requests"] * (1 - bad["attainment"]))
    return [str(t) for t in missed.groupby("type")["miss"].sum().sort_values(ascending=False).index]


def prove(plan: Plan, trace, slicing, types, cap: dict, reasons: dict, opts: PlanOptions,
          log: Callable = lambda s: None, deadline: float | None = None,
          progress: Callable | None = None) -> tuple[Plan, PlanCheck]:
    """Return the first simulated-proved plan of the trajectory (module docstring) and its check.

    ``deadline`` (time.monotonic) or ``opts.max_minutes`` bound the search; ``progress(i)`` is
    called after each simulation (a progress bar's update)."""
    if deadline is None and opts.max_minutes:
        deadline = time.monotonic() + 60 * float(opts.max_minutes)
    state = ProofState()
    seen: set[str] = set()
    by_key = {t.key: t for t in types}

    def resolved() -> Plan:
        rates, scap, _ = slice_inputs(slicing, state.capacities(cap), reasons)
        sol = solve(types, rates, scap, opts.availability, opts.power_budget_w, opts.assignment,
                    opts.solver, min_counts={k: v for k, v in state.floor.items() if k in by_key})
        return build_plan(slicing, types, sol, cap, opts, plan.trace)

    history: list[dict] = []
    best_fail: tuple[Plan, PlanCheck] | None = None
    cand: Plan | None = plan
    action = "initial plan (ILP)"
    stop = ""
    for i in range(opts.verify_rounds + 1):
        assert cand is not None
        seen.add(_signature(cand))
        check = simulate_plan(cand, trace, opts.seed, max_requests=opts.verify_requests)
        history.append(_record(i, cand, check, action))
        log(f"verify: round {i}: {action}: ${cand.cost_per_hour:.2f}/h, attainment "
            f"{check.attainment:.1%} -> {'meets' if check.meets_target else 'below'} target")
        if progress is not None:
            progress(i)
        if check.meets_target:
            return replace(cand, verification=history), check
        if best_fail is None or check.attainment > best_fail[1].attainment:
            best_fail = (cand, check)
        if deadline is not None and time.monotonic() > deadline:
            stop = "the --max-minutes budget ran out"
            break
        pairs = pair_attainment(check)
        changed = state.tighten(pairs, check.target, opts.derate_step)
        cand, action = _next(cand, state, pairs, check.target, changed, seen, resolved,
                             types, opts, log)
        if cand is None:
            stop = "no instance can be added within availability and the power budget"
            break
    else:
        stop = f"the round budget (--verify-rounds {opts.verify_rounds}) ran out"
    assert best_fail is not None  # the initial plan is always simulated
    fail_plan, fail_check = best_fail
    log(f"verify: WARNING no plan met the {fail_check.target:.0%} target in {len(history)} "
        f"simulations ({stop}); best attainment {fail_check.attainment:.1%} at "
        f"${fail_plan.cost_per_hour:.2f}/h: NOT proved")
    return replace(fail_plan, verification=history), fail_check


def _new_solution(resolved: Callable, seen: set[str], log: Callable, what: str) -> Plan | None:
    """The re-solved plan if it is one not tried yet (None if tried or infeasible, logged)."""
    try:
        nxt = resolved()
    except PlannerError as exc:
        log(f"verify: re-solve with {what} infeasible: {exc}")
        return None
    return nxt if _signature(nxt) not in seen else None


def _next(cand: Plan, state: ProofState, pairs: pd.DataFrame, target: float, changed: list[str],
          seen: set[str], resolved: Callable, types, opts: PlanOptions, log: Callable):
    """The next candidate: the re-solve under tighter capacities, else one with added instances."""
    what = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
    nxt = _new_solution(resolved, seen, log, "derated capacities")
    if nxt is not None:
        return nxt, f"re-solved with capacities of {what or 'unchanged pairs'}"
    failing = [k for k in _failing_types(pairs, target) if _fits(cand, types, opts, {k: 1})]
    if not failing:
        return None, ""
    add: dict[str, int] = {}
    for k in failing:  # one more instance of every failing type that still fits
        if _fits(cand, types, opts, {**add, k: 1}):
            add[k] = 1
    counts = {g.key: g.count for g in cand.groups}
    for k, n in add.items():
        state.floor[k] = max(state.floor.get(k, 0), counts.get(k, 0) + n)
    text = ", ".join(f"+{n} {k}" for k, n in add.items())
    nxt = _new_solution(resolved, seen, log, "added instances")
    if nxt is not None:
        return nxt, f"{text} (where slices fail), re-solved"
    # the same shares, more instances: less load on every instance of the failing types (a
    # failing type serves a slice, so it is one of the plan's groups)
    nxt = replace(cand, groups=[replace(g, count=g.count + add.get(g.key, 0))
                                for g in cand.groups])
    if _signature(nxt) in seen:
        return None, ""
    return nxt, f"{text} (where slices fail), shares kept"
