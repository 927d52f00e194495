"""The ``goodput`` command: one parser holding the subcommands of every layer.

* ``simulate``, ``trace ...``: the simulator's (``goodput.sim.cli``, ``goodput.sim.workload.cli``);
* ``plan``: the planner's (``goodput.planner.cli``), and ``simulate --plan plan.yaml``, wired here to
  ``goodput.planner.cli.cmd_simulate_plan``;
* ``profile ...``, ``fidelity ...``: the profiler's (``goodput.profiler.cli``,
  ``goodput.profiler.serve.cli``).

This module sits above the simulator, the planner and the profiler (docs/simulator.md,
"Layering"): it imports them and none of them imports it, and the simulator never imports the
planner or the profiler, which is why ``--plan`` is wired here and not in ``goodput.sim.cli``. A group
whose optional dependencies are missing (torch for parts of the profiler) is left out, so the
rest of the command still works.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import sys
from collections.abc import Callable

DESCRIPTION = ("Simulate, profile and plan LLM serving clusters: which design, which GPUs, how "
               "many, at what cost, meeting which SLOs.")

#: subcommand -> (its line in `goodput --help`, the top-level package it needs). `goodput CMD`
#: builds CMD's parser alone and lists the others by these lines, so `goodput --help` and
#: `goodput simulate --help` import neither pandas nor the planner or the profiler.
GROUPS = {
    "simulate": ("simulate a serving cluster on a trace", "sim"),
    "trace": ("inspect, generate and convert request traces", "sim"),
    "profile": ("measure a GPU and fit a profiled cost model", "profiler"),
    "fidelity": ("measure the simulator's error against real serving on a GPU "
                 "(design / run / compare / report)", "profiler"),
    "plan": ("cheapest GPU mix that meets TTFT/TPOT SLOs (Mélange ILP, proved by simulation)",
             "planner"),
    "completion": ("print a bash or zsh completion script", "goodput"),
}


def _missing_optional(exc: ImportError, module: str) -> bool:
    """True when ``exc`` says ``module`` (or a package above it) or torch is not installed."""
    parts = module.split(".")
    names = {".".join(parts[:i]) for i in range(1, len(parts) + 1)} | {"torch"}
    return exc.name in names


def _plan_group() -> tuple[Callable, Callable] | None:
    try:
        from goodput.planner.cli import add_plan_subcommands, cmd_simulate_plan
    except ImportError as exc:
        if not _missing_optional(exc, "goodput.planner.cli"):
            raise
        return None
    return add_plan_subcommands, cmd_simulate_plan


def _profile_group() -> Callable | None:
    try:
        from goodput.profiler.cli import add_profile_subcommands
    except ImportError as exc:
        if not _missing_optional(exc, "goodput.profiler.cli"):
            raise
        return None
    return add_profile_subcommands


def _fidelity_group() -> Callable | None:
    try:
        from goodput.profiler.serve.cli import add_fidelity_subcommands
    except ImportError as exc:
        if not _missing_optional(exc, "goodput.profiler.serve.cli"):
            raise
        return None
    return add_fidelity_subcommands


def _wire_plan_into_simulate(simulate: argparse.ArgumentParser) -> None:
    """``goodput simulate --plan plan.yaml --trace T``: the planner re-simulates its plan (the
    planner is imported only when --plan is given)."""
    from goodput.sim.cli import run_simulate

    simulate.add_argument("--plan", help="plan.yaml from `goodput plan`: re-simulate that "
                                         "deployment")

    def simulate_or_plan(args) -> int:
        if not args.plan:
            return run_simulate(args)
        from goodput.planner.cli import cmd_simulate_plan

        if args.out and not args.force:
            from pathlib import Path

            from goodput.sim.outputs import holds_results
            from goodput.sim.run import existing_results_error

            if holds_results(Path(args.out)):
                raise existing_results_error(Path(args.out))
        return cmd_simulate_plan(args)

    simulate.set_defaults(func=simulate_or_plan)


def _available(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def _add_group(sub, name: str) -> bool:
    """Add subcommand ``name``'s full parser; False where its optional dependencies are missing."""
    if name == "simulate":
        from goodput.sim.cli import add_simulate_subcommand

        simulate = add_simulate_subcommand(sub)
        if _available("planner"):
            _wire_plan_into_simulate(simulate)
        return True
    if name == "completion":  # goodput.completion: made from the full parser when run
        from goodput.completion import add_completion_subcommand

        add_completion_subcommand(sub)
        return True
    if name == "trace":
        from goodput.sim.workload.cli import add_trace_subcommands

        add_trace_subcommands(sub)
        return True
    group = {"profile": _profile_group, "fidelity": _fidelity_group}.get(name)
    if group is not None:
        add = group()
        if add is not None:
            add(sub)
        return add is not None
    plan = _plan_group()
    if plan is not None:
        plan[0](sub)
    return plan is not None


class _Version(argparse.Action):
    """``--version``, reading the version (importlib.metadata, ~40 ms) only when asked."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help="show the version and exit"):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from goodput import DISTRIBUTION, __version__
        from goodput.sim.provenance import git_commit

        commit = git_commit()  # 'unknown' outside a git checkout (an installed wheel)
        where = f", commit {commit[:12]}" if commit != "unknown" else ""
        print(f"{parser.prog} {__version__} ({DISTRIBUTION}{where})")
        parser.exit()


def _command_of(argv: list[str]) -> str | None:
    """The subcommand ``argv`` names (the first word not an option), or None."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``goodput`` parser. With ``argv``, only the subcommand it names is built in full (the
    others are listed by name and help line); without, every group is built."""
    parser = argparse.ArgumentParser(prog="goodput", description=DESCRIPTION)
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True)
    wanted = None if argv is None else _command_of(argv)
    for name, (line, package) in GROUPS.items():
        if argv is None or name == wanted:
            _add_group(sub, name)
        elif package in ("sim", "goodput") or _available(package):
            sub.add_parser(name, help=line, add_help=False)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``goodput`` console script (pyproject.toml ``[project.scripts]``)."""
    from goodput.sim.cli import run_command

    previous = _exit_on_sigterm()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        rc = run_command(build_parser(argv), argv)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return rc
    except BrokenPipeError:  # `goodput trace stats T | head`: the reader left; exit quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's last flush raises nothing
        return 141  # 128 + SIGPIPE, as a command killed by the closed pipe reports
    except KeyboardInterrupt:  # Ctrl-C: one line and the shell's convention, not a traceback
        print("goodput: interrupted", file=sys.stderr)
        return 130
    except _Terminated:  # `kill PID`: the same, so worker processes are stopped on the way out
        print("goodput: terminated", file=sys.stderr)
        return 143
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class _Terminated(BaseException):
    """Raised by SIGTERM; a BaseException, so no ``except Exception`` on the way swallows it."""


def _exit_on_sigterm():
    """Turn SIGTERM into ``_Terminated`` (cleanup runs: the planner's pool stops its workers);
    returns the previous handler, or None where handlers cannot be set (not the main thread)."""
    def handler(signum, frame):
        raise _Terminated()

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:
        return None


if __name__ == "__main__":
    sys.exit(main())
