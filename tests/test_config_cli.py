"""Config loading and the goodput CLI: strict fields, clear errors, end-to-end runs."""
from __future__ import annotations

import json

import pytest

from goodput.cli import main
from goodput.sim.config import ConfigError, SimConfig, from_dict, load_config, to_dict
from tests.conftest import REPO


def test_yaml_roundtrip_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("cluster:\n  - {model: mistral-7b, gpu: a100-80gb, count: 3}\n"
                    "scheduler: {policy: sarathi, sarathi: {token_budget: 1024}}\nslo: {ttft_s: 0.5}\n")
    cfg = load_config(path, {"scheduler.sarathi.chunk_size": 256, "router.name": "llumnix"})
    assert cfg.cluster[0].count == 3 and cfg.cluster[0].gpu == "a100-80gb"
    assert cfg.scheduler.policy == "sarathi" and cfg.scheduler.section("sarathi").token_budget == 1024
    assert cfg.scheduler.section("sarathi").chunk_size == 256 and cfg.router.name == "llumnix"
    # the dict form round-trips: every policy section appears with its values or defaults
    again = from_dict(SimConfig, to_dict(cfg))
    assert to_dict(again) == to_dict(cfg)
    assert to_dict(cfg)["scheduler"]["orca"] == {"reserve_output_tokens": None}
    assert cfg.slo.ttft_s == 0.5 and cfg.slo.tpot_s is None


@pytest.mark.parametrize("text,needle", [
    ("scheduler: {max_batch_sise: 8}\n", "scheduler.max_batch_sise"),
    ("scheduler: {max_batch_size: eight}\n", "scheduler.max_batch_size"),
    ("cluster: {model: x}\n", "cluster: expected a list"),
    ("slo: {ttft_s: fast}\n", "slo.ttft_s"),
    ("bogus: 1\n", "bogus"),
])
def test_bad_config_names_the_field(tmp_path, text, needle):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(path)


@pytest.mark.parametrize("args,needle", [
    (["--model", "llama-9000"], "unknown model 'llama-9000'"),
    (["--gpu", "tpu-v9"], "unknown GPU 'tpu-v9'"),
    (["--policy", "fifo"], "unknown scheduler.policy 'fifo'"),
    (["--router", "random"], "unknown router.name 'random'"),
    (["--set", "scheduler.policy=sarathi", "--set", "scheduler.sarathi.token_budget=128"], "below"),
    (["--model", "llama-3.1-70b", "--gpu", "l4"], "does not fit"),
])
def test_cli_errors_are_clear(args, needle, capsys):
    rc = main(["simulate", "--trace", str(REPO / "traces/sample_tiny.csv"), "--no-progress", *args])
    assert rc == 2
    assert needle in capsys.readouterr().err


def test_cli_simulate_writes_results(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["simulate", "--trace", str(REPO / "traces/sample_tiny.csv"), "--model", "llama-3.1-8b",
               "--gpu", "h100", "--ttft-slo", "1", "--tpot-slo", "0.05", "--out", str(out),
               "--no-progress", "--cost-model", "roofline"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "attainment" in text and "roofline" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["total"] == 20 and summary["counts"]["completed"] == 20
    for name in ("requests.parquet", "timeseries.parquet", "instances.csv", "latency_cdfs.png",
                 "timeseries.png", "config.json"):
        assert (out / name).stat().st_size > 0


def test_cli_synthetic_needs_a_rate(capsys):
    assert main(["simulate", "--num-requests", "10", "--no-progress"]) == 2
    assert "trace.rate" in capsys.readouterr().err


def test_demo_config_loads():
    cfg = load_config(REPO / "examples/demo.yaml")
    assert cfg.cluster[0].count == 4 and cfg.slo.ttft_s == 1.0


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "examples").glob("*.yaml")))
def test_every_example_config_runs(name, tmp_path, capsys):
    """Each shipped example simulates (real-trace examples skip without ../shared/traces)."""
    cfg = load_config(REPO / "examples" / name)
    if cfg.trace.path and not (REPO / cfg.trace.path).exists():
        pytest.skip(f"{cfg.trace.path} not available")
    args = ["simulate", "--config", str(REPO / "examples" / name), "--no-progress", "--no-plots",
            "--out", str(tmp_path), "--max-requests", "300"]
    assert main(args) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["counts"]["total"] == 300
