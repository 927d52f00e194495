"""`goodput completion bash|zsh` and `goodput plan --help` (choices, defaults, lightness).

The completion script is generated from the parsers, so the tests check it against them and, where
bash (or zsh) is installed, run its completion function on real command lines.
"""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from goodput.cli import build_parser, main
from goodput.completion import script, walk
from tests.conftest import REPO


def _out(capsys, *argv) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def test_bash_script_defines_the_function_and_lists_subcommands_and_flags(capsys):
    text = _out(capsys, "completion", "bash")
    assert "_goodput() {" in text and "complete -o filenames -F _goodput goodput" in text
    for word in ("simulate", "plan", "trace", "profile", "--config", "--trace", "--policy",
                 "--ttft-slo", "--gpus"):
        assert word in text, word
    assert "vllm" in text and "sarathi" in text  # registry choices of --policy


def test_script_covers_every_flag_of_every_parser():
    table = walk(build_parser())
    assert {"goodput", "goodput simulate", "goodput plan", "goodput trace stats"} <= set(table)
    assert "--max-batch-size" in table["goodput simulate"]["opts"]
    assert "--plan" in table["goodput simulate"]["opts"]  # wired in by goodput.cli
    assert table["goodput completion"]["subs"] == ["bash", "zsh"]
    assert "--policy" in table["goodput plan"]["takes"]
    assert table["goodput plan"]["values"]["--solver"] == ["cbc", "highs", "auto"]
    assert "h100-sxm" in table["goodput simulate"]["values"]["--gpu"]


BASH_CASES = [
    (["goodput", "si"], ["simulate"]),
    (["goodput", "simulate", "--po"], ["--policy"]),
    (["goodput", "simulate", "--config", "x.yaml", "--router", "round"], ["round_robin"]),
    (["goodput", "trace", "st"], ["stats"]),
    (["goodput", "plan", "--cost-model", "r"], ["roofline"]),
    (["goodput", "completion", ""], ["bash", "zsh"]),
]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
@pytest.mark.parametrize(("words", "want"), BASH_CASES, ids=[" ".join(w) for w, _ in BASH_CASES])
def test_bash_completes_real_command_lines(tmp_path, words, want):
    path = tmp_path / "goodput.bash"
    path.write_text(script(build_parser(), "bash"))
    quoted = " ".join(f"'{w}'" for w in words)
    code = (f"source {path}\nCOMP_WORDS=({quoted})\nCOMP_CWORD={len(words) - 1}\n_goodput\n"
            "printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    run = subprocess.run(["bash", "-c", code], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assert sorted(run.stdout.split()) == sorted(want)


def test_zsh_script_uses_bashcompinit(capsys):
    text = _out(capsys, "completion", "zsh")
    assert text.startswith("#compdef goodput") and "bashcompinit" in text and "_goodput()" in text


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_loads_the_script(tmp_path):
    path = tmp_path / "_goodput"
    path.write_text(script(build_parser(), "zsh"))
    run = subprocess.run(["zsh", "-f", "-c", f"source {path} && whence -w _goodput"],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 0 and "function" in run.stdout, run.stderr


def test_plan_help_lists_registered_choices_and_every_default(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["plan", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    from goodput.sim.engine.policies import POLICIES
    from goodput.sim.workload.formats import FORMATS

    for name in (*POLICIES, *FORMATS, "roofline", "profiled"):
        assert name in text, name
    for shown in ("(default: vllm)", "(default: auto)", "(default: cbc)", "(default: 1)",
                  "(default: results/plan)", "(default: local)"):
        assert shown in text, shown


def test_plan_and_completion_help_import_nothing_heavy():
    code = ("import sys\nfrom goodput.cli import main\n"
            "for argv in (['plan', '--help'], ['completion', '--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "heavy = [m for m in ('numpy', 'pandas', 'goodput.sim.engine', 'goodput.profiler', "
            "'goodput.sim.workload', "
            "'torch', 'yaml') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
