"""``goodput plan`` and the function behind ``goodput simulate --plan``.

``add_plan_subcommands(subparsers)`` registers ``plan``; goodput/cli.py calls it next to the
other subcommand groups. ``cmd_simulate_plan(args)`` re-simulates a plan.yaml on a trace; it
reads the flags ``simulate`` already has (plan, trace, trace_format, rate, max_requests, seed,
out, no_plots), so goodput/cli.py wires ``--plan`` into ``simulate`` with one argument and one
branch (the simulator itself never imports the planner).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd

from planner.errors import PlannerError


def _csv(text: str | None, conv, name: str) -> list:
    if text is None:
        return []
    try:
        return [conv(x.strip()) for x in text.split(",") if x.strip()]
    except ValueError:
        raise PlannerError(f"--{name}: cannot parse {text!r} as a comma-separated list") from None


def _availability(text: str | None) -> dict | None:
    if not text:
        return None
    out = {}
    for item in text.split(","):
        if "=" not in item:
            raise PlannerError(f"--availability expects GPU=COUNT pairs, e.g. h100=8,l4=16; got "
                               f"{item!r}")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = int(v)
        except ValueError:
            raise PlannerError(f"--availability {k.strip()}: {v!r} is not a whole number") from None
    from sim.catalog import get_gpu
    try:
        return {get_gpu(k).name: v for k, v in out.items()}
    except ValueError as exc:  # the catalog's 'unknown GPU'
        raise PlannerError(f"--availability: {exc}") from None


def load_planning_trace(path: str, fmt: str | None = None, rate: float | None = None,
                        max_requests: int | None = None, seed: int = 0):
    """A trace file as the simulator would load it (length-only files need ``rate``)."""
    from sim.config import TraceConfig
    from sim.inputs import build_trace

    if rate is not None and not (math.isfinite(rate) and rate > 0):
        raise PlannerError(f"--rate={rate!r}: must be a finite number > 0 (requests per second)")
    if max_requests is not None and max_requests < 1:
        raise PlannerError(f"--max-requests={max_requests!r}: must be >= 1 (leave it out to plan "
                           "for every request)")
    cfg = TraceConfig(path=path, format=fmt or "auto", rate=rate, max_requests=max_requests)
    trace, _ = build_trace(cfg, seed)
    return trace


def add_plan_subcommands(sub) -> None:
    p = sub.add_parser(
        "plan", help="cheapest GPU mix that meets TTFT/TPOT SLOs (Mélange ILP, proved by simulation)",
        description="Bucket the trace by request size, measure each GPU type's SLO capacity per "
                    "bucket by simulation, solve for the cheapest mix of instance types, then "
                    "re-simulate the plan and add capacity while attainment falls short.")
    p.add_argument("--trace", required=True, help="trace file (any format goodput simulate reads)")
    p.add_argument("--trace-format", help="trace format (default: auto-detect)")
    p.add_argument("--rate", type=float, help="req/s: rescale the trace, or synthesize arrivals "
                                              "for a length-only trace")
    p.add_argument("--max-requests", type=int, help="plan for the first N requests only")
    p.add_argument("--model", required=True, help="model, e.g. llama-3.1-8b")
    p.add_argument("--ttft-slo", type=float, required=True, help="TTFT bound, seconds")
    p.add_argument("--tpot-slo", type=float, required=True, help="TPOT bound, seconds")
    p.add_argument("--attainment", type=float, default=0.9,
                   help="fraction of requests that must meet both bounds (default 0.9)")
    p.add_argument("--gpus", required=True, help="comma-separated GPU types, e.g. l4,a10g,h100")
    p.add_argument("--tp", default="1", help="comma-separated TP degrees, each a separate type")
    p.add_argument("--availability", help="max GPUs per type, e.g. h100=8,a10g=16")
    p.add_argument("--power-budget", type=float, help="max total TDP of the plan, W")
    p.add_argument("--input-edges", help="input-length bucket edges (tokens), e.g. 256,1024,4096")
    p.add_argument("--output-edges", help="output-length bucket edges (tokens), e.g. 64,256,512")
    p.add_argument("--slice-factor", type=int, default=1, help="slices per bucket (default 1)")
    p.add_argument("--assignment", choices=("fractional", "whole"), default="fractional",
                   help="share a slice across types (fractional) or give it to one (whole)")
    p.add_argument("--solver", choices=("cbc", "highs", "auto"), default="cbc")
    p.add_argument("--policy", default="vllm", help="batching policy (scheduler.policy)")
    p.add_argument("--cost-model", default="auto", help="auto | profiled | roofline")
    p.add_argument("--max-probe-requests", type=int, default=6000,
                   help="most requests one capacity probe may simulate (default 6000); rates "
                        "that need more to reach steady state count as failing")
    p.add_argument("--min-probe-requests", type=int, default=300,
                   help="fewest requests per capacity probe (default 300)")
    p.add_argument("--rel-tol", type=float, default=0.05,
                   help="capacity search stops when the bracket is within this (default 0.05)")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="where capacity searches run: local process pool or Ray")
    p.add_argument("--workers", type=int, help="local worker processes (default: CPU count)")
    p.add_argument("--cache-dir", help="capacity cache (default ~/.cache/goodput or "
                                       "$GOODPUT_CACHE_DIR)")
    p.add_argument("--no-cache", action="store_true", help="re-measure every capacity")
    p.add_argument("--no-verify", action="store_true", help="skip the re-simulation")
    p.add_argument("--verify-rounds", type=int, default=6,
                   help="max re-simulations after the first while searching for a plan that meets "
                        "the target (default 6)")
    p.add_argument("--sweep-tpot", help="extra TPOT bounds (s) for the cost-against-SLO plot, "
                                        "e.g. 0.04,0.08,0.12")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/plan", help="directory for plan.yaml, CSVs, plots")
    p.add_argument("--no-plots", action="store_true")
    p.set_defaults(func=cmd_plan)


def options_from_args(args):
    from planner.pipeline import PlanOptions
    from planner.slices import DEFAULT_INPUT_EDGES, DEFAULT_OUTPUT_EDGES

    return PlanOptions(
        model=args.model, ttft_s=args.ttft_slo, tpot_s=args.tpot_slo,
        gpus=_csv(args.gpus, str, "gpus"), tps=_csv(args.tp, int, "tp"),
        attainment_target=args.attainment,
        input_edges=args.input_edges or DEFAULT_INPUT_EDGES,
        output_edges=args.output_edges or DEFAULT_OUTPUT_EDGES,
        slice_factor=args.slice_factor, assignment=args.assignment,
        availability=_availability(args.availability), power_budget_w=args.power_budget,
        solver=args.solver, scheduler={"policy": args.policy},
        cost_model={"kind": args.cost_model}, min_probe_requests=args.min_probe_requests,
        max_probe_requests=args.max_probe_requests,
        rel_tol=args.rel_tol, seed=args.seed, backend=args.backend, workers=args.workers,
        cache_dir=args.cache_dir, use_cache=not args.no_cache, verify=not args.no_verify,
        verify_rounds=args.verify_rounds)


def shares_table(plan) -> pd.DataFrame:
    rows = []
    for s in plan.slices:
        rows.append({"slice": s.name, "req/s": round(s.rate, 4),
                     **{k: round(v, 3) for k, v in sorted(s.shares.items())}})
    return pd.DataFrame(rows).fillna(0.0)


def cmd_plan(args) -> int:
    from planner.assemble import check_options
    from sim.outputs import folder_lock

    t0 = time.perf_counter()
    opts = options_from_args(args)
    check_options(opts)  # every option before the trace is read or a capacity measured
    with folder_lock(Path(args.out)):  # two plans into one folder: the second is refused
        return _plan(args, opts, t0)


def _plan(args, opts, t0: float) -> int:
    from planner import plots
    from planner.baselines import best_single_type, savings
    from planner.pipeline import make_plan, slice_inputs
    from planner.sweep import slo_sweep

    trace = load_planning_trace(args.trace, args.trace_format, args.rate, args.max_requests,
                                args.seed)
    out = make_plan(trace, opts, log=lambda s: print(f"[plan] {s}", flush=True))
    plan = out.plan
    print("\nslice shares per instance type:")
    print(shares_table(plan).to_string(index=False))
    print("\nplan:")
    print(plan.table())
    rates, scap, _ = slice_inputs(out.slicing, out.cap, out.reasons)
    best = best_single_type(out.types, rates, scap, opts.availability, opts.power_budget_w,
                            opts.solver)
    ilp_cost = plan.verification[0]["cost_per_hour"] if plan.verification else plan.cost_per_hour
    if best is None:
        print("\nbaseline: no single instance type serves every slice within the SLO")
    else:
        sv = savings(ilp_cost, best[1].cost_per_hour)
        print(f"\nbaseline (ILP, before re-simulation): best single type {best[0].key} x "
              f"{best[1].counts.get(best[0].key, 0)} = ${best[1].cost_per_hour:.2f}/h; mixed "
              f"${ilp_cost:.2f}/h ({sv:.1%} saved)")
    if out.check is not None:
        for v in plan.verification[1:]:
            print(f"verification round {v['round']}: {v['action']} -> ${v['cost_per_hour']:.2f}/h, "
                  f"attainment {v['attainment']:.1%}")
        print(out.check.text())
    dest = Path(args.out)
    plan.save(dest / "plan.yaml")
    out.capacities.to_csv(dest / "capacities.csv", index=False)
    if out.check is not None:
        out.check.per_slice.to_csv(dest / "attainment_per_slice.csv", index=False)
    if not args.no_plots:
        sweep_vals = [opts.tpot_s, *_csv(args.sweep_tpot, float, "sweep-tpot")]
        sweep = slo_sweep(out.slicing, opts, sweep_vals, known={opts.tpot_s: (out.cap, out.reasons)},
                          log=lambda s: print(f"[sweep] {s}", flush=True))
        sweep.to_csv(dest / "cost_vs_slo.csv", index=False)
        plots.cost_vs_slo(sweep, dest / "cost_vs_slo.png")
        plots.load_per_type(plan, dest / "load_per_type.png")
        if out.check is not None:
            plots.attainment_per_slice(out.check.per_slice, out.check.target,
                                       dest / "attainment_per_slice.png",
                                       order=[s.bucket for s in plan.slices])
    print(f"\nplan written to {(dest / 'plan.yaml').resolve()} "
          f"({time.perf_counter() - t0:.1f} s end to end)")
    return 0 if out.check is None or out.check.meets_target else 1


def cmd_simulate_plan(args) -> int:
    """Re-simulate ``args.plan`` on ``args.trace`` and print the run summary and the breakdowns."""
    from planner.plan import Plan
    from planner.verify import simulate_plan
    from sim.metrics import format_summary

    if not getattr(args, "trace", None):
        raise PlannerError("--plan needs --trace FILE: the requests to replay through the plan")
    plan = Plan.load(args.plan)
    seed = plan.seed if getattr(args, "seed", None) is None else args.seed
    trace = load_planning_trace(args.trace, getattr(args, "trace_format", None),
                                getattr(args, "rate", None), getattr(args, "max_requests", None),
                                seed)
    check = simulate_plan(plan, trace, seed, out_dir=getattr(args, "out", None) or "",
                          plots=not getattr(args, "no_plots", False))
    print(format_summary(check.summary))
    print(f"\nplan {args.plan}: {plan.table()}")
    print(check.text())
    print(check.per_slice.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0 if check.meets_target else 1
