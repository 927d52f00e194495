"""Prove a plan by simulation, and when it falls short, find the cheapest plan that does not.

The ILP fills instance types up to their measured capacity, and a type run at exactly its
capacity meets the SLO only about as often as the target demands, so a first plan can miss; the
load model (additive fractions of per-slice capacities) and bursty real traces can make it miss
further. Rather than patch one plan greedily, ``prove`` runs a cheapest-first search over
candidate plans, simulating the cheapest untried candidate each round:

* after a failed simulation, every instance type whose simulated attainment is below the target
  has its capacities derated by ``derate_step`` (cumulatively), which yields
* a re-solved ILP with those derated capacities (the mix may move load to other types),
* the current plan plus one instance of its worst type (same shares, less load per instance),
* the best single-type plan under the derated capacities. The undearated single-type baseline
  is a candidate from the start, so a proved plan never costs more than the single-type baseline
  whenever that baseline itself survives re-simulation.

The first candidate that meets the target is returned: it is the cheapest of all candidates
generated so far. At most ``verify_rounds`` re-simulations follow the first; every simulation is
recorded in ``plan.verification`` with the action that produced the candidate, and logged.
"""
from __future__ import annotations

import contextlib
import heapq
import itertools
import json
from collections.abc import Callable
from dataclasses import replace

from planner.assemble import PlanOptions, build_plan, slice_inputs
from planner.baselines import best_single_type
from planner.errors import PlannerError
from planner.ilp import solve
from planner.plan import Plan
from planner.verify import PlanCheck, simulate_plan


def _signature(plan: Plan) -> str:
    return json.dumps([sorted((g.key, g.count) for g in plan.groups),
                       sorted((s.name, sorted((k, round(v, 6)) for k, v in s.shares.items()))
                              for s in plan.slices)])


def _derated(cap: dict, derate: dict) -> dict:
    return {b: {g: c * derate.get(g, 1.0) for g, c in caps.items()} for b, caps in cap.items()}


def _record(i: int, plan: Plan, check: PlanCheck, action: str) -> dict:
    return {"round": i, "action": action, "cost_per_hour": round(plan.cost_per_hour, 4),
            "instances": {g.key: g.count for g in plan.groups},
            "attainment": round(check.attainment, 6), "meets_target": bool(check.meets_target)}


class _Candidates:
    """Untried plans, cheapest first; a plan already queued or simulated is not queued again."""

    def __init__(self):
        self.heap, self.seen, self.order = [], set(), itertools.count()

    def push(self, plan: Plan | None, action: str) -> None:
        if plan is None:
            return
        sig = _signature(plan)
        if sig not in self.seen:
            self.seen.add(sig)
            heapq.heappush(self.heap, (round(plan.cost_per_hour, 9), next(self.order), plan, action))

    def pop(self):
        return heapq.heappop(self.heap)[2:] if self.heap else (None, None)


def prove(plan: Plan, trace, slicing, types, cap: dict, reasons: dict, opts: PlanOptions,
          log: Callable = lambda s: None) -> tuple[Plan, PlanCheck]:
    """Return the cheapest simulated-proved candidate (see module docstring) and its check."""
    derate = {t.key: 1.0 for t in types}

    def resolved():
        rates, scap, _ = slice_inputs(slicing, _derated(cap, derate), reasons)
        sol = solve(types, rates, scap, opts.availability, opts.power_budget_w,
                    opts.assignment, opts.solver)
        return build_plan(slicing, types, sol, cap, opts, plan.trace)

    def single():
        rates, scap, _ = slice_inputs(slicing, _derated(cap, derate), reasons)
        best = best_single_type(types, rates, scap, opts.availability, opts.power_budget_w,
                                opts.solver)
        if best is None:
            return None
        return build_plan(slicing, [best[0]], best[1], cap, opts, plan.trace)

    queue = _Candidates()
    queue.push(plan, "initial plan")
    if len(types) > 1:  # the single-type baseline is a candidate from the start
        with contextlib.suppress(PlannerError):
            queue.push(single(), "best single type")
    history: list[dict] = []
    best_fail = None
    for i in range(opts.verify_rounds + 1):
        cand, action = queue.pop()
        if cand is None:
            break
        check = simulate_plan(cand, trace, opts.seed, max_requests=opts.verify_requests)
        history.append(_record(i, cand, check, action))
        log(f"verify: round {i}: {action}: attainment {check.attainment:.1%} at "
            f"${cand.cost_per_hour:.2f}/h -> {'meets' if check.meets_target else 'below'} target")
        if check.meets_target:
            return replace(cand, verification=history), check
        if best_fail is None or check.attainment > best_fail[1].attainment:
            best_fail = (cand, check)
        missed = check.per_type[check.per_type["attainment"] < check.target]
        for key in missed["type"]:
            derate[key] = derate.get(key, 1.0) * (1 - opts.derate_step)
        what = ", ".join(f"{k} to {derate[k]:.0%}" for k in missed["type"])
        try:
            queue.push(resolved(), f"re-solved with capacities of {what}")
        except PlannerError as exc:  # availability or power leave no room
            log(f"verify: re-solve with derated capacities infeasible: {exc}")
        worst = check.per_type.sort_values(["attainment", "busy_fraction"],
                                           ascending=[True, False], kind="stable").iloc[0]
        key = str(worst["type"])
        queue.push(replace(cand, groups=[replace(g, count=g.count + 1) if g.key == key else g
                                         for g in cand.groups]),
                   f"+1 {key} to a plan where it met {worst['attainment']:.1%}")
        if len(types) > 1:
            with contextlib.suppress(PlannerError):
                queue.push(single(), f"best single type with capacities of {what}")
    assert best_fail is not None  # the initial plan is always simulated
    cand, check = best_fail
    log(f"verify: WARNING no candidate met the {check.target:.0%} target in "
        f"{len(history)} simulations; best attainment {check.attainment:.1%}: NOT proved")
    return replace(cand, verification=history), check
