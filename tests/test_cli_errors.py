"""Each error a user meets on the command line is one line naming the flag or field and the fix."""
from __future__ import annotations

import subprocess
import sys

import pytest

from goodput.cli import main
from goodput.sim.cli import build_parser, config_from_args
from tests.conftest import REPO

PROFILE = REPO / "profiler" / "profiles" / "h100-sxm" / "llama-3.1-8b" / "tp1"
FAST = ["--no-progress", "--no-plots", "--max-requests", "4"]


def one_line_error(capsys, argv, *needles) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("goodput: error: ")
    for n in needles:
        assert n in err, (n, err)
    return err


@pytest.mark.parametrize("argv, flag", [
    (["profile", "run", "--model", "llama-3.1-8b"], "--device cpu --model tiny-cpu --quick"),
    (["profile", "bandwidth"], "--device cpu"),
])
def test_profiling_without_a_gpu_is_one_line(argv, flag, capsys, monkeypatch, tmp_path):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    one_line_error(capsys, [*argv, "--out", str(tmp_path)], "no CUDA GPU", "--device defaults to "
                   "cuda", flag)


def test_a_yaml_syntax_error_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1\nfoo: bar\n")
    one_line_error(capsys, ["simulate", "--config", str(bad)], str(bad), "line 2", "not valid YAML")


def test_the_hinted_trace_flags_exist_on_simulate(tmp_path, capsys):
    unsorted = tmp_path / "u.csv"
    unsorted.write_text("arrival_s,prompt_tokens,output_tokens\n1.0,10,5\n0.5,10,5\n2.0,10,5\n")
    one_line_error(capsys, ["simulate", "--trace", str(unsorted), *FAST], "--sort")
    assert main(["simulate", "--trace", str(unsorted), "--sort", "--cost-model", "roofline",
                 *FAST]) == 0
    zero = tmp_path / "z.csv"
    zero.write_text("arrival_s,prompt_tokens,output_tokens\n0.0,10,5\n0.5,10,0\n2.0,10,5\n")
    one_line_error(capsys, ["simulate", "--trace", str(zero), *FAST], "--zero-tokens drop")
    assert main(["simulate", "--trace", str(zero), "--zero-tokens", "drop", "--cost-model",
                 "roofline", *FAST]) == 0


def _cfg(*argv):
    return config_from_args(build_parser().parse_args(["simulate", *argv]))


def test_progress_follows_set_the_config_file_and_the_flag(tmp_path):
    assert _cfg().progress is True  # the terminal default
    assert _cfg("--set", "progress=false").progress is False
    assert _cfg("--no-progress", "--set", "progress=true").progress is False
    conf = tmp_path / "c.yaml"
    conf.write_text("progress: false\n")
    assert _cfg("--config", str(conf)).progress is False


def test_a_profile_of_another_model_or_gpu_is_refused_unless_forced(capsys):
    base = ["simulate", "--rate", "4", "--num-requests", "3", "--profile-dir", str(PROFILE),
            "--no-progress", "--no-plots"]
    one_line_error(capsys, [*base, "--model", "llama-3.2-1b"], "llama-3.1-8b on h100-sxm",
                   "cluster[0] runs llama-3.2-1b", "--force-profile")
    one_line_error(capsys, [*base, "--gpu", "l4"], "runs llama-3.1-8b on l4", "--force-profile")
    assert main([*base, "--gpu", "h100"]) == 0  # the profile's own GPU, by its alias
    assert main([*base, "--model", "llama-3.2-1b", "--force-profile"]) == 0


def test_a_profile_dir_without_fit_json_is_one_line(tmp_path, capsys):
    one_line_error(capsys, ["simulate", "--rate", "4", "--profile-dir", str(tmp_path)],
                   "--profile-dir", "no fit.json", "goodput profile fit")


def test_a_closed_pipe_ends_quietly():
    proc = subprocess.Popen([sys.executable, "-m", "goodput", "trace", "stats",
                             str(REPO / "traces" / "sample_chat.csv"), "--json"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # as `| head` does once it has its lines
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == "", err
