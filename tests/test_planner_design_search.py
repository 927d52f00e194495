"""One search over the whole design (goodput.planner.design_search): hand-checkable winners, safe pruning."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from goodput.planner.capacity import CapacityResult
from goodput.planner.design_search import search_designs
from goodput.planner.design_space import Design, DesignSpace, SpecSettings, Speculation, parse_search
from goodput.planner.errors import PlannerError
from goodput.planner.pipeline import PlanOptions, make_plan


def light_trace(n=200, rate=0.5, prompt=200, output=100, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"request_id": np.arange(n),
                         "arrival_s": np.cumsum(rng.exponential(1 / rate, n)),
                         "prompt_tokens": np.full(n, prompt), "output_tokens": np.full(n, output)})


def opts(tmp_path, **kw) -> PlanOptions:
    base = {"model": "llama-3.1-8b", "ttft_s": 0.5, "tpot_s": 0.05, "gpus": ["h100"],
            "input_edges": (1024,), "output_edges": (64,), "min_probe_requests": 40,
            "max_probe_requests": 600, "span_e2e": 10, "rel_tol": 0.1,
            "cost_model": {"kind": "roofline"}, "cache_dir": str(tmp_path), "workers": 1}
    base.update(kw)
    return PlanOptions(**base)


def test_upper_is_the_smallest_failing_probe_above_the_capacity():
    r = CapacityResult(2.0, "", 1.0, [[4.0, 0.5, 300], [2.0, 0.95, 300], [3.0, 0.8, 300],
                                      [2.5, None, 7000]])
    assert r.upper(0.9) == 2.5  # a rate too long to simulate counts as failing, as in the search
    assert CapacityResult(3.0, "", 1.0, [[3.0, 1.0, 300]]).upper(0.9) == math.inf
    assert CapacityResult(0.0, "TPOT ...", 0.2, []).upper(0.9) == 0.0


def test_design_space_product_and_sections():
    space = parse_search(["policy=vllm,sarathi", "budget=256,1024", "spec=none,fixed:4"])
    names = [d.name for d in space.designs()]
    # budgets multiply Sarathi only; every design once
    assert names == ["vllm", "vllm + fixed:4", "sarathi/budget 256", "sarathi/budget 1024",
                     "sarathi/budget 256 + fixed:4", "sarathi/budget 1024 + fixed:4"]
    d = Design("sarathi", 256, Speculation("smartspec", 6))
    sched = d.scheduler({"policy": "vllm", "max_batch_size": 64}, SpecSettings(0.7, "ngram"))
    assert sched == {"max_batch_size": 64, "policy": "sarathi",
                     "sarathi": {"token_budget": 256, "chunk_size": 256},
                     "speculation": {"method": "smartspec", "alpha": 0.7, "proposer": "ngram",
                                     "smartspec": {"max_k": 6}}}


@pytest.mark.parametrize("items, message", [
    (["spec=fixed"], "fixed needs its k"), (["spec=maybe"], "use none, fixed:K"),
    (["budget=512"], "add sarathi"), (["policy=fastest"], "unknown batching policy"),
    (["gpu=h100"], "unknown dimension"), (["budget=many", "policy=sarathi"], "whole number")])
def test_bad_search_values_are_one_clear_line(items, message):
    with pytest.raises(PlannerError, match=message):
        parse_search(items)


def test_speculation_without_an_acceptance_rate_is_refused():
    with pytest.raises(PlannerError, match="--spec-alpha"):
        Design(speculation=Speculation("smartspec")).scheduler({}, SpecSettings())


def test_speculation_wins_at_low_load_when_plain_decoding_misses_the_tpot_bound(tmp_path):
    """Hand-checkable: on the H100 roofline a plain decode step of Llama-3.1-8B takes ~6.6 ms,
    above a 4 ms TPOT bound even alone, so no number of instances serves it; with prompt-lookup
    drafts accepted at alpha = 0.8 SmartSpec drafts k = 8 at low load, E = (1 - 0.8^9) / 0.2 =
    4.3 tokens per verify, ~1.6 ms per token: one instance meets the bound."""
    space = DesignSpace(speculation=(Speculation(), Speculation("smartspec")))
    res = search_designs(light_trace(), opts(tmp_path, tpot_s=0.004), space,
                         SpecSettings(alpha=0.8, proposer="ngram"))
    t = res.table.set_index("design")
    assert res.chosen.speculation.method == "smartspec"
    assert t.loc["vllm + smartspec", "status"] == "chosen" and t.loc["vllm + smartspec", "verified"]
    assert t.loc["vllm", "status"] == "pruned"
    assert "TPOT p90 at zero load" in t.loc["vllm", "why"]
    plan = res.best.plan
    assert plan.scheduler["speculation"]["method"] == "smartspec"
    assert plan.summary["design"]["name"] == "vllm + smartspec" and plan.summary["verified"]
    assert res.best.check.attainment >= 0.9


@pytest.fixture(scope="module")
def policy_search(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("designs")
    trace = light_trace(n=300, rate=2.0, prompt=600, output=60)
    o = opts(tmp, gpus=["a10g", "a100-80gb"], tpot_s=0.06, ttft_s=1.0)
    space = parse_search(["policy=vllm,sarathi", "budget=128,2048"])
    return trace, o, search_designs(trace, o, space, SpecSettings(), max_finalists=2)


def test_every_finalist_is_proved_and_the_chosen_is_the_cheapest_verified(policy_search):
    _, _, res = policy_search
    t = res.table
    simulated = t[t.status.isin(["chosen", "verified", "not proved"])]
    assert len(simulated) >= 1 and (t.status == "chosen").sum() == 1
    chosen = t[t.status == "chosen"].iloc[0]
    assert chosen.verified and chosen.attainment >= 0.9
    assert chosen.cost == pytest.approx(simulated[simulated.verified].cost.min())
    # no design's bound exceeds its own verified cost, and no estimate undercuts its bound
    for _, r in simulated.iterrows():
        assert r.lower_bound_cost <= r.cost + 1e-6
    screened = t.dropna(subset=["estimate_cost"])
    assert (screened.lower_bound_cost <= screened.estimate_cost + 1e-6).all()


def test_pruned_designs_are_never_cheaper_and_verified(policy_search):
    """Plan every pruned or unsimulated design in full: none is verified below the chosen cost."""
    trace, o, res = policy_search
    t = res.table
    chosen = t[t.status == "chosen"].iloc[0]
    others = t[t.status.isin(["pruned", "not simulated"])]
    assert len(others) >= 1
    for _, r in others.iterrows():
        d = Design(r.policy, None if pd.isna(r.token_budget) else int(r.token_budget))
        try:
            out = make_plan(trace, PlanOptions(**{**o.__dict__, "scheduler": d.scheduler(
                o.scheduler, SpecSettings())}))
        except PlannerError:
            continue  # infeasible: cannot be cheaper
        assert not (out.verified and out.plan.cost_per_hour < chosen.cost - 1e-6), r.design


def test_plan_command_with_search_writes_the_chosen_design_and_the_table(tmp_path, capsys):
    import argparse

    from goodput.planner.cli import add_plan_subcommands
    from goodput.planner.plan import Plan

    p = argparse.ArgumentParser(prog="goodput")
    add_plan_subcommands(p.add_subparsers(dest="command", required=True))
    trace = tmp_path / "trace.csv"
    light_trace().to_csv(trace, index=False)
    out = tmp_path / "out"
    common = ["plan", "--trace", str(trace), "--model", "llama-3.1-8b", "--ttft-slo", "0.5",
              "--tpot-slo", "0.004", "--gpus", "h100", "--input-edges", "1024",
              "--output-edges", "64", "--cost-model", "roofline", "--min-probe-requests", "40",
              "--max-probe-requests", "600", "--rel-tol", "0.1", "--workers", "1",
              "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--out", str(out),
              "--search", "spec=none,smartspec", "--spec-proposer", "ngram"]
    with pytest.raises(PlannerError, match="--spec-alpha"):  # refused before any search
        args = p.parse_args(common)
        args.func(args)
    args = p.parse_args([*common, "--spec-alpha", "0.8"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "designs searched" in text and "design: vllm + smartspec" in text
    plan = Plan.load(out / "plan.yaml")
    assert plan.scheduler["speculation"]["method"] == "smartspec"
    table = pd.read_csv(out / "designs.csv")
    assert set(table.status) == {"chosen", "pruned"}
    assert "Designs searched" in (out / "report.html").read_text()


def test_a_disaggregated_design_is_proved_with_prefill_and_decode_pools(tmp_path):
    from goodput.planner.design_disagg import finalist_disagg, screen_disagg
    from goodput.planner.plan import Plan
    from goodput.planner.verify import simulate_plan

    trace = light_trace(n=300, rate=2.0, prompt=600, output=60)
    o = opts(tmp_path, gpus=["a10g", "a100-80gb"], tpot_s=0.06, ttft_s=1.0)
    scr = screen_disagg(trace, o, "vllm", rate=299 / float(trace.arrival_s.iloc[-1]
                                                        - trace.arrival_s.iloc[0]))
    assert scr.bound.cost <= scr.estimate.cost + 1e-9
    out = finalist_disagg(trace, o, "vllm", scr)
    plan = out.plan
    assert [g.role for g in plan.groups] == ["prefill", "decode"] and plan.disaggregated
    assert out.verified and out.check.attainment >= 0.9
    assert plan.cost_per_hour >= scr.bound.cost - 1e-9  # verification only adds instances
    again = simulate_plan(Plan.load(plan.save(tmp_path / "plan.yaml")), trace)
    assert again.attainment == pytest.approx(out.check.attainment)
