"""The simulator's own subcommands: ``goodput simulate`` and ``goodput trace``.

Each group is a function that adds its subparser to an ``argparse`` subparsers object and sets
the handler that runs it (``add_simulate_subcommand``, ``add_trace_subcommands``,
``add_sim_subcommands`` for both). The umbrella ``goodput`` command (``goodput/cli.py``) registers
them next to the planner's and the profiler's and wires ``simulate --plan``; nothing here
imports the planner or the profiler (see docs/simulator.md, "Layering").
``python -m sim.cli simulate ...`` runs the simulator's subcommands alone.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from sim.config import ConfigError, SimConfig, load_config, to_dict
from sim.config_checks import check_config
from sim.workload.cli import add_trace_subcommands

_SIM_FLAGS = {  # flag dest -> dotted config path
    "policy": "scheduler.policy", "router": "router.name", "rate": "trace.rate",
    "trace_format": "trace.format", "max_requests": "trace.max_requests",
    "ttft_slo": "slo.ttft_s", "tpot_slo": "slo.tpot_s", "cost_model": "cost_model.kind",
    "profile_dir": "cost_model.profile_dir", "out": "output.dir", "seed": "seed",
    "max_sim_time": "max_sim_time_s", "num_requests": "trace.num_requests",
    "max_batch_size": "scheduler.max_batch_size", "max_batched_tokens": "scheduler.max_batched_tokens",
    "trace_events": "output.trace_events",
}
_GROUP_FLAGS = {"model": "model", "gpu": "gpu", "tp": "tp", "instances": "count"}


def _parse_set(items: list[str]) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value (dotted key), got '{item}'")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def config_from_args(args) -> SimConfig:
    overrides = _parse_set(args.set)
    for dest, path in _SIM_FLAGS.items():
        value = getattr(args, dest, None)
        if value is not None:
            overrides[path] = value
    if args.trace:
        overrides["trace.path"] = args.trace
    if args.step_mode:
        overrides["fast_forward"] = False
    overrides["progress"] = not args.no_progress
    if args.no_plots:
        overrides["output.plots"] = False
    cfg = load_config(args.config, overrides)
    group_over = {k: getattr(args, k) for k in _GROUP_FLAGS if getattr(args, k, None) is not None}
    if group_over:
        if len(cfg.cluster) != 1:
            raise ConfigError("--model/--gpu/--tp/--instances apply to a single-group cluster; "
                              "edit cluster[] in the config for several groups")
        for k, v in group_over.items():
            setattr(cfg.cluster[0], _GROUP_FLAGS[k], v)
    check_config(cfg)  # every value, before the trace is read or anything simulated
    return cfg


def cmd_simulate(args) -> int:
    from sim.inputs import build_trace
    from sim.metrics import format_summary
    from sim.run import run_and_report

    cfg = config_from_args(args)
    trace, count = build_trace(cfg.trace, cfg.seed)
    result = run_and_report(cfg, trace, count)
    print(format_summary(result.summary))
    print(f"cost model: {json.dumps(result.cost_sources)}")
    print(f"simulated {count} requests in {result.wall_s:.2f} s wall "
          f"({count / max(result.wall_s, 1e-9):,.0f} req/s)")
    if cfg.output.dir:
        print(f"results written to {Path(cfg.output.dir).resolve()}")
    return 0


def add_simulate_subcommand(sub) -> argparse.ArgumentParser:
    """Add ``simulate`` to ``sub``; returns its parser so a caller can add flags (``--plan``)."""
    p = sub.add_parser("simulate", help="simulate a serving cluster on a trace",
                       description="Replay a trace (or a synthetic workload) through a simulated "
                                   "cluster and print latency, SLO attainment, throughput and cost.")
    p.add_argument("--config", help="YAML config (see examples/)")
    p.add_argument("--trace", help="trace file (Azure, BurstGPT, Mooncake, Vidur, canonical)")
    p.add_argument("--trace-format", help="trace format (default: auto-detect)")
    p.add_argument("--model", help="model name, e.g. llama-3.1-8b")
    p.add_argument("--gpu", help="GPU name, e.g. h100")
    p.add_argument("--tp", type=int, help="tensor-parallel degree per instance")
    p.add_argument("--instances", type=int, help="number of instances")
    p.add_argument("--policy", help="batching policy (vllm, ...)")
    p.add_argument("--router", help="router (round_robin, least_outstanding_tokens, least_kv, "
                   "power_of_two, llumnix, or one registered by a plugin)")
    p.add_argument("--rate", type=float, help="rescale the trace / synthesize at this req/s")
    p.add_argument("--num-requests", type=int, help="requests of a synthetic workload")
    p.add_argument("--max-requests", type=int, help="replay only the first N requests")
    p.add_argument("--max-batch-size", type=int)
    p.add_argument("--max-batched-tokens", type=int)
    p.add_argument("--ttft-slo", type=float, help="TTFT SLO, seconds")
    p.add_argument("--tpot-slo", type=float, help="TPOT SLO, seconds")
    p.add_argument("--cost-model", help="auto | profiled | roofline")
    p.add_argument("--profile-dir", help="explicit profile directory for the profiled cost model")
    p.add_argument("--max-sim-time", type=float, help="stop at this simulated time (s)")
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="directory for requests.parquet, summary.json and plots")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--trace-events", metavar="FILE",
                   help="write a Chrome/Perfetto trace-event JSON of the run (open in ui.perfetto.dev)")
    p.add_argument("--step-mode", action="store_true",
                   help="one event per iteration (no fast-forward); for checking and debugging")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any config field, e.g. --set scheduler.block_size=32")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run_simulate)
    return p


def run_simulate(args) -> int:
    """``goodput simulate``: print the resolved config (``--print-config``) or run it."""
    if args.print_config:
        print(yaml.safe_dump(to_dict(config_from_args(args)), sort_keys=False))
        return 0
    return cmd_simulate(args)


def add_sim_subcommands(sub) -> None:
    """The simulator's subcommands: ``simulate`` and ``trace ...``."""
    add_simulate_subcommand(sub)
    add_trace_subcommands(sub)


#: errors a handler reports as one ``goodput: error: ...`` line with exit status 2 (no
#: traceback); ConfigError, TraceError, MetricsError and PlannerError are ValueErrors
CLEAN_ERRORS = (ConfigError, ValueError, FileNotFoundError)


def run_command(parser: argparse.ArgumentParser, argv=None) -> int:
    """Parse ``argv`` and run the chosen handler, reporting CLEAN_ERRORS the ``goodput`` way."""
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except CLEAN_ERRORS as exc:
        print(f"goodput: error: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    """A parser with the simulator's subcommands only (the full command is goodput.cli)."""
    parser = argparse.ArgumentParser(prog="goodput", description="The simulator's subcommands "
                                     "(simulate, trace); `goodput` has them all.")
    add_sim_subcommands(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv=None) -> int:
    """``python -m sim.cli simulate ...``: the simulator's subcommands without the rest."""
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
