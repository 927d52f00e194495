"""Reduced-precision serving of a catalog model: FP8 weights and/or an FP8 KV cache.

Why names and not config fields: every part of the tool reaches a model through
``get_model(name)`` (the simulator's groups, KV sizing and transfer, the planner's capacity
search, profile lookup, provenance), so a precision variant that is a *name* works everywhere at
once and can never be half-applied. The names mirror vLLM's two flags:

* ``<model>-fp8``: FP8 weights (``--quantization fp8``, W8A8 on GPUs with FP8 tensor cores,
  weight-only elsewhere); activations and the KV cache stay 16-bit.
* ``<model>-kvfp8``: an FP8 KV cache (``--kv-cache-dtype fp8``); weights stay 16-bit.
* ``<model>-fp8-kvfp8``: both.

A variant halves the bytes it names (weights: memory and the bytes each GEMM streams; KV: cache
capacity, attention reads and disaggregated KV transfers). Its FLOPs run at the GPU's FP8
tensor-core peak (``fp8_tflops``) where the GPU has one. Profiles are looked up under the
variant's own name, so a 16-bit profile is never used for an FP8 deployment: without an FP8
profile, ``cost_model.kind: auto`` prices it with the calibrated roofline (whose efficiencies
were fitted on 16-bit kernels: see docs/costmodel.md).
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from goodput.sim.catalog import ModelSpec

#: suffix -> (weight bytes per parameter or None to keep, KV bytes per element or None)
VARIANTS: dict[str, tuple[int | None, int | None]] = {
    "-fp8-kvfp8": (1, 1),
    "-kvfp8": (None, 1),
    "-fp8": (1, None),
}


def split_variant(name: str) -> tuple[str, str]:
    """(base name, suffix) of ``name``; suffix "" when it names no precision variant."""
    key = name.strip().lower()
    for suffix in VARIANTS:  # longest first, so "-fp8-kvfp8" is not read as "-kvfp8"
        if key.endswith(suffix) and len(key) > len(suffix):
            return key[: -len(suffix)], suffix
    return key, ""


def with_precision(base: ModelSpec, suffix: str) -> ModelSpec:
    """``base`` served at the precision ``suffix`` names."""
    weight, kv = VARIANTS[suffix]
    if base.bytes_per_param == 1 and weight == 1:
        raise ValueError(f"model '{base.name}{suffix}': {base.name} already has 1-byte weights "
                         "(an FP8 checkpoint); drop the '-fp8' suffix")
    kv_now = base.kv_cache_bytes or base.bytes_per_param
    return dataclasses.replace(
        base, name=base.name + suffix, aliases=(),
        bytes_per_param=weight or base.bytes_per_param,
        kv_cache_bytes=kv or kv_now,
        source=f"{base.source} | precision variant '{suffix[1:]}' of {base.name} (sim/catalog/precision.py)")
