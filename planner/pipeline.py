"""End to end: trace -> slices -> capacities -> ILP -> plan -> proof by re-simulation.

``make_plan`` is what ``goodput plan`` runs; the helpers here (types the model fits on, the
capacity table) are shared with the SLO sweep (``goodput.planner.sweep``). The options and the steps
that turn a solution into a Plan live in ``goodput.planner.assemble``, which the proof search
(``goodput.planner.prove``) imports too, so this module imports ``prove`` and not the other way round;
``PlanOptions``, ``slice_inputs``, ``build_plan`` and ``trace_meta`` stay importable from here.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pandas as pd

from goodput.planner.assemble import PlanOptions, build_plan, check_options, slice_inputs, trace_meta
from goodput.planner.capacity import CapacityCache, CapacityTask, SearchSettings, measure
from goodput.planner.errors import PlannerError
from goodput.planner.ilp import InstanceType, solve
from goodput.planner.parallel import progress_bars
from goodput.planner.plan import Plan
from goodput.planner.prices import price_of
from goodput.planner.prove import prove
from goodput.planner.slices import Slicing, make_slices
from goodput.planner.verify import PlanCheck

__all__ = ["PlanOptions", "PlanOutcome", "build_plan", "instance_types", "make_plan",
           "measure_capacities", "planning_slices", "slice_inputs", "trace_meta"]


@dataclass
class PlanOutcome:
    plan: Plan  # the verified plan when verification ran (else the ILP's)
    check: PlanCheck | None
    capacities: pd.DataFrame  # bucket, type, rate, limit
    slicing: Slicing
    types: list[InstanceType]
    cap: dict  # slice -> type -> req/s
    reasons: dict
    ilp_cost: float = 0.0  # the ILP's mixed plan before any re-simulation (ILP-only figure)
    #: the best single type: ILP cost, and its plan and check after the same proof
    baseline: dict = field(default_factory=dict)
    burst: dict = field(default_factory=dict)  # see goodput.planner.burst.burst_report
    #: with ``--search``: one row per design searched (goodput.planner.design_search.Candidate.row)
    designs: pd.DataFrame | None = None

    @property
    def verified(self) -> bool:
        return self.check is not None and self.check.meets_target


def instance_types(model: str, gpus: list[str], tps: list[int], scheduler: dict | None = None,
                   prices: dict | None = None):
    """Types (GPU x TP) the model fits on; PlannerError naming every GPU and its limit if none."""
    from goodput.sim.catalog import get_gpu, get_model
    from goodput.sim.config import SchedulerConfig, from_dict
    from goodput.sim.engine.kvcache import CapacityError, kv_capacity

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
            t = InstanceType(g.name, tp, price_of(g, prices or {})[0], g.tdp_w)
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
    with progress_bars("capacity searches" if opts.progress else None):
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


def planning_slices(trace, opts: PlanOptions, log: Callable = lambda s: None
                    ) -> tuple[Slicing, dict]:
    """The slices the ILP provisions (scaled to the ``rate_percentile`` window rate when set)
    and the burstiness report; shared with the design search's screen."""
    from goodput.planner.burst import burst_report, scale_slicing

    slicing = make_slices(trace, opts.input_edges, opts.output_edges, opts.slice_factor)
    log(f"trace: {slicing.requests} requests at {slicing.total_rate:.3f} req/s -> "
        f"{len(slicing.buckets)} buckets, {len(slicing.slices)} slices")
    burst = burst_report(trace, slicing, opts.window_s, opts.rate_percentile)
    log(f"burstiness: busiest {opts.window_s:g} s window at {burst['peak_to_mean']:.2f}x the mean "
        f"rate ({burst['peak_rate']:.3f} req/s)")
    if opts.rate_percentile is not None:
        slicing = scale_slicing(slicing, burst["planned_rate"] / slicing.total_rate)
        log(f"planning for the p{opts.rate_percentile:g} window rate {burst['planned_rate']:.3f} "
            f"req/s ({burst['planned_rate'] / burst['mean_rate']:.2f}x the mean)")
    return slicing, burst


