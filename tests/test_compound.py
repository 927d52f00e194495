"""Compound requests (docs/compound.md): embed (prefill only) and rag (plan, retrieve, generate
in rounds), checked by hand against the cost model, the retrieval service and the invariants."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from goodput.sim.compound import sample_latencies
from goodput.sim.config import ConfigError, load_config
from goodput.sim.config_clients import RetrievalConfig
from goodput.sim.invariants import InvariantError, check_steps
from goodput.sim.run import run_and_report
from goodput.sim.simulator import simulate
from goodput.sim.workload.schema import TraceError
from tests.conftest import poisson_requests
from tests.test_fast_forward import COLUMNS, assert_conserved, assert_same
from tests.test_sessions import alone, make_cfg


def rows(*specs) -> pd.DataFrame:
    """Rows (arrival, prompt, output, kind, rag_rounds, plan_tokens, retrieved_tokens)."""
    df = pd.DataFrame(specs, columns=["arrival_s", "prompt_tokens", "output_tokens", "kind",
                                      "rag_rounds", "plan_tokens", "retrieved_tokens"])
    df.insert(0, "request_id", np.arange(len(df)))
    return df


def rag_cfg(fast=True, latency_s=0.05, concurrency=None, **kw):
    cfg = make_cfg(fast, **kw)
    cfg.retrieval.latency_s = latency_s
    cfg.retrieval.concurrency = concurrency
    return cfg


@pytest.mark.parametrize("fast", [True, False])
def test_embed_latency_is_its_prefill(fast):
    r = simulate(make_cfg(fast), rows((1.0, 700, 0, "embed", 1, 0, 0))).requests.iloc[0]
    assert r.kind == "embed" and r.outcome == "completed"
    assert r.completion_s - r.arrival_s == pytest.approx(alone(700, 1)[0], rel=1e-12)
    assert r.first_token_s == r.completion_s  # the embedding is ready at the end of the prefill
    assert r.output_tokens == 0 and r.generated_tokens == 0  # no token is generated


@pytest.mark.parametrize("fast", [True, False])
def test_rag_rounds_by_hand(fast):
    p, out, plan, ret, rounds, lat = 200, 40, 8, 300, 2, 0.05
    res = run_and_report(rag_cfg(fast, latency_s=lat), rows((0.5, p, out, "rag", rounds, plan, ret)))
    st, r = res.steps, res.requests.iloc[0]
    assert st.type.astype(str).tolist() == ["plan", "retrieve", "plan", "retrieve", "generate"]
    assert st["round"].tolist() == [1, 1, 2, 2, 2]
    calls = st[st.call_id < 0]
    # the context grows by the plan and the retrieved tokens of each round before the call
    assert calls.prompt_tokens.tolist() == [p, p + plan + ret, p + 2 * (plan + ret)]
    assert calls.output_tokens.tolist() == [plan, plan, out]
    lat_s = (st.end_s - st.start_s).to_numpy()
    for (_, c), got in zip(calls.iterrows(), lat_s[st.call_id.to_numpy() < 0], strict=True):
        assert got == pytest.approx(alone(c.prompt_tokens, c.output_tokens)[1], rel=1e-9)
    assert lat_s[st.type == "retrieve"] == pytest.approx([lat, lat], rel=1e-9)
    # steps run back to back: each starts when the previous ended; e2e = sum of step latencies
    np.testing.assert_array_equal(st.start_s[1:].to_numpy(), st.end_s[:-1].to_numpy())
    assert st.start_s[0] == r.arrival_s == 0.5
    assert r.completion_s - r.arrival_s == pytest.approx(lat_s.sum(), rel=1e-12)
    # the whole request's record: the answer's first token and tokens
    assert r.kind == "rag" and r.outcome == "completed" and r.generated_tokens == out
    assert r.first_token_s == st.first_token_s.iloc[-1] and r.completion_s == st.end_s.iloc[-1]
    comp = res.summary["compound"]
    assert comp["steps"]["retrieve"]["count"] == rounds and comp["steps"]["plan"]["count"] == rounds
    assert comp["llm_calls"]["calls"] == 3


def test_rag_without_planning_calls():
    st = simulate(rag_cfg(), rows((0.0, 100, 10, "rag", 3, 0, 50))).steps
    assert st.type.astype(str).tolist() == ["retrieve"] * 3 + ["generate"]
    assert st.prompt_tokens.iloc[-1] == 100 + 3 * 50


@pytest.mark.parametrize("concurrency", [1, None])
def test_retrieval_concurrency(concurrency):
    lat, n = 0.1, 4
    df = rows(*[(0.0, 100, 5, "rag", 1, 0, 10)] * n)
    st = simulate(rag_cfg(latency_s=lat, concurrency=concurrency), df).steps
    ret = st[st.type == "retrieve"].sort_values("first_scheduled_s")
    if concurrency == 1:  # one server: served one after the other, FIFO
        assert ret.first_scheduled_s.to_numpy() == pytest.approx(lat * np.arange(n))
        assert ret.request_id.tolist() == list(range(n))
        assert ret.end_s.to_numpy() == pytest.approx(lat * np.arange(1, n + 1))
    else:
        assert (ret.first_scheduled_s == 0.0).all()
        assert ret.end_s.to_numpy() == pytest.approx([lat] * n)


def test_retrieval_latency_distributions_are_seeded():
    rng = lambda: np.random.default_rng(5)  # noqa: E731
    logn = sample_latencies(RetrievalConfig(latency="lognormal", latency_s=0.08, sigma=0.6), rng(), 20000)
    assert np.median(logn) == pytest.approx(0.08, rel=0.03)
    assert np.std(np.log(logn)) == pytest.approx(0.6, rel=0.03)
    expo = sample_latencies(RetrievalConfig(latency="exponential", latency_s=0.08), rng(), 20000)
    assert expo.mean() == pytest.approx(0.08, rel=0.03)
    again = sample_latencies(RetrievalConfig(latency="exponential", latency_s=0.08), rng(), 20000)
    np.testing.assert_array_equal(expo, again)
    assert (sample_latencies(RetrievalConfig(latency_s=0.3), rng(), 3) == 0.3).all()


def test_rejected_call_rejects_the_request():
    # the final call's context (prompt + 2 x retrieved) exceeds Llama-3.1-8B's 131072 tokens
    res = simulate(rag_cfg(), rows((0.0, 1000, 10, "rag", 2, 0, 70000)))
    r, st = res.requests.iloc[0], res.steps
    assert r.outcome == "rejected"
    assert str(r.reject_reason).startswith("generate call: prompt + output exceeds")
    assert st.outcome.astype(str).tolist() == ["completed", "completed", "rejected"]


def test_cut_in_retrieval_leaves_the_request_unfinished():
    cfg = rag_cfg(latency_s=10.0, concurrency=1)
    cfg.max_sim_time_s = 5.0
    res = simulate(cfg, rows((0.0, 100, 5, "rag", 1, 0, 10), (0.0, 100, 5, "rag", 1, 0, 10)))
    assert res.requests.outcome.astype(str).tolist() == ["unfinished", "unfinished"]
    assert res.requests.reject_reason.astype(str).tolist() == [
        "retrieve: in retrieval at end of simulation",
        "retrieve: queued for retrieval at end of simulation"]


def _mixed(n: int, seed: int) -> pd.DataFrame:
    df = poisson_requests(n, rate=25.0, seed=seed)
    rng = np.random.default_rng(seed)
    kind = rng.choice(["generate", "embed", "rag"], n, p=[0.5, 0.2, 0.3])
    df["kind"] = kind
    df.loc[kind == "embed", "output_tokens"] = 0
    rag = kind == "rag"
    df["rag_rounds"] = np.where(rag, rng.integers(1, 4, n), 1)
    df["plan_tokens"] = np.where(rag, rng.choice([0, 16], n), 0)
    df["retrieved_tokens"] = np.where(rag, rng.integers(0, 600, n), 0)
    df["session_id"] = np.where(rng.random(n) < 0.3, [f"u{x}" for x in rng.integers(0, 40, n)], "")
    return df


@pytest.mark.parametrize("mode,policy", [("open", "vllm"), ("closed", "sarathi"), ("open", "orca")])
def test_fast_forward_equals_step_for_compound_requests(mode, policy):
    df = _mixed(500, seed=21)

    def make(fast):
        cfg = rag_cfg(fast, count=2, mode=mode, concurrency=32, think_time_s=0.2, think="exponential")
        cfg.retrieval.latency, cfg.retrieval.concurrency = "lognormal", 3
        cfg.scheduler.policy = policy
        cfg.scheduler.num_gpu_blocks = 900
        cfg.router.name = "least_kv"
        return cfg

    fast, step = simulate(make(True), df), simulate(make(False), df)
    for name, res in (("fast-forward", fast), ("step", step)):
        assert_conserved(df, res, name)
    assert_same(fast, step, [*COLUMNS, "arrival_s", "kind"])
    assert fast.steps.shape == step.steps.shape
    for col in ("start_s", "first_scheduled_s", "first_token_s", "end_s"):
        np.testing.assert_allclose(fast.steps[col], step.steps[col], rtol=1e-9, atol=1e-9, err_msg=col)
    assert (fast.steps.outcome == "completed").all()


def test_compound_summary_by_hand():
    df = _mixed(200, seed=5)
    cfg = rag_cfg()
    cfg.slo.e2e_s, cfg.slo.ttft_s, cfg.slo.tpot_s = 1.0, 0.05, 0.02
    res = run_and_report(cfg, df)
    comp, r, st = res.summary["compound"], res.requests, res.steps
    met = (r.outcome == "completed") & (r.e2e_s <= 1.0)
    assert comp["e2e_slo"]["attainment"] == pytest.approx(met.mean())
    for name, block in comp["steps"].items():
        lat = (st.end_s - st.start_s)[(st.type == name) & (st.outcome == "completed")]
        assert block["latency_s"]["p90"] == pytest.approx(np.percentile(lat, 90))
    calls = st[st.call_id < 0]
    ttft = calls.first_token_s - calls.start_s
    tpot = np.where(calls.output_tokens > 1, (calls.end_s - calls.first_token_s)
                    / (calls.output_tokens - 1), np.nan)
    ok = (calls.outcome == "completed") & (ttft <= 0.05) & (np.isnan(tpot) | (tpot <= 0.02))
    assert comp["llm_calls"]["attainment"] == pytest.approx(ok.mean())
    assert comp["kinds"]["embed"]["requests"] == int((df.kind == "embed").sum())


def test_plain_runs_have_no_compound_block():
    res = run_and_report(make_cfg(), poisson_requests(20, rate=5.0))
    assert "compound" not in res.summary and res.steps is None


@pytest.mark.parametrize("field,value,match", [
    ("latency_s", -0.1, r"retrieval\.latency_s=-0\.1: must be a finite number of seconds >= 0"),
    ("concurrency", 0, r"retrieval\.concurrency=0: must be >= 1"),
    ("latency", "gamma", r"retrieval\.latency='gamma': use one of fixed, lognormal, exponential"),
    ("sigma", -1.0, r"retrieval\.sigma=-1\.0"),
])
def test_bad_retrieval_config_is_one_line(field, value, match):
    cfg = rag_cfg()
    cfg.retrieval.latency = "lognormal" if field == "sigma" else cfg.retrieval.latency
    setattr(cfg.retrieval, field, value)
    with pytest.raises(ConfigError, match=match):
        simulate(cfg, rows((0.0, 10, 2, "rag", 1, 0, 0)))


def test_bad_e2e_slo():
    cfg = make_cfg()
    cfg.slo.e2e_s = 0.0
    with pytest.raises(ConfigError, match=r"slo\.e2e_s=0\.0: must be a finite number of seconds > 0"):
        simulate(cfg, rows((0.0, 10, 2, "generate", 1, 0, 0)))


@pytest.mark.parametrize("spec,match", [
    ((0.0, 10, 2, "rag", 0, 0, 0), r"'rag_rounds', request 0: value 0 is not a whole number >= 1"),
    ((0.0, 10, 2, "rag", 1, -3, 0), r"'plan_tokens', request 0: value -3"),
    ((0.0, 10, 5, "embed", 1, 0, 0), r"'output_tokens', request 0: an embed request is prefill only"),
    ((0.0, 10, 5, "chat", 1, 0, 0), r"'kind', request 0: 'chat' is not a request kind"),
])
def test_bad_compound_rows_are_one_line(spec, match):
    with pytest.raises(TraceError, match=match):
        simulate(make_cfg(), rows(spec))


def test_invariants_catch_a_lost_or_inflated_step():
    res = simulate(rag_cfg(), rows((0.0, 100, 10, "rag", 1, 4, 20)))
    r, st = res.requests, res.steps
    check_steps(r, st, 2)
    with pytest.raises(InvariantError, match="2 LLM calls of rag requests but 1 step rows"):
        check_steps(r, st.drop(index=0), 2)
    bad = st.copy()
    bad.loc[bad.index[-1], "generated_tokens"] = 11
    with pytest.raises(InvariantError, match="generated 11 of 10 tokens"):
        check_steps(r, bad, 2)
    assert math.isnan(st.first_token_s[st.type == "retrieve"].iloc[0])


def test_rag_yaml_end_to_end(tmp_path):
    from goodput.sim.inputs import build_trace

    out = tmp_path / "run"
    for _ in range(2):  # a second run replaces the first one's files, steps.parquet included
        cfg = load_config("examples/rag.yaml", {"output.dir": str(out), "output.plots": False})
        trace, n = build_trace(cfg.trace, cfg.seed)
        res = run_and_report(cfg, trace, n)
    comp = res.summary["compound"]
    assert {"rag", "embed"} <= set(comp["kinds"]) and comp["steps"]["retrieve"]["count"] > 0
    steps = pd.read_parquet(out / "steps.parquet")
    assert len(steps) == len(res.steps) and "latency_s" in steps


def test_same_seed_same_bytes():
    df = _mixed(150, seed=9)

    def run(seed):
        cfg = rag_cfg(mode="closed", concurrency=6, think_time_s=0.1, think="exponential")
        cfg.retrieval.latency, cfg.retrieval.seed = "exponential", seed
        return simulate(cfg, df)

    a, b, c = run(1), run(1), run(2)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    pd.testing.assert_frame_equal(a.steps, b.steps)
    assert not a.steps.end_s.equals(c.steps.end_s)
