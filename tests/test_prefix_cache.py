"""The prefix cache: block accounting, eviction order, tiers, and hand-derived hits.

Why these cases: a prefix cache changes what a prefill costs and how much KV memory a request
takes, so a slip shows up as wrong TTFT or leaked blocks rather than as an error. The unit tests
drive ``KVPool`` directly (the one owner of KV memory) with sequences whose prefixes are known,
then the simulation tests check a second request with a shared prefix prefills exactly the
uncached tokens, priced by the cost model over a context of the cached ones.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from goodput.sim.config import ConfigError, SimConfig, load_config
from goodput.sim.engine.kvcache import KVCapacity
from goodput.sim.engine.kvpool import KVPool
from goodput.sim.engine.prefix_cache import EVICTIONS, PrefixCache, PrefixCacheConfig, make_prefix_cache
from goodput.sim.engine.sequence import Sequence
from goodput.sim.simulator import simulate

BS = 16
UNIT = 64  # 4 engine blocks per unit: small numbers to reason about


def pool(total=64, eviction="lru", host=0, remote=0, unit=UNIT, bs=BS) -> KVPool:
    cap = KVCapacity(total_blocks=total, block_size=bs, bytes_per_token=1000.0)
    cache = PrefixCache(unit, bs, cap.bytes_per_token * bs, EVICTIONS[eviction](), host_blocks=host,
                        remote_blocks=remote, host_bps=1e9, remote_bps=0.5e9, remote_latency_s=1e-3)
    return KVPool(cap, cache=cache)


def seq(rid, ids, prompt=None) -> Sequence:
    s = Sequence(rid, 0.0, prompt if prompt is not None else len(ids) * UNIT + 10, 5)
    s.prefix = tuple(ids)
    return s


def run_prefill(kv: KVPool, s: Sequence) -> int:
    """Look the prefix up, allocate the rest of the prompt, cache it; returns cached tokens."""
    cached, _ = kv.match_prefix(s)
    kv.allocate_to(s, s.prompt)
    kv.insert_prefix(s)
    return cached


def check(kv: KVPool, holders) -> None:
    private = sum(s.blocks - s.shared for s in holders)
    kv.check(private, 0, list(holders))


def test_a_shared_prefix_is_counted_once_and_released_to_idle():
    kv = pool()
    a, b = seq(1, [7, 8, 9]), seq(2, [7, 8, 5])
    assert run_prefill(kv, a) == 0
    # a holds ceil(202/16) = 13 blocks, 12 of them now the cache's 3 units
    assert (a.blocks, a.shared, kv.used) == (13, 12, 13)
    assert run_prefill(kv, b) == 2 * UNIT  # units 7, 8 shared; 5 is new
    assert (b.blocks, b.shared) == (13, 12)
    assert kv.used == 13 + 13 - 8  # the two shared units once
    check(kv, [a, b])
    kv.free_from(a)
    check(kv, [b])
    assert kv.cache.idle == 4  # a's own unit 9 is idle; 7 and 8 still referenced by b
    kv.free_from(b)
    check(kv, [])
    assert (kv.used, kv.cache.idle, kv.cache.held[0]) == (0, 16, 16)


def test_the_last_prompt_token_is_always_computed():
    kv = pool()
    a = seq(1, [1, 2], prompt=2 * UNIT)  # exactly two units
    run_prefill(kv, a)
    kv.free_from(a)
    b = seq(2, [1, 2], prompt=2 * UNIT)
    assert run_prefill(kv, b) == UNIT  # the second unit holds the last token: recomputed
    # a prompt ending inside a block caches only its full units
    c = seq(3, [1, 2, 3], prompt=2 * UNIT + 5)
    assert kv.cache.usable_units(c.prefix, c.prompt, reuse=False) == 2


def test_engine_blocks_that_do_not_divide_the_unit_are_mapped_explicitly():
    cache = PrefixCache(512, 48, 1.0, EVICTIONS["lru"]())
    assert [cache.blocks_upto(d) for d in range(4)] == [0, 10, 21, 32]  # 480, 1008, 1536 tokens
    cfg = PrefixCacheConfig(enabled=True, unit_tokens=8)
    with pytest.raises(ConfigError, match=r"unit_tokens=8 is smaller than scheduler\.block_size=16"):
        make_prefix_cache(cfg, 16, 100.0, 25.0, None)


@pytest.mark.parametrize("eviction, survivor", [("lru", [1]), ("fifo", [3])])
def test_eviction_order(eviction, survivor):
    """Three cached one-unit prefixes (4 blocks each) inserted 1, 2, 3; prefix 1 is then used
    again. Pressure that leaves room for one: LRU keeps the most recently used (1), FIFO the
    newest inserted (3)."""
    kv = pool(total=16, eviction=eviction)
    for rid in (1, 2, 3):
        s = seq(rid, [rid], prompt=UNIT)  # 4 blocks, all of them one unit
        kv.allocate_to(s, s.prompt)
        kv.insert_prefix(s)
        kv.free_from(s)
    again = seq(9, [1], prompt=UNIT + 1)
    assert run_prefill(kv, again) == UNIT
    kv.free_from(again)
    hog = Sequence(99, 0.0, 12 * BS, 1)
    kv.allocate_to(hog, 12 * BS)  # 12 of 16 blocks: with 4 free, only one idle unit fits
    check(kv, [hog])
    alive = sorted(k for k, n in kv.cache.root.children.items() if n.tier == 0)
    assert alive == survivor


def test_lower_tiers_take_evicted_units_and_reloads_cost_their_link():
    kv = pool(total=12, host=4, remote=4)
    units = []
    for rid in (1, 2, 3):
        s = seq(rid, [rid], prompt=UNIT)
        kv.allocate_to(s, s.prompt)
        kv.insert_prefix(s)
        kv.free_from(s)
        units.append(rid)
    hog = Sequence(99, 0.0, 8 * BS, 1)
    kv.allocate_to(hog, 8 * BS)  # 4 free: units 1 and 2 leave GPU, 1 ends in remote, 2 in host
    c = kv.cache
    tiers = {k: n.tier for k, n in c.root.children.items()}
    assert tiers == {1: 2, 2: 1, 3: 0}
    check(kv, [hog])
    kv.free_from(hog)
    block_bytes = 1000.0 * BS
    s2 = seq(20, [2], prompt=UNIT + 1)
    cached, seconds = kv.match_prefix(s2)
    assert cached == UNIT and seconds == pytest.approx(4 * block_bytes / 1e9)
    s1 = seq(10, [1], prompt=UNIT + 1)
    cached, seconds = kv.match_prefix(s1)
    assert cached == UNIT and seconds == pytest.approx(4 * block_bytes / 0.5e9 + 1e-3)
    check(kv, [s1, s2])
    assert c.reloaded == [0, 4, 4] and c.offloaded[1] == 8  # 1 went to host before remote


def test_swap_out_copies_the_shared_prefix_and_brings_it_back_private():
    kv = pool()
    kv.host_total = 100
    a = seq(1, [1, 2])
    run_prefill(kv, a)
    b = seq(2, [1, 2])
    run_prefill(kv, b)
    used = kv.used
    kv.swap_out(b)
    assert (b.shared, kv.host_used, kv.used) == (0, b.blocks, used - 1)  # only b's private block
    kv.swap_in(b)
    check(kv, [a, b])


# --------------------------------------------------------------------------- in the simulator
def cfg(cache=True, policy="vllm", **sched) -> SimConfig:
    c = load_config(None, {"cluster": [{"model": "llama-3.1-8b", "gpu": "h100", "count": 1}],
                           "cost_model": {"kind": "roofline"},
                           "scheduler": {"policy": policy, "prefix_cache": {"enabled": cache}, **sched}})
    return c


def two_requests(shared_units=6, prompt=4000, gap=10.0) -> pd.DataFrame:
    ids = list(range(shared_units))
    return pd.DataFrame({"request_id": [0, 1], "arrival_s": [0.0, gap],
                         "prompt_tokens": [prompt, prompt], "output_tokens": [3, 3],
                         "prefix_blocks": [" ".join(map(str, [*ids, 100])),
                                           " ".join(map(str, [*ids, 200]))]})


@pytest.mark.parametrize("policy", ["vllm", "sarathi", "orca", "decode_priority"])
def test_a_hit_prefills_only_the_uncached_tokens_priced_over_the_cached_context(policy):
    from goodput.sim.catalog import get_gpu, get_model
    from goodput.sim.costmodel.roofline import RooflineCostModel

    df = two_requests()
    c = cfg(policy=policy)
    res = simulate(c, df).requests
    cached = 6 * 512
    assert res.cached_tokens.tolist() == [0, cached]
    cost = RooflineCostModel(get_model("llama-3.1-8b"), get_gpu("h100"), 1)
    ttft = (res.first_token_s - res.first_scheduled_s).to_numpy()
    if policy == "sarathi":  # chunks of the policy's chunk size
        chunk = c.scheduler.section("sarathi").chunk_size
        expect = [sum(cost.iteration_time([min(chunk, 4000 - s)], [s]) for s in range(p0, 4000, chunk))
                  for p0 in (0, cached)]
    else:
        expect = [cost.iteration_time([4000], [0]), cost.iteration_time([4000 - cached], [cached])]
    np.testing.assert_allclose(ttft, expect, rtol=1e-9)
    off = simulate(cfg(cache=False, policy=policy), df).requests
    assert off.cached_tokens.tolist() == [0, 0]
    np.testing.assert_allclose((off.first_token_s - off.first_scheduled_s).iloc[0], expect[0], rtol=1e-9)


def test_without_shared_ids_caching_changes_nothing():
    df = two_requests()
    df["prefix_blocks"] = ["1 2 3", "4 5 6"]
    on, off = simulate(cfg(), df).requests, simulate(cfg(cache=False), df).requests
    for col in ("first_token_s", "completion_s"):
        np.testing.assert_array_equal(on[col].to_numpy(), off[col].to_numpy())


def test_a_failure_loses_the_cache():
    df = two_requests(gap=10.0)
    c = cfg()
    c.cluster[0].count = 2
    c.router.name = "prefix_aware"
    from goodput.sim.config import ClusterEvent
    c.events = [ClusterEvent(time_s=5.0, action="fail", instance=0),
                ClusterEvent(time_s=6.0, action="recover", instance=0)]
    res = simulate(c, df).requests
    assert res.cached_tokens.tolist() == [0, 0]  # request 0's prefix died with instance 0


def test_bad_prefix_cache_settings_name_their_field():
    for key, value, needle in (("host_gb", -1.0, "host_gb must be >= 0"),
                               ("eviction", "random", "eviction 'random'"),
                               ("remote_gbs", 0.0, "remote_gbs must be > 0")):
        c = cfg(prefix_cache={"enabled": True, key: value})
        with pytest.raises(ConfigError, match=needle):
            simulate(c, two_requests())


def test_prefill_pools_cache_prefixes():
    c = cfg()
    c.cluster = [type(c.cluster[0])(model="llama-3.1-8b", gpu="h100", count=1, role="prefill"),
                 type(c.cluster[0])(model="llama-3.1-8b", gpu="h100", count=1, role="decode")]
    res = simulate(c, two_requests()).requests
    assert res.cached_tokens.tolist() == [0, 6 * 512]
    assert (res.outcome == "completed").all() and res.kv_transfer_bytes.gt(0).all()


def test_the_mooncake_trace_hits_and_fast_forward_holds():
    from goodput.sim.workload.loaders import load_trace
    from tests.conftest import shared_trace

    df = load_trace(shared_trace("mooncake_synthetic_trace.jsonl")).df.iloc[:400]
    out = []
    for fast in (True, False):
        c = cfg()
        c.cluster[0].gpu, c.cluster[0].count, c.router.name = "h200", 2, "prefix_aware"
        c.fast_forward = fast
        out.append(simulate(c, df).requests)
    assert out[0].cached_tokens.sum() > 0.03 * out[0].prompt_tokens.sum()  # early turns: little reuse yet
    for col in ("instance", "cached_tokens"):
        np.testing.assert_array_equal(out[0][col].to_numpy(), out[1][col].to_numpy(), err_msg=col)
    for col in ("first_token_s", "completion_s"):  # summed in another order: rounding only
        np.testing.assert_allclose(out[0][col].to_numpy(), out[1][col].to_numpy(), rtol=1e-9, err_msg=col)


def test_a_generated_mooncake_file_runs_from_yaml_with_caching(tmp_path):
    """The whole path a user takes: a Mooncake-format file on disk, read by format detection
    (512-token blocks from the format), simulated from a YAML config, summarised."""
    import json

    from goodput.sim.run import run_and_report
    from goodput.sim.workload.loaders import load_trace
    from goodput.sim.workload.sessions import mooncake_like, save_mooncake

    path = tmp_path / "chat.jsonl"
    save_mooncake(mooncake_like(sessions=40, turns=3, rate=2.0, seed=1), path)
    trace = load_trace(path)
    assert trace.format == "mooncake" and trace.meta["prefix_block_tokens"] == 512
    (tmp_path / "c.yaml").write_text(
        "cluster: [{model: llama-3.1-8b, gpu: h100, count: 2}]\ncost_model: {kind: roofline}\n"
        "scheduler: {prefix_cache: {enabled: true, host_gb: 1}}\nrouter: {name: prefix_aware}\n"
        f"output: {{dir: {tmp_path / 'out'}, plots: false}}\n")
    res = run_and_report(load_config(tmp_path / "c.yaml"), trace)
    pc = json.loads((tmp_path / "out" / "summary.json").read_text())["prefix_cache"]
    assert pc == res.summary["prefix_cache"]
    assert pc["token_hit_rate"] > 0.3 and pc["cached_tokens"] == res.requests.cached_tokens.sum()
