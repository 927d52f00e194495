"""DistServe placement search: the combine step and the bisection by hand, a small end-to-end
search by simulation, ``goodput plan --disaggregated``, and one-line errors for bad input."""
from __future__ import annotations

import argparse
import math

import numpy as np
import pytest

from goodput.planner.cli import add_plan_subcommands
from goodput.planner.errors import PlannerError
from goodput.planner.placement import (
    PhaseCapacity,
    PlacementTask,
    combine,
    max_rate,
    search_placement,
    tp_candidates,
)
from goodput.sim.config import load_config
from tests.conftest import poisson_requests, shared_trace


def caps(phase, rates):
    return [PhaseCapacity(phase, "h100-sxm", tp, r) for tp, r in rates.items()]


P = caps("prefill", {1: 2.0, 2: 5.0})
D = caps("decode", {1: 3.0, 2: 4.0})


def lengths(n=400, seed=0):
    df = poisson_requests(n, 1.0, prompt=(50, 1500), output=(5, 120), seed=seed)
    return df[["prompt_tokens", "output_tokens"]].to_numpy()


def test_tp_candidates_divide_heads_within_a_node():
    assert tp_candidates("opt-13b") == [1, 2, 4, 5, 8]  # 40 heads
    assert tp_candidates("opt-13b", max_tp=4) == [1, 2, 4]
    assert tp_candidates("llama-3.1-8b") == [1, 2, 4, 8]
    with pytest.raises(PlannerError, match=r"placement: .*unknown"):
        tp_candidates("no-such-model")


def test_combine_for_a_target_rate_by_hand():
    # prefill: tp1 needs 5 instances (5 GPUs), tp2 needs 2 (4 GPUs); decode: tp1 needs 4 (4
    # GPUs), tp2 needs 3 (6 GPUs) -> 2 x tp2 prefill + 4 x tp1 decode = 8 GPUs
    d = combine(P, D, target_rate=10.0)
    assert (d.prefill.tp, d.n_prefill, d.decode.tp, d.n_decode, d.gpus) == (2, 2, 1, 4, 8)
    assert d.rate == pytest.approx(10.0)


def test_combine_within_a_gpu_budget_by_hand():
    # best per-GPU rate in 4 GPUs: 1 x tp2 prefill (5) + 2 x tp1 decode (6) -> 5 / 4 = 1.25;
    # every other layout that fits gets <= 1.0
    d = combine(P, D, max_gpus=4)
    assert (d.prefill.tp, d.n_prefill, d.decode.tp, d.n_decode) == (2, 1, 1, 2)
    assert d.per_gpu == pytest.approx(1.25)


def test_combine_errors_are_one_line():
    with pytest.raises(PlannerError, match="exactly one of"):
        combine(P, D)
    with pytest.raises(PlannerError, match="need >= 2"):
        combine(P, D, max_gpus=1)
    with pytest.raises(PlannerError, match="target rate must be"):
        combine(P, D, target_rate=math.nan)
    with pytest.raises(PlannerError, match="no decode candidate meets"):
        combine(P, caps("decode", {1: 0.0}), target_rate=1.0)
    with pytest.raises(PlannerError, match="no prefill \\+ decode design fits in 3 GPUs"):
        combine(caps("prefill", {4: 9.0}), D, max_gpus=3)


def test_max_rate_brackets_a_threshold_from_below():
    seen = []

    def passes(r):
        seen.append(r)
        return r <= 3.7

    r, limit = max_rate(passes, 1.0, 0.05, 30)
    assert 3.7 / 1.05 <= r <= 3.7 and limit == ""
    assert max_rate(lambda r: False, 1.0, 0.05, 30)[0] == 0.0
    r, limit = max_rate(lambda r: True, 1.0, 0.05, 5)
    assert r == 16.0 and "did not saturate" in limit


def test_task_validation():
    with pytest.raises(PlannerError, match="bounds must be > 0"):
        PlacementTask("llama-3.1-8b", "h100", "h100", lengths(), 0.0, 0.05)
    with pytest.raises(PlannerError, match=r"\(n, 2\) array"):
        PlacementTask("llama-3.1-8b", "h100", "h100", np.zeros((0, 2)), 0.5, 0.05)
    with pytest.raises(PlannerError, match="attainment must be"):
        PlacementTask("llama-3.1-8b", "h100", "h100", lengths(), 0.5, 0.05, attainment=1.5)


