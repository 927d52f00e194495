"""Planning options and the pure steps that turn capacities and an ILP solution into a Plan.

``PlanOptions`` is every knob of ``goodput plan``; ``slice_inputs`` turns per-bucket capacities
into the ILP's per-slice inputs; ``build_plan`` and ``trace_meta`` turn a solution into a
``Plan``. They are shared by the pipeline (``goodput.planner.pipeline``, which runs the steps in order),
the proof search (``goodput.planner.prove``, which re-solves with derated capacities) and the SLO sweep
(``goodput.planner.sweep``), so none of those has to import another to reach them: the planner's modules
import each other without cycles (the ``planner-acyclic`` contract in pyproject.toml).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from goodput.planner.errors import PlannerError
from goodput.planner.ilp import InstanceType, Solution
from goodput.planner.plan import Plan, PlanGroup, PlanSlice
from goodput.planner.slices import DEFAULT_INPUT_EDGES, DEFAULT_OUTPUT_EDGES, Slicing, parse_edges


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
    verify_rounds: int = 20  # re-simulations after the first (see goodput.planner.prove)
    verify_requests: int | None = None
    derate_step: float = 0.05  # the smallest cut of a failing pair's capacity per round
    verify_baseline: bool = True  # also prove the best single type, for verified savings
    max_minutes: float | None = None  # wall-clock budget of the proof (best verified so far)
    #: GPU name -> (USD per GPU-hour, where that price comes from); catalog price otherwise
    prices: dict = field(default_factory=dict)
    #: provision for this percentile of the per-window arrival rate instead of the mean
    rate_percentile: float | None = None
    window_s: float = 300.0  # window of the burstiness figures and of rate_percentile
    progress: bool = False  # tqdm bars for capacity searches and verification rounds


def _positive(value, name: str, allow_none: bool = False, low: float = 0.0,
              strict: bool = True, hint: str = "") -> None:
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and (value > low if strict else value >= low)
    if not ok:
        raise PlannerError(f"{name}={value!r}: must be a finite number {'>' if strict else '>='} "
                           f"{low:g}{hint}")


def check_options(opts: PlanOptions) -> None:
    """PlannerError naming the option (as its ``goodput plan`` flag) for the first meaningless
    value, before any capacity is measured: a bad value must not cost a search."""
    _positive(opts.ttft_s, "--ttft-slo", hint=" seconds")
    _positive(opts.tpot_s, "--tpot-slo", allow_none=True, hint=" seconds")
    a = opts.attainment_target
    if not (isinstance(a, (int, float)) and 0 < a <= 1):
        raise PlannerError(f"--attainment={a!r}: must be a fraction in (0, 1] (write 0.9 for 90%)")
    _positive(opts.power_budget_w, "--power-budget", allow_none=True, hint=" W")
    _positive(opts.rel_tol, "--rel-tol")
    _positive(opts.span_e2e, "span_e2e")
    _positive(opts.verify_rounds, "--verify-rounds", strict=False,
              hint=" (re-simulations after the first; 0 = verify once)")
    _positive(opts.slice_factor, "--slice-factor", low=1, strict=False)
    _positive(opts.min_probe_requests, "--min-probe-requests", low=20, strict=False)
    _positive(opts.max_probe_requests, "--max-probe-requests", low=opts.min_probe_requests,
              strict=False)
    if opts.workers is not None:
        _positive(opts.workers, "--workers", low=1, strict=False,
                  hint=" (worker processes; leave it out for one per CPU)")
    _positive(opts.verify_requests, "verify_requests", allow_none=True, low=1, strict=False)
    parse_edges(opts.input_edges, "--input-edges")
    parse_edges(opts.output_edges, "--output-edges")
    _positive(opts.max_minutes, "--max-minutes", allow_none=True, hint=" minutes")
    _positive(opts.window_s, "--window", hint=" seconds")
    p = opts.rate_percentile
    if p is not None and not (isinstance(p, (int, float)) and 0 < p <= 100):
        raise PlannerError(f"--rate-percentile={p!r}: must be a percentile in (0, 100], e.g. 95")
    if not 0 < opts.derate_step < 1:
        raise PlannerError(f"derate_step={opts.derate_step!r}: must be a fraction in (0, 1)")


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
