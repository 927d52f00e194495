"""FP8 weights and FP8 KV cache as precision variants of catalog models (goodput.sim.catalog.precision):
bytes, KV capacity, roofline pricing, profile lookup and KV transfer, each against hand figures."""
import pytest

from goodput.sim.catalog import get_gpu, get_model
from goodput.sim.catalog.precision import split_variant
from goodput.sim.config import CostModelConfig, load_config
from goodput.sim.costmodel.factory import make_cost_model
from goodput.sim.costmodel.roofline import RooflineCostModel
from goodput.sim.engine.kvcache import kv_capacity
from goodput.sim.network.kv import kv_size

BASE = get_model("llama-3.1-8b")


def test_variant_names_resolve_and_say_what_they_change():
    assert split_variant("Llama-3.1-8B-fp8-kvfp8") == ("llama-3.1-8b", "-fp8-kvfp8")
    assert split_variant("llama-3.1-8b") == ("llama-3.1-8b", "")
    w8, kv8, both = (get_model(f"llama-3.1-8b{s}") for s in ("-fp8", "-kvfp8", "-fp8-kvfp8"))
    assert (w8.bytes_per_param, w8.kv_element_bytes) == (1, 2)
    assert (kv8.bytes_per_param, kv8.kv_element_bytes) == (2, 1)
    assert (both.bytes_per_param, both.kv_element_bytes) == (1, 1)
    assert w8.name == "llama-3.1-8b-fp8" and "precision variant" in w8.source
    assert (w8.layers, w8.param_count()) == (BASE.layers, BASE.param_count())
    with pytest.raises(ValueError, match="unknown model 'nosuch'"):
        get_model("nosuch-fp8")


def test_weights_halve_except_embedding_and_lm_head():
    w8 = get_model("llama-3.1-8b-fp8")
    layers, embed = BASE.layer_params_total(), BASE.embedding_params()
    assert BASE.weight_bytes(1) == 2 * (layers + embed)
    assert w8.weight_bytes(1) == layers * 1 + embed * 2
    assert w8.weight_bytes(2) == (layers + 2 * embed) / 2


