"""Import a Hugging Face ``config.json`` into a catalog model entry (dense, GQA and MoE).

``model_from_hf_config(cfg, name)`` returns a ``ModelSpec``; ``spec_fields_from_hf(cfg)`` the
entry's fields (what a user ``models.yaml`` entry with ``hf_config: path`` gets). Field mapping
(the same one sim/catalog/models.yaml documents for hand-made entries):

=======================  ==================================================================
ModelSpec                config.json
=======================  ==================================================================
layers                   num_hidden_layers (n_layer, num_layers)
hidden_size              hidden_size (n_embd, d_model)
heads                    num_attention_heads (n_head)
kv_heads                 num_key_value_heads; multi_query -> 1; absent -> heads (MHA)
head_dim                 head_dim, else hidden_size // heads
ffn_size                 intermediate_size (ffn_dim, n_inner; absent -> 4 * hidden)
gated_ffn                SwiGLU families (llama, mistral, mixtral, qwen2*, gemma, deepseek,
                         phi3, ...) or hidden_act silu/swiglu; OPT/GPT/Falcon -> False
vocab_size, max_context  vocab_size, max_position_embeddings (n_positions, seq_length)
tied_embeddings          tie_word_embeddings (transformers default: True)
experts, experts_top_k   num_local_experts (Mixtral) | num_experts (Qwen2-MoE) |
                         n_routed_experts (DeepSeek); num_experts_per_tok
moe_ffn_size             moe_intermediate_size (Qwen2-MoE, DeepSeek); Mixtral: intermediate_size
shared_ffn_size          shared_expert_intermediate_size (Qwen2-MoE);
                         n_shared_experts * moe_intermediate_size (DeepSeek)
dense_layers             first_k_dense_replace (DeepSeek)
bytes_per_param          1 for an fp8 quantization_config, else 2 (bf16/fp16 serving)
kv_cache_bytes           2 for an fp8 quantization_config (its KV cache stays bf16, vLLM's "auto")
=======================  ==================================================================

Not represented (the importer raises rather than guessing): multi-head latent attention
(``kv_lora_rank``, DeepSeek-V2/V3) and sliding-window-only KV layouts are priced as full GQA.
"""
from __future__ import annotations

import json
from pathlib import Path

from goodput.sim.catalog import ModelSpec

_GATED = ("llama", "mistral", "mixtral", "qwen", "gemma", "deepseek", "phi3", "yi", "internlm",
          "baichuan", "olmo", "granite", "cohere", "exaone", "starcoder2")
_PLAIN = ("opt", "gpt2", "gpt_neox", "gptj", "falcon", "bloom", "gpt_bigcode", "mpt")


def load_hf_config(path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    return json.loads(path.read_text())


def _first(cfg: dict, *keys, default=None):
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    return default


def _gated(cfg: dict) -> bool:
    mtype = str(cfg.get("model_type", "")).lower()
    act = str(_first(cfg, "hidden_act", "activation_function", default="")).lower()
    if any(mtype.startswith(p) for p in _PLAIN):
        return False
    if any(mtype.startswith(p) for p in _GATED):
        return True
    return act in ("silu", "swiglu", "swish")


def spec_fields_from_hf(cfg: dict) -> dict:
    """ModelSpec fields (without name, aliases, source) from a config.json dict."""
    text = cfg.get("text_config")
    if isinstance(text, dict) and "num_hidden_layers" not in cfg:
        cfg = {**cfg, **text}  # multimodal wrappers carry the language model here
    if cfg.get("kv_lora_rank"):
        raise ValueError("config.json uses multi-head latent attention (kv_lora_rank); the "
                         "catalog's GQA KV model would misprice its KV cache - add the entry by hand")
    try:
        layers = int(_first(cfg, "num_hidden_layers", "n_layer", "num_layers"))
        hidden = int(_first(cfg, "hidden_size", "n_embd", "d_model"))
        heads = int(_first(cfg, "num_attention_heads", "n_head"))
    except TypeError as exc:
        raise ValueError("config.json lacks num_hidden_layers / hidden_size / "
                         "num_attention_heads") from exc
    if cfg.get("multi_query"):
        kv_heads = 1
    else:
        kv_heads = int(_first(cfg, "num_key_value_heads", "num_kv_heads", default=heads))
    if cfg.get("new_decoder_architecture") and cfg.get("num_kv_heads"):
        kv_heads = int(cfg["num_kv_heads"])
    head_dim = int(_first(cfg, "head_dim", default=hidden // heads))
    ffn = int(_first(cfg, "intermediate_size", "ffn_dim", "n_inner", default=4 * hidden))
    experts = int(_first(cfg, "num_local_experts", "num_experts", "n_routed_experts", default=1))
    out: dict = {
        "layers": layers, "hidden_size": hidden, "heads": heads, "kv_heads": kv_heads,
        "head_dim": head_dim, "ffn_size": ffn, "gated_ffn": _gated(cfg),
        "vocab_size": int(cfg["vocab_size"]),
        "max_context": int(_first(cfg, "max_position_embeddings", "n_positions", "seq_length",
                                  "max_sequence_length", default=2048)),
        "tied_embeddings": bool(cfg.get("tie_word_embeddings", True)),
    }
    if experts > 1:
        moe_ffn = int(_first(cfg, "moe_intermediate_size", default=ffn))
        shared = int(cfg.get("shared_expert_intermediate_size") or 0)
        if not shared and cfg.get("n_shared_experts"):
            shared = int(cfg["n_shared_experts"]) * moe_ffn
        out.update(experts=experts, experts_top_k=int(_first(cfg, "num_experts_per_tok",
                                                              "moe_top_k", default=2)),
                   moe_ffn_size=moe_ffn if moe_ffn != ffn else 0, shared_ffn_size=shared,
                   dense_layers=int(cfg.get("first_k_dense_replace") or 0))
    q = cfg.get("quantization_config") or {}
    if "fp8" in str(q.get("quant_method", "")).lower() or "float8" in str(q.get("fmt", "")).lower():
        out["bytes_per_param"] = 1
        out["kv_cache_bytes"] = 2  # vLLM's kv_cache_dtype "auto": the activations' dtype, bf16
    if heads % kv_heads:
        raise ValueError(f"config.json: {heads} attention heads do not group over {kv_heads} "
                         "KV heads")
    return out


def model_from_hf_config(cfg: dict | str | Path, name: str | None = None,
                         **overrides) -> ModelSpec:
    """A ModelSpec from a config.json (a dict, a file or a model directory)."""
    source = "Hugging Face config.json"
    if not isinstance(cfg, dict):
        source = f"Hugging Face config.json ({cfg})"
        cfg = load_hf_config(cfg)
    fields = spec_fields_from_hf(cfg)
    name = name or str(cfg.get("_name_or_path") or cfg.get("model_type") or "hf-model")
    fields.update(overrides)
    fields.setdefault("source", source)
    fields["aliases"] = tuple(fields.get("aliases", ()))
    return ModelSpec(name=name.lower(), **fields)


__all__ = ["load_hf_config", "model_from_hf_config", "spec_fields_from_hf"]
