"""End to end: trace -> slices -> capacities -> ILP -> plan -> proof by re-simulation.

``make_plan`` is what ``goodput plan`` runs; the helpers here (types the model fits on, the
capacity table, per-slice ILP inputs, turning a solution into a Plan) are shared by the proof
search (``planner.prove``) and the SLO sweep (``planner.sweep``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

from planner.capacity import CapacityCache, CapacityTask, SearchSettings, measure
from planner.errors import PlannerError
from planner.ilp import InstanceType, Solution, solve
from planner.plan import Plan, PlanGroup, PlanSlice
from planner.slices import DEFAULT_INPUT_EDGES, DEFAULT_OUTPUT_EDGES, Slicing, make_slices
from planner.verify import PlanCheck


@dataclass
class PlanOptions:
    model: str
    ttft_s: float
    tpot_s: float | None
    gpus: list[str]
    tps: list[int] = field(default_factory=lambda: [1])
    attainment_target: float = 0.9
    input_edges: tuple = DEFAULT_INPUT_EDGES
    output_edges: tuple = DEFAULT_OUTPUT_EDGES
    slice_factor: int = 1
    assignment: str = "fractional"
    availability: dict | None = None  # GPU name -> GPUs available
    power_budget_w: float | None = None
    solver: str = "cbc"
    scheduler: dict = field(default_factory=dict)  # SchedulerConfig fields
    cost_model: dict = field(default_factory=dict)  # CostModelConfig fields
    min_probe_requests: int = 300
    max_probe_requests: int = 6000
    span_e2e: float = 30.0
    rel_tol: float = 0.05
    seed: int = 0
    backend: str = "local"
    workers: int | None = None
    cache_dir: str | None = None
    use_cache: bool = True
    verify: bool = True
    verify_rounds: int = 6  # re-simulations after the first (see planner.prove)
    verify_requests: int | None = None
    derate_step: float = 0.1


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
    m = get_model(model)
    sched = from_dict(SchedulerConfig, scheduler or {}, "scheduler")
    types, unfit = [], []
    for name in gpus:
        g = get_gpu(name)
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
    log(f"capacity: {sum(r.cached for r in results)} from cache, "
        f"{sum(not r.cached for r in results)} searched")
    rows, cap, reasons = [], {}, {}
    for task, t, r in zip(tasks, [t for _ in slicing.buckets for t in types], results):
        cap.setdefault(task.label, {})[t.key] = r.rate
        if r.rate <= 0:
            reasons.setdefault(task.label, {})[t.key] = r.limit
        rows.append({"bucket": task.label, "type": t.key, "rate": r.rate, "limit": r.limit,
                     "probes": len(r.probes), "cost_source": r.cost_source})
    return cap, reasons, pd.DataFrame(rows)


def slice_inputs(slicing: Slicing, cap: dict, reasons: dict, derate: float = 1.0):
    """Per-slice rates, capacities (scaled by ``derate``) and reasons, keyed by slice name."""
    rates = {s.name: s.rate for s in slicing.slices}
    scap = {s.name: {g: c * derate for g, c in cap[s.bucket].items()} for s in slicing.slices}
    sreasons = {s.name: reasons.get(s.bucket, {}) for s in slicing.slices}
    return rates, scap, sreasons


def build_plan(slicing: Slicing, types: list[InstanceType], sol: Solution, cap: dict,
               opts: PlanOptions, trace_meta: dict) -> Plan:
    by_key = {t.key: t for t in types}
    groups = []
    for t in types:
        n = sol.counts.get(t.key, 0)
        if n:
            served = [s for s, sh in sol.shares.items() if t.key in sh]
            groups.append(PlanGroup(t.gpu, t.tp, n, by_key[t.key].instance_price,
                                    round(sol.load.get(t.key, 0.0), 6), served))
    slices = [PlanSlice(s.name, s.bucket, s.rate, dict(sol.shares.get(s.name, {})),
                        {g: c for g, c in cap[s.bucket].items() if c > 0})
              for s in slicing.slices]
    return Plan(model=opts.model,
                slo={"ttft_s": opts.ttft_s, "tpot_s": opts.tpot_s,
                     "attainment_target": opts.attainment_target},
                groups=groups, slices=slices, input_edges=list(slicing.input_edges),
                output_edges=list(slicing.output_edges), slice_factor=slicing.slice_factor,
                scheduler=dict(opts.scheduler), cost_model=dict(opts.cost_model),
                trace=trace_meta, seed=opts.seed,
                solver={"name": sol.solver, "status": sol.status, "solve_s": round(sol.solve_s, 4),
                        "assignment": opts.assignment})


def trace_meta(trace, slicing: Slicing) -> dict:
    return {"source": str(getattr(trace, "source", "") or ""), "requests": slicing.requests,
            "rate": round(slicing.total_rate, 6), "duration_s": round(slicing.duration_s, 3)}


def make_plan(trace, opts: PlanOptions, log: Callable = lambda s: None) -> PlanOutcome:
    """Plan (and unless ``opts.verify`` is False, prove) the cheapest cluster for ``trace``."""
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
        from planner.prove import prove  # prove builds on this module's helpers

        plan, check = prove(plan, trace, slicing, types, cap, reasons, opts, log)
    return PlanOutcome(plan, check, table, slicing, types, cap, reasons)
