"""Invariants over random bursty workloads for every policy x router, and bad configuration.

Why instrument the engine: the result tables show what users see, but a KV accounting slip (a
request holding fewer blocks than its tokens, blocks leaked after a migration) is invisible there.
The ``audit`` fixture keeps every cluster the simulator builds and checks, at each completion,
that the request holds blocks for all its KV, and at the end that every counter is back to zero:
no blocks, reservations or host swap space held, no tokens of work left (tokens conserved).
"""
from __future__ import annotations

import pytest

import goodput.sim.simulator as simulator
from goodput.sim.config import ClusterEvent, ConfigError, load_config
from goodput.sim.engine.instance import Instance
from goodput.sim.workload.generators import synthesize
from tests.test_policies import cfg_for, trace, util_for_blocks

POLICIES = ["vllm", "sarathi", "orca", "static", "decode_priority"]
ROUTERS = ["round_robin", "least_outstanding_tokens", "least_kv", "power_of_two", "llumnix"]


@pytest.fixture(scope="module")
def bursty():
    """200 requests, gamma arrivals (CV 3) at 15 req/s, prompts 50-1500, outputs 1-300."""
    return synthesize(200, 15, "uniform:50:1500", "uniform:1:300", arrival="gamma", cv=3,
                      seed=3).df


@pytest.fixture
def audit(monkeypatch):
    clusters, short = [], []
    build, complete, boundary = simulator.build_cluster, Instance._complete, Instance._boundary

    def keep(cfg, records, *args):
        cluster = build(cfg, records, *args)
        clusters.append(cluster)
        return cluster

    def checked_complete(self, seq, now):
        if seq.blocks < self.capacity.blocks_for(seq.prompt + seq.generated - 1):
            short.append((seq.rid, seq.blocks, seq.prompt + seq.generated - 1))
        complete(self, seq, now)

    def checked_boundary(self):
        self.check_conservation()  # blocks held by requests + reservations == the pool's count
        boundary(self)

    monkeypatch.setattr(simulator, "build_cluster", keep)
    monkeypatch.setattr(Instance, "_complete", checked_complete)
    monkeypatch.setattr(Instance, "_boundary", checked_boundary)

    def verify():
        assert short == [], f"requests completed holding fewer KV blocks than tokens: {short[:5]}"
        for inst in clusters[-1].instances:
            assert (inst.kv.used, inst.kv.reserved, inst.kv.host_used) == (0, 0, 0)
            # tokens conserved: work added (prompt, output, recompute) == work done
            assert inst.outstanding_tokens == 0
            assert not (inst.waiting or inst.running or inst.prefilling or inst.swapped)
    return verify


def pressured(policy, router, preemption="recompute"):
    """2 instances of 200 KV blocks (3200 tokens): preemption and Llumnix migration both occur."""
    cfg = cfg_for(policy, count=2, gpu_memory_utilization=util_for_blocks(200),
                  preemption=preemption, swap_space_gb=0.05)
    cfg.router.name = router
    cfg.router.migrate_out_freeness = 15.0
    cfg.router.migrate_in_freeness = 25.0
    cfg.output.timeseries_interval_s = 0.0  # sample at every iteration boundary
    return cfg


def assert_invariants(res, df):
    out = res.requests
    ts = res.timeseries
    assert (ts.kv_used_blocks <= ts.kv_total_blocks).all() and (ts.kv_used_blocks >= 0).all()
    assert out.request_id.is_unique and set(out.request_id) == set(df.request_id)
    assert (out.outcome == "completed").all(), out.outcome.value_counts()
    assert (out.generated_tokens == out.output_tokens).all()
    assert out.generated_tokens.sum() == df.output_tokens.sum()


@pytest.mark.parametrize("router", ROUTERS)
@pytest.mark.parametrize("policy", POLICIES)
def test_invariants_every_policy_and_router(policy, router, bursty, audit):
    res = simulator.simulate(pressured(policy, router), bursty)
    assert_invariants(res, bursty)
    audit()
    if policy in ("vllm", "sarathi", "decode_priority"):
        assert res.requests.preemptions.sum() > 0  # the cache really was under pressure
    if router == "llumnix" and policy == "static":
        assert res.migration["completed"] == 0  # a static batch never takes a migrated request
    elif router == "llumnix":
        assert res.requests.migrations.sum() == res.migration["completed"] > 0


@pytest.mark.parametrize("policy", ["vllm", "sarathi"])
def test_invariants_with_swap_migration_drain_and_scale_out(policy, bursty, audit):
    cfg = pressured(policy, "llumnix", preemption="swap")
    cfg.events = [ClusterEvent(time_s=3.0, action="drain", instance=0),
                  ClusterEvent(time_s=4.0, action="scale_out", group=0)]
    res = simulator.simulate(cfg, bursty)
    assert_invariants(res, bursty)
    audit()
    assert res.instances.swaps.sum() > 0 and res.requests.migrations.sum() > 0
    assert len(res.instances) == 3


# ----------------------------------------------------------------------------------- bad config
TINY = trace((0.0, 100, 10))


def error_of(overrides) -> str:
    cfg = load_config(overrides={"cost_model.kind": "roofline", **overrides})
    with pytest.raises(ConfigError) as exc:
        simulator.simulate(cfg, TINY)
    return str(exc.value)


def test_token_budget_below_chunk_size_names_both_fields():
    msg = error_of({"scheduler.policy": "sarathi", "scheduler.sarathi.chunk_size": 512,
                    "scheduler.sarathi.token_budget": 256})
    assert "scheduler.sarathi.token_budget" in msg and "scheduler.sarathi.chunk_size" in msg and "256" in msg


def test_unknown_policy_lists_the_valid_names():
    msg = error_of({"scheduler.policy": "fifo"})
    assert "scheduler.policy" in msg and "'fifo'" in msg
    assert all(p in msg for p in POLICIES)


def test_unknown_router_lists_the_valid_names():
    msg = error_of({"router.name": "random"})
    assert "router.name" in msg and "'random'" in msg and "llumnix" in msg


def test_preemption_mode_must_be_recompute_or_swap():
    msg = error_of({"scheduler.preemption": "kill"})
    assert "scheduler.preemption" in msg and "'kill'" in msg


@pytest.mark.parametrize("overrides,field", [
    ({"scheduler.policy": "sarathi", "scheduler.sarathi.chunk_size": 0}, "scheduler.sarathi.chunk_size"),
    ({"scheduler.max_batch_size": 0}, "scheduler.max_batch_size"),
    ({"router.name": "llumnix", "router.migration_interval_s": 0.0}, "router.migration_interval_s"),
    ({"events": [{"time_s": 1.0, "action": "reboot"}]}, "events[0].action"),
    ({"events": [{"time_s": 1.0, "action": "drain", "instance": 3}]}, "events[0].instance"),
])
def test_other_bad_values_name_their_field(overrides, field):
    assert field in error_of(overrides)


@pytest.mark.parametrize("overrides,needle", [
    ({"scheduler.chunk_size": 64}, "scheduler.chunk_size moved to scheduler.sarathi.chunk_size"),
    ({"scheduler.sarathi.chunk": 64}, "unknown config field(s) scheduler.sarathi.chunk"),
    ({"scheduler.sarathi": 64}, "scheduler.sarathi: expected a mapping"),
    ({"scheduler.orca.reserve_output_tokens": "many"}, "scheduler.orca.reserve_output_tokens"),
])
def test_policy_sections_are_strict_when_loading(overrides, needle):
    with pytest.raises(ConfigError) as exc:
        load_config(overrides=overrides)
    assert needle in str(exc.value)
