"""Fault injection from config events: instance failure and recovery, stragglers, link
degradation and partitions. Nothing is lost (every request ends completed, rejected or
unfinished, once), fast-forward equals step mode, and the hand-derivable cases hold."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from goodput.sim.config import ClusterEvent, ConfigError, load_config
from goodput.sim.simulator import simulate
from tests.conftest import poisson_requests
from tests.test_fast_forward import COLUMNS, assert_same, both, make_cfg
from tests.test_pools import pools_cfg

FAULTS = [
    {"time_s": 5.0, "action": "fail", "instance": 1},
    {"time_s": 9.0, "action": "slow", "instance": 0, "factor": 1.7},
    {"time_s": 14.0, "action": "recover", "instance": 1},
    {"time_s": 20.0, "action": "slow", "instance": 0, "factor": 1.0},
]


@pytest.mark.parametrize("router", ["round_robin", "least_outstanding_tokens", "least_kv", "power_of_two"])
@pytest.mark.parametrize(("policy", "preemption"), [("vllm", "recompute"), ("vllm", "swap"),
                                                    ("sarathi", "recompute"), ("orca", "recompute")])
def test_failure_straggler_recovery_equal_in_both_modes(router, policy, preemption):
    df = poisson_requests(400, rate=20, seed=41)
    fast, step = both(df, router=router, policy=policy, preemption=preemption, blocks=900, events=FAULTS)
    assert (step.requests.outcome == "completed").all()
    assert step.faults["failures"] == 1 and step.faults["requests_affected"] > 0
    assert step.faults == fast.faults
    assert (step.requests.preemptions > 0).sum() >= step.faults["requests_affected"]
    assert_same(fast, step, COLUMNS)


def test_failed_instance_is_not_billed_while_down():
    df = poisson_requests(300, rate=15, seed=42)
    res = simulate(make_cfg(True, events=FAULTS[:1] + FAULTS[2:3], mem=0.9), df)
    inst = res.instances.set_index("instance")
    assert inst.loc[1, "failures"] == 1
    assert inst.loc[1, "billed_s"] == pytest.approx(inst.loc[0, "billed_s"] - 9.0)  # down 5 s .. 14 s


def test_straggler_doubles_a_lone_request():
    df = pd.DataFrame({"request_id": [0], "arrival_s": [1.0], "prompt_tokens": [800], "output_tokens": [60]})
    base = simulate(make_cfg(True, count=1, mem=0.9), df).requests.iloc[0]
    slow = simulate(make_cfg(True, count=1, mem=0.9,
                             events=[{"time_s": 0.5, "action": "slow", "instance": 0, "factor": 2.0}]),
                    df).requests.iloc[0]
    assert slow.completion_s - slow.arrival_s == pytest.approx(2 * (base.completion_s - base.arrival_s))


def test_partitioned_node_holds_transfers_until_it_is_restored():
    df = poisson_requests(150, rate=20, seed=43)
    cfg = pools_cfg()
    cfg.events = [ClusterEvent(time_s=2.0, action="partition_link", links=["node:1"]),
                  ClusterEvent(time_s=4.0, action="restore_link", links=["node:1"])]
    res = simulate(cfg, df)
    q = res.requests
    assert (q.outcome == "completed").all()
    held = q[(q.kv_handoff_s > 2.0) & (q.kv_handoff_s < 4.0)]
    assert len(held) and (held.kv_landed_s >= 4.0).all()  # waited for the link, not lost


def test_transfer_stalled_past_its_timeout_recomputes_on_the_decode_side():
    df = poisson_requests(100, rate=20, seed=44)
    cfg = pools_cfg()
    cfg.network.stall_timeout_s = 0.5
    cfg.events = [ClusterEvent(time_s=1.0, action="partition_link", links=["node:1"]),
                  ClusterEvent(time_s=3.0, action="restore_link", links=["node:1"])]
    res = simulate(cfg, df)
    q = res.requests
    assert (q.outcome == "completed").all()
    assert res.kv_transfer["failed"] > 0
    assert (q.preemptions > 0).sum() == res.kv_transfer["failed"]


def test_degraded_link_slows_transfers():
    df = poisson_requests(100, rate=10, seed=45)
    cfg = pools_cfg()
    clean = simulate(cfg, df).requests
    cfg.events = [ClusterEvent(time_s=0.0, action="degrade_link", links=["node:0", "node:1"], factor=0.1)]
    slow = simulate(cfg, df).requests
    t = lambda q: float(np.median(q.kv_landed_s - q.kv_handoff_s))  # noqa: E731
    assert t(slow) > 5 * t(clean)


@pytest.mark.parametrize(("events", "message"), [
    ([{"action": "recover", "instance": 0}], "has not failed before"),
    ([{"action": "fail", "instance": 0}, {"action": "fail", "instance": 1}], "leaves no instance"),
    ([{"action": "slow", "instance": 0, "factor": 0}], r"events\[0\]\.factor"),
    ([{"action": "fail", "instance": 7}], "does not exist"),
    ([{"action": "partition_link"}], "need a network"),
    ([{"action": "explode"}], "action must be one of"),
])
def test_bad_fault_events_are_one_line(events, message):
    with pytest.raises(ConfigError, match=message) as err:
        simulate(make_cfg(True, events=events), poisson_requests(5, rate=1))
    assert "\n" not in str(err.value)


def test_unknown_fabric_link_is_refused_before_the_run():
    cfg = pools_cfg()
    cfg.events = [ClusterEvent(time_s=1.0, action="partition_link", links=["n9.nic0.tx"])]
    with pytest.raises(ConfigError, match=r"no link 'n9\.nic0\.tx'"):
        simulate(cfg, poisson_requests(5, rate=1))


def test_shipped_fault_example_loses_nothing():
    from pathlib import Path

    from goodput.sim.inputs import build_trace

    cfg = load_config(Path(__file__).resolve().parents[1] / "examples/faults.yaml")
    trace, n = build_trace(cfg.trace, cfg.seed)
    res = simulate(cfg, trace, n)
    assert len(res.requests) == n and res.requests.request_id.is_unique
    assert (res.requests.outcome == "completed").all()
    assert res.faults["failures"] == 1
