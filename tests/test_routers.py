"""Global schedulers: hand-checkable dispatch, Llumnix live migration, drain, scale-out, priority.

Dispatch decisions are derived by hand from each router's rule on 2-3 requests. The single
migration test derives every time of a Llumnix migration (stage copy while decoding, stop-and-copy
at the next iteration boundary, landing on the idle destination) from the cost model and the link.
"""
from __future__ import annotations

import numpy as np
import pytest

from goodput.sim.catalog import get_gpu, get_model
from goodput.sim.config import ClusterEvent
from goodput.sim.engine.kvcache import kv_capacity
from goodput.sim.engine.records import RecordSink
from goodput.sim.metrics import request_metrics
from goodput.sim.simulator import build_cluster
from goodput.sim.workload.generators import synthesize
from tests.test_policies import (
    EPS,
    FAST,
    GPU,
    MODEL,
    bt,
    cfg_for,
    dec,
    decode_alone,
    run,
    trace,
    util_for_blocks,
)

BPT = get_model(MODEL).kv_bytes_per_token(1)  # KV bytes per token (tp=1)


def routed(router, reqs, count=2, **sched):
    cfg = cfg_for("vllm", count=count, **sched)
    cfg.router.name = router
    cfg.router.migration = False  # dispatch only: the final instance is the routed one
    return run(cfg, trace(*reqs))


# ----------------------------------------------------------------------------------- dispatch
def test_round_robin_alternates_ignoring_load():
    reqs = [(0.0, 4000, 500), (EPS, 10, 2), (2 * EPS, 10, 2), (3 * EPS, 10, 2)]
    _, r = routed("round_robin", reqs)
    assert list(r.instance) == [0, 1, 0, 1]


@pytest.mark.parametrize("router", ["least_outstanding_tokens", "power_of_two"])
def test_least_outstanding_tokens_sends_work_to_the_lighter_instance(router):
    """R0 leaves 1000 + 100 tokens on its instance; R1 (10 + 10) goes to the other; R2 follows R1
    (20 tokens left < 1100). With two instances power-of-two always samples both, but breaks the
    first tie at random (least-outstanding breaks it to the lowest index)."""
    _, r = routed(router, [(0.0, 1000, 100), (EPS, 10, 10), (2 * EPS, 10, 10)])
    first, other = r.instance[0], 1 - r.instance[0]
    assert list(r.instance) == [first, other, other]
    if router == "least_outstanding_tokens":
        assert first == 0


def test_least_kv_counts_blocks_in_use_and_queued():
    """R0 holds 63 blocks on 0; R1 (2 blocks) goes to 1; R2 goes to 1 (2 < 63 blocks in use)."""
    _, r = routed("least_kv", [(0.0, 1000, 100), (EPS, 20, 10), (2 * EPS, 20, 10)])
    assert list(r.instance) == [0, 1, 1]


@pytest.mark.parametrize("headroom_blocks,expected", [(256, 1), (0, 0)])
def test_llumnix_headroom_steers_normal_requests_away_from_high_priority(headroom_blocks, expected):
    """R0 (priority 1, 2000 tokens = 125 blocks) is in prefill on 0, R1 (3000 tokens = 188 blocks)
    on 1. R2 goes to the freer instance: 0 without headroom (125 < 188 blocks), 1 with a headroom
    of 256 blocks charged to the instance hosting the high-priority request (381 > 188)."""
    cfg = cfg_for("vllm", count=2)
    cfg.router.name = "llumnix"
    cfg.router.migration = False
    total = build_cluster(cfg, RecordSink()).instances[0].total_blocks
    cfg.router.priority_headroom = headroom_blocks / total
    _, r = run(cfg, trace((0.0, 2000, 5, 1), (EPS, 3000, 5), (2 * EPS, 100, 5)))
    assert list(r.instance) == [0, 1, expected]


def test_llumnix_freeness_divides_by_every_request_hosted():
    """R0 (2000 tokens, 125 blocks) is in prefill on 0; R1 and R2 (100 tokens, 7 blocks) go to 1,
    where R2 queues behind R1's prefill. For R3, instance 1 has (T - 14) / 2 free blocks per
    hosted request, instance 0 (T - 125) / 1: R3 goes to 0. Dividing by the running (decoding)
    requests alone, 0 for both, sent every request of a burst to instance 1."""
    cfg = cfg_for("vllm", count=2)
    cfg.router.name = "llumnix"
    cfg.router.migration = False
    _, r = run(cfg, trace((0.0, 2000, 5), (EPS, 100, 5), (2 * EPS, 100, 5), (3 * EPS, 100, 5)))
    assert list(r.instance) == [0, 1, 1, 0]


