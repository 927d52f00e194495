"""``goodput plan`` through its argparse entry, and the ``simulate --plan`` function."""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest

from goodput.planner.cli import _availability, add_plan_subcommands, cmd_simulate_plan, load_planning_trace
from goodput.planner.errors import PlannerError
from goodput.planner.plan import Plan


def _parser():
    p = argparse.ArgumentParser(prog="goodput")
    add_plan_subcommands(p.add_subparsers(dest="command", required=True))
    return p


@pytest.fixture
def trace_csv(tmp_path):
    rng = np.random.default_rng(1)
    n = 200
    long = rng.random(n) < 0.3
    df = pd.DataFrame({"request_id": np.arange(n), "arrival_s": np.cumsum(rng.exponential(0.5, n)),
                       "prompt_tokens": np.where(long, 2500, 150),
                       "output_tokens": np.where(long, 30, 40)})
    path = tmp_path / "trace.csv"
    df.to_csv(path, index=False)
    return path


def test_plan_command_writes_plan_and_plots(trace_csv, tmp_path, capsys):
    out = tmp_path / "out"
    args = _parser().parse_args([
        "plan", "--trace", str(trace_csv), "--model", "llama-3.1-8b", "--ttft-slo", "0.5",
        "--tpot-slo", "0.05", "--gpus", "a10g,a100-80gb", "--input-edges", "1024",
        "--output-edges", "64", "--cost-model", "roofline", "--min-probe-requests", "40",
        "--max-probe-requests", "400",
        "--rel-tol", "0.2", "--workers", "1", "--cache-dir", str(tmp_path / "cache"),
        "--sweep-tpot", "0.1", "--sweep", "attainment=0.8", "--price", "a10g=0.9",
        "--no-progress", "--out", str(out)])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "plan (verified by simulation):" in text and "simulated attainment" in text
    assert "ILP only (before re-simulation, not a verified figure)" in text
    assert "a10g $0.90/GPU-h (--price flag)" in text and "burstiness: busiest" in text
    for name in ("plan.yaml", "capacities.csv", "frontier.csv", "frontier.png",
                 "load_per_type.png", "attainment_per_slice.png", "attainment_per_slice.csv"):
        assert (out / name).stat().st_size > 0, name
    front = pd.read_csv(out / "frontier.csv")
    assert sorted(front[["param", "value"]].values.tolist()) == [["attainment", 0.8], ["tpot", 0.1]]
    assert front["verified"].all() and (front["attainment"] >= front["value"].where(
        front["param"] == "attainment", 0.9) - 1e-9).all()
    plan = Plan.load(out / "plan.yaml")
    assert plan.slo == {"ttft_s": 0.5, "tpot_s": 0.05, "attainment_target": 0.9}
    # only verified numbers are headlines: plan.yaml's cost is the last (proved) round's
    assert plan.summary["verified"] and plan.verification[-1]["meets_target"]
    assert plan.summary["cost_per_hour"] == pytest.approx(plan.cost_per_hour)
    assert plan.verification[-1]["cost_per_hour"] == pytest.approx(plan.cost_per_hour)
    assert plan.summary["prices"]["a10g"] == {"usd_per_gpu_hour": 0.9, "source": "--price flag"}
    if plan.summary["savings"] is not None:
        assert plan.summary["savings"] == pytest.approx(
            1 - plan.cost_per_hour / plan.summary["baseline_cost_per_hour"], abs=1e-5)
        assert f"savings (verified plan vs verified best single type): " \
               f"{plan.summary['savings']:.1%}" in text

    sim_args = argparse.Namespace(plan=str(out / "plan.yaml"), trace=str(trace_csv),
                                  trace_format=None, rate=None, max_requests=None, seed=None,
                                  out=str(tmp_path / "sim"), no_plots=True)
    assert cmd_simulate_plan(sim_args) == 0
    text = capsys.readouterr().out
    assert "meets the SLO target" in text and "in[0,1024)out[0,64)" in text
    assert (tmp_path / "sim" / "summary.json").exists()


def test_length_only_trace_needs_and_takes_a_rate(tmp_path):
    path = tmp_path / "lengths.csv"
    pd.DataFrame({"num_prefill_tokens": [100, 200, 300], "num_decode_tokens": [10, 20, 30],
                  "num_total_tokens": [110, 220, 330], "pd_ratio": [10, 10, 10]}).to_csv(path,
                                                                                  index=False)
    with pytest.raises(ValueError, match="no timestamps"):
        load_planning_trace(str(path))
    tr = load_planning_trace(str(path), rate=2.0)
    assert len(tr) == 3 and tr.df["arrival_s"].is_monotonic_increasing


def test_price_file_and_flags(tmp_path):
    from goodput.planner.prices import load_price_file, parse_price_flags

    f = tmp_path / "prices.yaml"
    f.write_text("h100: {on_demand: 4.5, spot: 2.1}\nl4: 0.7\n")
    assert load_price_file(str(f)) == {"h100-sxm": (4.5, "prices.yaml (on-demand)"),
                                       "l4": (0.7, "prices.yaml (on-demand)")}
    assert load_price_file(str(f), "spot")["h100-sxm"] == (2.1, "prices.yaml (spot)")
    assert parse_price_flags(["h100=4.50,l4=1"])["h100-sxm"] == (4.5, "--price flag")
    for bad, msg in ((["h100:4"], "expects GPU=USD"), (["h100=-1"], "must be a number"),
                     (["tpu=1"], "--price")):
        with pytest.raises(PlannerError, match=msg):
            parse_price_flags(bad)
    with pytest.raises(PlannerError, match="no such file"):
        load_price_file(str(tmp_path / "none.yaml"))


def test_sweep_flags():
    from goodput.planner.sweep import parse_sweeps

    assert parse_sweeps(["tpot=0.04,0.08", "attainment=0.95"]) == {
        "tpot": [0.04, 0.08], "attainment": [0.95]}
    with pytest.raises(PlannerError, match="unknown parameter"):
        parse_sweeps(["cost=1"])
    with pytest.raises(PlannerError, match="PARAM=V1,V2"):
        parse_sweeps(["tpot"])


def test_bad_flags_name_the_flag():
    with pytest.raises(PlannerError, match="--availability expects GPU=COUNT"):
        _availability("h100:4")
    with pytest.raises(PlannerError, match="--availability h100: 'x'"):
        _availability("h100=x")
    assert _availability("h100=4,l4=2") == {"h100-sxm": 4, "l4": 2}
    with pytest.raises(PlannerError, match="--plan needs --trace"):
        cmd_simulate_plan(argparse.Namespace(plan=__file__.replace(".py", ".yaml"), trace=None))