def test_fp8_kv_doubles_the_tokens_that_fit():
    kv8 = get_model("llama-3.1-8b-kvfp8")
    assert kv8.kv_bytes_per_token(1) == BASE.kv_bytes_per_token(1) / 2 == 32 * 2 * 8 * 128
    gpu = get_gpu("h200")
    a = kv_capacity(BASE, gpu, 1, 16, 0.9, 2.0)
    b = kv_capacity(kv8, gpu, 1, 16, 0.9, 2.0)
    free = gpu.memory_bytes * 0.9 - BASE.weight_bytes(1) - 2.0e9
    assert a.total_blocks == int(free // (BASE.kv_bytes_per_token(1) * 16))
    assert b.total_blocks == int(free // (kv8.kv_bytes_per_token(1) * 16))
    assert abs(b.total_blocks - 2 * a.total_blocks) <= 1


def test_roofline_runs_fp8_gemms_at_the_fp8_peak_only_where_the_gpu_has_one():
    big = 16384  # tokens: every weight GEMM compute-bound
    for gpu_name, ratio in (("h200", 989 / 1979), ("a100-80gb", 1.0)):
        gpu = get_gpu(gpu_name)
        bf = RooflineCostModel(BASE, gpu, 1)
        w8 = RooflineCostModel(get_model("llama-3.1-8b-fp8"), gpu, 1)
        assert w8._linear_time(big) == pytest.approx(ratio * bf._linear_time(big), rel=1e-12)
        # one token: weight reads bound, so 1-byte weights halve it on every GPU
        assert w8._linear_time(1) == pytest.approx(bf._linear_time(1) / 2, rel=1e-12)
        # the LM head, the embedding gather and the all-reduce bytes stay 16-bit
        assert w8._lm_head_time(8) == bf._lm_head_time(8)


def test_fp8_kv_halves_decode_attention_reads():
    gpu = get_gpu("h200")
    bf = RooflineCostModel(BASE, gpu, 1)
    kv8 = RooflineCostModel(get_model("llama-3.1-8b-kvfp8"), gpu, 1)
    assert kv8._kv_bytes == bf._kv_bytes / 2
    assert kv8.decode_coefficients(8)[1] <= bf.decode_coefficients(8)[1]


def test_a_16_bit_profile_is_never_used_for_an_fp8_variant():
    gpu = get_gpu("h200")
    base = make_cost_model(BASE, gpu, 1, CostModelConfig())
    assert base.source.startswith("profile:h200/llama-3.1-8b/")
    # the H200 has measured FP8 profiles (profiler/device_fp8.sh): each variant gets its own
    for variant in ("-fp8", "-kvfp8", "-fp8-kvfp8"):
        cm = make_cost_model(get_model("llama-3.1-8b" + variant), gpu, 1, CostModelConfig())
        assert cm.source.startswith(f"profile:h200/llama-3.1-8b{variant}/"), cm.source
    # without one (H100 has no FP8 profile) the roofline prices it, labelled as unmeasured
    cm = make_cost_model(get_model("llama-3.1-8b-fp8"), get_gpu("h100"), 1, CostModelConfig())
    assert cm.source.startswith("roofline")
    assert "FP8 weights unmeasured" in cm.describe()["error_estimate"]["label"]


def test_the_measured_fp8_profile_is_faster_where_weights_dominate():
    """FP8 weights halve the bytes a decode streams and run prefill GEMMs on FP8 tensor cores;
    an FP8 KV cache alone changes little with the Triton kernel (measured, profiles on H200)."""
    from goodput.sim.costmodel.base import Batch

    gpu = get_gpu("h200")
    cms = {v: make_cost_model(get_model("llama-3.1-8b" + v), gpu, 1, CostModelConfig())
           for v in ("", "-fp8", "-kvfp8")}
    prefill = {v: cm.batch_time(Batch([4096], [0])) for v, cm in cms.items()}
    decode = {v: cm.batch_time(Batch([1] * 32, [2048] * 32)) for v, cm in cms.items()}
    assert prefill["-fp8"] < 0.8 * prefill[""]
    assert decode["-fp8"] < 0.9 * decode[""]
    assert abs(decode["-kvfp8"] / decode[""] - 1) < 0.15


def test_kv_transfer_moves_the_variants_bytes():
    kv8 = get_model("llama-3.1-8b-kvfp8")
    assert kv_size(kv8, 1000).total == kv_size(BASE, 1000).total / 2 == 1000 * kv8.kv_bytes_per_token(1)
    assert kv_size(kv8, 1000, dtype_bytes=2).total == kv_size(BASE, 1000).total  # explicit wins


def test_a_variant_of_an_fp8_checkpoint_is_refused_and_configs_accept_variants():
    from goodput.sim.catalog.precision import with_precision

    with pytest.raises(ValueError, match="already has 1-byte weights"):
        with_precision(get_model("llama-3.1-8b-fp8"), "-fp8")
    cfg = load_config(overrides={"cluster": [{"model": "llama-3.1-8b-fp8-kvfp8", "gpu": "h200"}]})
    assert cfg.cluster[0].model == "llama-3.1-8b-fp8-kvfp8"


def test_the_profiler_builds_fp8_shards_and_refuses_fp8_moe():
    from goodput.profiler.shapes import ShardShapes, resolve_model

    assert resolve_model("llama-3.1-8b").bytes_per_param == 2
    s16 = ShardShapes.from_spec(resolve_model("llama-3.1-8b"), 1)
    s8 = ShardShapes.from_spec(resolve_model("llama-3.1-8b-fp8"), 1)
    kv8 = ShardShapes.from_spec(resolve_model("llama-3.1-8b-kvfp8"), 1)
    assert (s16.weight_fp8, s16.kv_fp8, s8.weight_fp8, s8.kv_fp8, kv8.kv_fp8) == \
        (False, False, True, False, True)
    # 8 KV heads x 128 dims x (K, V): 4096 bytes per token-layer in bf16, half in FP8
    assert (s16.kv_bytes_per_token_layer(), kv8.kv_bytes_per_token_layer()) == (4096, 2048)
    assert s8.weight_bytes_per_param == 1
    with pytest.raises(ValueError, match="FP8 MoE models are not profiled"):
        resolve_model("mixtral-8x7b-fp8")
