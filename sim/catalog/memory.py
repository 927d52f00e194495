"""What a serving engine holds back from GPU memory besides weights and KV cache.

``goodput.sim.engine.kvcache.kv_capacity`` sizes the KV cache as vLLM does::

    KV bytes = memory_bytes x gpu_memory_utilization - weights(tp) - reserve

``memory_bytes`` comes from the catalog in the units the hardware reports (``GPUSpec``). The
``reserve`` is what vLLM's startup profiling measures; ``engine_reserve_bytes`` estimates it
from the model and the scheduler limits, term by term, so that it grows with the model instead of
being one constant for every deployment:

* **activation peak** of the profiling forward pass over ``max_batched_tokens`` tokens: the
  largest live set of one decoder layer (the residual and normed hidden states, the QKV and
  attention outputs and the MLP's gate/up and activated tensors, each TP-sharded where the
  layer is), in the serving dtype;
* **sampler**: fp32 logits and probabilities over the full vocabulary for ``max_seqs`` rows;
* **non-torch memory** (NCCL and cuBLAS workspaces, custom all-reduce buffers): 0.25 GiB, as
  vLLM logs it for a TP2 14B model ("non_torch_memory takes 0.25GiB", vllm issue #13061);
* **CUDA graphs** of the decode batch sizes: 0.5 GiB, a prior (vLLM logs "Graph capturing
  finished ... took 0.3-1 GiB" for 7B-70B models; recent versions count it before sizing KV).

All terms are per GPU of the TP group. The scheduler field ``activation_reserve_gb`` (decimal GB)
is what the engine subtracts today; ``engine_reserve_gb`` gives that number for a deployment.
"""
from __future__ import annotations

from goodput.sim.catalog import ModelSpec

GIB = 2**30
NON_TORCH_BYTES = 0.25 * GIB
CUDA_GRAPH_BYTES = 0.5 * GIB
SAMPLER_BYTES_PER_LOGIT = 8  # fp32 logits + fp32 probabilities


def activation_bytes(model: ModelSpec, tp: int, tokens: int) -> float:
    """Peak live activations of one layer's forward over ``tokens`` tokens, one rank."""
    h = model.hidden_size
    if model.is_moe:
        width = model.experts_top_k * (model.moe_ffn_size or model.ffn_size) + model.shared_ffn_size
    else:
        width = model.ffn_size
    mlp = (3 if model.gated_ffn else 2) * width / tp  # gate+up (or fc1) and the activated tensor
    attn = (model.q_dim + 2 * model.kv_dim) / tp + model.q_dim / tp  # qkv and attention output
    return tokens * model.ACTIVATION_BYTES * (2 * h + attn + mlp)


def sampler_bytes(model: ModelSpec, max_seqs: int) -> float:
    return max_seqs * model.vocab_size * SAMPLER_BYTES_PER_LOGIT


def engine_reserve_bytes(model: ModelSpec, tp: int, max_batched_tokens: int = 8192,
                         max_seqs: int = 256, cuda_graphs: bool = True) -> float:
    """Bytes per GPU an engine keeps out of the KV cache (see the module docstring)."""
    if tp < 1 or max_batched_tokens < 1 or max_seqs < 1:
        raise ValueError("engine_reserve_bytes: tp, max_batched_tokens and max_seqs must be >= 1")
    return (activation_bytes(model, tp, max_batched_tokens) + sampler_bytes(model, max_seqs)
            + NON_TORCH_BYTES + (CUDA_GRAPH_BYTES if cuda_graphs else 0.0))


def engine_reserve_gb(model: ModelSpec, tp: int, max_batched_tokens: int = 8192,
                      max_seqs: int = 256, cuda_graphs: bool = True) -> float:
    """``engine_reserve_bytes`` in the unit of ``scheduler.activation_reserve_gb`` (1e9 B)."""
    return engine_reserve_bytes(model, tp, max_batched_tokens, max_seqs, cuda_graphs) / 1e9


def breakdown(model: ModelSpec, tp: int, max_batched_tokens: int = 8192,
              max_seqs: int = 256, cuda_graphs: bool = True) -> dict:
    """The reserve's terms in GiB, for describe() and docs."""
    return {"activation_gib": activation_bytes(model, tp, max_batched_tokens) / GIB,
            "sampler_gib": sampler_bytes(model, max_seqs) / GIB,
            "non_torch_gib": NON_TORCH_BYTES / GIB,
            "cuda_graphs_gib": (CUDA_GRAPH_BYTES if cuda_graphs else 0.0) / GIB}
