"""Pipeline parallelism: a PP instance is pp virtual engines (vLLM), each with 1/pp of the
pipeline's KV and the TP model's iteration time plus pp - 1 hidden-state hand-offs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from goodput.sim.catalog import get_gpu, get_model
from goodput.sim.config import ConfigError, load_config
from goodput.sim.costmodel.pipelined import NVLINK_SEND_LATENCY_S, PipelinedCostModel
from goodput.sim.costmodel.roofline import RooflineCostModel
from goodput.sim.network import kv_size
from goodput.sim.simulator import simulate
from tests.conftest import poisson_requests

MODEL, GPU = "llama-3.1-70b", "h100"


def cfg(pp=2, tp=2, count=1, fast=True, **extra):
    return load_config(None, {"cluster": [{"model": MODEL, "gpu": GPU, "tp": tp, "pp": pp, "count": count}],
                              "cost_model": {"kind": "roofline"}, "fast_forward": fast, **extra})


def test_each_virtual_engine_holds_its_share_of_the_pipelines_kv():
    m, g = get_model(MODEL), get_gpu(GPU)
    res = simulate(cfg(pp=4, tp=2, count=2), poisson_requests(20, 2.0))
    inst = res.instances
    assert len(inst) == 8 and inst.num_gpus.sum() == 16 and (inst.pp == 4).all()
    free = g.memory_bytes * 0.9 - m.weight_bytes(2) / 4 - 2e9
    blocks = int(free // (m.kv_bytes_per_token(2) / 4 * 16)) // 4
    assert (inst.kv_blocks == blocks).all()
    assert inst.price_per_hour.sum() == pytest.approx(16 * g.price_per_hour)


def test_a_prompt_takes_the_tp_models_time_plus_the_hand_offs():
    m, g = get_model(MODEL), get_gpu(GPU)
    df = pd.DataFrame({"request_id": [0], "arrival_s": [0.0], "prompt_tokens": [3000], "output_tokens": [1]})
    r = simulate(cfg(pp=4), df).requests
    inner = RooflineCostModel(m, g, 2)
    hand_off = 3 * (NVLINK_SEND_LATENCY_S + 3000 * m.hidden_size * 2 / 2 / (g.nvlink_gbs * 1e9))
    assert float(r.first_token_s[0] - r.first_scheduled_s[0]) == pytest.approx(
        inner.iteration_time([3000], [0]) + hand_off, rel=1e-9)


def test_decode_stays_linear_so_fast_forward_is_exact():
    pc = PipelinedCostModel(RooflineCostModel(get_model(MODEL), get_gpu(GPU), 2), get_model(MODEL),
                            get_gpu(GPU), 2, 3)
    a, b = pc.decode_coefficients(16)
    ctx = list(range(100, 1700, 100))
    from goodput.sim.costmodel.base import Batch
    assert pc.batch_time(Batch.decode(ctx)) == pytest.approx(a + b * sum(ctx), rel=1e-9)
    df = poisson_requests(200, 4.0)
    fast, step = simulate(cfg(pp=2), df).requests, simulate(cfg(pp=2, fast=False), df).requests
    for col in ("instance", "first_token_s", "completion_s"):
        np.testing.assert_allclose(fast[col].to_numpy(dtype=float), step[col].to_numpy(dtype=float),
                                   rtol=1e-9, err_msg=col)


def test_pipeline_pools_ship_every_stages_kv():
    over = {"cluster": [{"model": MODEL, "gpu": GPU, "tp": 2, "pp": 2, "count": 1, "role": "prefill"},
                        {"model": MODEL, "gpu": GPU, "tp": 4, "count": 1, "role": "decode"}],
            "cost_model": {"kind": "roofline"}}
    df = poisson_requests(30, 1.0, prompt=(200, 800), output=(5, 20))
    r = simulate(load_config(None, over), df).requests
    done = r[r.outcome == "completed"]
    assert len(done) == len(df) and set(done.prefill_instance) <= {0, 1}
    m = get_model(MODEL)
    expect = [kv_size(m, p, 2, 2).per_gpu * 4 for p in done.prompt_tokens]
    np.testing.assert_allclose(done.kv_transfer_bytes.to_numpy(), expect, rtol=1e-9)


@pytest.mark.parametrize("pp, needle", [(0, r"cluster\[0\]\.pp=0"),
                                        (99, r"cluster\[0\]\.pp=99: .* 80 layers")])
def test_bad_pp_is_one_line(pp, needle):
    with pytest.raises(ConfigError, match=needle):
        simulate(cfg(pp=pp), poisson_requests(3, 1.0))