def small_task(**kw):
    opts = {"ttft_s": 0.1, "tpot_s": 0.01, "cost_model": "roofline", "max_tp": 2,
            "min_requests": 40, "max_requests": 400, "span_lifetimes": 10.0, "min_span_s": 5.0,
            "verify_span_s": 30.0, "rel_tol": 0.1}
    return PlacementTask("llama-3.2-1b", "h100", "h100", lengths(), **{**opts, **kw})


def test_search_by_simulation_finds_and_verifies_a_design():
    res = search_placement(small_task(), target_rate=20.0)
    assert [c.tp for c in res.prefill] == [1, 2] and [c.tp for c in res.decode] == [1, 2]
    assert all(c.rate > 0 for c in res.prefill + res.decode)
    assert all(p[0] > 0 for c in res.prefill + res.decode for p in c.probes)
    d = res.design
    assert d.rate >= 20.0 or res.notes  # sized for the target, or grown by verification
    assert res.check is not None and res.check.meets(0.9)
    assert set(res.table().columns) >= {"phase", "tp", "pp", "req/s per GPU"}
    assert (res.table().pp == 1).all()


def test_zero_load_miss_gives_zero_capacity_with_reason():
    from goodput.planner.placement import prefill_capacity
    c = prefill_capacity(small_task(ttft_s=1e-4), 1)
    assert c.rate == 0.0 and "misses at zero load" in c.limit


def _parser():
    p = argparse.ArgumentParser(prog="goodput")
    add_plan_subcommands(p.add_subparsers(dest="command", required=True))
    return p


def test_plan_disaggregated_cli_writes_a_runnable_config(tmp_path, capsys):
    trace = tmp_path / "t.csv"
    poisson_requests(300, 10.0, prompt=(50, 1500), output=(5, 120)).to_csv(trace, index=False)
    out = tmp_path / "out"
    args = _parser().parse_args([
        "plan", "--disaggregated", "--trace", str(trace), "--model", "llama-3.2-1b",
        "--gpus", "h100", "--ttft-slo", "0.1", "--tpot-slo", "0.01", "--cost-model", "roofline",
        "--min-probe-requests", "40", "--max-probe-requests", "300", "--rel-tol", "0.2",
        "--max-gpus", "3", "--out", str(out)])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "per-phase capacity" in text and "verified at" in text
    cfg = load_config(out / "placement.yaml")
    assert [g.role for g in cfg.cluster] == ["prefill", "decode"]
    assert sum(g.tp * g.count for g in cfg.cluster) <= 3
    assert (out / "phase_capacity.csv").is_file()


@pytest.mark.parametrize("flags, match", [
    (["--gpus", "h100,a100-80gb,l4"], "PREFILL_GPU\\[,DECODE_GPU\\]"),
    (["--gpus", "nope"], "--gpus: .*unknown"),
    (["--gpus", "h100", "--max-gpus", "1"], "--max-gpus=1"),
])
def test_plan_disaggregated_bad_input(tmp_path, flags, match):
    trace = tmp_path / "t.csv"
    poisson_requests(50, 10.0).to_csv(trace, index=False)
    args = _parser().parse_args(["plan", "--disaggregated", "--trace", str(trace), "--model",
                                 "llama-3.2-1b", "--ttft-slo", "0.1", "--tpot-slo", "0.01",
                                 "--out", str(tmp_path / "o"), *flags])
    with pytest.raises(PlannerError, match=match):
        args.func(args)


def test_distserve_lengths_fit_opt_context():
    from benchmarks.distserve_sanity import sharegpt_lengths
    path = shared_trace("sharegpt_8k_filtered_stats_llama2_tokenizer.csv")
    lens = sharegpt_lengths(path)
    assert len(lens) > 1000 and lens.sum(axis=1).max() <= 2048


def test_pipeline_stages_are_candidates_that_divide_the_layers():
    from goodput.planner.placement import parallel_candidates

    assert parallel_candidates("llama-3.1-70b", 8, 4) == [(tp, pp) for pp in (1, 2, 4)
                                                          for tp in (1, 2, 4, 8)]
    assert {pp for _, pp in parallel_candidates("llama-3.2-1b", 2, 3)} == {1, 2}  # 16 layers
    res = search_placement(small_task(max_pp=2), max_gpus=6, verify_rounds=0)
    table = res.table()
    assert sorted(set(zip(table.tp, table.pp, strict=True))) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert all(c.per_gpu == c.rate / (c.tp * c.pp) for c in res.prefill + res.decode)
    assert res.design.gpus <= 6
