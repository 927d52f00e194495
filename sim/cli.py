"""The simulator's own subcommands: ``goodput simulate`` and ``goodput trace``.

Each group is a function that adds its subparser to an ``argparse`` subparsers object and sets
the handler that runs it (``add_simulate_subcommand``, ``add_trace_subcommands``,
``add_sim_subcommands`` for both). The umbrella ``goodput`` command (``goodput/cli.py``) registers
them next to the planner's and the profiler's and wires ``simulate --plan``; nothing here
imports the planner or the profiler (see docs/simulator.md, "Layering").
``python -m goodput.sim.cli simulate ...`` runs the simulator's subcommands alone.

Building the parser imports nothing heavy (no numpy, pandas or the engine): ``--help`` lists the
registered policies, routers, trace formats and every flag's default, and imports the
registries only when it is asked for (goodput.sim.cli_help).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from goodput.sim.cli_help import GROUP_FLAGS, SIM_FLAGS, RegistryHelp

_SIM_FLAGS, _GROUP_FLAGS = SIM_FLAGS, GROUP_FLAGS  # the names older callers use


def _parse_set(items: list[str]) -> dict:
    import yaml

    from goodput.sim.config import ConfigError

    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value (dotted key), got '{item}'")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def _file_sets(path: str | None, key: str) -> bool:
    """Whether the YAML config at ``path`` sets top-level ``key`` (False if unreadable: then
    load_config reports the file's problem)."""
    if not path:
        return False
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and key in data


def config_from_args(args):
    from goodput.sim.config import ConfigError, load_config
    from goodput.sim.config_checks import check_config

    overrides = _parse_set(args.set)
    for dest, path in SIM_FLAGS.items():
        value = getattr(args, dest, None)
        if value is not None:
            overrides[path] = value
    if args.trace:
        overrides["trace.path"] = args.trace
    if args.step_mode:
        overrides["fast_forward"] = False
    # the bar is on by default at the terminal; --no-progress, --set progress=... and the config
    # file's progress: are each respected (the flag first)
    if args.no_progress:
        overrides["progress"] = False
    elif "progress" not in overrides and not _file_sets(args.config, "progress"):
        overrides["progress"] = True
    if args.no_plots:
        overrides["output.plots"] = False
    cfg = load_config(args.config, overrides)
    group_over = {k: getattr(args, k) for k in GROUP_FLAGS if getattr(args, k, None) is not None}
    if group_over:
        if len(cfg.cluster) != 1:
            raise ConfigError("--model/--gpu/--tp/--instances apply to a single-group cluster; "
                              "edit cluster[] in the config for several groups")
        for k, v in group_over.items():
            setattr(cfg.cluster[0], GROUP_FLAGS[k], v)
    check_config(cfg)  # every value, before the trace is read or anything simulated
    check_profile_matches(cfg, force=getattr(args, "force_profile", False))
    return cfg


def _catalog_name(get, name: str) -> str:
    try:
        return get(name).name
    except ValueError:
        return str(name).strip().lower()


def check_profile_matches(cfg, force: bool = False) -> None:
    """``cost_model.profile_dir`` must hold a profile of the GPU, model and TP every cluster group
    runs (its fit.json names them); ConfigError naming --force-profile otherwise."""
    d = cfg.cost_model.profile_dir
    if not d or cfg.cost_model.kind == "roofline":
        return
    from goodput.sim.catalog import get_gpu, get_model
    from goodput.sim.config import ConfigError

    fit = Path(d) / "fit.json"
    try:
        f = json.loads(fit.read_text())
    except FileNotFoundError:
        raise ConfigError(f"--profile-dir {d}: no fit.json there; give a profile folder "
                          f"(<root>/<gpu>/<model>/tp<k>) or fit it first: goodput profile fit {d}"
                          ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--profile-dir {d}: fit.json is unreadable ({exc}); refit it: "
                          f"goodput profile fit {d}") from None
    if force:
        return
    have = (_catalog_name(get_gpu, f.get("gpu", "?")), _catalog_name(get_model, f.get("model", "?")),
            f.get("tp"))
    for i, g in enumerate(cfg.cluster):
        want = (_catalog_name(get_gpu, g.gpu), _catalog_name(get_model, g.model), g.tp)
        if want != have:
            raise ConfigError(
                f"--profile-dir {d}: the profile is of {have[1]} on {have[0]} tp={have[2]}, but "
                f"cluster[{i}] runs {want[1]} on {want[0]} tp={want[2]}; give that group's "
                "profile, drop --profile-dir (cost_model.kind=auto finds it), or pass "
                "--force-profile to use it anyway")


def _load_options(args) -> dict:
    opts = {"sort": True if getattr(args, "sort", False) else None,
            "zero_tokens": getattr(args, "zero_tokens", None)}
    return {k: v for k, v in opts.items() if v is not None}


def cmd_simulate(args) -> int:
    from goodput.sim.inputs import build_trace
    from goodput.sim.metrics import PERCENTILES, format_summary, parse_percentiles
    from goodput.sim.outputs import holds_results
    from goodput.sim.provenance import collect, format_header
    from goodput.sim.run import existing_results_error, run_and_report

    cfg = config_from_args(args)
    percentiles = parse_percentiles(args.percentiles) if args.percentiles else PERCENTILES
    out = Path(cfg.output.dir) if cfg.output.dir else None
    if out is not None and not args.force and holds_results(out):  # before reading the trace
        raise existing_results_error(out)
    load_opts = _load_options(args)
    trace, count = build_trace(cfg.trace, cfg.seed, **load_opts)
    prov = collect(cfg, trace, load_opts)
    info = sys.stderr if args.json else sys.stdout  # --json: stdout carries the JSON alone
    print(format_header(prov), file=info, flush=True)
    result = run_and_report(cfg, trace, count, force=args.force, provenance=prov,
                            percentiles=percentiles)
    if args.json:
        print(json.dumps(result.summary, indent=2, allow_nan=False))
    else:
        print(format_summary(result.summary))
    print(f"simulated {count} requests in {result.wall_s:.2f} s wall "
          f"({count / max(result.wall_s, 1e-9):,.0f} req/s)", file=info)
    if out is not None:
        print(f"results written to {out.resolve()}", file=info)
    else:
        print("results not saved (no --out): pass --out DIR to write summary.json, "
              "requests.parquet and plots", file=info)
    return 0


def add_simulate_subcommand(sub) -> argparse.ArgumentParser:
    """Add ``simulate`` to ``sub``; returns its parser so a caller can add flags (``--plan``)."""
    p = sub.add_parser("simulate", help="simulate a serving cluster on a trace", add_help=False,
                       description="Replay a trace (or a synthetic workload) through a simulated "
                                   "cluster and print latency, SLO attainment, throughput and cost.")
    p.add_argument("-h", "--help", action=RegistryHelp, help="show this help message and exit")
    p.add_argument("--config", help="YAML config (see examples/)")
    p.add_argument("--trace", help="trace file (format detected; see --trace-format)")
    p.add_argument("--trace-format", help="trace format")
    p.add_argument("--sort", action="store_true",
                   help="sort a trace's out-of-order arrivals instead of failing")
    p.add_argument("--zero-tokens", choices=("error", "drop"), default=None,
                   help="trace rows with 0 prompt/output tokens: error (default) or drop (counted)")
    p.add_argument("--model", help="model name, e.g. llama-3.1-8b")
    p.add_argument("--gpu", help="GPU name, e.g. h100")
    p.add_argument("--tp", type=int, help="tensor-parallel degree per instance")
    p.add_argument("--instances", type=int, help="number of instances")
    p.add_argument("--policy", help="batching policy")
    p.add_argument("--router", help="router")
    p.add_argument("--rate", type=float, help="rescale the trace / synthesize at this req/s")
    p.add_argument("--num-requests", type=int, help="requests of a synthetic workload")
    p.add_argument("--max-requests", type=int, help="replay only the first N requests")
    p.add_argument("--max-batch-size", type=int, help="max sequences in one iteration")
    p.add_argument("--max-batched-tokens", type=int, help="max new tokens in one iteration")
    p.add_argument("--ttft-slo", type=float, help="TTFT SLO, seconds")
    p.add_argument("--tpot-slo", type=float, help="TPOT SLO, seconds")
    p.add_argument("--cost-model", help="cost model")
    p.add_argument("--profile-dir", help="explicit profile directory for the profiled cost model "
                   "(must match the run's GPU, model and TP)")
    p.add_argument("--force-profile", action="store_true",
                   help="use --profile-dir even if its fit.json names another GPU, model or TP")
    p.add_argument("--max-sim-time", type=float, help="stop at this simulated time (s)")
    p.add_argument("--seed", type=int, help="seed of arrivals, lengths and routing")
    p.add_argument("--out", help="directory for requests.parquet, summary.json and plots")
    p.add_argument("--force", action="store_true",
                   help="replace the results of an earlier run in --out")
    p.add_argument("--json", action="store_true",
                   help="print the summary as JSON on stdout (the header and notes go to stderr)")
    p.add_argument("--percentiles", metavar="P,P,...",
                   help="latency percentiles of the summary (default: 50,90,99)")
    p.add_argument("--no-plots", action="store_true", help="write no PNG plots into --out")
    p.add_argument("--trace-events", metavar="FILE",
                   help="write a Chrome/Perfetto trace-event JSON of the run (open in ui.perfetto.dev)")
    p.add_argument("--step-mode", action="store_true",
                   help="one event per iteration (no fast-forward); for checking and debugging")
    p.add_argument("--no-progress", action="store_true", help="draw no progress bar")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any config field, e.g. --set scheduler.block_size=32")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run_simulate)
    return p


def run_simulate(args) -> int:
    """``goodput simulate``: print the resolved config (``--print-config``) or run it."""
    if args.print_config:
        import yaml

        from goodput.sim.config import to_dict

        print(yaml.safe_dump(to_dict(config_from_args(args)), sort_keys=False))
        return 0
    return cmd_simulate(args)


def add_sim_subcommands(sub) -> None:
    """The simulator's subcommands: ``simulate`` and ``trace ...``."""
    from goodput.sim.workload.cli import add_trace_subcommands

    add_simulate_subcommand(sub)
    add_trace_subcommands(sub)


def clean_errors() -> tuple[type[BaseException], ...]:
    """Errors a handler reports as one ``goodput: error: ...`` line with exit status 2 (no
    traceback); ConfigError, TraceError, MetricsError and PlannerError are ValueErrors."""
    from goodput.sim.config import ConfigError

    return (ConfigError, ValueError, FileNotFoundError)


def __getattr__(name: str):
    if name == "CLEAN_ERRORS":  # kept for callers; resolved lazily (goodput.sim.config is not light)
        return clean_errors()
    raise AttributeError(f"module 'goodput.sim.cli' has no attribute {name!r}")


def run_command(parser: argparse.ArgumentParser, argv=None) -> int:
    """Parse ``argv`` and run the chosen handler, reporting clean errors the ``goodput`` way."""
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except Exception as exc:
        if not isinstance(exc, clean_errors()):
            raise
        print(f"goodput: error: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    """A parser with the simulator's subcommands only (the full command is goodput.cli)."""
    parser = argparse.ArgumentParser(prog="goodput", description="The simulator's subcommands "
                                     "(simulate, trace); `goodput` has them all.")
    add_sim_subcommands(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv=None) -> int:
    """``python -m goodput.sim.cli simulate ...``: the simulator's subcommands without the rest."""
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
