"""`trace stats | generate | sessions | convert` subcommands, mountable under any argparse parent.

The console script mounts these as `goodput trace ...`; `python -m goodput.sim.workload.cli trace ...`
works standalone. Handlers are plain functions of the parsed args returning an exit code; a
TraceError becomes a one-line "error: ..." on stderr and exit code 2, never a traceback, because
its message already says what to fix.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

from .format_names import FORMAT_NAMES as FORMATS  # no pandas: `goodput trace --help` stays fast


def _friendly(fn):
    @functools.wraps(fn)
    def wrapper(args) -> int:
        from .schema import TraceError

        try:
            return fn(args)
        except TraceError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return wrapper


def _load_opts(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("loading")
    g.add_argument("--format", default="auto", choices=("auto", *FORMATS),
                   help="input format (default: detect from extension and columns)")
    g.add_argument("--sort", action="store_true",
                   help="sort out-of-order arrivals instead of failing")
    g.add_argument("--zero-tokens", choices=("error", "drop"), default=None,
                   help="rows with 0 prompt/output tokens: error (default) or drop (counted)")
    g.add_argument("--burstgpt-failed", choices=("drop", "keep"), default=None,
                   help="BurstGPT failed requests (Response tokens 0): drop (default, counted) "
                        "or keep with output_tokens=1")
    g.add_argument("--model", action="append", default=None,
                   help="BurstGPT: keep only this Model (repeatable)")
    g.add_argument("--log-type", default=None, help="BurstGPT: keep only this Log Type")
    g.add_argument("--rate", type=float, default=None,
                   help="length-only traces: synthesize arrivals at this req/s")
    g.add_argument("--arrival", choices=("poisson", "gamma"), default=None,
                   help="length-only traces: arrival process (default poisson)")
    g.add_argument("--cv", type=float, default=None,
                   help="length-only traces: gamma inter-arrival CV")
    g.add_argument("--seed", type=int, default=None, help="length-only traces: arrival seed")


def _load(path: str, args):
    from .loaders import load_trace

    return load_trace(path, args.format, sort=args.sort or None, zero_tokens=args.zero_tokens,
                      burstgpt_failed=args.burstgpt_failed, model=args.model,
                      log_type=args.log_type, rate=args.rate, arrival=args.arrival, cv=args.cv,
                      seed=args.seed)


@_friendly
def cmd_stats(args) -> int:
    """Print a trace's size, rate, burstiness and length percentiles (or JSON with --json)."""
    from .stats import format_stats, trace_stats

    s = trace_stats(_load(args.file, args))
    if args.json:
        print(json.dumps(s, indent=2, default=str))
    else:
        print(format_stats(s))
    return 0


@_friendly
def cmd_generate(args) -> int:
    """Write a synthetic trace; streams chunks so 10^6+ requests need little memory."""
    from .generators import synthesize_chunks
    from .loaders import write_chunks

    n = write_chunks(synthesize_chunks(args.n, args.rate, args.prompt, args.output,
                                       args.arrival, args.cv, args.seed, chunk=args.chunk),
                     args.out, float_format=args.float_format)
    print(f"wrote {n:,} requests to {args.out}")
    return 0


@_friendly
def cmd_sessions(args) -> int:
    """Write multi-turn sessions with shared prefixes: Mooncake JSON lines or canonical."""
    from .loaders import container_of, write_chunks
    from .schema import TraceError
    from .sessions import mooncake_like, save_mooncake, to_canonical

    if args.format is None:
        args.format = "mooncake" if container_of(Path(args.out)) == "jsonl" else "canonical"
    if args.format == "mooncake" and container_of(Path(args.out)) != "jsonl":
        raise TraceError(f"{args.out}: the Mooncake format is JSON lines; name the file .jsonl, "
                         f"or pass --format canonical for CSV/Parquet")
    if args.format == "mooncake" and args.out.lower().endswith(".gz"):
        raise TraceError(f"{args.out}: Mooncake files are written uncompressed; drop the .gz")
    turns = int(args.turns) if args.turns.isdigit() else args.turns
    df = mooncake_like(sessions=args.sessions, turns=turns, system_prompts=args.system_prompts,
                       system_tokens=args.system_tokens, user_tokens=args.user,
                       output_tokens=args.output, rate=args.rate, think_s=args.think,
                       seed=args.seed)
    if args.format == "mooncake":
        n = save_mooncake(df, args.out)
    else:
        n = write_chunks([to_canonical(df)], args.out)
    print(f"wrote {n:,} requests ({args.sessions:,} sessions, {args.format}) to {args.out}")
    return 0


