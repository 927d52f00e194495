"""Sessions and closed-loop clients (docs/compound.md), checked against hand-derivable cases.

A turn of a session is sent when the previous turn's reply ended plus the think time; a closed
loop of N clients sends each client's next row when its previous request ended plus the think
time. On an otherwise idle instance every request then runs alone, so its latency is the cost
model's prefill plus decode steps, and the arrival times follow from the completions exactly.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from goodput.sim.catalog import get_gpu, get_model
from goodput.sim.config import ConfigError, InstanceGroupConfig, SimConfig, load_config
from goodput.sim.costmodel.base import Batch
from goodput.sim.costmodel.factory import make_cost_model
from goodput.sim.run import run_and_report
from goodput.sim.simulator import simulate
from goodput.sim.workload.schema import TraceError
from tests.conftest import poisson_requests
from tests.test_fast_forward import COLUMNS, assert_conserved, assert_same


def make_cfg(fast: bool = True, count: int = 1, **clients) -> SimConfig:
    cfg = SimConfig(cluster=[InstanceGroupConfig(model="llama-3.1-8b", gpu="h100", count=count)])
    cfg.cost_model.kind = "roofline"
    cfg.fast_forward = fast
    for k, v in clients.items():
        setattr(cfg.clients, k, v)
    return cfg


COST = make_cost_model(get_model("llama-3.1-8b"), get_gpu("h100"), 1, make_cfg().cost_model)


def alone(prompt: int, output: int) -> tuple[float, float]:
    """(TTFT, e2e) of one request on an idle instance, from the cost model: one prefill
    iteration, then one decode iteration per further token over the growing context."""
    ttft = COST.batch_time(Batch([prompt], [0]))
    return ttft, ttft + sum(COST.batch_time(Batch([1], [prompt + j])) for j in range(output - 1))


def turns(*rows, think=None) -> pd.DataFrame:
    """Rows (arrival, prompt, output, session) with ids 0.."""
    df = pd.DataFrame(rows, columns=["arrival_s", "prompt_tokens", "output_tokens", "session_id"])
    df.insert(0, "request_id", np.arange(len(df)))
    if think is not None:
        df["think_time_s"] = think
    return df


@pytest.mark.parametrize("fast", [True, False])
def test_session_turn_waits_for_reply_plus_think(fast):
    df = turns((0.0, 300, 20, "s"), (0.0, 400, 30, "s"), (0.0, 500, 10, "s"))
    r = simulate(make_cfg(fast, think_time_s=0.7), df).requests
    assert r.arrival_s[0] == 0.0
    for k in (1, 2):  # exactly the think time after the previous reply, not at arrival_s
        assert r.arrival_s[k] == r.completion_s[k - 1] + 0.7
    for k, (p, o) in enumerate([(300, 20), (400, 30), (500, 10)]):
        ttft, e2e = alone(p, o)  # each turn runs alone on the idle instance
        assert r.first_token_s[k] - r.arrival_s[k] == pytest.approx(ttft, rel=1e-9)
        assert r.completion_s[k] - r.arrival_s[k] == pytest.approx(e2e, rel=1e-9)
    assert (r.outcome == "completed").all()


def test_trace_think_time_and_arrival_bound_the_next_turn():
    # turn 1 has its own think time (2 s); turn 2's arrival_s (30 s) is later than reply + think
    df = turns((0.0, 100, 5, "a"), (0.0, 100, 5, "a"), (30.0, 100, 5, "a"), think=[np.nan, 2.0, 0.1])
    r = simulate(make_cfg(think_time_s=0.5), df).requests
    assert r.arrival_s[1] == r.completion_s[0] + 2.0  # the row's think_time_s wins
    assert r.arrival_s[2] == 30.0  # max(arrival_s, previous reply + think)


def test_sessions_run_side_by_side_and_plain_rows_are_untouched():
    df = turns((0.0, 200, 50, "a"), (0.0, 200, 50, "b"), (0.0, 200, 50, "a"), (0.0, 200, 50, ""),
               (0.0, 200, 50, "b"))
    r = simulate(make_cfg(think_time_s=1.0), df).requests
    assert (r.arrival_s[[0, 1, 3]] == 0.0).all()  # first turns and a row without a session
    assert r.arrival_s[2] == r.completion_s[0] + 1.0
    assert r.arrival_s[4] == r.completion_s[1] + 1.0


@pytest.mark.parametrize("fast", [True, False])
def test_closed_loop_of_one_client_never_overlaps(fast):
    df = poisson_requests(25, rate=1000.0, prompt=(50, 800), output=(2, 60), seed=3)
    res = run_and_report(make_cfg(fast, mode="closed", concurrency=1, think_time_s=0.2), df)
    r = res.requests.sort_values("arrival_s").reset_index(drop=True)
    assert r.arrival_s[0] == 0.0  # arrival_s of the trace is ignored
    assert (r.request_id.to_numpy() == np.arange(25)).all()  # rows are taken in trace order
    np.testing.assert_array_equal(r.arrival_s[1:].to_numpy(), r.completion_s[:-1].to_numpy() + 0.2)
    for row in r.itertuples():
        assert row.e2e_s == pytest.approx(alone(row.prompt_tokens, row.output_tokens)[1], rel=1e-9)
    n, lat = len(r), r.e2e_s.to_numpy()
    x = res.summary["throughput"]["completed_req_per_s"]
    assert x == pytest.approx(n / (lat.sum() + (n - 1) * 0.2), rel=1e-12)
    assert x == pytest.approx(1 / (lat.mean() + 0.2), rel=1 / n)  # 1 / (R + Z)
    loop = res.summary["compound"]["closed_loop"]
    assert loop["mean_think_s"] == pytest.approx(0.2)
    assert res.summary["compound"]["clients"]["max_outstanding"] == 1


def test_littles_law_in_a_closed_loop():
    n_clients = 8
    df = poisson_requests(1500, rate=1.0, prompt=(50, 1500), output=(5, 200), seed=4)
    res = run_and_report(make_cfg(mode="closed", concurrency=n_clients, think_time_s=0.5,
                                  think="exponential", seed=7), df)
    r = res.requests
    assert (r.outcome == "completed").all()
    # never more than N outstanding, and N at once (a sweep over arrivals and completions)
    t = np.concatenate([r.arrival_s, r.completion_s])
    step = np.concatenate([np.ones(len(r)), -np.ones(len(r))])
    order = np.lexsort((step, t))  # a completion before an arrival at the same instant
    assert np.cumsum(step[order]).max() == n_clients
    loop = res.summary["compound"]["closed_loop"]
    x, lat, z = loop["throughput_req_per_s"], loop["mean_latency_s"], loop["mean_think_s"]
    assert z == pytest.approx(0.5, rel=0.1)  # seeded exponential draws
    assert x * (lat + z) == pytest.approx(n_clients, rel=0.02)  # N = X (R + Z)
    assert loop["littles_law_clients"] == pytest.approx(x * (lat + z))


def test_exponential_think_is_seeded():
    df = turns(*[(0.0, 100, 8, "s")] * 6)
    runs = [simulate(make_cfg(think_time_s=1.0, think="exponential", seed=s), df).requests
            for s in (1, 1, 2)]
    pd.testing.assert_frame_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0].arrival_s, runs[2].arrival_s)


def _mixed_sessions(n: int, seed: int) -> pd.DataFrame:
    df = poisson_requests(n, rate=40.0, seed=seed)
    rng = np.random.default_rng(seed)
    df["session_id"] = np.where(rng.random(n) < 0.6, [f"s{x}" for x in rng.integers(0, n // 4, n)], "")
    return df


@pytest.mark.parametrize("mode,policy,blocks", [("open", "vllm", 900), ("closed", "sarathi", 900),
                                                ("open", "sarathi", None)])
def test_fast_forward_equals_step_for_sessions_and_closed_loop(mode, policy, blocks):
    df = _mixed_sessions(600, seed=11)

    def make(fast):
        cfg = make_cfg(fast, count=2, mode=mode, concurrency=24, think_time_s=0.3,
                       think="exponential")
        cfg.scheduler.policy = policy
        cfg.scheduler.num_gpu_blocks = blocks
        cfg.router.name = "least_outstanding_tokens"
        return cfg

    fast, step = simulate(make(True), df), simulate(make(False), df)
    for name, res in (("fast-forward", fast), ("step", step)):
        assert_conserved(df, res, name)
    assert_same(fast, step, [*COLUMNS, "arrival_s"])
    if blocks:
        assert fast.instances.preemptions.sum() > 0  # under memory pressure


def test_cut_leaves_waiting_turns_unfinished():
    df = turns((0.0, 300, 50, "s"), (0.0, 300, 50, "s"), (0.0, 300, 50, "s"))
    cfg = make_cfg(think_time_s=5.0)
    cfg.max_sim_time_s = 3.0
    r = simulate(cfg, df).requests  # the invariants (one record per row) hold
    assert r.outcome.astype(str).tolist() == ["completed", "unfinished", "unfinished"]
    reasons = r.reject_reason.astype(str).tolist()
    assert reasons[1] == "waiting for its send time (think time) at end of simulation"
    assert reasons[2] == "waiting for an earlier turn of its session at end of simulation"


def test_closed_loop_cut_counts_rows_no_client_took():
    df = poisson_requests(50, rate=10.0, seed=1)
    cfg = make_cfg(mode="closed", concurrency=2)
    cfg.max_sim_time_s = 1.0
    r = simulate(cfg, df).requests
    assert len(r) == 50
    assert (r.reject_reason.astype(str) == "not sent by max_sim_time_s (closed loop)").sum() > 30


@pytest.mark.parametrize("field,value,match", [
    ("concurrency", 0, r"clients\.concurrency=0: a closed loop needs at least 1 client"),
    ("think_time_s", -1.0, r"clients\.think_time_s=-1\.0: must be a finite number of seconds >= 0"),
    ("think", "poisson", r"clients\.think='poisson': use fixed or exponential"),
    ("mode", "half", r"clients\.mode='half': use open"),
])
def test_bad_client_config_is_one_line(field, value, match):
    cfg = make_cfg(mode="closed")
    setattr(cfg.clients, field, value)
    with pytest.raises(ConfigError, match=match):
        simulate(cfg, turns((0.0, 10, 2, "")))


def test_bad_think_time_in_the_trace():
    with pytest.raises(TraceError, match=r"'think_time_s', request 1: -2 is negative"):
        simulate(make_cfg(), turns((0.0, 10, 2, "s"), (0.0, 10, 2, "s"), think=[0.0, -2.0]))


def test_sessions_yaml_end_to_end(tmp_path):
    from goodput.sim.inputs import build_trace

    cfg = load_config("examples/sessions.yaml", {"output.dir": str(tmp_path / "run"),
                                                 "output.plots": False})
    trace, n = build_trace(cfg.trace, cfg.seed)
    res = run_and_report(cfg, trace, n)
    comp = res.summary["compound"]
    assert comp["clients"]["sessions"] > 0 and comp["clients"]["mode"] == "closed"
    assert res.summary["counts"]["completed"] == n
    assert (tmp_path / "run" / "summary.json").is_file()


def test_closed_loop_client_keeps_its_session():
    # rows 0-2 are one conversation, read back to back; the client that sent turn 1 sends the
    # next turns, the other client reads past them to rows 3 and 4
    df = turns((0.0, 200, 20, "s"), (0.0, 200, 20, "s"), (0.0, 200, 20, "s"), (0.0, 300, 30, ""),
               (0.0, 300, 30, ""))
    res = simulate(make_cfg(mode="closed", concurrency=2, think_time_s=0.5), df)
    r = res.requests
    assert r.arrival_s[0] == r.arrival_s[3] == 0.0
    assert r.arrival_s[1] == r.completion_s[0] + 0.5 and r.arrival_s[2] == r.completion_s[1] + 0.5
    assert r.arrival_s[4] == r.completion_s[3] + 0.5
    assert res.clients["max_outstanding"] == 2 and res.clients["mean_think_s"] == 0.5
