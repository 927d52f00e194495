"""Disaggregated prefill/decode pools: KV moves over the modelled network, nothing is lost, and
fast-forward equals step mode with pools.

Hand-derivable pieces: a lone request's hand-off takes the path's latency plus its per-GPU KV
shard over the bottleneck link (GQA-sized); a decode pool too small for the load makes prefilled
requests wait (backpressure) yet every request still completes; bad pool configs are one line.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from goodput.sim.catalog import get_model
from goodput.sim.config import ConfigError, InstanceGroupConfig, SimConfig, load_config
from goodput.sim.network import kv_size
from goodput.sim.simulator import simulate
from tests.conftest import poisson_requests
from tests.test_fast_forward import assert_conserved

ROUTERS = ["round_robin", "least_outstanding_tokens", "least_kv", "power_of_two"]


def pools_cfg(fast=True, *, prefill=2, decode=2, policy="vllm", mode="after_prefill", router="round_robin",
              decode_blocks=None, tp=1, dispatch="least_loaded"):
    cfg = SimConfig(cluster=[
        InstanceGroupConfig(model="llama-3.1-8b", gpu="h100", tp=tp, count=prefill, role="prefill"),
        InstanceGroupConfig(model="llama-3.1-8b", gpu="h100", tp=tp, count=decode, role="decode")])
    cfg.scheduler.policy = policy
    cfg.cost_model.kind = "roofline"
    cfg.router.name = router
    cfg.network.kv_transfer = mode
    cfg.network.decode_dispatch = dispatch
    cfg.fast_forward = fast
    if decode_blocks is not None:
        cfg.scheduler.num_gpu_blocks = decode_blocks
    return cfg


def test_lone_request_hand_off_is_latency_plus_shard_over_bottleneck():
    df = pd.DataFrame({"request_id": [0], "arrival_s": [0.0], "prompt_tokens": [3000], "output_tokens": [50]})
    res = simulate(pools_cfg(prefill=1, decode=1), df)
    r = res.requests.iloc[0]
    assert r.outcome == "completed" and r.prefill_instance == 0 and r.instance == 1
    # 32 layers x 2 x 8 KV heads x 128 x 2 bytes per token (GQA), prompt tokens stored
    shard = kv_size(get_model("llama-3.1-8b"), 3000).per_gpu
    assert shard == 32 * 2 * 8 * 128 * 2 * 3000
    assert r.kv_transfer_bytes == shard
    # default layout: each group on its own node; the path is PCIe up, NIC, NIC, PCIe down and
    # the NIC (InfiniBand NDR, 50 GB/s) is the bottleneck
    links = res.links.set_index("link")
    assert links.loc["n0.nic0.tx", "bytes"] == shard
    bottleneck = links.nominal_gbs.min() * 1e9
    transfer = r.kv_landed_s - r.kv_handoff_s
    assert transfer > shard / bottleneck
    assert transfer == pytest.approx(shard / bottleneck, rel=0.01)  # + microseconds of latency
    assert r.kv_handoff_s == r.first_token_s  # the prefill produced the first token


@pytest.mark.parametrize("mode", ["after_prefill", "layer_by_layer", "pull"])
@pytest.mark.parametrize("policy", ["vllm", "sarathi"])
def test_pools_fast_forward_equals_step(mode, policy):
    df = poisson_requests(250, rate=25, prompt=(100, 3000), output=(1, 300), seed=31)
    fast, step = (simulate(pools_cfg(f, policy=policy, mode=mode), df) for f in (True, False))
    for name, res in (("fast", fast), ("step", step)):
        assert_conserved(df, res, name)
        assert (res.requests.outcome == "completed").all()
    a, b = fast.requests, step.requests
    for col in ("first_token_s", "completion_s", "kv_handoff_s", "kv_landed_s", "max_tbt_s"):
        np.testing.assert_allclose(a[col], b[col], rtol=1e-9, atol=1e-9, err_msg=col)
    assert (a.instance == b.instance).all() and (a.prefill_instance == b.prefill_instance).all()
    assert set(a.prefill_instance) <= {0, 1}
    assert set(a.instance[a.output_tokens > 1]) <= {2, 3}  # one-token outputs finish at prefill


@pytest.mark.parametrize("router", ROUTERS)
def test_backpressure_when_the_decode_pool_is_full(router):
    """Decode instances of 700 blocks (11k tokens): prefilled requests wait for room, holding
    their KV on the prefill side; every request still completes, in both modes alike."""
    df = poisson_requests(200, rate=40, prompt=(500, 2500), output=(50, 400), seed=32)
    fast, step = (simulate(pools_cfg(f, router=router, decode_blocks=700), df) for f in (True, False))
    for res in (fast, step):
        assert_conserved(df, res)
        assert (res.requests.outcome == "completed").all()
        assert res.kv_transfer["waiting_at_end"] == 0
    wait = fast.requests.kv_landed_s - fast.requests.kv_handoff_s
    assert wait.max() > 50 * wait.min()  # some waited for decode room, far beyond a transfer
    np.testing.assert_allclose(fast.requests.completion_s, step.requests.completion_s, rtol=1e-9)


def test_every_byte_sent_is_a_request_s_kv():
    df = poisson_requests(150, rate=20, seed=33)
    res = simulate(pools_cfg(tp=2, mode="pull"), df)
    q = res.requests
    assert res.kv_transfer["bytes"] == pytest.approx(q.kv_transfer_bytes.sum())
    # two TP ranks send a shard each; the NIC transmit links carried all of it
    nic_tx = res.links[res.links.link.str.contains(r"nic\d+\.tx")]
    assert nic_tx.bytes.sum() == pytest.approx(q.kv_transfer_bytes.sum())


def test_request_too_big_for_every_decode_instance_is_rejected_with_reason():
    """Prefill on H100s (80 GB), decode on L4s (24 GB): a 30k-token request fits the prompt side
    but no decode instance, so it is refused on arrival rather than stranded after its prefill."""
    df = pd.DataFrame({"request_id": [0, 1], "arrival_s": [0.0, 0.1], "prompt_tokens": [200, 30000],
                       "output_tokens": [20, 2000]})
    cfg = pools_cfg(prefill=1, decode=1)
    cfg.cluster[1].gpu = "l4"
    res = simulate(cfg, df)
    q = res.requests.set_index("request_id")
    assert q.loc[0, "outcome"] == "completed"
    assert q.loc[1, "outcome"] == "rejected"
    assert q.loc[1, "reject_reason"] == "prompt + output larger than every decode instance's KV cache"


def test_lossy_fabric_retransmits_and_loses_nothing():
    df = poisson_requests(120, rate=15, seed=34)
    clean = simulate(pools_cfg(), df)
    cfg = pools_cfg()
    # the default layout (each pool on a node of its own), with a lossy InfiniBand between them
    cfg.network.topology = {"nodes": 2, "gpus_per_node": 2, "gpu": "h100-sxm",
                            "links": {"infiniband": {"loss_rate": 0.05}}}
    cfg.network.message_bytes = 16 << 20
    lossy = simulate(cfg, df)
    assert (lossy.requests.outcome == "completed").all()
    t_clean = (clean.requests.kv_landed_s - clean.requests.kv_handoff_s).mean()
    t_lossy = (lossy.requests.kv_landed_s - lossy.requests.kv_handoff_s).mean()
    assert t_lossy > t_clean  # each lost message costs a timeout and a resend


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: setattr(c.cluster[0], "role", "prompt"), r"cluster\[0\]\.role"),
    (lambda c: setattr(c.cluster[0], "role", "decode"), "no instance takes new prompts"),
    (lambda c: setattr(c.cluster[1], "role", "prefill"), "no instance decodes"),
    (lambda c: setattr(c.network, "kv_transfer", "rdma"), "network.kv_transfer"),
    (lambda c: setattr(c.network, "decode_dispatch", "random"), "network.decode_dispatch"),
    (lambda c: setattr(c.router, "name", "llumnix"), "llumnix"),
    (lambda c: setattr(c.network, "topology", {"nodes": 1, "gpus_per_node": 2}), "no node has them"),
    (lambda c: setattr(c.network, "topology", {"fabric": {"base": "ib-ndr", "bandwidth_gbs": 0}}),
     "bandwidth"),
])
def test_bad_pool_configs_are_one_line(change, message):
    cfg = pools_cfg()
    change(cfg)
    with pytest.raises(ConfigError, match=message) as err:
        simulate(cfg, poisson_requests(5, rate=1))
    assert "\n" not in str(err.value)


def test_shipped_example_runs_from_yaml():
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[1] / "examples/disaggregated.yaml")
    cfg.trace.num_requests = 300
    from goodput.sim.inputs import build_trace

    trace, n = build_trace(cfg.trace, cfg.seed)
    res = simulate(cfg, trace, n)
    assert (res.requests.outcome == "completed").all()
    assert res.kv_transfer["mode"] == "layer_by_layer" and res.kv_transfer["transfers"] == 300


def _overflow_run(rate, limit):
    from goodput.sim.config import load_config
    from goodput.sim.simulator import simulate
    from tests.conftest import poisson_requests

    cfg = load_config(None, {
        "cluster": [{"model": "llama-3.1-8b", "gpu": "h100", "count": 1, "role": "prefill"},
                    {"model": "llama-3.1-8b", "gpu": "h100", "count": 1, "role": "decode",
                     "name": "decode"},
                    {"model": "llama-3.1-8b", "gpu": "h100", "count": 1, "role": "mixed", "name": "mixed"}],
        "cost_model": {"kind": "roofline"}, "scheduler": {"num_gpu_blocks": 2000},
        "router": {"name": "least_outstanding_tokens", "pool_overflow_tokens": limit}})
    return simulate(cfg, poisson_requests(300, rate, prompt=(500, 3000), output=(20, 300)))


def test_mixed_instances_take_only_the_overflow():
    light = _overflow_run(1.0, 20000).requests
    assert (light.outcome == "completed").all()
    assert (light.instance != 2).all() and (light.prefill_instance != 2).all()  # mixed idle
    heavy = _overflow_run(40.0, 20000).requests
    assert (heavy.outcome == "completed").all()
    assert (heavy.prefill_instance == 2).any()  # prompts overflowed to the mixed pool
    assert ((heavy.prefill_instance == 0) & (heavy.instance == 2)).any()  # decodes too
    assert (heavy.prefill_instance == 0).sum() > (heavy.prefill_instance == 2).sum()
    # without the threshold the mixed instance takes prompts whenever it is the least loaded
    even = _overflow_run(1.0, None).requests
    assert (even.prefill_instance == 2).any()
