"""The ``goodput`` command: one parser holding the subcommands of every layer.

* ``simulate``, ``trace ...``: the simulator's (``sim.cli``, ``sim.workload.cli``);
* ``plan``: the planner's (``planner.cli``), and ``simulate --plan plan.yaml``, wired here to
  ``planner.cli.cmd_simulate_plan``;
* ``profile ...``, ``fidelity ...``: the profiler's (``profiler.cli``, ``profiler.serve.cli``).

This module sits above the simulator, the planner and the profiler (docs/simulator.md,
"Layering"): it imports them and none of them imports it, and the simulator never imports the
planner or the profiler, which is why ``--plan`` is wired here and not in ``sim.cli``. A group
whose optional dependencies are missing (torch for parts of the profiler) is left out, so the
rest of the command still works.
"""
from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable

from goodput import __version__
from sim.cli import add_sim_subcommands, run_command, run_simulate

DESCRIPTION = ("Simulate, profile and plan LLM serving clusters: which design, which GPUs, how "
               "many, at what cost, meeting which SLOs.")


def _missing_optional(exc: ImportError, module: str) -> bool:
    """True when ``exc`` says ``module`` (or a package above it) or torch is not installed."""
    parts = module.split(".")
    names = {".".join(parts[:i]) for i in range(1, len(parts) + 1)} | {"torch"}
    return exc.name in names


def _plan_group() -> tuple[Callable, Callable] | None:
    try:
        from planner.cli import add_plan_subcommands, cmd_simulate_plan
    except ImportError as exc:
        if not _missing_optional(exc, "planner.cli"):
            raise
        return None
    return add_plan_subcommands, cmd_simulate_plan


def _profile_group() -> Callable | None:
    try:
        from profiler.cli import add_profile_subcommands
    except ImportError as exc:
        if not _missing_optional(exc, "profiler.cli"):
            raise
        return None
    return add_profile_subcommands


def _fidelity_group() -> Callable | None:
    try:
        from profiler.serve.cli import add_fidelity_subcommands
    except ImportError as exc:
        if not _missing_optional(exc, "profiler.serve.cli"):
            raise
        return None
    return add_fidelity_subcommands


def _wire_plan_into_simulate(simulate: argparse.ArgumentParser, cmd_simulate_plan) -> None:
    """``goodput simulate --plan plan.yaml --trace T``: the planner re-simulates its plan."""
    simulate.add_argument("--plan", help="plan.yaml from `goodput plan`: re-simulate that "
                                         "deployment")

    def simulate_or_plan(args) -> int:
        if args.plan:
            return cmd_simulate_plan(args)
        return run_simulate(args)

    simulate.set_defaults(func=simulate_or_plan)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="goodput", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    add_sim_subcommands(sub)
    simulate = sub.choices["simulate"]
    for group in (_profile_group(), _fidelity_group()):
        if group is not None:
            group(sub)
    plan = _plan_group()
    if plan is not None:
        add_plan_subcommands, cmd_simulate_plan = plan
        add_plan_subcommands(sub)
        _wire_plan_into_simulate(simulate, cmd_simulate_plan)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``goodput`` console script (pyproject.toml ``[project.scripts]``)."""
    previous = _exit_on_sigterm()
    try:
        return run_command(build_parser(), argv)
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
