"""KV-cache transfer sizing, GQA-correct.

A disaggregated deployment ships the prompt's KV cache from the prefill instance to the decode
instance. Its size is ``layers x 2 (K and V) x kv_heads x head_dim x dtype_bytes x tokens``: with
grouped-query attention ``kv_heads`` is the number of *KV* heads (8 for Llama-2-70B), not the number
of query heads (64). Sizing KV with query heads over-states a GQA model's transfer 8x; this module
exists so that mistake has one place to be avoided and one test that pins it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from goodput.sim.network.errors import NetworkConfigError


class KVShape(Protocol):
    """What KV sizing needs from a model (``goodput.sim.catalog.ModelSpec`` satisfies it)."""

    @property
    def layers(self) -> int: ...

    @property
    def kv_heads(self) -> int: ...

    @property
    def head_dim(self) -> int: ...


def _check(model: KVShape, tokens: float, tp: int, pp: int, dtype_bytes: float) -> None:
    if tokens < 0:
        raise NetworkConfigError(f"kv_bytes: tokens = {tokens}: must be >= 0")
    if tp < 1 or pp < 1:
        raise NetworkConfigError(f"kv_bytes: tp = {tp}, pp = {pp}: both must be integers >= 1")
    if pp > model.layers:
        raise NetworkConfigError(f"kv_bytes: pp = {pp} exceeds the model's {model.layers} layers; "
                                 "use pp <= layers")
    if not dtype_bytes > 0:
        raise NetworkConfigError(f"kv_bytes: dtype_bytes = {dtype_bytes}: must be > 0 (2 for bf16)")


def kv_heads_per_gpu(kv_heads: int, tp: int) -> int:
    """KV heads one TP rank holds: ``ceil(kv_heads / tp)``, and at least one.

    When ``tp > kv_heads`` (e.g. Llama-2-70B's 8 KV heads on TP 16) each head is replicated on
    ``tp / kv_heads`` ranks, so a rank still holds one whole head: the per-GPU KV does not keep
    shrinking with TP. The ceiling covers uneven splits (the busiest rank sets the memory need).
    """
    return max(1, -(-kv_heads // tp))


def layers_per_stage(layers: int, pp: int) -> int:
    """Layers of the largest pipeline stage: ``ceil(layers / pp)``."""
    return -(-layers // pp)


@dataclass(frozen=True)
class KVSize:
    """KV bytes of a number of tokens: the logical total and what one GPU of the group holds."""

    total: float  # the whole cache, every head once (what a TP=PP=1 instance holds)
    per_gpu: float  # the largest shard one GPU of the (tp, pp) group holds
    per_layer: float  # bytes of one layer, all heads (the unit layer-by-layer transfer ships)
    gpus: int  # tp * pp

    @property
    def group_bytes(self) -> float:
        """Bytes held by the whole group, counting replicated heads once per copy."""
        return self.per_gpu * self.gpus


def kv_size(model: KVShape, tokens: float, tp: int = 1, pp: int = 1,
            dtype_bytes: float | None = None) -> KVSize:
    """Size the KV cache of ``tokens`` tokens for a (tp, pp) instance; see :func:`kv_bytes`.
    ``dtype_bytes`` None: the model's own KV element size (``kv_element_bytes``: 1 for an FP8
    KV cache, goodput.sim.catalog.precision), else 2 (bf16)."""
    if dtype_bytes is None:
        dtype_bytes = getattr(model, "kv_element_bytes", 2)
    _check(model, tokens, tp, pp, dtype_bytes)
    per_head_layer = 2 * model.head_dim * dtype_bytes * tokens  # K and V of one head, one layer
    return KVSize(
        total=model.layers * model.kv_heads * per_head_layer,
        per_gpu=layers_per_stage(model.layers, pp) * kv_heads_per_gpu(model.kv_heads, tp) * per_head_layer,
        per_layer=model.kv_heads * per_head_layer,
        gpus=tp * pp,
    )


def kv_bytes(model: KVShape, tokens: float, tp: int = 1, pp: int = 1,
             dtype_bytes: float | None = None) -> float:
    """KV bytes of ``tokens`` tokens held by one GPU of a (tp, pp) group.

    ``layers x 2 x kv_heads x head_dim x dtype_bytes x tokens`` for tp = pp = 1; KV heads are split
    over TP ranks (replicated when ``kv_heads < tp``) and layers over PP stages. For the logical
    total that a transfer between differently sharded instances moves, use ``kv_size(...).total``.
    """
    return kv_size(model, tokens, tp, pp, dtype_bytes).per_gpu