def make_plan(trace, opts: PlanOptions, log: Callable = lambda s: None) -> PlanOutcome:
    """Plan (and unless ``opts.verify`` is False, prove) the cheapest cluster for ``trace``.

    With verification the returned plan is the cheapest *verified* one: the mix, or the best
    single type when its proved plan is cheaper (or the mix could not be proved)."""
    from goodput.planner.baselines import best_single_type
    from goodput.planner.burst import burst_absorbed

    check_options(opts)
    deadline = time.monotonic() + 60 * opts.max_minutes if opts.max_minutes else None
    slicing, burst = planning_slices(trace, opts, log)
    types, unfit = instance_types(opts.model, opts.gpus, opts.tps, opts.scheduler, opts.prices)
    for msg in unfit:
        log(f"skip: {msg}")
    cap, reasons, table = measure_capacities(slicing, types, opts, log)
    rates, scap, sreasons = slice_inputs(slicing, cap, reasons)
    sol = solve(types, rates, scap, opts.availability, opts.power_budget_w, opts.assignment,
                opts.solver, reasons=sreasons)
    log(f"ilp: {sol.solver} {sol.status} in {sol.solve_s * 1e3:.0f} ms: ${sol.cost_per_hour:.2f}/h "
        f"(ILP only, not yet verified)")
    meta = trace_meta(trace, slicing)
    plan = build_plan(slicing, types, sol, cap, opts, meta)
    out = PlanOutcome(plan, None, table, slicing, types, cap, reasons, sol.cost_per_hour,
                      burst=burst)
    best = best_single_type(types, rates, scap, opts.availability, opts.power_budget_w, opts.solver)
    if best is not None:
        out.baseline = {"type": best[0].key, "ilp_cost": best[1].cost_per_hour}
    if not opts.verify:
        return out
    out.plan, out.check = prove(plan, trace, slicing, types, cap, reasons, opts, log, deadline,
                                progress=_bar(opts, "verify mix"))
    if best is not None and opts.verify_baseline and len(types) > 1:
        bplan = build_plan(slicing, [best[0]], best[1], cap, opts, meta)
        log(f"baseline: proving the best single type {best[0].key} the same way")
        bplan, bcheck = prove(bplan, trace, slicing, [best[0]], cap, reasons, opts, log, deadline,
                              progress=_bar(opts, "verify baseline"))
        out.baseline.update(plan=bplan, check=bcheck)
        if bcheck.meets_target and (not out.verified
                                    or bplan.cost_per_hour < out.plan.cost_per_hour - 1e-9):
            log(f"verify: the proved single-type plan (${bplan.cost_per_hour:.2f}/h) is cheaper "
                f"than the proved mix, or the mix was not proved: it is the plan")
            out.plan, out.check = bplan, bcheck
    elif best is not None and len(types) == 1:
        out.baseline.update(plan=out.plan, check=out.check)
    out.burst.update(burst_absorbed(out.plan, out.cap, out.check, opts.window_s))
    out.plan = replace(out.plan, summary={**plan_summary(out, opts), "burst": dict(out.burst)})
    return out


def _bar(opts: PlanOptions, what: str):
    """A tqdm update callback for the proof's rounds (None without --progress)."""
    if not opts.progress:
        return None
    from tqdm import tqdm

    bar = tqdm(total=opts.verify_rounds + 1, desc=what, unit="sim", leave=False, disable=None)
    return lambda i: bar.update(1)


def plan_summary(out: PlanOutcome, opts: PlanOptions) -> dict:
    """The headline figures plan.yaml carries: verified cost and attainment, the ILP-only cost,
    the verified baseline and the savings between verified plans, prices and their sources."""
    from goodput.planner.baselines import savings
    from goodput.sim.catalog import get_gpu

    b = out.baseline
    bplan, bcheck = b.get("plan"), b.get("check")
    verified_base = bool(bplan is not None and bcheck is not None and bcheck.meets_target)
    bcost = round(bplan.cost_per_hour, 4) if bplan is not None and verified_base else None
    s = {"verified": out.verified,
         "attainment": round(out.check.attainment, 6) if out.check is not None else None,
         "cost_per_hour": round(out.plan.cost_per_hour, 4),
         "ilp_only_cost_per_hour": round(out.ilp_cost, 4),
         "baseline_type": b.get("type"),
         "baseline_ilp_only_cost_per_hour": b.get("ilp_cost"),
         "baseline_cost_per_hour": bcost,
         "baseline_attainment": round(bcheck.attainment, 6) if bcheck is not None else None,
         "savings": None}
    if out.verified and bcost is not None:
        sv = savings(out.plan.cost_per_hour, bcost)
        s["savings"] = None if sv is None else round(sv, 6)
    return s | {"prices": {t.gpu: {"usd_per_gpu_hour": t.price_per_hour,
                                    "source": price_of(get_gpu(t.gpu), opts.prices)[1]}
                           for t in out.types}}
