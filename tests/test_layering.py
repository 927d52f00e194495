"""Layering as a rule: the import contracts, the umbrella CLI's wiring and the public API.

The contracts live in pyproject.toml ``[tool.importlinter]`` and are what ``.ci/contracts`` runs:
goodput above planner and profiler, both above sim, planner and profiler independent, no import
cycles inside planner, and goodput.sim.costmodel importing no simulator module directly.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tests.conftest import REPO

_LINT = ("from importlinter.cli import lint_imports\n"
         "raise SystemExit(lint_imports(config_filenames=('pyproject.toml',), no_cache=True, "
         "no_logo=True))\n")


def test_import_contracts_hold():
    if importlib.util.find_spec("importlinter") is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    run = subprocess.run([sys.executable, "-c", _LINT], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, (
        "an import breaks the layering contracts of pyproject.toml [tool.importlinter] "
        "(goodput > planner | profiler > sim; no cycles in planner; goodput.sim.costmodel below the "
        "simulator). Move the shared code down a layer or invert the dependency; see "
        "docs/simulator.md, 'Layering'.\n\n" + run.stdout[-6000:] + run.stderr[-3000:])


def test_umbrella_cli_registers_every_layer():
    from goodput.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"simulate", "trace", "plan", "profile", "fidelity"} <= set(sub.choices)
    simulate_flags = {o for a in sub.choices["simulate"]._actions for o in a.option_strings}
    assert "--plan" in simulate_flags  # wired by goodput.cli, not by goodput.sim.cli


def test_sim_cli_alone_knows_only_the_simulator():
    from goodput.sim.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == {"simulate", "trace"}
    assert "--plan" not in {o for a in sub.choices["simulate"]._actions for o in a.option_strings}


def test_version_flag(capsys):
    import goodput
    from goodput.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"goodput {goodput.__version__} (goodput-serving"), out


def test_public_api_resolves_lazily():
    code = ("import sys, goodput\n"
            "heavy = [m for m in ('numpy', 'pandas', 'goodput.sim') if m in sys.modules]\n"
            "assert not heavy, f'import goodput imported {heavy}'\n"
            "missing = [n for n in goodput.__all__ if not hasattr(goodput, n)]\n"
            "assert not missing, f'goodput.__all__ names that do not resolve: {missing}'\n"
            "assert set(goodput.__all__) == {'__version__', *goodput._EXPORTS}\n"
            "assert goodput.SimConfig.__module__ == 'goodput.sim.config'\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]


def test_profile_location_has_one_home():
    """goodput.sim.costmodel.profile_store owns where profiles live; the profiler writes there."""
    from goodput.profiler.cli import DEFAULT_ROOT
    from goodput.sim.costmodel import profile_store, profiled

    assert DEFAULT_ROOT == profile_store.PROFILES_ROOT
    assert profiled.PROFILES_ROOT == profile_store.PROFILES_ROOT
    assert (profile_store.PROFILES_ROOT / "calibration.json").exists()


def test_request_schema_is_the_records_schema():
    from goodput.sim import schema
    from goodput.sim.engine import records, sequence
    from goodput.sim.metrics import OPTIONAL, OUTCOMES, REQUIRED
    from goodput.sim.schema import OPTIONAL_DEFAULTS, REQUEST_COLUMNS, REQUIRED_COLUMNS
    from goodput.sim.schema import OUTCOMES as SCHEMA_OUTCOMES

    assert sequence.OUTCOMES is SCHEMA_OUTCOMES and OUTCOMES is SCHEMA_OUTCOMES
    assert (sequence.COMPLETED, sequence.REJECTED, sequence.UNFINISHED) == (
        schema.COMPLETED, schema.REJECTED, schema.UNFINISHED)
    assert REQUIRED == REQUIRED_COLUMNS and OPTIONAL == OPTIONAL_DEFAULTS
    assert list(records.RecordSink().to_frame().columns) == list(REQUEST_COLUMNS)
    assert set(REQUIRED) | set(OPTIONAL) == set(REQUEST_COLUMNS)


def test_one_installed_namespace():
    """Everything installs under ``goodput``: the distribution's package list is goodput.* only
    (goodput/sim, goodput/planner, goodput/profiler link to the top-level folders), and no file of
    the tree imports the folders by their bare names (two copies of every class would follow)."""
    import ast

    from setuptools import find_packages

    packages = find_packages(str(REPO), include=["goodput*"])
    for pkg in ("goodput.sim.engine", "goodput.sim.costmodel", "goodput.planner", "goodput.profiler.serve"):
        assert pkg in packages, pkg
    bare = []
    for folder in ("goodput", "sim", "planner", "profiler", "tests", "benchmarks", "notebooks"):
        root = REPO / folder  # goodput/: its own modules (the linked folders come next)
        for path in root.glob("*.py") if folder == "goodput" else root.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                         else [])
                bare += [f"{path.relative_to(REPO)}: {n}" for n in names
                         if n.split(".")[0] in ("sim", "planner", "profiler")]
    assert not bare, bare
