"""Analytic roofline cost model: iteration time from FLOPs, bytes and link bandwidth.

Why a roofline: before any profile exists for a (model, GPU, TP) triple, the planner still needs
a first answer that moves the right way with every knob -- more tokens, more context, more GPUs,
a faster memory system. Each kernel class is charged ``max(compute time, memory time)`` against
the GPU's datasheet peaks scaled by named efficiency factors (``RooflineParams``); those factors
are the handles a later calibration step fits to measured profiles.

What one iteration costs (per GPU of a TP group, all layers):

* linear layers (QKV, O, MLP; MoE: router + experts) -- FLOPs ``2 * params/tp * T`` for T new
  tokens vs. streaming the weights once. For MoE only the top-k experts' FLOPs count, and bytes
  cover the experts the batch actually touches (expected distinct experts under uniform routing,
  at most all of them).
* attention -- per sequence, ``max(flops, KV bytes)``; see ``_attention_time``.
* LM head (one logit row per sequence) and the embedding gather.
* TP all-reduce, two per layer, ring algorithm over NVLink (or PCIe where the GPU has none).
* a constant per-iteration overhead (CPU scheduling and kernel launch).

Decode linearity (the CostModel contract): for ``q = 1`` both attention terms are proportional to
``ctx + 1``, so the per-sequence max is ``(ctx + 1) * rate`` with one constant ``rate``; everything
else depends only on the batch size. Hence ``batch_time == a + b * sum(ctx)`` holds exactly and
``decode_coefficients`` returns those same ``a`` and ``b``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from numbers import Integral

from sim.catalog import GPUSpec, ModelSpec
from sim.costmodel.base import Batch, CostModel


@dataclass(frozen=True)
class RooflineParams:
    """Efficiency factors and fixed costs of the roofline. Defaults are uncalibrated priors.

    Each efficiency is the fraction of a datasheet peak that a kernel class achieves; they exist so
    calibration can fit them per (GPU, engine) instead of the model hard-coding optimism.
    """

    #: Fraction of dense BF16 peak reached by the weight GEMMs. Large cuBLAS GEMMs run well below
    #: the datasheet peak, and end-to-end training runs report lower still (Llama 3 paper:
    #: 38-43% BF16 MFU on H100). 0.7 is the prior for GEMMs alone.
    gemm_flops_efficiency: float = 0.7
    #: Fraction of peak reached by attention math. FlashAttention-2 reports up to ~70% of A100
    #: peak in the forward pass on long, non-causal sequences; serving mixes causal masks and
    #: ragged lengths, so the prior is lower.
    attention_flops_efficiency: float = 0.5
    #: Fraction of datasheet memory bandwidth reached when streaming weights / KV cache. Streaming
    #: kernels typically sustain 80-90% of the spec figure.
    memory_bw_efficiency: float = 0.8
    #: Fraction of the per-direction link bandwidth a ring all-reduce achieves (NCCL bus bandwidth
    #: vs. link speed). Also applied to PCIe when the GPU has no NVLink.
    nvlink_efficiency: float = 0.7
    #: Fixed latency of one all-reduce, seconds. Intra-node small-message all-reduces cost on the
    #: order of ten microseconds; decode-time messages are small, so this term usually dominates.
    allreduce_latency_s: float = 10e-6
    #: Per-iteration time outside GPU kernels (scheduling, input preparation, launch, sampling),
    #: seconds. The vLLM v0.6.0 performance post shows this CPU-side work was a large share of a
    #: Llama-3-8B step on H100 before it was overlapped; 1 ms is a prior for a modern engine.
    iteration_overhead_s: float = 1e-3

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_efficiency"):
                if not 0.0 < value <= 1.0:
                    raise ValueError(
                        f"RooflineParams.{f.name}={value!r}: an efficiency must be in (0, 1]"
                    )
            elif value < 0.0:
                raise ValueError(f"RooflineParams.{f.name}={value!r}: must be >= 0 seconds")


def _is_whole_number(x: object) -> bool:
    """An integer of any integral type (numpy's included), but not a bool.

    A function rather than an inline ``isinstance(x, Integral)``: typeshed's ``int`` does not
    derive from ``numbers.Integral`` (the registration is virtual), so narrowing an ``int`` with it
    would make mypy treat the code after the check as unreachable.
    """
    return isinstance(x, Integral) and not isinstance(x, bool)


class RooflineCostModel(CostModel):
    """Roofline estimate of one iteration of ``model`` on a TP group of ``tp`` x ``gpu``."""

    source = "roofline"

    def __init__(
        self, model: ModelSpec, gpu: GPUSpec, tp: int = 1, params: RooflineParams = RooflineParams()
    ) -> None:
        if not _is_whole_number(tp) or tp < 1:
            raise ValueError(f"tp={tp!r}: tensor parallelism must be a positive integer")
        tp = int(tp)
        if model.heads % tp:
            ok = [d for d in range(1, model.heads + 1) if model.heads % d == 0]
            raise ValueError(
                f"tp={tp} does not divide the {model.heads} attention heads of '{model.name}'; "
                f"use one of {ok}"
            )
        self.model, self.gpu, self.tp, self.params = model, gpu, tp, params
        p = params
        peak = gpu.bf16_tflops * 1e12
        self._gemm_rate = peak * p.gemm_flops_efficiency  # FLOP/s
        self._attn_rate = peak * p.attention_flops_efficiency  # FLOP/s
        self._bw = gpu.mem_bw_tbs * 1e12 * p.memory_bw_efficiency  # bytes/s
        self._bpp = model.bytes_per_param

        # Linear-layer parameters held by one rank, per layer.
        moe = model.experts > 1
        dense = model.attention_params_per_layer()
        if moe:
            dense += model.hidden_size * model.experts  # router
        else:
            dense += model.ffn_params_per_expert()
        self._dense_params = dense / tp
        self._expert_params = model.ffn_params_per_expert() / tp if moe else 0.0
        self._lm_head_params = model.vocab_size * model.hidden_size / tp

        # Attention: FLOPs per (query token x attended token), all layers, one rank.
        heads_per_rank = model.heads // tp
        self._attn_flops_coef = 4.0 * heads_per_rank * model.head_dim * model.layers
        self._kv_bytes = model.kv_bytes_per_token(tp)
        # Decode (q = 1): seconds per attended token, the slope b of the linearity contract.
        self._decode_rate = max(
            self._attn_flops_coef / self._attn_rate, self._kv_bytes / self._bw
        )

        link_gbs = gpu.nvlink_gbs if gpu.nvlink_gbs > 0 else gpu.pcie_gbs
        if tp > 1 and link_gbs <= 0:
            raise ValueError(
                f"GPU '{gpu.name}' has nvlink_gbs=0 and pcie_gbs={gpu.pcie_gbs}: no link for "
                f"tp={tp}; set pcie_gbs in gpus.yaml or use tp=1"
            )
        self._link = link_gbs * 1e9 * p.nvlink_efficiency if tp > 1 else 0.0
        self._coeff_cache: dict[int, tuple[float, float]] = {}

    # ---- pieces of one iteration -------------------------------------------------------------
    def _linear_time(self, tokens: int) -> float:
        """Weight GEMMs of all layers for ``tokens`` new tokens."""
        m, bw = self.model, self._bw
        t = max(2.0 * self._dense_params * tokens / self._gemm_rate,
                self._dense_params * self._bpp / bw)
        if m.experts > 1:
            k, e = m.experts_top_k, m.experts
            touched = e * (1.0 - (1.0 - k / e) ** tokens)  # expected distinct experts, <= e
            t += max(2.0 * k * self._expert_params * tokens / self._gemm_rate,
                     touched * self._expert_params * self._bpp / bw)
        return m.layers * t

    def _lm_head_time(self, logit_rows: int) -> float:
        """Vocabulary projection for the rows that are sampled (one per sequence)."""
        return max(2.0 * self._lm_head_params * logit_rows / self._gemm_rate,
                   self._lm_head_params * self._bpp / self._bw)

    def _allreduce_time(self, tokens: int) -> float:
        """Two ring all-reduces per layer of the ``tokens x hidden`` activations."""
        if self.tp == 1:
            return 0.0
        nbytes = tokens * self.model.hidden_size * self._bpp
        one = (self.params.allreduce_latency_s
               + 2.0 * (self.tp - 1) / self.tp * nbytes / self._link)
        return 2 * self.model.layers * one

    def _context_free_time(self, tokens: int, sequences: int) -> float:
        """Everything except attention: depends only on token and sequence counts."""
        embed = tokens * self.model.hidden_size * self._bpp / self._bw  # row gather
        return (self._linear_time(tokens) + self._lm_head_time(sequences) + embed
                + self._allreduce_time(tokens) + self.params.iteration_overhead_s)

    def _attention_time(self, q: int, ctx: int) -> float:
        """One sequence computing ``q`` tokens over ``ctx`` cached ones, all layers.

        FLOPs ``4 * heads/tp * head_dim * q * (ctx + (q+1)/2)`` per layer (QK^T and PV, causal
        within the chunk); bytes: the KV of ``ctx + q`` tokens. Charged per sequence rather than
        per batch so a decode's memory-bound attention is not hidden under a co-scheduled
        prefill's compute-bound attention. For ``q == 1`` both terms are ``(ctx + 1)`` times a
        constant, which keeps decode exactly linear in context.
        """
        if q == 1:
            return (ctx + 1) * self._decode_rate
        flops = self._attn_flops_coef * q * (ctx + (q + 1) / 2.0)
        return max(flops / self._attn_rate, (ctx + q) * self._kv_bytes / self._bw)

    # ---- CostModel API ------------------------------------------------------------------------
    def batch_time(self, batch: Batch) -> float:
        if batch.size == 0:
            raise ValueError("batch_time: the batch has no sequences; an empty iteration has no cost")
        attn = 0.0
        for q, ctx in zip(batch.new_tokens, batch.context_tokens, strict=True):
            if q < 1 or ctx < 0:
                raise ValueError(
                    f"batch_time: new_tokens={q}, context_tokens={ctx}; need new_tokens >= 1 and "
                    f"context_tokens >= 0 for every sequence"
                )
            attn += self._attention_time(q, ctx)
        # One sampled row per sequence: engines compute logits only where they sample. A
        # speculative verify samples q rows; that LM-head work is not counted here.
        return self._context_free_time(batch.total_new_tokens, batch.size) + attn

    def iteration_time(self, new_tokens, context_tokens, decodes=0, decode_tokens=1,
                       decode_ctx_sum=0, decode_ctx_max=0, decode_contexts=None) -> float:
        """As ``batch_time``; one-token decodes priced from their context sum (each one's
        attention is ``(ctx + 1) * rate``, so the group's is ``(sum + count) * rate``)."""
        if decodes and decode_tokens != 1:
            return super().iteration_time(new_tokens, context_tokens, decodes, decode_tokens,
                                          decode_ctx_sum, decode_ctx_max, decode_contexts)
        attn = (decode_ctx_sum + decodes) * self._decode_rate if decodes else 0.0
        total = decodes
        for q, ctx in zip(new_tokens, context_tokens, strict=True):
            if q < 1 or ctx < 0:
                raise ValueError(
                    f"batch_time: new_tokens={q}, context_tokens={ctx}; need new_tokens >= 1 and "
                    f"context_tokens >= 0 for every sequence"
                )
            attn += self._attention_time(q, ctx)
            total += q
        size = len(new_tokens) + decodes
        if size == 0:
            raise ValueError("batch_time: the batch has no sequences; an empty iteration has no cost")
        return self._context_free_time(total, size) + attn

    def decode_coefficients(self, batch_size: int) -> tuple[float, float]:
        if batch_size < 1:
            raise ValueError(f"decode_coefficients: batch_size={batch_size} must be >= 1")
        cached = self._coeff_cache.get(batch_size)
        if cached is None:
            b = self._decode_rate
            a = self._context_free_time(batch_size, batch_size) + batch_size * b
            cached = self._coeff_cache[batch_size] = (a, b)
        return cached

    def describe(self) -> dict:
        return {
            "source": self.source,
            "model": self.model.name,
            "gpu": self.gpu.name,
            "tp": self.tp,
            "params": asdict(self.params),
        }
