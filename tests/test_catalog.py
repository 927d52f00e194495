"""Catalog tests: the YAML loads, names resolve, and derived sizes match published figures."""
import pytest

from goodput.sim.catalog import get_gpu, get_model, gpus, models

# Published parameter counts (billions) from each model's card / paper.
PUBLISHED_PARAMS_B = {
    "llama-2-7b": 6.74,
    "llama-2-13b": 13.0,
    "llama-2-70b": 69.0,
    "llama-3.1-8b": 8.03,
    "llama-3.1-70b": 70.6,
    "mistral-7b": 7.24,
    "mixtral-8x7b": 46.7,
    "qwen2.5-7b": 7.62,
    "qwen2.5-72b": 72.7,
    "opt-13b": 12.9,
    "opt-175b": 175.0,
    "falcon-180b": 180.0,
    "yi-34b": 34.4,
    "llama-3.2-1b": 1.24,
    "tinyllama-1.1b": 1.1,
}

EXPECTED_MODELS = {
    "llama-2-7b", "llama-2-13b", "llama-2-70b", "llama-3.1-8b", "llama-3.1-70b", "mistral-7b",
    "mixtral-8x7b", "yi-34b", "qwen2.5-7b", "qwen2.5-72b", "opt-13b", "opt-66b", "opt-175b",
    "falcon-180b", "llama-3.2-1b", "tinyllama-1.1b",
}
EXPECTED_GPUS = {"l4", "a10g", "l40s", "a100-40gb", "a100-80gb", "h100-sxm", "h200", "b200"}


def test_catalogs_hold_the_expected_entries():
    assert set(models()) == EXPECTED_MODELS
    assert set(gpus()) == EXPECTED_GPUS


@pytest.mark.parametrize("name", sorted(EXPECTED_MODELS))
def test_every_model_is_consistent_and_cited(name):
    m = get_model(name)
    assert m.source, f"{name} has no source"
    assert m.heads % m.kv_heads == 0, "query heads must group evenly over KV heads"
    assert 1 <= m.experts_top_k <= m.experts
    assert m.max_context > 0 and m.vocab_size > 0


@pytest.mark.parametrize("name", sorted(EXPECTED_GPUS))
def test_every_gpu_is_cited_and_positive(name):
    g = get_gpu(name)
    assert g.source and "datasheet" in g.source.lower()
    assert g.memory_source and "nvidia-smi" in g.memory_source
    assert min(g.memory_gb, g.bf16_tflops, g.mem_bw_tbs, g.pcie_gbs, g.tdp_w, g.price_per_hour) > 0
    assert g.nvlink_gbs >= 0


@pytest.mark.parametrize("name,published_b", sorted(PUBLISHED_PARAMS_B.items()))
def test_param_count_matches_published_size(name, published_b):
    got = get_model(name).param_count() / 1e9
    assert got == pytest.approx(published_b, rel=0.02)


def test_param_count_by_hand_llama_2_7b():
    # 32 x (4 * 4096^2 attention + 3 * 4096 * 11008 MLP) + 2 * 32000 * 4096 embeddings.
    expected = 32 * (4 * 4096**2 + 3 * 4096 * 11008) + 2 * 32000 * 4096
    assert get_model("llama-2-7b").param_count() == expected
    # The checkpoint's exact count, 6,738,415,616, adds the 65 RMSNorm vectors of 4096 we omit.
    assert expected + 65 * 4096 == 6_738_415_616


def test_moe_active_params_count_only_top_k_experts():
    m = get_model("mixtral-8x7b")
    expert = 3 * 4096 * 14336
    assert m.params_per_layer() - m.active_params_per_layer() == 6 * expert + 4096 * 8


def test_tied_embeddings_count_the_table_once():
    tied, untied = get_model("llama-3.2-1b"), get_model("llama-3.1-8b")
    assert tied.embedding_params() == 128256 * 2048
    assert untied.embedding_params() == 2 * 128256 * 4096


def test_kv_bytes_per_token():
    m = get_model("llama-3.1-8b")
    assert m.kv_bytes_per_token(1) == 2 * 32 * 8 * 128 * 2 == 131072
    assert m.kv_bytes_per_token(2) == 131072 / 2
    # tp above kv_heads replicates: a rank still stores one KV head per layer.
    assert m.kv_bytes_per_token(16) == 2 * 32 * 1 * 128 * 2


def test_architecture_details_from_configs():
    assert get_model("qwen2.5-7b").heads == 28 and get_model("qwen2.5-7b").kv_heads == 4
    opt = get_model("opt-13b")
    assert not opt.gated_ffn and opt.ffn_size == 4 * opt.hidden_size and opt.kv_heads == opt.heads
    falcon = get_model("falcon-180b")
    assert falcon.kv_heads == 8 and not falcon.gated_ffn
    assert falcon.ffn_size == 4 * falcon.hidden_size and falcon.q_dim == falcon.hidden_size


def test_gpu_figures_are_dense_and_unidirectional():
    h100 = get_gpu("h100-sxm")
    assert (h100.bf16_tflops, h100.mem_bw_tbs, h100.nvlink_gbs) == (989, 3.35, 450)
    for name in ("l4", "a10g", "l40s"):
        assert get_gpu(name).nvlink_gbs == 0


def test_gpu_memory_is_in_the_units_the_hardware_reports():
    # Issue 16: "80 GB" of HBM is 80 GiB, not 80e9 bytes; the driver shows it in MiB.
    assert get_gpu("a100-80gb").memory_bytes == 80 * 2**30
    assert get_gpu("a100-40gb").memory_bytes == 40 * 2**30
    h100, h200 = get_gpu("h100-sxm"), get_gpu("h200")
    assert (h100.memory_mib, h200.memory_mib) == (81559, 143771)  # nvidia-smi memory.total
    # where measured, the CUDA total (what vLLM sizes against) from the profiles' provenance
    assert h100.memory_bytes == 85_017_493_504 and h200.memory_bytes == 150_109_880_320
    assert h100.memory_bytes < h100.memory_mib * 2**20 < 80.0 * 2**30
    for g in gpus().values():  # never below the old decimal reading of the datasheet
        assert g.memory_bytes > 0.99 * round(g.memory_gib) * 1e9


@pytest.mark.parametrize("alias,canonical", [
    ("h100", "h100-sxm"), ("H100-80GB", "h100-sxm"), ("  h100 ", "h100-sxm"),
    ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b"), ("LLAMA-2-7B", "llama-2-7b"),
    ("tiiuae/falcon-180B", "falcon-180b"),
])
def test_aliases_and_case_resolve(alias, canonical):
    lookup = get_gpu if canonical in EXPECTED_GPUS else get_model
    assert lookup(alias).name == canonical


def test_unknown_names_raise_listing_known_ones():
    with pytest.raises(ValueError, match=r"unknown GPU 'h900'.*h100-sxm"):
        get_gpu("h900")
    with pytest.raises(ValueError, match=r"unknown model 'llama-9'.*llama-3\.1-8b"):
        get_model("llama-9")
