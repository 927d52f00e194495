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
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from goodput.planner.errors import PlannerError

if TYPE_CHECKING:  # pandas costs ~0.5 s to import: `goodput plan --help` must not pay it
    import pandas as pd


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
    from goodput.sim.catalog import get_gpu
    try:
        return {get_gpu(k).name: v for k, v in out.items()}
    except ValueError as exc:  # the catalog's 'unknown GPU'
        raise PlannerError(f"--availability: {exc}") from None


def load_planning_trace(path: str, fmt: str | None = None, rate: float | None = None,
                        max_requests: int | None = None, seed: int = 0):
    """A trace file as the simulator would load it (length-only files need ``rate``)."""
    from goodput.sim.config import TraceConfig
    from goodput.sim.inputs import build_trace

    if rate is not None and not (math.isfinite(rate) and rate > 0):
        raise PlannerError(f"--rate={rate!r}: must be a finite number > 0 (requests per second)")
    if max_requests is not None and max_requests < 1:
        raise PlannerError(f"--max-requests={max_requests!r}: must be >= 1 (leave it out to plan "
                           "for every request)")
    cfg = TraceConfig(path=path, format=fmt or "auto", rate=rate, max_requests=max_requests)
    trace, _ = build_trace(cfg, seed)
    return trace


def add_plan_subcommands(sub) -> None:
    from goodput.sim.cli_help import ChoicesHelp

    p = sub.add_parser(
        "plan", help="cheapest GPU mix that meets TTFT/TPOT SLOs (Mélange ILP, proved by simulation)",
        description="Bucket the trace by request size, measure each GPU type's SLO capacity per "
                    "bucket by simulation, solve for the cheapest mix of instance types, then "
                    "re-simulate the plan and add capacity while attainment falls short.",
        add_help=False)
    # the help lists the registered policies, formats and cost models and every default, read
    # only when it is printed (goodput.sim.cli_help), so building this parser stays light
    p.add_argument("-h", "--help", action=ChoicesHelp, help="show this help message and exit")
    p.add_argument("--trace", required=True, help="trace file (any format goodput simulate reads)")
    p.add_argument("--trace-format", help="trace format (default: detected)")
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
    p.add_argument("--price", action="append", metavar="GPU=USD",
                   help="USD per GPU-hour for a GPU, e.g. h100=4.50 (repeatable; overrides "
                        "--prices and the catalog)")
    p.add_argument("--prices", metavar="FILE", help="price file: YAML/JSON gpu -> USD or gpu -> "
                                                    "{on_demand: USD, spot: USD}")
    p.add_argument("--price-kind", choices=("on-demand", "spot"), default="on-demand",
                   help="which column of --prices to use (default on-demand)")
    p.add_argument("--rate-percentile", type=float, metavar="P",
                   help="provision for the P-th percentile of the per-window arrival rate "
                        "instead of the mean (e.g. 95); the proof replays the real timestamps")
    p.add_argument("--window", type=float, default=300.0,
                   help="window (s) for --rate-percentile and the peak-to-mean figure (300)")
    p.add_argument("--input-edges", help="input-length bucket edges (tokens), e.g. 256,1024,4096")
    p.add_argument("--output-edges", help="output-length bucket edges (tokens), e.g. 64,256,512")
    p.add_argument("--slice-factor", type=int, default=1, help="slices per bucket (default 1)")
    p.add_argument("--assignment", choices=("fractional", "whole"), default="fractional",
                   help="share a slice across types (fractional) or give it to one (whole)")
    p.add_argument("--solver", choices=("cbc", "highs", "auto"), default="cbc")
    p.add_argument("--policy", default="vllm", help="batching policy (scheduler.policy)")
    p.add_argument("--cost-model", default="auto", help="cost model")
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
    p.add_argument("--verify-rounds", type=int, default=20,
                   help="max re-simulations after the first while converging on a plan that "
                        "meets the target (default 20)")
    p.add_argument("--max-minutes", type=float,
                   help="wall-clock budget of the proof: stop and return the best plan so far")
    p.add_argument("--sweep", action="append", metavar="PARAM=V1,V2",
                   help="verified cost frontier over tpot, ttft (s) or attainment, e.g. "
                        "tpot=0.04,0.08,0.12 (repeatable); writes frontier.csv/.png")
    p.add_argument("--sweep-tpot", help="same as --sweep tpot=...")
    g = p.add_argument_group("one search over the whole design (goodput.planner.design_search)")
    g.add_argument("--search", action="append", metavar="DIM=V1,V2",
                   help="search cluster-wide choices beside the GPU mix (repeatable): "
                        "policy=vllm,sarathi; budget=256,1024 (Sarathi token budgets); "
                        "spec=none,fixed:4,smartspec[:MAX_K]; mode=colocated,disaggregated. "
                        "Every design is screened by "
                        "coarse capacities and ILP bounds; finalists are proved by simulation")
    g.add_argument("--spec-alpha", type=float,
                   help="with --search spec=...: the workload's per-token acceptance rate")
    g.add_argument("--spec-proposer", default="draft",
                   help="with --search spec=...: draft | ngram | heads (default draft)")
    g.add_argument("--spec-draft-model", default="",
                   help="with --search spec=... and proposer draft: the catalog draft model")
    g.add_argument("--finalists", type=int, default=4,
                   help="most designs planned and proved in full (default 4)")
    g.add_argument("--screen-rel-tol", type=float, default=0.5,
                   help="bracket of the screening capacity searches (default 0.5)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/plan", help="directory for plan.yaml, CSVs, plots")
    p.add_argument("--no-plots", action="store_true")
    from goodput.planner.placement_cli import add_disagg_arguments

    add_disagg_arguments(p)  # --disaggregated: DistServe placement search (goodput.planner.placement)
    p.set_defaults(func=cmd_plan)


