"""The real serving loop takes the simulator's decisions: with the cost model as its clock it *is*
the simulator, and with the tiny model on the CPU it serves every request with real tokens."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from goodput.sim.config import ConfigError, InstanceGroupConfig, SimConfig, load_config
from goodput.sim.simulator import simulate
from tests.conftest import poisson_requests, virtual_serve

COLUMNS = ["first_scheduled_s", "first_token_s", "completion_s", "generated_tokens",
           "preemptions", "max_tbt_s", "outcome"]


def _cfg(policy, mem=0.9, max_batch=256):
    cfg = SimConfig(cluster=[InstanceGroupConfig(model="llama-3.1-8b", gpu="h100", count=1)])
    cfg.scheduler.policy = policy
    cfg.scheduler.gpu_memory_utilization = mem
    cfg.scheduler.max_batch_size = max_batch
    cfg.cost_model.kind = "roofline"
    cfg.fast_forward = False
    return cfg


@pytest.mark.parametrize("policy,mem", [("vllm", 0.9), ("sarathi", 0.9), ("vllm", 0.25),
                                        ("orca", 0.9), ("sarathi", 0.25)])
def test_loop_with_cost_model_clock_equals_simulator(policy, mem):
    """Same policy code, same bookkeeping: only the clock differs between loop and simulator."""
    df = poisson_requests(500, rate=30, seed=3)
    cfg = _cfg(policy, mem)
    served = virtual_serve(cfg, df)
    sim = simulate(cfg, df)
    if mem < 0.5:
        assert sim.instances.preemptions.sum() > 0  # the memory-pressure path is exercised
    for col in COLUMNS:
        x, y = served.requests[col], sim.requests[col]
        if x.dtype.kind == "f":
            np.testing.assert_allclose(x.to_numpy(), y.to_numpy(), rtol=1e-9, atol=1e-9,
                                       err_msg=col)
        else:
            assert (x.astype(str) == y.astype(str)).all(), col
    it = served.iterations
    assert len(it) == sim.instances.iterations.sum()
    # every iteration's logged duration is the cost model's prediction (virtual clock)
    np.testing.assert_allclose(it.end_s - it.start_s, it.predicted_s, rtol=1e-9)


def test_loop_rejects_clusters_it_cannot_serve():
    cfg = _cfg("vllm")
    cfg.cluster[0].count = 2
    with pytest.raises(ConfigError, match="exactly one instance"):
        virtual_serve(cfg, poisson_requests(5, rate=1))
    cfg = _cfg("vllm")
    cfg.scheduler.preemption = "swap"
    with pytest.raises(ConfigError, match="recompute"):
        virtual_serve(cfg, poisson_requests(5, rate=1))


def test_loop_rejects_unsorted_trace():
    df = poisson_requests(10, rate=5)
    df.loc[3, "arrival_s"] = 100.0
    with pytest.raises(ValueError, match="arrival_s is not sorted"):
        virtual_serve(_cfg("vllm"), df)


# ---------------------------------------------------------------- the tiny model on the CPU
torch = pytest.importorskip("torch")


def _tiny_cfg(policy, blocks, **sched):
    sarathi = {"chunk_size": sched.pop("chunk_size", 64), "token_budget": sched.pop("token_budget", 64)}
    return load_config(None, {
        "cluster": [{"model": "tiny-cpu", "gpu": "h100", "tp": 1, "count": 1}],
        "scheduler": {"policy": policy, "num_gpu_blocks": blocks, "max_batch_size": 16,
                      "max_batched_tokens": 512, **sched, "sarathi": sarathi}})


def _tiny_trace(n=24, seed=0, span=0.3):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"request_id": np.arange(n),
                         "arrival_s": np.sort(rng.uniform(0, span, n)),
                         "prompt_tokens": rng.integers(5, 150, n),
                         "output_tokens": rng.integers(1, 30, n)})


@pytest.mark.parametrize("policy,blocks", [("vllm", 400), ("sarathi", 400), ("vllm", 30)])
def test_tiny_model_serves_every_request(policy, blocks):
    from goodput.profiler.serve import build_loop

    # Under memory pressure every request arrives at once, so the schedule (and the preemptions it
    # forces) does not depend on how fast this machine runs the tiny model against the wall clock.
    df = _tiny_trace(span=0.0 if blocks == 30 else 0.3)
    cfg = _tiny_cfg(policy, blocks)
    loop = build_loop(cfg, int((df.prompt_tokens + df.output_tokens).max()), device="cpu")
    res = loop.run(df)
    req = res.requests
    assert (req.outcome == "completed").all()
    assert (req.generated_tokens == req.output_tokens).all()
    assert (req.first_token_s >= req.arrival_s).all()
    assert (req.completion_s >= req.first_token_s).all()
    # tokens conserved: every prompt token prefilled (plus recomputes), one new token per decode
    it = res.iterations
    decoded = int((req.output_tokens - 1).sum())
    recomputed = it.new_tokens.sum() - df.prompt_tokens.sum() - decoded
    assert recomputed >= 0 and (recomputed == 0) == (res.instance["preemptions"] == 0)
    if blocks == 30:
        assert res.instance["preemptions"] > 0
    # every physical KV page went back to the pool, every slot was freed
    store = loop.executor.store
    assert store.pages_in_use == 0 and not store.slot_of
    assert (it.end_s > it.start_s).all() and (it.start_s.diff().dropna() > 0).all()


def test_incremental_decode_matches_full_recompute():
    """The paged KV cache is used correctly: tokens generated step by step equal the argmax of a
    from-scratch forward over prompt + generated tokens."""
    from goodput.profiler.serve import build_loop

    df = pd.DataFrame({"request_id": [0], "arrival_s": [0.0], "prompt_tokens": [37],
                       "output_tokens": [12]})
    loop = build_loop(_tiny_cfg("sarathi", 64, chunk_size=16, token_budget=16), 49, device="cpu")
    loop.run(df)
    store, runner = loop.executor.store, loop.executor.runner
    tokens = store.tokens[0, :49].copy()  # the only request used slot 0
    for upto in (37, 40, 48):  # prefix length -> next token
        table = np.arange(-(-upto // 16), dtype=np.int64)[None, :] + 10  # fresh pages
        out = runner.step(tokens[:upto], [upto], [0], table, np.array([upto - 1]))
        assert int(out[0]) == int(tokens[upto]), upto