# ----------------------------------------------------------------------------------- migration
@FAST
def test_single_live_migration_hand_derived(fast):
    """R0 (1000-token prompt, 100 tokens) decodes on instance 0 while 1 idles. Knobs make 0 a
    source whenever it runs anything and only an idle instance a destination. At the first
    rebalancing tick (0.5 s) stage 1 copies R0's KV while it keeps decoding; the delta left after
    it is < 1 block, so R0 stops at the next boundary on 0, the delta is copied, and it lands on 1
    and decodes the rest there."""
    cfg = cfg_for("vllm", count=2, fast=fast)
    total = kv_capacity(get_model(MODEL), get_gpu(GPU), 1, 16, cfg.scheduler.gpu_memory_utilization,
                        cfg.scheduler.activation_reserve_gb).total_blocks
    cfg.router.name = "llumnix"
    cfg.router.migrate_out_freeness = 1e9  # anything running is a source
    cfg.router.migrate_in_freeness = total - 1  # only an empty instance (freeness = total) receives
    cfg.router.migration_interval_s = 0.5
    link = cfg.router.link
    res, r = run(cfg, trace((0.0, 1000, 100)))
    assert res.instances.kv_blocks.iloc[0] == total

    t1 = bt([1000], [0])
    bounds = [t1]  # bounds[j]: end of decode step j on instance 0 -> R0 has 1 + j tokens
    for i in range(99):
        bounds.append(bounds[-1] + dec(1000 + i))

    def gen_at(t):
        return sum(1 for b in bounds if b <= t)

    def xfer(tokens):
        return link.latency_s + tokens * BPT / (link.bandwidth_gbs * 1e9)

    kv1 = 1000 + gen_at(0.5) - 1
    stage1_end = 0.5 + xfer(kv1)
    assert 1000 + gen_at(stage1_end) - 1 - kv1 <= 16  # delta fits one block: stop-and-copy next
    tb = min(b for b in bounds if b >= stage1_end)  # next boundary on the source
    g = gen_at(tb)
    kv3 = 1000 + g - 1
    land = tb + xfer(kv3 - kv1)
    done = land + decode_alone(kv3, 100 - g)
    row = r.loc[0]
    assert (row.instance, row.migrations, row.outcome) == (1, 1, "completed")
    assert row.generated_tokens == 100
    assert row.migrated_bytes == kv3 * BPT  # every KV byte copied exactly once over the stages
    assert row.completion_s == pytest.approx(done, rel=1e-9)
    assert row.max_tbt_s == pytest.approx(max(land + dec(kv3) - tb, dec(1098)), rel=1e-9)
    assert res.migration == {"completed": 1, "aborted": 0, "bytes": kv3 * BPT}


def test_llumnix_migrates_load_onto_a_scaled_out_idle_instance():
    """80 long requests all arrive on one small instance (400 blocks); a second instance starts at
    1 s with nothing routed to it. Only migration can move work there."""
    df = synthesize(80, 200, "uniform:600:1000", "uniform:200:400", seed=5).df
    results = []
    for fast in (True, False):
        cfg = cfg_for("vllm", count=1, fast=fast, gpu_memory_utilization=util_for_blocks(400))
        cfg.router.name = "llumnix"
        cfg.events = [ClusterEvent(time_s=1.0, action="scale_out", group=0)]
        results.append(run(cfg, df))
    (res, r), (_, r_step) = results
    assert df.arrival_s.max() < 1.0  # every request was dispatched before instance 1 existed
    moved = r[r.migrations > 0]
    assert len(moved) > 5 and (moved.instance == 1).all()
    assert res.migration["completed"] == r.migrations.sum() and res.migration["aborted"] == 0
    assert res.migration["bytes"] == pytest.approx(r.migrated_bytes.sum())
    # migrated bytes are a whole number of tokens of KV, between the prompt and the last token
    tokens = moved.migrated_bytes / BPT
    assert (tokens == tokens.round()).all()
    last = moved.prompt_tokens + moved.output_tokens - 1
    assert ((tokens >= moved.prompt_tokens) & (tokens <= last)).all()
    assert (r.outcome == "completed").all() and (r.generated_tokens == r.output_tokens).all()
    assert r.index.is_unique and len(r) == len(df)
    # fast-forwarding changes nothing, migrations included
    cols = ["instance", "first_token_s", "completion_s", "max_tbt_s", "preemptions", "migrations",
            "migrated_bytes"]
    np.testing.assert_allclose(r[cols].to_numpy(float), r_step[cols].to_numpy(float), rtol=1e-9)


