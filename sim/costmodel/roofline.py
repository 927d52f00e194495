"""Analytic roofline cost model: iteration time from FLOPs, bytes and link bandwidth.

Why a roofline: before any profile exists for a (model, GPU, TP) triple, the planner still needs
a first answer that moves the right way with every knob -- more tokens, more context, more GPUs,
a faster memory system. Each kernel class is charged ``max(compute time, memory time)`` against
the GPU's datasheet peaks scaled by named efficiency factors (``RooflineParams``); those factors
are the handles calibration (profiler/calibrate.py) fits to measured profiles.

What one iteration costs (per GPU of a TP group, all layers):

* linear layers (QKV, O, MLP; MoE: router, shared and routed experts) -- FLOPs
  ``2 * params/tp * T`` for T new tokens vs. streaming the weights once. For MoE only the top-k
  experts' FLOPs count, and bytes cover the experts the batch actually touches (expected
  distinct experts under uniform routing). With ``expert_parallel`` each rank holds
  ``experts/tp`` whole experts instead of a 1/tp slice of each, computes its share of the
  routed tokens and exchanges them with two all-to-alls per MoE layer (dispatch, combine).
* attention -- per sequence, ``max(flops, KV bytes)``; see ``_attention_time``.
* LM head (one logit row per sequence) and the embedding gather.
* per-layer and per-sequence fixed costs (``layer_launch_s``, ``per_seq_layer_s``): kernel
  launch floors that do not shrink with TP, and per-sequence work (attention tiles, rotary, KV
  writes, sampling) that the FLOP/byte counts miss; fitted by calibration.
* TP all-reduces, ``2 x layers + 1`` per iteration, each a per-call latency floor plus bytes
  over the link (``goodput.sim.costmodel.tp_estimate``: measured TP2 table, ring-step rule beyond it).
* host time: ``iteration_overhead_s``, or, when an ``EngineOverhead`` is given, that engine's
  ``(1 + kernel_scale) * kernels + per_iteration_s + per_seq_s * n`` (goodput.sim.costmodel.engine).

Decode linearity (the CostModel contract): for ``q = 1`` both attention terms are proportional to
``ctx + 1``, so the per-sequence max is ``(ctx + 1) * rate`` with one constant ``rate``; everything
else depends only on the batch size. Hence ``batch_time == a + b * sum(ctx)`` holds exactly and
``decode_coefficients`` returns those same ``a`` and ``b``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from numbers import Integral
from typing import Final

from goodput.sim.catalog import GPUSpec, ModelSpec
from goodput.sim.costmodel.base import Batch, CostModel
from goodput.sim.costmodel.engine import EngineOverhead
from goodput.sim.costmodel.tp_estimate import TPAllReduce, tp_allreduce

#: the context-free term's memo key is ``tokens * _SEQ_KEY_SPAN + sequences``
_SEQ_KEY_SPAN: Final = 1 << 32


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
    #: Fraction of the per-direction link bandwidth a ring all-reduce achieves, and the per-call
    #: all-reduce latency at TP2 (seconds): the old priors. The roofline uses them only with
    #: ``allreduce_rule="params"``; by default (``"measured"``) it takes both from the measured
    #: H200 TP2 table (goodput.sim.costmodel.tp_estimate: bus efficiency 0.78, floor ~40 us, plus the
    #: ring-step rule above TP2). The profiler's fit.json estimate still records these priors.
    nvlink_efficiency: float = 0.7
    allreduce_latency_s: float = 10e-6
    #: ``measured`` (the tp_estimate rule) or ``params`` (the two fields above, same ring rule).
    allreduce_rule: str = "measured"
    #: Per-iteration time outside GPU kernels (scheduling, input preparation, launch, sampling),
    #: seconds. The vLLM v0.6.0 performance post shows this CPU-side work was a large share of a
    #: Llama-3-8B step on H100 before it was overlapped; 1 ms is a prior for a modern engine.
    #: Replaced by the engine's host terms when an EngineOverhead is attached.
    iteration_overhead_s: float = 1e-3
    #: Fixed GPU time per decoder layer per iteration (launch floors of the layer's ~10 kernels,
    #: norms, rotary), seconds. Prior 0; calibration fits it on the profiles.
    layer_launch_s: float = 0.0
    #: GPU time per sequence per layer beyond its FLOPs/bytes (attention tile setup, KV-cache
    #: write, paged-table reads), seconds. Prior 0; calibration fits it on the profiles.
    per_seq_layer_s: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "allreduce_rule":
                if value not in ("measured", "params"):
                    raise ValueError(f"RooflineParams.allreduce_rule={value!r}: 'measured' or "
                                     "'params'")
                continue
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
    #: calibration.json content when built by ``calibrated_roofline`` (errors.py reads it)
    calibration: dict | None = None

    def __init__(
        self, model: ModelSpec, gpu: GPUSpec, tp: int = 1, params: RooflineParams = RooflineParams(),
        engine: EngineOverhead | None = None, expert_parallel: bool = False,
        allreduce: TPAllReduce | None = None,
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
        moe = model.experts > 1
        if expert_parallel and (not moe or model.experts % tp):
            raise ValueError(f"expert_parallel needs an MoE model whose {model.experts} experts "
                             f"divide over tp={tp}")
        self.model, self.gpu, self.tp, self.params = model, gpu, tp, params
        self.engine, self.ep = engine, (tp if expert_parallel else 1)
        p = params
        peak = gpu.bf16_tflops * 1e12
        # FP8 weights (goodput.sim.catalog.precision) run their GEMMs on the FP8 tensor cores where the
        # GPU has them, else weight-only (1-byte reads at the BF16 rate); the LM head, the
        # embedding, activations and attention stay 16-bit
        fp8 = model.bytes_per_param == 1 and gpu.fp8_tflops > 0
        linear_peak = gpu.fp8_tflops * 1e12 if fp8 else peak
        self._linear_rate = linear_peak * p.gemm_flops_efficiency  # FLOP/s, weight GEMMs
        self._gemm_rate = peak * p.gemm_flops_efficiency  # FLOP/s, 16-bit GEMMs (LM head)
        self._attn_rate = peak * p.attention_flops_efficiency  # FLOP/s
        self._bw = gpu.mem_bw_tbs * 1e12 * p.memory_bw_efficiency  # bytes/s
        self._bpp = model.bytes_per_param  # weight bytes of the layers' linear parameters
        self._act = model.ACTIVATION_BYTES  # activations, embedding rows, LM head weights
        self._head_bpp = max(self._bpp, self._act)

        # Linear-layer parameters held by one rank, per layer (TP-sharded parts).
        attn = model.attention_params_per_layer()
        self._dense_params = (attn + model.dense_ffn_params()) / tp  # a dense layer
        self._moe_dense_params = (attn + model.hidden_size * model.experts
                                  + model.shared_ffn_params()) / tp if moe else 0.0
        self._expert_params = model.ffn_params_per_expert() / (1 if self.ep > 1 else tp)
        self._n_dense = model.layers - model.moe_layers
        self._n_moe = model.moe_layers
        self._lm_head_params = model.vocab_size * model.hidden_size / tp

        # Attention: FLOPs per (query token x attended token), all layers, one rank.
        heads_per_rank = model.heads // tp
        self._attn_flops_coef = 4.0 * heads_per_rank * model.head_dim * model.layers
        self._kv_bytes = model.kv_bytes_per_token(tp)
        # Decode (q = 1): seconds per attended token, the slope b of the linearity contract.
        self._decode_rate = max(
            self._attn_flops_coef / self._attn_rate, self._kv_bytes / self._bw
        )
        if tp > 1 and gpu.nvlink_gbs <= 0 and gpu.pcie_gbs <= 0:
            raise ValueError(
                f"GPU '{gpu.name}' has nvlink_gbs=0 and pcie_gbs={gpu.pcie_gbs}: no link for "
                f"tp={tp}; set pcie_gbs in gpus.yaml or use tp=1"
            )
        self.allreduce = allreduce if allreduce is not None else tp_allreduce(gpu)
        if p.allreduce_rule == "params":
            from dataclasses import replace

            self.allreduce = replace(self.allreduce, bus_eff=p.nvlink_efficiency,
                                     floor_s=p.allreduce_latency_s, measured_world=2,
                                     measured_on="RooflineParams", measured=None)
        self._coeff_cache: dict[int, tuple[float, float]] = {}
        #: _context_free_time by (tokens, sequences): a pure function of the two counts, asked
        #: at every iteration; chunked batches repeat a few thousand pairs (engine speed)
        self._free_cache: dict[int, float] = {}
        #: its parts by token count (linear, embedding, all-reduce) and by sequence count (LM
        #: head, fixed): a new pair of counts then costs two lookups, not a recomputation
        self._tok_parts: dict[int, tuple[float, float, float]] = {}
        self._seq_parts: dict[int, tuple[float, float]] = {}

    # ---- pieces of one iteration -------------------------------------------------------------
    def _linear_time(self, tokens: int) -> float:
        """Weight GEMMs of all layers for ``tokens`` new tokens."""
        m, bw, rate, bpp = self.model, self._bw, self._linear_rate, self._bpp
        t = self._n_dense * max(2.0 * self._dense_params * tokens / rate,
                                self._dense_params * bpp / bw)
        if self._n_moe:
            k, e, ep = m.experts_top_k, m.experts, self.ep
            touched = e * (1.0 - (1.0 - k / e) ** tokens) / ep  # expected distinct local experts
            moe = max(2.0 * self._moe_dense_params * tokens / rate,
                      self._moe_dense_params * bpp / bw)
            moe += max(2.0 * k * self._expert_params * tokens / ep / rate,
                       touched * self._expert_params * bpp / bw)
            t += self._n_moe * moe
        return t

    def _lm_head_time(self, logit_rows: int) -> float:
        """Vocabulary projection for the rows that are sampled (one per sequence)."""
        return max(2.0 * self._lm_head_params * logit_rows / self._gemm_rate,
                   self._lm_head_params * self._head_bpp / self._bw)

    def _allreduce_time(self, tokens: int) -> float:
        """All-reduces of the ``tokens x hidden`` activations: two per layer and one for the
        vocab-parallel embedding; with expert parallelism an MoE layer's MLP all-reduce is
        replaced by a dispatch and a combine all-to-all of the routed token copies."""
        if self.tp == 1:
            return 0.0
        m, ar = self.model, self.allreduce
        nbytes = tokens * m.hidden_size * self._act
        one = ar.time(nbytes, self.tp)
        if self.ep == 1:
            return (2 * m.layers + 1) * one
        # all-to-all: each rank sends (ep-1)/ep of its k routed copies; same floor per call
        a2a = ar.floor(self.tp) + (m.experts_top_k * nbytes * (self.ep - 1) / self.ep
                                   / (ar.bus_eff * ar.link_bytes_per_s))
        return (2 * m.layers + 1 - self._n_moe) * one + 2 * self._n_moe * a2a

    def _fixed_gpu_time(self, sequences: int) -> float:
        p = self.params
        return self.model.layers * (p.layer_launch_s + p.per_seq_layer_s * sequences)

    def _context_free_time(self, tokens: int, sequences: int) -> float:
        """GPU work except attention: depends only on token and sequence counts (memoised)."""
        # one integer key (no tuple to build and hash per call); unique, as a batch never holds
        # 2**32 sequences
        key = tokens * _SEQ_KEY_SPAN + sequences
        t = self._free_cache.get(key)
        if t is None:
            if len(self._free_cache) >= 1 << 18:  # bounded: batches of every shape in a long run
                self._free_cache.clear()
                self._tok_parts.clear()
                self._seq_parts.clear()
            tok = self._tok_parts.get(tokens)
            if tok is None:
                embed = tokens * self.model.hidden_size * self._act / self._bw  # row gather
                tok = self._tok_parts[tokens] = (self._linear_time(tokens), embed,
                                                 self._allreduce_time(tokens))
            seq = self._seq_parts.get(sequences)
            if seq is None:
                seq = self._seq_parts[sequences] = (self._lm_head_time(sequences),
                                                    self._fixed_gpu_time(sequences))
            # summed in the order the terms were always added (the same bits)
            t = self._free_cache[key] = tok[0] + seq[0] + tok[1] + tok[2] + seq[1]
        return t

    def _finish(self, kernel_s: float, sequences: int) -> float:
        """GPU time plus the host: the attached engine's terms, else the roofline's overhead."""
        if self.engine is not None:
            return self.engine.apply(kernel_s, sequences)
        return kernel_s + self.params.iteration_overhead_s

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

    @staticmethod
    def _check(q: int, ctx: int) -> None:
        if q < 1 or ctx < 0:
            raise ValueError(
                f"batch_time: new_tokens={q}, context_tokens={ctx}; need new_tokens >= 1 and "
                f"context_tokens >= 0 for every sequence"
            )

    # ---- CostModel API ------------------------------------------------------------------------
    def batch_time(self, batch: Batch) -> float:
        if batch.size == 0:
            raise ValueError("batch_time: the batch has no sequences; an empty iteration has no cost")
        attn = 0.0
        for q, ctx in zip(batch.new_tokens, batch.context_tokens, strict=True):
            self._check(q, ctx)
            attn += self._attention_time(q, ctx)
        # One sampled row per sequence: engines compute logits only where they sample. A
        # speculative verify samples q rows; that LM-head work is not counted here.
        kernels = self._context_free_time(batch.total_new_tokens, batch.size) + attn
        return self._finish(kernels, batch.size)

    def iteration_time(self, new_tokens: Sequence[int], context_tokens: Sequence[int],
                       decodes: int = 0, decode_tokens: int = 1, decode_ctx_sum: int = 0,
                       decode_ctx_max: int = 0,
                       decode_contexts: Callable[[], list[int]] | None = None) -> float:
        """As ``batch_time``; one-token decodes priced from their context sum (each one's
        attention is ``(ctx + 1) * rate``, so the group's is ``(sum + count) * rate``)."""
        if decodes and decode_tokens != 1:
            return super().iteration_time(new_tokens, context_tokens, decodes, decode_tokens,
                                          decode_ctx_sum, decode_ctx_max, decode_contexts)
        attn = (decode_ctx_sum + decodes) * self._decode_rate if decodes else 0.0
        total = decodes
        chunks = len(new_tokens)
        if len(context_tokens) != chunks:
            raise ValueError(f"iteration_time: {chunks} new-token counts for "
                             f"{len(context_tokens)} contexts")
        for i in range(chunks):  # by index: no zip object or tuple per sequence when compiled
            q, ctx = new_tokens[i], context_tokens[i]
            self._check(q, ctx)
            attn += self._attention_time(q, ctx)
            total += q
        size = chunks + decodes
        if size == 0:
            raise ValueError("batch_time: the batch has no sequences; an empty iteration has no cost")
        return self._finish(self._context_free_time(total, size) + attn, size)

    def run_times(self, sizes: Sequence[Sequence[int]], context_tokens: Sequence[int],
                  decodes: int = 0, decode_tokens: int = 1, decode_ctx_sum: int = 0,
                  decode_ctx_max: int = 0,
                  decode_contexts: Callable[[int], list[int]] | None = None) -> list[float]:
        """``iteration_time`` of each iteration of a run, in one loop: the same terms summed in
        the same order (identical results), without a call per iteration and chunk."""
        if decodes and decode_tokens != 1:
            return super().run_times(sizes, context_tokens, decodes, decode_tokens,
                                     decode_ctx_sum, decode_ctx_max, decode_contexts)
        rate, coef, attn_rate = self._decode_rate, self._attn_flops_coef, self._attn_rate
        kv_bytes, bw = self._kv_bytes, self._bw
        ctx = list(context_tokens)
        size = len(ctx) + decodes
        if size == 0:
            raise ValueError("batch_time: the batch has no sequences; an empty iteration has no cost")
        durs: list[float] = []
        chunks = len(ctx)
        for j, new in enumerate(sizes):
            if len(new) != chunks:
                raise ValueError(f"run_times: iteration {j} has {len(new)} chunk sizes for "
                                 f"{chunks} sequences")
            attn = (decode_ctx_sum + j * decodes + decodes) * rate if decodes else 0.0
            total = decodes
            for i in range(chunks):  # by index: a compiled build reads both lists natively
                q, c = new[i], ctx[i]
                if q < 1 or c < 0:
                    self._check(q, c)
                if q == 1:
                    attn += (c + 1) * rate
                else:
                    flops = coef * q * (c + (q + 1) / 2.0)
                    attn += max(flops / attn_rate, (c + q) * kv_bytes / bw)
                total += q
                ctx[i] = c + q  # the next iteration's context (index i is already read)
            durs.append(self._finish(self._context_free_time(total, size) + attn, size))
        return durs

    def verify_time(self, decodes, q, ctx_sum, ctx_max, contexts=None) -> float:
        """From the group's totals where one roofline side bounds every sequence's attention."""
        from goodput.sim.costmodel.speculative import roofline_verify_time

        t = roofline_verify_time(self, decodes, q, ctx_sum, ctx_max, contexts) if q > 1 else None
        return t if t is not None else super().verify_time(decodes, q, ctx_sum, ctx_max, contexts)

    def verify_coefficients(self, decodes: int, q: int) -> tuple[float, float] | None:
        """(a, b) with ``verify_time(decodes, q, ctx_sum, ...) == a + b * ctx_sum`` when one roofline
        side bounds every sequence's attention at any context (as ``verify_time`` prices it), so a
        run of speculative steps is priced by arithmetic; None when the sides cross."""
        if q < 2:
            return None
        f_slope = self._attn_flops_coef * q / self._attn_rate
        f_icpt = f_slope * (q + 1) / 2.0
        b_slope = self._kv_bytes / self._bw
        b_icpt = b_slope * q
        if f_slope <= b_slope and f_icpt <= b_icpt:
            slope, icpt = b_slope, decodes * q * b_slope
        elif f_slope >= b_slope and f_icpt >= b_icpt:
            slope, icpt = f_slope, decodes * f_icpt
        else:
            return None
        scale = 1.0 + self.engine.kernel_scale if self.engine is not None else 1.0
        return self._finish(self._context_free_time(decodes * q, decodes) + icpt, decodes), scale * slope

    def decode_coefficients(self, batch_size: int) -> tuple[float, float]:
        if batch_size < 1:
            raise ValueError(f"decode_coefficients: batch_size={batch_size} must be >= 1")
        cached = self._coeff_cache.get(batch_size)
        if cached is None:
            rate = self._decode_rate
            a = self._finish(self._context_free_time(batch_size, batch_size) + batch_size * rate,
                             batch_size)
            b = rate * (1.0 + (self.engine.kernel_scale if self.engine is not None else 0.0))
            cached = self._coeff_cache[batch_size] = (a, b)
        return cached

    def describe(self) -> dict:
        from goodput.sim.costmodel.errors import roofline_error

        d = {
            "source": self.source,
            "model": self.model.name,
            "gpu": self.gpu.name,
            "tp": self.tp,
            "expert_parallel": self.ep > 1,
            "params": asdict(self.params),
            "engine": (self.engine.to_dict() if self.engine is not None
                       else f"iteration_overhead_s={self.params.iteration_overhead_s}"),
        }
        if self.tp > 1:
            d["allreduce"] = self.allreduce.describe(self.tp)
        d.update(roofline_error(self))
        return d