@_friendly
def cmd_convert(args) -> int:
    """Any supported format -> canonical file, optionally cut to a window and/or re-rated."""
    from .generators import rescale, time_slice
    from .loaders import save_trace

    trace = _load(args.input, args)
    if args.start is not None or args.end is not None:
        trace = time_slice(trace, args.start or 0.0, args.end)
    if args.to_rate is not None:
        trace = rescale(trace, rate=args.to_rate)
    save_trace(trace, args.output, float_format=args.float_format)
    dropped = trace.meta.get("dropped") or {}
    note = f" (dropped by option: {dropped})" if any(dropped.values()) else ""
    print(f"wrote {len(trace):,} requests ({trace.format} -> canonical) to {args.output}{note}")
    return 0


def add_trace_subcommands(subparsers) -> argparse.ArgumentParser:
    """Add `trace {stats,generate,sessions,convert}` to an argparse subparsers object.

    Each leaf parser sets `func` to its handler: call `args.func(args)` after parsing.
    """
    from .format_names import SPEC_HELP

    trace = subparsers.add_parser("trace", help="inspect, generate and convert request traces")
    sub = trace.add_subparsers(dest="trace_cmd", required=True, metavar="{stats,generate,sessions,convert}")

    p = sub.add_parser("stats", help="summary statistics of a trace file")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    _load_opts(p)
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("generate", help="write a synthetic trace",
                       description=f"Length specs: {SPEC_HELP}")
    p.add_argument("--n", type=int, required=True, help="number of requests")
    p.add_argument("--rate", type=float, required=True, help="arrival rate, req/s")
    p.add_argument("--prompt", required=True, help="prompt length spec")
    p.add_argument("--output", default=None,
                   help="output length spec (omit when --prompt is a joint empirical:PATH)")
    p.add_argument("--arrival", choices=("poisson", "gamma"), default="poisson")
    p.add_argument("--cv", type=float, default=1.0, help="gamma inter-arrival CV (1 = Poisson)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--out", required=True, help="output .csv/.parquet/.jsonl (+.gz)")
    p.add_argument("--chunk", type=int, default=65536, help="rows generated per chunk")
    p.add_argument("--float-format", default=None,
                   help="CSV arrival_s format, e.g. %%.6f (default: exact)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("sessions", help="write multi-turn sessions with shared prefixes "
                       "(Mooncake JSON lines or canonical)",
                       description="Each turn re-sends the conversation so far plus a new user "
                       "message; sessions share a few system prompts; session starts are "
                       f"Poisson. Length specs: {SPEC_HELP}")
    p.add_argument("--sessions", type=int, required=True, help="number of sessions")
    p.add_argument("--turns", default="4", help="turns per session: N or a spec like uniform:1:8")
    p.add_argument("--system-prompts", type=int, default=4,
                   help="distinct shared system prompts (0 = none)")
    p.add_argument("--system-tokens", type=int, default=2048, help="tokens per system prompt")
    p.add_argument("--user", default="lognormal:mean=400,std=300,min=16,max=4096",
                   help="length spec of each new user message")
    p.add_argument("--output", default="lognormal:mean=200,std=150,min=1,max=1024",
                   help="length spec of each answer")
    p.add_argument("--rate", type=float, default=1.0, help="session starts per second")
    p.add_argument("--think", type=float, default=30.0, help="mean seconds between turns")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", choices=("mooncake", "canonical"), default=None,
                   help="mooncake: timestamp/input_length/output_length/hash_ids JSON lines; "
                        "canonical: with session_id and prefix_blocks (default: mooncake for "
                        ".jsonl, canonical otherwise)")
    p.add_argument("-o", "--out", required=True,
                   help="output .jsonl (Mooncake) or .csv/.parquet/.jsonl (+.gz; canonical)")
    p.set_defaults(func=cmd_sessions)

    p = sub.add_parser("convert", help="convert any supported trace to the canonical format")
    p.add_argument("input")
    p.add_argument("output", help="output .csv/.parquet/.jsonl (+.gz)")
    p.add_argument("--start", type=float, default=None, help="keep arrivals >= this (s)")
    p.add_argument("--end", type=float, default=None, help="keep arrivals < this (s)")
    p.add_argument("--to-rate", type=float, default=None, help="rescale arrivals to this req/s")
    p.add_argument("--float-format", default=None, help="CSV arrival_s format, e.g. %%.6f")
    _load_opts(p)
    p.set_defaults(func=cmd_convert)
    return trace


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m goodput.sim.workload.cli",
                                     description="Goodput trace tools")
    add_trace_subcommands(parser.add_subparsers(dest="cmd", required=True))
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
