"""Hugging Face config.json import and user catalogs over the shipped ones (issue 16, item 6)."""
import json

import pytest

from goodput.sim import catalog
from goodput.sim.catalog import get_gpu, get_model
from goodput.sim.catalog.hf import model_from_hf_config, spec_fields_from_hf

LLAMA_31_8B = {  # huggingface.co/meta-llama/Llama-3.1-8B config.json (fields that matter)
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
    "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
    "num_hidden_layers": 32, "num_key_value_heads": 8, "vocab_size": 128256,
    "max_position_embeddings": 131072, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}
MIXTRAL_8X7B = {
    "model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336,
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
    "num_local_experts": 8, "num_experts_per_tok": 2, "vocab_size": 32000,
    "max_position_embeddings": 32768, "tie_word_embeddings": False, "hidden_act": "silu",
}
QWEN2_MOE = {  # Qwen1.5-MoE-A2.7B-shaped
    "model_type": "qwen2_moe", "hidden_size": 2048, "intermediate_size": 5632,
    "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632,
    "num_attention_heads": 16, "num_key_value_heads": 16, "num_hidden_layers": 24,
    "num_experts": 60, "num_experts_per_tok": 4, "vocab_size": 151936,
    "max_position_embeddings": 8192, "tie_word_embeddings": False, "hidden_act": "silu",
}


def test_dense_gqa_import_matches_the_shipped_entry():
    m = model_from_hf_config(LLAMA_31_8B, "llama-3.1-8b-hf")
    ref = get_model("llama-3.1-8b")
    for f in ("layers", "hidden_size", "heads", "kv_heads", "head_dim", "ffn_size", "gated_ffn",
              "vocab_size", "max_context", "tied_embeddings", "experts"):
        assert getattr(m, f) == getattr(ref, f), f
    assert m.param_count() == ref.param_count()


def test_mixtral_import_matches_the_shipped_entry():
    m = model_from_hf_config(MIXTRAL_8X7B, "mixtral-hf")
    ref = get_model("mixtral-8x7b")
    assert (m.experts, m.experts_top_k, m.moe_ffn_size) == (8, 2, 0)
    assert m.param_count() == ref.param_count()


def test_qwen2_moe_import_has_fine_grained_and_shared_experts():
    m = model_from_hf_config(QWEN2_MOE, "qwen-moe")
    assert (m.experts, m.experts_top_k, m.moe_ffn_size, m.shared_ffn_size) == (60, 4, 1408, 5632)
    assert m.param_count() / 1e9 == pytest.approx(14.3, rel=0.03)  # published 14.3B total
    active = m.layers * m.active_params_per_layer() + m.embedding_params()
    assert active / 1e9 == pytest.approx(2.7, rel=0.12)  # "A2.7B" (non-embedding ~2.0B)
    from goodput.sim.costmodel.base import Batch
    from goodput.sim.costmodel.roofline import RooflineCostModel

    cm = RooflineCostModel(m, get_gpu("h100"), 2, expert_parallel=True)
    assert cm.batch_time(Batch.decode([100] * 4)) > 0


def test_import_refuses_what_it_cannot_represent():
    with pytest.raises(ValueError, match="latent attention"):
        spec_fields_from_hf({**LLAMA_31_8B, "kv_lora_rank": 512})
    with pytest.raises(ValueError, match="num_hidden_layers"):
        spec_fields_from_hf({"vocab_size": 10})
    assert spec_fields_from_hf({**LLAMA_31_8B, "model_type": "opt"})["gated_ffn"] is False
    fp8 = spec_fields_from_hf({**LLAMA_31_8B, "quantization_config": {"quant_method": "fp8"}})
    assert fp8["bytes_per_param"] == 1


def test_user_catalog_adds_and_overrides_entries(tmp_path, monkeypatch):
    (tmp_path / "cfg.json").write_text(json.dumps(QWEN2_MOE))
    user = tmp_path / "my_catalog.yaml"
    user.write_text(
        "models:\n  qwen-moe-user:\n    hf_config: cfg.json\n    aliases: [qwen/moe]\n"
        "gpus:\n  h100-sxm:\n    memory_mib: 95830\n    bf16_tflops: 989\n    mem_bw_tbs: 3.9\n"
        "    nvlink_gbs: 450\n    pcie_gbs: 64\n    tdp_w: 700\n    price_per_hour: 5\n"
        "    source: my H100 NVL\n  my-gpu:\n    memory_gb: 48\n    bf16_tflops: 100\n"
        "    mem_bw_tbs: 1\n    nvlink_gbs: 0\n    pcie_gbs: 32\n    tdp_w: 300\n"
        "    price_per_hour: 1\n")
    try:
        catalog.add_catalog(user)
        assert get_model("qwen/moe").experts == 60
        h100 = get_gpu("h100")  # the alias survives the override
        assert h100.memory_mib == 95830 and h100.source == "my H100 NVL"
        assert h100.memory_bytes == 95830 * 2**20  # the shipped CUDA total no longer applies
        assert get_gpu("my-gpu").memory_bytes == 48 * 2**30  # legacy memory_gb: GiB
        assert get_model("llama-3.1-8b").layers == 32  # shipped entries stay
    finally:
        catalog.clear_user_catalogs()
    assert get_gpu("h100").memory_mib == 81559
    monkeypatch.setenv(catalog.ENV_VAR, str(user))
    catalog.reload()
    try:
        assert get_gpu("my-gpu").pcie_gbs == 32
    finally:
        monkeypatch.delenv(catalog.ENV_VAR)
        catalog.reload()
    bad = tmp_path / "bad.yaml"
    bad.write_text("gpus:\n  x:\n    memory_mib: 1\n    warp_drive: 9\n")
    with pytest.raises(ValueError, match="unknown fields"):
        catalog.add_catalog(bad)
        get_gpu("x")
    catalog.clear_user_catalogs()
    with pytest.raises(FileNotFoundError):
        catalog.add_catalog(tmp_path / "missing.yaml")
