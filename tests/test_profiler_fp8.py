"""FP8 weights and KV cache in the profiler's layers (CPU references; the Triton kernels are
checked against the same references on the GPU by ``goodput.profiler.fp8_check``)."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from goodput.profiler.batches import build_meta  # noqa: E402
from goodput.profiler.fp8 import FP8, FP8_MAX, Fp8Weight, fp8_linear, quantize_ref, static_scale  # noqa: E402
from goodput.profiler.kernels import (  # noqa: E402
    add_rmsnorm_quant_ref,
    add_rmsnorm_ref,
    silu_mul_quant_ref,
    silu_mul_ref,
)
from goodput.profiler.layers import LayerStack  # noqa: E402
from goodput.profiler.shapes import ShardShapes, resolve_model  # noqa: E402


def test_static_quantisation_divides_by_the_scale_and_saturates():
    x = torch.tensor([[1.0, -2.0, 0.5, 0.0], [300.0, 1.0, -900.0, 4.0]])
    q = quantize_ref(x, torch.tensor(2.0))
    assert q.dtype == FP8
    # 0.5, -1, 0.25 and 0 are exact in e4m3; 150 -> 144 or 160 (3 mantissa bits); -450 saturates
    assert q.float()[0].tolist() == [0.5, -1.0, 0.25, 0.0]
    assert q.float()[1, 2] == -FP8_MAX and q.float()[1, 0] in (144.0, 160.0)


def test_fp8_linear_and_fused_casts_track_their_bf16_versions():
    gen = torch.Generator().manual_seed(0)
    one = static_scale("cpu")
    x = torch.randn(5, 64, generator=gen).to(torch.bfloat16)
    w = (torch.randn(32, 64, generator=gen) / 8).to(torch.bfloat16)
    w8 = Fp8Weight.from_bf16(w)
    assert w8.q.dtype == FP8 and w8.scale.dim() == 0 and w8.t.stride() == (1, 64)
    assert float(w8.q.float().abs().max()) == FP8_MAX  # the tensor's maximum maps onto e4m3's
    want = torch.nn.functional.linear(x.float(), w.float())
    got = fp8_linear(x, one, w8).float()
    assert (got - want).norm() / want.norm() < 0.08  # two e4m3 roundings, ~3-4% each
    res, norm = torch.randn(5, 64, generator=gen).to(torch.bfloat16), torch.ones(64).to(torch.bfloat16)
    y, new_res = add_rmsnorm_ref(x, res, norm, 1e-5)
    q, res2 = add_rmsnorm_quant_ref(x, res, norm, 1e-5, one)
    assert torch.equal(new_res, res2)
    assert ((q.float() - y.float()).norm() / y.float().norm()) < 0.04
    gu = torch.randn(5, 128, generator=gen).to(torch.bfloat16)
    a, b = silu_mul_quant_ref(gu, one).float(), silu_mul_ref(gu).float()
    assert (a - b).norm() / b.norm() < 0.04


@pytest.mark.parametrize("variant", ["-fp8", "-kvfp8", "-fp8-kvfp8"])
def test_fp8_layer_stack_matches_the_bf16_one(variant):
    """Same seed, same weights: the FP8 stack's output stays within FP8 rounding of the bf16
    one, and an FP8 cache holds e4m3 values."""
    s16 = ShardShapes.from_spec(resolve_model("tiny-cpu"), 1)
    s8 = ShardShapes.from_spec(resolve_model("tiny-cpu" + variant), 1)
    cpu = torch.device("cpu")
    meta = build_meta("3x1@10+1x6@0", s16.group, s16.kv_heads, s16.head_dim, 64, cpu, 8, seed=0)
    h = torch.randn(9, s16.hidden, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    ref = LayerStack(s16, 2, 64, 512, cpu, seed=0)
    ref.layers[0].k_cache.copy_(ref.layers[0].k_cache.to(FP8).to(torch.bfloat16))  # same values
    ref.layers[0].v_cache.copy_(ref.layers[0].v_cache.to(FP8).to(torch.bfloat16))
    ref.layers[1].k_cache.copy_(ref.layers[1].k_cache.to(FP8).to(torch.bfloat16))
    ref.layers[1].v_cache.copy_(ref.layers[1].v_cache.to(FP8).to(torch.bfloat16))
    out16 = ref.forward(h, h.clone(), meta).float()
    stack = LayerStack(s8, 2, 64, 512, cpu, seed=0)
    out8 = stack.forward(h, h.clone(), meta).float()
    assert (stack.layers[0].k_cache.dtype == FP8) == s8.kv_fp8
    assert bool(stack.layers[0].fp8) == s8.weight_fp8
    assert torch.isfinite(out8).all()
    assert (out8 - out16).norm() / out16.norm() < 0.1


def test_cpu_profile_of_an_fp8_variant_records_its_kernels(tmp_path):
    from goodput.profiler.cli import main as profile_main

    rc = profile_main(["profile", "run", "--model", "tiny-cpu-fp8-kvfp8", "--device", "cpu",
                       "--out", str(tmp_path), "--no-progress", "--quick"])
    assert rc == 0
    d = tmp_path / "cpu" / "tiny-cpu-fp8-kvfp8" / "tp1"
    prov = json.loads((d / "provenance.json").read_text())
    assert prov["shard"]["weight_fp8"] and prov["shard"]["kv_fp8"]
    assert prov["attention_mode"] == "triton"  # SDPA reads no FP8 cache
    assert (d / "fit.json").exists()