# ----------------------------------------------------------------------------- drain / scale-out
def test_drain_reroutes_the_queue_and_takes_no_new_requests():
    """max_batch_size 2 keeps a queue on both instances; at 1 s instance 0 drains: its queued
    requests are routed to 1 at once, and nothing arriving later goes to 0."""
    df = synthesize(60, 20, "fixed:200", "fixed:100", seed=1).df
    cfg = cfg_for("vllm", count=2, max_batch_size=2)
    cfg.events = [ClusterEvent(time_s=1.0, action="drain", instance=0)]
    _, r = run(cfg, df)
    assert (r.outcome == "completed").all()
    assert (r[r.arrival_s > 1.0].instance == 1).all()
    queued_at_drain = r[(r.arrival_s < 1.0) & (r.first_scheduled_s > 1.0)]
    assert len(queued_at_drain) > 0 and (queued_at_drain.instance == 1).all()
    # requests already running on 0 finished there (no migration with round-robin)
    assert (r[r.first_scheduled_s < 1.0].instance == 0).any()


def test_llumnix_drain_migrates_running_requests_off():
    df = synthesize(60, 20, "fixed:300", "fixed:300", seed=2).df
    cfg = cfg_for("vllm", count=2)
    cfg.router.name = "llumnix"
    cfg.router.migration_interval_s = 0.1
    cfg.events = [ClusterEvent(time_s=1.0, action="drain", instance=0)]
    _, r = run(cfg, df)
    assert (r.outcome == "completed").all() and (r.generated_tokens == r.output_tokens).all()
    assert (r[r.arrival_s > 1.0].instance == 1).all()
    moved = r[r.migrations > 0]
    assert len(moved) > 0 and (moved.instance == 1).all() and (moved.arrival_s < 1.0).all()


def test_scale_out_instance_takes_every_other_request():
    """Round-robin over one instance, then over two from 2 s: later arrivals alternate 0, 1, ..."""
    df = synthesize(40, 10, "fixed:100", "fixed:20", seed=3).df
    cfg = cfg_for("vllm", count=1)
    cfg.events = [ClusterEvent(time_s=2.0, action="scale_out", group=0)]
    res, r = run(cfg, df)
    after = r[r.arrival_s > 2.0].sort_values("arrival_s").instance.tolist()
    assert len(after) > 4 and after == [i % 2 for i in range(len(after))]
    assert (r[r.arrival_s < 2.0].instance == 0).all()
    assert res.instances.started_s.tolist() == [0.0, 2.0]


# ----------------------------------------------------------------------------------- priority
def test_high_priority_requests_see_lower_latency_under_load():
    """Bursty load (gamma CV 3) above what 2 small instances serve without queueing; 10% of the
    requests have priority 1: they are queued ahead and get headroom, so their latency is lower."""
    df = synthesize(400, 12, "uniform:100:1500", "uniform:50:400", arrival="gamma", cv=3,
                    seed=4).df
    df["priority"] = (np.random.default_rng(0).random(len(df)) < 0.1).astype(int)
    cfg = cfg_for("vllm", count=2, gpu_memory_utilization=util_for_blocks(600))
    cfg.router.name = "llumnix"
    res, _ = run(cfg, df)
    m = request_metrics(res.requests)
    assert (m.outcome == "completed").all()
    high, normal = m[m.priority == 1], m[m.priority == 0]
    assert normal.ttft_s.mean() > 0.5  # really under load: requests queue
    assert high.ttft_s.mean() < 0.5 * normal.ttft_s.mean()
    assert high.e2e_s.mean() < normal.e2e_s.mean()
