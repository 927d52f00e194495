"""KV transfer sizing: GQA-correct bytes, TP/PP sharding (goodput.sim.network.kv)."""
from __future__ import annotations

import pytest

from goodput.sim.catalog import get_model, models
from goodput.sim.network import NetworkConfigError, kv_bytes, kv_heads_per_gpu, kv_size


def test_llama2_70b_is_gqa_327680_bytes_per_token():
    # 80 layers x 2 (K, V) x 8 KV heads x 128 head_dim x 2 bytes (bf16)
    m = get_model("llama-2-70b")
    assert kv_bytes(m, 1) == 2 * 80 * 8 * 128 * 2 == 327_680
    assert kv_bytes(m, 2048) == 327_680 * 2048
    # not the MHA figure (64 query heads), which is 8x larger
    assert kv_bytes(m, 1) * m.heads / m.kv_heads == 2_621_440


def test_mha_model_gives_the_mha_value():
    m = get_model("llama-2-7b")  # 32 layers, 32 KV heads = 32 query heads
    assert m.kv_heads == m.heads == 32
    assert kv_bytes(m, 1) == 2 * 32 * 32 * 128 * 2 == 524_288


def test_tp_splits_heads_and_replicates_below_one_head():
    m = get_model("llama-2-70b")
    assert kv_bytes(m, 1, tp=8) == 327_680 / 8  # one KV head per GPU
    assert kv_bytes(m, 1, tp=16) == 327_680 / 8  # 16 > 8 heads: replicated, still one head per GPU
    assert kv_heads_per_gpu(8, 3) == 3  # uneven split: the busiest rank holds ceil(8/3)
    size = kv_size(m, 10, tp=16)
    assert size.total == 3_276_800 and size.group_bytes == 2 * size.total  # every head held twice


def test_pp_splits_layers():
    m = get_model("llama-2-70b")
    assert kv_bytes(m, 1, pp=4) == 327_680 / 4
    assert kv_bytes(m, 1, tp=8, pp=4) == 327_680 / 32
    assert kv_bytes(m, 1, pp=3) == 27 * 2 * 8 * 128 * 2  # ceil(80 / 3) = 27 layers on stage 0
    assert kv_size(m, 1).per_layer == 327_680 / 80


def test_dtype_bytes():
    m = get_model("llama-2-70b")
    assert kv_bytes(m, 1, dtype_bytes=1) == 163_840  # fp8 KV


@pytest.mark.parametrize("name", sorted(models()))
def test_agrees_with_the_catalog_for_divisible_tp(name):
    m = models()[name]
    for tp in (1, 2, 4, 8):
        if m.kv_heads % tp == 0 or tp > m.kv_heads:
            assert kv_bytes(m, 1, tp=tp, dtype_bytes=m.bytes_per_param) == m.kv_bytes_per_token(tp)


@pytest.mark.parametrize("kwargs, field", [
    ({"tokens": -1}, "tokens"), ({"tp": 0}, "tp"), ({"pp": 0}, "pp"), ({"pp": 81}, "pp"),
    ({"dtype_bytes": 0}, "dtype_bytes"),
])
def test_bad_input_names_the_field(kwargs, field):
    args = {"tokens": 1, **kwargs}
    with pytest.raises(NetworkConfigError, match=field):
        kv_bytes(get_model("llama-2-70b"), **args)
