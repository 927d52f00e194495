"""End to end: trace -> slices -> capacities -> ILP -> plan -> proof by re-simulation.

``make_plan`` is what ``goodput plan`` runs; the helpers here (types the model fits on, the
capacity table) are shared with the SLO sweep (``planner.sweep``). The options and the steps
that turn a solution into a Plan live in ``planner.assemble``, which the proof search
(``planner.prove``) imports too, so this module imports ``prove`` and not the other way round;
``PlanOptions``, ``slice_inputs``, ``build_plan`` and ``trace_meta`` stay importable from here.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from planner.assemble import PlanOptions, build_plan, check_options, slice_inputs, trace_meta
from planner.capacity import CapacityCache, CapacityTask, SearchSettings, measure
from planner.errors import PlannerError
from planner.ilp import InstanceType, solve
from planner.plan import Plan
from planner.prove import prove
from planner.slices import Slicing, make_slices
from planner.verify import PlanCheck

__all__ = ["PlanOptions", "PlanOutcome", "build_plan", "instance_types", "make_plan",
           "measure_capacities", "slice_inputs", "trace_meta"]


@dataclass
class PlanOutcome:
    plan: Plan
    check: PlanCheck | None
    capacities: pd.DataFrame  # bucket, type, rate, limit
    slicing: Slicing
    types: list[InstanceType]
    cap: dict  # slice -> type -> req/s
    reasons: dict


def instance_types(model: str, gpus: list[str], tps: list[int], scheduler: dict | None = None):
    """Types (GPU x TP) the model fits on; PlannerError naming every GPU and its limit if none."""
    from sim.catalog import get_gpu, get_model
    from sim.config import SchedulerConfig, from_dict
    from sim.engine.kvcache import CapacityError, kv_capacity

    if not gpus:
        raise PlannerError("gpus: give at least one GPU type, e.g. l4,a10g,h100")
    if not tps or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in tps):
        raise PlannerError(f"tp: degrees must be whole numbers >= 1, got {tps!r}")
    try:
        m = get_model(model)
    except ValueError as exc:  # the catalog's 'unknown model' (a plain ValueError)
        raise PlannerError(f"--model: {exc}") from None
    sched = from_dict(SchedulerConfig, scheduler or {}, "scheduler")
    types, unfit = [], []
    for name in gpus:
        try:
            g = get_gpu(name)
        except ValueError as exc:
            raise PlannerError(f"--gpus: {exc}") from None
        for tp in tps:
            try:
                kv_capacity(m, g, tp, sched.block_size, sched.gpu_memory_utilization,
                            sched.activation_reserve_gb)
            except CapacityError as exc:
                unfit.append(str(exc))
                continue
            t = InstanceType(g.name, tp, g.price_per_hour, g.tdp_w)
            if t not in types:
                types.append(t)
    if not types:
        raise PlannerError(f"model {m.name} does not fit on any allowed configuration: "
                           + "; ".join(unfit))
    return types, unfit


def measure_capacities(slicing: Slicing, types: list[InstanceType], opts: PlanOptions,
                       log: Callable = lambda s: None):
    """Per bucket and type: capacity (req/s) and, where it is 0, the binding limit."""
    settings = SearchSettings(opts.attainment_target, opts.min_probe_requests,
                              opts.max_probe_requests, opts.span_e2e, opts.rel_tol, seed=opts.seed)
    tasks = [CapacityTask(opts.model, t.gpu, t.tp, opts.ttft_s, opts.tpot_s, b.lengths,
                          opts.scheduler, opts.cost_model, settings, b.label)
             for b in slicing.buckets for t in types]
    cache = CapacityCache(opts.cache_dir, opts.use_cache)
    log(f"capacity: {len(tasks)} searches ({len(slicing.buckets)} buckets x {len(types)} "
        f"types), backend={opts.backend}, cache={cache.dir if cache.enabled else 'off'}")
    results = measure(tasks, cache, opts.backend, opts.workers)
    for entry in cache.corrupt:
        log(f"capacity cache: corrupt entry ignored and re-measured: {entry}")
    log(f"capacity: {sum(r.cached for r in results)} from cache, "
        f"{sum(not r.cached for r in results)} searched")
    rows: list[dict] = []
    cap: dict[str, dict[str, float]] = {}  # bucket -> type -> req/s
    reasons: dict[str, dict[str, str]] = {}  # bucket -> type -> binding limit
    for task, t, r in zip(tasks, [t for _ in slicing.buckets for t in types], results,
                           strict=True):
        cap.setdefault(task.label, {})[t.key] = r.rate
        if r.rate <= 0:
            reasons.setdefault(task.label, {})[t.key] = r.limit
        rows.append({"bucket": task.label, "type": t.key, "rate": r.rate, "limit": r.limit,
                     "probes": len(r.probes), "cost_source": r.cost_source})
    return cap, reasons, pd.DataFrame(rows)


def make_plan(trace, opts: PlanOptions, log: Callable = lambda s: None) -> PlanOutcome:
    """Plan (and unless ``opts.verify`` is False, prove) the cheapest cluster for ``trace``."""
    check_options(opts)
    slicing = make_slices(trace, opts.input_edges, opts.output_edges, opts.slice_factor)
    log(f"trace: {slicing.requests} requests at {slicing.total_rate:.3f} req/s -> "
        f"{len(slicing.buckets)} buckets, {len(slicing.slices)} slices")
    types, unfit = instance_types(opts.model, opts.gpus, opts.tps, opts.scheduler)
    for msg in unfit:
        log(f"skip: {msg}")
    cap, reasons, table = measure_capacities(slicing, types, opts, log)
    rates, scap, sreasons = slice_inputs(slicing, cap, reasons)
    sol = solve(types, rates, scap, opts.availability, opts.power_budget_w, opts.assignment,
                opts.solver, reasons=sreasons)
    log(f"ilp: {sol.solver} {sol.status} in {sol.solve_s * 1e3:.0f} ms: ${sol.cost_per_hour:.2f}/h")
    plan = build_plan(slicing, types, sol, cap, opts, trace_meta(trace, slicing))
    check = None
    if opts.verify:
        plan, check = prove(plan, trace, slicing, types, cap, reasons, opts, log)
    return PlanOutcome(plan, check, table, slicing, types, cap, reasons)