def options_from_args(args):
    from goodput.planner.pipeline import PlanOptions
    from goodput.planner.slices import DEFAULT_INPUT_EDGES, DEFAULT_OUTPUT_EDGES

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
        verify_rounds=args.verify_rounds, max_minutes=args.max_minutes,
        prices=_prices(args), rate_percentile=args.rate_percentile, window_s=args.window,
        progress=not args.no_progress)


def _prices(args) -> dict:
    from goodput.planner.prices import load_price_file, parse_price_flags

    prices = load_price_file(args.prices, args.price_kind) if args.prices else {}
    return {**prices, **parse_price_flags(args.price)}


def shares_table(plan) -> pd.DataFrame:
    import pandas as pd

    rows = []
    for s in plan.slices:
        rows.append({"slice": s.name, "req/s": round(s.rate, 4),
                     **{k: round(v, 3) for k, v in sorted(s.shares.items())}})
    return pd.DataFrame(rows).fillna(0.0)


def cmd_plan(args) -> int:
    from goodput.planner.assemble import check_options
    from goodput.sim.outputs import folder_lock

    if getattr(args, "disaggregated", False) and getattr(args, "search", None):
        raise PlannerError("--search and --disaggregated do not combine: add prefill/decode "
                           "pools to the search with --search mode=colocated,disaggregated")
    if getattr(args, "disaggregated", False):
        from goodput.planner.placement_cli import cmd_plan_disagg

        with folder_lock(Path(args.out)):
            return cmd_plan_disagg(args, _csv(args.gpus, str, "gpus"), load_planning_trace)
    t0 = time.perf_counter()
    opts = options_from_args(args)
    check_options(opts)  # every option before the trace is read or a capacity measured
    with folder_lock(Path(args.out)):  # two plans into one folder: the second is refused
        return _plan(args, opts, t0)


def _plan(args, opts, t0: float) -> int:
    from goodput.planner.design_space import parse_search
    from goodput.planner.pipeline import make_plan
    from goodput.planner.report import headline, write_outputs
    from goodput.planner.sweep import parse_sweeps

    sweeps = parse_sweeps((args.sweep or []) + ([f"tpot={args.sweep_tpot}"] if args.sweep_tpot
                                                else []))
    space = parse_search(args.search, args.policy)
    if space is not None:  # every design's settings, before the trace is read
        from goodput.planner.design_search import check_search
        from goodput.planner.design_space import SpecSettings

        check_search(opts, args.finalists, args.screen_rel_tol)
        spec = SpecSettings(args.spec_alpha, args.spec_proposer, args.spec_draft_model)
        for d in space.designs():
            d.scheduler(opts.scheduler, spec)
    trace = load_planning_trace(args.trace, args.trace_format, args.rate, args.max_requests,
                                args.seed)
    log = lambda s: print(f"[plan] {s}", flush=True)  # noqa: E731
    if space is None:
        out = make_plan(trace, opts, log=log)
    else:
        from goodput.planner.design_search import designs_table, search_designs

        res = search_designs(trace, opts, space, spec, args.finalists, args.screen_rel_tol,
                             log=lambda s: print(f"[search] {s}", flush=True))
        out = res.best
        opts = replace(opts, scheduler=dict(out.plan.scheduler))  # the frontier's design
        print(f"\ndesigns searched ({res.wall_s:.1f} s; cost is verified, estimate and lower "
              f"bound are ILP-only figures from the screen):")
        print(designs_table(res.table))
    print("\nslice shares per instance type:")
    print(shares_table(out.plan).to_string(index=False))
    print(headline(out))
    front = None
    if sweeps:
        from goodput.planner.sweep import frontier, frontier_table

        front = frontier(trace, opts, sweeps, log=lambda s: print(f"[sweep] {s}", flush=True))
        print("\nfrontier (every point re-simulated; ilp_only_cost is the ILP before it):")
        print(frontier_table(front))
    dest = write_outputs(out, Path(args.out), front, plots=not args.no_plots)
    print(f"\nplan written to {(dest / 'plan.yaml').resolve()} "
          f"({time.perf_counter() - t0:.1f} s end to end)")
    return 0 if out.check is None or out.check.meets_target else 1


def cmd_simulate_plan(args) -> int:
    """Re-simulate ``args.plan`` on ``args.trace`` and print the run summary and the breakdowns."""
    from goodput.planner.plan import Plan
    from goodput.planner.verify import simulate_plan
    from goodput.sim.metrics import format_summary

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
