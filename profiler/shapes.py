"""Per-GPU tensor shapes of one decoder layer under tensor parallelism, and the tiny CPU model.

Why a separate module: the profiler measures what ONE rank of a TP group executes, so every layer
is built from the shard shapes (heads/tp, ffn/tp, vocab/tp) rather than the full model; keeping
the arithmetic here (torch-free) lets the grid builder, the runner and the tests share it.
"""
from __future__ import annotations

from dataclasses import dataclass

from goodput.sim.catalog import ModelSpec, get_model
from goodput.sim.catalog.precision import split_variant, with_precision

#: Synthetic model for the CPU mode: small enough that profile -> fit -> predict runs in seconds
#: in CI, shaped like a GQA Llama (2 query heads per KV head, gated MLP) so every code path runs.
TINY_CPU_MODEL = ModelSpec(
    name="tiny-cpu",
    layers=2,
    hidden_size=64,
    heads=4,
    kv_heads=2,
    head_dim=16,
    ffn_size=128,
    gated_ffn=True,
    vocab_size=256,
    max_context=1024,
    source="synthetic (profiler CPU mode)",
)

#: The tiny model's draft for speculative decoding on the CPU (same vocabulary, one layer).
TINY_CPU_DRAFT = ModelSpec(
    name="tiny-cpu-draft",
    layers=1,
    hidden_size=32,
    heads=2,
    kv_heads=1,
    head_dim=16,
    ffn_size=64,
    gated_ffn=True,
    vocab_size=256,
    max_context=1024,
    source="synthetic (serving loop CPU mode)",
)

#: KV-cache page size in tokens (vLLM's default block_size) used by the paged attention kernel.
PAGE_SIZE = 16


def resolve_model(name: str) -> ModelSpec:
    """Catalog model by name, or a synthetic tiny model (``tiny-cpu``, ``tiny-cpu-draft``), each
    also as a precision variant (``-fp8``, ``-kvfp8``, ``-fp8-kvfp8``: sim/catalog/precision.py)."""
    base, suffix = split_variant(name)
    for tiny in (TINY_CPU_MODEL, TINY_CPU_DRAFT):
        if base == tiny.name:  # tiny-cpu-fp8 etc.: the CPU mode runs the FP8 paths too
            return with_precision(tiny, suffix) if suffix else tiny
    spec = get_model(name)
    if spec.experts > 1 and (spec.bytes_per_param == 1 or spec.kv_element_bytes == 1):
        # the expert loop has bf16 weights only: an FP8 MoE would file 16-bit expert timings
        raise ValueError(f"model '{name}': FP8 MoE models are not profiled (the expert loop has "
                         "bf16 kernels only); profile the 16-bit model and leave the FP8 variant "
                         "to the roofline")
    if spec.bytes_per_param not in (1, 2) or spec.kv_element_bytes not in (1, 2):
        raise ValueError(f"model '{name}': {spec.bytes_per_param}-byte weights or a "
                         f"{spec.kv_element_bytes}-byte KV cache have no kernels here; the profiler "
                         "builds bf16 or FP8 (e4m3) ones")
    return spec


@dataclass(frozen=True)
class ShardShapes:
    """What one rank of a ``tp``-way tensor-parallel group holds for one layer.

    Megatron-style sharding as vLLM does it: QKV and gate/up are column-parallel (heads and ffn
    split), O and down are row-parallel (followed by an all-reduce); KV heads are split when there
    are at least ``tp`` of them, otherwise replicated (one per rank); the vocabulary is split for
    the embedding and the LM head.
    """

    hidden: int
    q_heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    gated: bool
    vocab: int
    experts: int
    top_k: int
    tp: int
    #: FP8 (e4m3) layer weights, their GEMMs on FP8 tensor cores with per-token activation scales
    #: (vLLM's ``--quantization fp8``); the embedding and the LM head stay bf16
    weight_fp8: bool = False
    #: FP8 (e4m3) KV cache (vLLM's ``--kv-cache-dtype fp8``): one byte per element
    kv_fp8: bool = False

    @property
    def group(self) -> int:
        """Query heads per KV head on this rank (GQA group size)."""
        return self.q_heads // self.kv_heads

    @property
    def qkv_out(self) -> int:
        return (self.q_heads + 2 * self.kv_heads) * self.head_dim

    def layer_params(self) -> int:
        """Weight elements of one layer on this rank (matrices only, norms excluded)."""
        attn = self.hidden * self.qkv_out + self.q_heads * self.head_dim * self.hidden
        mats = 3 if self.gated else 2
        ffn = mats * self.hidden * self.ffn * self.experts
        router = self.hidden * self.experts if self.experts > 1 else 0
        return attn + ffn + router

    @property
    def weight_bytes_per_param(self) -> int:
        return 1 if self.weight_fp8 else 2

    def kv_bytes_per_token_layer(self, bytes_per_el: int | None = None) -> int:
        """KV-cache bytes one token occupies in one layer on this rank (K and V)."""
        el = bytes_per_el if bytes_per_el is not None else 1 if self.kv_fp8 else 2
        return 2 * self.kv_heads * self.head_dim * el

    @classmethod
    def from_spec(cls, spec: ModelSpec, tp: int) -> ShardShapes:
        if tp < 1:
            raise ValueError(f"tp={tp}: tensor parallelism must be >= 1 (field 'tp')")
        if spec.heads % tp:
            raise ValueError(
                f"tp={tp} does not divide heads={spec.heads} of '{spec.name}' (field 'tp'); "
                f"choose a divisor of {spec.heads}"
            )
        if spec.kv_heads >= tp and spec.kv_heads % tp:
            raise ValueError(
                f"tp={tp} does not divide kv_heads={spec.kv_heads} of '{spec.name}' (field 'tp')"
            )
        if spec.ffn_size % tp:
            raise ValueError(
                f"tp={tp} does not divide ffn_size={spec.ffn_size} of '{spec.name}' (field 'tp')"
            )
        kv = spec.kv_heads // tp if spec.kv_heads >= tp else 1
        q = spec.heads // tp
        if q % kv:
            raise ValueError(f"'{spec.name}' at tp={tp}: {q} query heads per rank are not a "
                             f"multiple of {kv} KV heads per rank")
        if spec.head_dim % 2 or (spec.head_dim // 2) & (spec.head_dim // 2 - 1):
            raise ValueError(f"'{spec.name}': head_dim={spec.head_dim} must be twice a power of "
                             "two for the rotary kernel")
        vocab = -(-spec.vocab_size // tp)
        return cls(hidden=spec.hidden_size, q_heads=q, kv_heads=kv, head_dim=spec.head_dim,
                   ffn=spec.ffn_size // tp, gated=spec.gated_ffn, vocab=vocab,
                   experts=spec.experts, top_k=spec.experts_top_k, tp=tp,
                   weight_fp8=spec.bytes_per_param == 1, kv_fp8=spec.kv_element_bytes == 1)
