"""One search over the whole design: scheduler choices x GPU mix, pruned by bounds, every finalist
proved by simulation.

``search_designs`` takes the designs of a ``DesignSpace`` (batching policy, Sarathi token
budget, speculation: goodput.planner.design_space) and, for each, lets the Mélange ILP choose GPU types
and TP degrees. Proving a design costs fine capacity searches and re-simulations, so it is
bounded first:

1. **Screen** (cheap): every design's capacities are measured with a coarse bracket
   (``screen_rel_tol``, default 0.5: a few probes instead of ~8), all designs in one parallel
   batch. Each (bucket, type) gives a rate that passed (``rate``) and the smallest probed rate
   above it that failed (``CapacityResult.upper``). The ILP at the passing rates is the
   design's *estimate*; the ILP at the failing rates is its *bound*.
2. **Why the bound is safe.** The fine search that a finalist gets replays prefixes of the same
   request stream at the same rates (the stream is seeded by the search settings, and a probe's
   length depends only on its rate), so with attainment monotone in the rate its capacity lies
   below the screen's failing rate; the ILP's cost only falls as capacities grow, and the proof
   (goodput.planner.prove) only raises a plan's cost from the ILP's. So no plan the planner could prove
   for a design costs less than its bound: a design whose bound is at least the best verified
   cost is **pruned** with that reason, never simulated, and cannot be the cheaper one.
3. **Finalists** are taken in order of estimate and planned in full (``make_plan``: fine
   capacities, ILP, proof by re-simulation of the trace, best single type); after each, designs
   whose bound reaches the best verified cost are pruned. At most ``max_finalists`` are planned
   (the rest are listed as not simulated, with their estimate), and ``max_minutes`` stops the
   search with the best verified design so far (the screen always completes, and at least one
   finalist is planned, so there is a plan to return).

Disaggregated designs (``--search mode=...,disaggregated``) are screened on phase capacities
instead (goodput.planner.design_disagg: the cheapest prefill + decode pair; its bound comes from the
same searches' failing rates) and proved by re-simulating the trace on the two pools.

The result is the cheapest verified design and a table of every design: estimate, bound,
verified $/h and attainment, status and why it was pruned.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from goodput.planner.assemble import PlanOptions, check_options, slice_inputs
from goodput.planner.capacity import CapacityCache, CapacityTask, SearchSettings, measure
from goodput.planner.design_space import Design, DesignSpace, SpecSettings
from goodput.planner.errors import PlannerError
from goodput.planner.ilp import solve
from goodput.planner.parallel import progress_bars
from goodput.planner.pipeline import PlanOutcome, instance_types, make_plan, planning_slices

#: a capacity the screen never saw fail counts as this (req/s) in the bound: effectively free
UNBOUNDED = 1e9


@dataclass
class Candidate:
    """One design through the search."""

    design: Design
    scheduler: dict
    estimate: float | None = None  # ILP $/h at the screen's passing rates (not verified)
    bound: float | None = None  # ILP $/h at the screen's failing rates: no proved plan is cheaper
    status: str = ""  # chosen | verified | not proved | pruned | not simulated
    why: str = ""
    cost: float | None = None  # the design's verified (or best unproved) plan, $/h
    attainment: float | None = None
    outcome: PlanOutcome | None = None
    screen: Any = None  # a disaggregated design's phase capacities (goodput.planner.design_disagg)

    def row(self) -> dict:
        return {"design": self.design.name, "mode": self.design.mode,
                "policy": self.design.policy,
                "token_budget": self.design.token_budget,
                "speculation": self.design.speculation.name,
                "estimate_cost": _r(self.estimate), "lower_bound_cost": _r(self.bound),
                "cost": _r(self.cost), "attainment": _r(self.attainment, 6),
                "verified": self.status in ("chosen", "verified"), "status": self.status,
                "why": self.why,
                "mix": "" if self.outcome is None else " + ".join(
                    f"{g.count} {g.key}" for g in self.outcome.plan.groups)}


def _r(v, nd: int = 4):
    return None if v is None else round(float(v), nd)


@dataclass
class SearchOutcome:
    best: PlanOutcome  # the chosen design's plan (its summary names the design)
    chosen: Design
    table: pd.DataFrame  # one row per design (Candidate.row)
    wall_s: float


def screen(trace, opts: PlanOptions, cands: list[Candidate], rel_tol: float,
           log: Callable = lambda s: None) -> None:
    """Estimate and bound of every candidate from one coarse capacity batch (module docstring)."""
    slicing, _ = planning_slices(trace, opts)
    settings = SearchSettings(opts.attainment_target, opts.min_probe_requests,
                              opts.max_probe_requests, opts.span_e2e, rel_tol, seed=opts.seed)
    per: list[tuple[Candidate, list, list]] = []
    tasks: list[CapacityTask] = []
    for c in cands:
        if c.design.mode == "disaggregated":
            _screen_disagg(trace, opts, c, slicing.total_rate, log)
            continue
        try:
            types, _ = instance_types(opts.model, opts.gpus, opts.tps, c.scheduler, opts.prices)
        except PlannerError as exc:
            c.status, c.why = "pruned", f"infeasible: {exc}"
            continue
        mine = [CapacityTask(opts.model, t.gpu, t.tp, opts.ttft_s, opts.tpot_s, b.lengths,
                             c.scheduler, opts.cost_model, settings, b.label)
                for b in slicing.buckets for t in types]
        per.append((c, types, mine))
        tasks += mine
    cache = CapacityCache(opts.cache_dir, opts.use_cache)
    if not per:
        return
    log(f"screen: {len(tasks)} coarse capacity searches (rel_tol {rel_tol:g}) for "
        f"{len(per)} designs x {len(slicing.buckets)} buckets")
    with progress_bars("screening designs" if opts.progress else None):
        results = iter(measure(tasks, cache, opts.backend, opts.workers))
    for c, types, mine in per:
        lo: dict[str, dict[str, float]] = {}
        hi: dict[str, dict[str, float]] = {}
        reasons: dict[str, dict[str, str]] = {}
        for task, t in zip(mine, [t for _ in slicing.buckets for t in types], strict=True):
            r = next(results)
            lo.setdefault(task.label, {})[t.key] = r.rate
            up = r.upper(settings.attainment_target)
            hi.setdefault(task.label, {})[t.key] = UNBOUNDED if math.isinf(up) else up
            if r.rate <= 0:
                reasons.setdefault(task.label, {})[t.key] = r.limit
        rates, scap_hi, sreasons = slice_inputs(slicing, hi, reasons)
        try:
            c.bound = solve(types, rates, scap_hi, opts.availability, opts.power_budget_w,
                            opts.assignment, opts.solver, reasons=sreasons).cost_per_hour
        except PlannerError as exc:
            c.status, c.why = "pruned", f"infeasible even at the screen's failing rates: {exc}"
            continue
        _, scap_lo, _ = slice_inputs(slicing, lo, reasons)
        try:
            c.estimate = solve(types, rates, scap_lo, opts.availability, opts.power_budget_w,
                               opts.assignment, opts.solver, reasons=sreasons).cost_per_hour
        except PlannerError:
            c.estimate = None  # some slice passed no screen probe: finalist only on its bound
        log(f"screen {c.design.name}: estimate "
            f"{'-' if c.estimate is None else f'${c.estimate:.2f}/h'}, bound ${c.bound:.2f}/h")


def check_search(opts: PlanOptions, max_finalists: int, screen_rel_tol: float) -> None:
    """PlannerError naming the flag, before any trace is read or capacity measured."""
    check_options(opts)
    if not opts.verify:
        raise PlannerError("--search proves every finalist by simulation: drop --no-verify")
    if isinstance(max_finalists, bool) or not isinstance(max_finalists, int) or max_finalists < 1:
        raise PlannerError(f"--finalists={max_finalists!r}: must be a whole number >= 1")
    if not (isinstance(screen_rel_tol, (int, float)) and 0 < screen_rel_tol <= 4):
        raise PlannerError(f"--screen-rel-tol={screen_rel_tol!r}: must be in (0, 4]")


def _screen_disagg(trace, opts: PlanOptions, c: Candidate, rate: float, log: Callable) -> None:
    from goodput.planner.design_disagg import screen_disagg

    try:
        c.screen = screen_disagg(trace, opts, c.design.policy, rate, log)
    except PlannerError as exc:
        c.status, c.why = "pruned", f"infeasible: {exc}"
        return
    if c.screen.bound is None:
        c.status, c.why = "pruned", "infeasible: no prefill + decode pair meets the SLO"
        return
    c.bound = c.screen.bound.cost
    c.estimate = None if c.screen.estimate is None else c.screen.estimate.cost
    log(f"screen {c.design.name}: estimate "
        f"{'-' if c.estimate is None else f'${c.estimate:.2f}/h'}, bound ${c.bound:.2f}/h")


def search_designs(trace, opts: PlanOptions, space: DesignSpace, spec: SpecSettings,
                   max_finalists: int = 4, screen_rel_tol: float = 0.5,
                   log: Callable = lambda s: None) -> SearchOutcome:
    """The cheapest verified design of ``space`` (module docstring); PlannerError if none can
    be planned at all."""
    t0 = time.monotonic()
    check_search(opts, max_finalists, screen_rel_tol)
    deadline = t0 + 60 * opts.max_minutes if opts.max_minutes else None
    cands = [Candidate(d, d.scheduler(opts.scheduler, spec)) for d in space.designs()]
    log(f"search: {len(cands)} designs: " + "; ".join(c.design.name for c in cands))
    screen(trace, opts, cands, screen_rel_tol, log)
    order = sorted((c for c in cands if not c.status),
                   key=lambda c: (c.estimate is None, c.estimate or c.bound or 0.0, c.bound or 0.0))
    best: Candidate | None = None
    done = 0
    bar = _bar(opts, len(order))
    for c in order:
        if best is not None and c.bound is not None and best.cost is not None \
                and c.bound >= best.cost * (1 - 1e-6):
            c.status = "pruned"
            c.why = (f"lower bound ${c.bound:.2f}/h >= verified ${best.cost:.2f}/h of "
                     f"{best.design.name}")
        elif done >= max_finalists:
            c.status, c.why = "not simulated", f"beyond the {max_finalists} finalists (--finalists)"
        elif deadline is not None and time.monotonic() > deadline and done > 0:
            c.status, c.why = "not simulated", "the --max-minutes budget ran out"
        else:
            done += 1
            _finalist(trace, opts, c, deadline, log)
            if c.status == "verified" and c.cost is not None and (
                    best is None or best.cost is None or c.cost < best.cost - 1e-9):
                best = c
        if bar is not None:
            bar(1)
    planned = [c for c in cands if c.outcome is not None]
    if not planned:
        why = "; ".join(f"{c.design.name}: {c.why}" for c in cands)
        raise PlannerError(f"no design could be planned: {why}")
    chosen = best or max(planned, key=lambda c: c.attainment or 0.0)
    if best is not None:
        chosen.status = "chosen"
    else:
        log("search: WARNING no design was proved; returning the best attainment, NOT proved")
    table = pd.DataFrame([c.row() for c in cands])
    out = chosen.outcome
    assert out is not None
    out.designs = table
    out.plan = replace(out.plan, summary={**out.plan.summary, "design": {
        "name": chosen.design.name, "scheduler": chosen.scheduler,
        "designs_searched": len(cands), "finalists": done}})
    log(f"search: chose {chosen.design.name} at ${chosen.cost:.2f}/h "
        f"({'verified' if best is not None else 'NOT proved'}); {done} finalists simulated, "
        f"{sum(c.status == 'pruned' for c in cands)} pruned")
    return SearchOutcome(out, chosen.design, table, time.monotonic() - t0)


def _finalist(trace, opts: PlanOptions, c: Candidate, deadline: float | None,
              log: Callable) -> None:
    left = None if deadline is None else max((deadline - time.monotonic()) / 60, 1e-3)
    o = replace(opts, scheduler=c.scheduler, max_minutes=left)
    log(f"finalist {c.design.name}: planning with fine capacities and proving by simulation")
    try:
        if c.design.mode == "disaggregated":
            from goodput.planner.design_disagg import finalist_disagg

            out = finalist_disagg(trace, o, c.design.policy, c.screen, lambda s: log(f"  {s}"))
        else:
            out = make_plan(trace, o, log=lambda s: log(f"  {s}"))
    except PlannerError as exc:
        c.status, c.why = "pruned", f"infeasible with fine capacities: {exc}"
        return
    c.outcome, c.cost = out, out.plan.cost_per_hour
    c.attainment = out.check.attainment if out.check is not None else None
    c.status = "verified" if out.verified else "not proved"
    c.why = "" if out.verified else "no plan met the target within the proof's budget"


def _bar(opts: PlanOptions, total: int):
    if not opts.progress:
        return None
    from tqdm import tqdm

    bar = tqdm(total=total, desc="design finalists", unit="design", leave=False, disable=None)
    return bar.update


def designs_table(df: pd.DataFrame) -> str:
    cols = ["design", "cost", "attainment", "verified", "status", "estimate_cost",
            "lower_bound_cost", "mix", "why"]
    return df[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}",
                              na_rep="-", max_colwidth=70)
