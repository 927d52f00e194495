"""`goodput --help` lists every policy, router and format with its default, and stays light.

Speed itself is measured in benchmarks/cli_help.py (no test asserts on wall-clock time); here the
test is what makes it fast: the help imports neither numpy nor pandas nor the engine.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from goodput.cli import main
from goodput.sim import cli_help
from tests.conftest import REPO


def _help(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # unwrap argparse's line breaks


def test_simulate_help_lists_every_registered_choice_and_default(capsys):
    from goodput.sim.config import SimConfig
    from goodput.sim.costmodel.factory import KINDS
    from goodput.sim.engine.policies import POLICIES
    from goodput.sim.engine.routers import ROUTERS
    from goodput.sim.workload.formats import FORMATS

    text = _help(capsys, "simulate")
    for name in (*POLICIES, *ROUTERS, *FORMATS, *KINDS):
        assert name in text, name
    cfg = SimConfig()
    assert f"(default: {cfg.scheduler.policy})" in text and f"(default: {cfg.router.name})" in text
    assert "(default: auto)" in text and "(default: none: nothing is saved)" in text
    for flag in ("--force", "--json", "--percentiles", "--sort", "--zero-tokens", "--force-profile",
                 "--plan"):
        assert flag in text, flag


def test_the_help_read_from_source_matches_the_live_registries():
    """Where the registries are not imported the help reads them from their source: the same."""
    code = ("from sim import cli_help\n"
            "cold = cli_help.choices()\n"
            "import goodput.sim.engine.policies, goodput.sim.engine.routers, goodput.sim.workload\n"
            "import goodput.sim.costmodel.factory\n"
            "assert cli_help.choices() == cold, (cli_help.choices(), cold)\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]


def test_live_registries_include_plugins():
    from goodput.sim.engine.routers import ROUTERS

    assert cli_help.router_names() == sorted(ROUTERS)


def test_top_level_help_lists_every_group(capsys):
    text = _help(capsys)
    for name in ("simulate", "trace", "plan", "profile", "fidelity"):
        assert name in text


@pytest.mark.parametrize("argv", [["--help"], ["simulate", "--help"]])
def test_help_imports_nothing_heavy(argv):
    code = ("import sys\nfrom goodput.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('numpy', 'pandas', 'goodput.sim.engine', 'goodput.planner', "
            "'goodput.profiler', "
            "'goodput.sim.workload', 'torch') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
