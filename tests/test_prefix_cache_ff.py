"""Prefix caching under memory pressure: fast-forward equals stepping, and KV is conserved.

Every policy x router (the cache-aware one included) x preemption mode, on a multi-turn trace
whose turns extend their session's prompt and whose sessions share system prompts, with a KV
cache small enough that cached units are evicted (to a host tier in some cases) and requests
are preempted. Fast-forward must give every request exactly the step engine's results, and at
every iteration boundary the pool's count must equal the blocks requests hold privately plus the
cached units they reference, each unit's reference count equal to the requests whose cached
path runs through it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import goodput.sim.simulator as simulator
from tests.test_fast_forward import COLUMNS, assert_same, both, make_cfg
from tests.test_policies_invariants import audit  # noqa: F401  (fixture)

UNIT = 512


def session_trace(sessions=40, turns=3, systems=3, system_units=4, turn_units=(1, 3), rate=4.0,
                  output=(5, 120), seed=0) -> pd.DataFrame:
    """Multi-turn chat in Mooncake's form: each turn's prefix ids extend the previous turn's,
    sessions start from one of ``systems`` shared system prompts; the last unit may be partial."""
    rng = np.random.default_rng(seed)
    rows, next_id = [], 10_000
    starts = np.cumsum(rng.exponential(1.0 / rate, sessions))
    for s in range(sessions):
        ids = [1000 * (s % systems) + u for u in range(system_units)]
        t = float(starts[s])
        for _ in range(turns):
            k = int(rng.integers(turn_units[0], turn_units[1] + 1))
            ids = ids + list(range(next_id, next_id + k))
            next_id += k
            prompt = len(ids) * UNIT - int(rng.integers(0, UNIT // 2))
            rows.append((t, prompt, int(rng.integers(*output)), " ".join(map(str, ids))))
            t += float(rng.exponential(3.0))
    df = pd.DataFrame(rows, columns=["arrival_s", "prompt_tokens", "output_tokens", "prefix_blocks"])
    df = df.sort_values("arrival_s", kind="stable").reset_index(drop=True)
    df.insert(0, "request_id", np.arange(len(df)))
    return df


@pytest.fixture(scope="module")
def chat():
    return session_trace(rate=15, output=(50, 400))


def cached_cfg(fast, *, host_gb=0.0, **kw):
    cfg = make_cfg(fast, **kw)
    pc = cfg.scheduler.section("prefix_cache")
    pc.enabled = True
    pc.host_gb = host_gb
    return cfg


ROUTERS = ["round_robin", "least_outstanding_tokens", "least_kv", "power_of_two", "prefix_aware", "llumnix"]
CASES = [(p, m) for p in ("vllm", "sarathi", "decode_priority") for m in ("recompute", "swap")] + \
    [("orca", "recompute"), ("static", "recompute")]


@pytest.mark.parametrize("router", ROUTERS)
@pytest.mark.parametrize("policy, preemption", CASES)
def test_fast_forward_equals_stepping_with_prefix_caching(chat, router, policy, preemption):
    fast, step = both(chat, cached_cfg, router=router, policy=policy, preemption=preemption, blocks=900)
    assert_same(fast, step, [*COLUMNS, "cached_tokens"])
    hit = fast.requests.cached_tokens.sum() / fast.requests.prompt_tokens.sum()
    assert hit > 0.05, hit  # the cache was used ...
    if policy in ("vllm", "sarathi"):  # ... under pressure
        assert fast.instances.preemptions.sum() > 0


@pytest.mark.parametrize("policy", ["vllm", "sarathi"])
def test_fast_forward_equals_stepping_with_a_host_tier(chat, policy):
    fast, step = both(chat, cached_cfg, policy=policy, blocks=700, host_gb=0.5, router="prefix_aware")
    assert_same(fast, step, [*COLUMNS, "cached_tokens"])
    inst = fast.instances
    assert inst.prefix_offloaded_host_gb.sum() > 0 and inst.prefix_reloaded_host_gb.sum() > 0
    for col in ("prefix_offloaded_host_gb", "prefix_reloaded_host_gb", "prefix_gpu_evicted_gb"):
        assert inst[col].tolist() == step.instances[col].tolist(), col


@pytest.mark.parametrize("router", ["round_robin", "prefix_aware", "llumnix"])
@pytest.mark.parametrize("policy, preemption", CASES)
def test_kv_is_conserved_at_every_boundary_with_prefix_caching(chat, policy, preemption, router, audit):  # noqa: F811
    cfg = cached_cfg(True, policy=policy, preemption=preemption, blocks=700, router=router,
                     host_gb=0.2 if preemption == "swap" else 0.0)
    res = simulator.simulate(cfg, chat)
    assert (res.requests.outcome == "completed").all()
    audit()


def test_conserved_through_drain_and_scale_out(chat, audit):  # noqa: F811
    cfg = cached_cfg(True, policy="sarathi", blocks=700, router="prefix_aware",
                     events=[{"time_s": 4.0, "action": "drain", "instance": 0},
                             {"time_s": 6.0, "action": "scale_out", "group": 0}])
    res = simulator.simulate(cfg, chat)
    assert (res.requests.outcome == "completed").all()
    audit()


def test_a_larger_cache_hits_more_and_cache_aware_routing_hits_most(chat):
    rate = {}
    for blocks in (700, 1500, 6000):
        for router in ("round_robin", "prefix_aware"):
            r = simulator.simulate(cached_cfg(True, blocks=blocks, router=router), chat).requests
            rate[blocks, router] = r.cached_tokens.sum() / r.prompt_tokens.sum()
    for router in ("round_robin", "prefix_aware"):
        assert rate[700, router] <= rate[1500, router] <= rate[6000, router]
    assert rate[6000, "prefix_aware"] > rate[6000, "round_robin"]
