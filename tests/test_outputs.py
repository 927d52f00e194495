"""Result folders: complete or untouched, never half-written; a user's folder is never replaced."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from goodput.sim.config import ConfigError, load_config
from goodput.sim.outputs import staged_folder
from goodput.sim.run import run_and_report

ONE = pd.DataFrame({"request_id": [0, 1], "arrival_s": [0.0, 0.5], "prompt_tokens": [50, 60],
                    "output_tokens": [4, 5]})


def cfg(out, **over):
    return load_config(overrides={"cost_model.kind": "roofline", "output.dir": str(out),
                                  "output.plots": False, **over})


def test_results_replace_earlier_results_and_leave_no_temporary_folder(tmp_path):
    out = tmp_path / "res"
    run_and_report(cfg(out, seed=1), ONE)
    first = json.loads((out / "summary.json").read_text())
    run_and_report(cfg(out, seed=2, **{"output.trace_events": str(out / "run.trace.json")}), ONE)
    assert json.loads((out / "config.json").read_text())["seed"] == 2
    assert (out / "run.trace.json").exists() and first["counts"]["total"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]  # no .partial / .old left


def test_a_folder_with_the_users_files_is_refused_before_simulating(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"holds files a goodput run did not write \(notes.txt\)"):
        run_and_report(cfg(tmp_path), ONE)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_failure_while_writing_leaves_the_earlier_results(tmp_path):
    out = tmp_path / "res"
    run_and_report(cfg(out, seed=1), ONE)
    before = (out / "summary.json").read_bytes()
    with pytest.raises(RuntimeError), staged_folder(out) as stage:
        (stage / "summary.json").write_text("half")
        raise RuntimeError("killed while writing")
    assert (out / "summary.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]


RUN = ["simulate", "--rate", "4", "--num-requests", "3", "--no-progress", "--no-plots",
       "--cost-model", "roofline"]


def test_the_cli_refuses_earlier_results_without_force(tmp_path, capsys):
    from goodput.cli import main

    out = tmp_path / "res"
    out.mkdir()  # an empty folder is not "earlier results": used as is
    assert main([*RUN, "--out", str(out), "--seed", "1"]) == 0
    before = (out / "summary.json").read_bytes()
    capsys.readouterr()
    assert main([*RUN, "--out", str(out), "--seed", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--force" in err and "Traceback" not in err, err
    assert (out / "summary.json").read_bytes() == before  # untouched
    assert main([*RUN, "--out", str(out), "--seed", "2", "--force"]) == 0
    assert json.loads((out / "config.json").read_text())["seed"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]  # crash-safe replace, no leftovers


def test_the_api_refuses_earlier_results_when_force_is_false(tmp_path):
    out = tmp_path / "res"
    run_and_report(cfg(out, seed=1), ONE)
    with pytest.raises(ConfigError, match="pass --force"):
        run_and_report(cfg(out, seed=2), ONE, force=False)


def test_a_run_without_out_says_nothing_was_saved(capsys):
    from goodput.cli import main

    assert main(RUN) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("results not saved (no --out)") and "--out DIR" in last
