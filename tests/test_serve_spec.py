"""Speculative decoding in the real serving loop: the simulator's own speculative steps (k drafts,
each member's kept tokens) executed as draft + verify passes, and the FlashAttention prompt path.

With the cost model as its clock the loop must equal the simulator exactly, in step and in
fast-forward mode, with and without preemption; on the CPU the tiny model and its tiny draft
serve every request through real draft and verify passes."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from goodput.profiler.serve import ServingLoop, instance_capacity
from goodput.sim.catalog import get_gpu, get_model
from goodput.sim.config import ConfigError, InstanceGroupConfig, SimConfig, load_config
from goodput.sim.costmodel.factory import make_cost_model
from goodput.sim.simulator import simulate
from tests.conftest import poisson_requests, virtual_serve

COLUMNS = ["first_scheduled_s", "first_token_s", "completion_s", "generated_tokens",
           "preemptions", "max_tbt_s", "outcome"]


def _spec_cfg(policy, method, mem=0.9):
    cfg = SimConfig(cluster=[InstanceGroupConfig(model="llama-3.1-8b", gpu="h100", count=1)])
    cfg.scheduler.policy = policy
    cfg.scheduler.gpu_memory_utilization = mem
    cfg.cost_model.kind = "roofline"
    spec = cfg.scheduler.section("speculation")
    spec.method, spec.draft_model = method, "llama-3.2-1b"
    return cfg


@pytest.mark.parametrize("policy,method,mem", [("vllm", "fixed", 0.9), ("sarathi", "smartspec", 0.9),
                                               ("vllm", "smartspec", 0.25),
                                               ("sarathi", "fixed", 0.25)])
def test_speculative_loop_with_cost_model_clock_equals_simulator(policy, method, mem):
    df = poisson_requests(300, rate=20, seed=3)
    cfg = _spec_cfg(policy, method, mem)
    served = virtual_serve(cfg, df)
    it = served.iterations
    assert (it.kind == "spec").sum() > len(it) // 3  # most iterations speculate
    for ff in (False, True):
        cfg.fast_forward = ff
        sim = simulate(cfg, df)
        if mem < 0.5:
            assert sim.instances.preemptions.sum() > 0
        for col in COLUMNS:
            x, y = served.requests[col], sim.requests[col]
            if x.dtype.kind == "f":
                np.testing.assert_allclose(x.to_numpy(), y.to_numpy(), rtol=1e-9, atol=1e-9,
                                           err_msg=f"{col} (fast_forward={ff})")
            else:
                assert (x.astype(str) == y.astype(str)).all(), col
        assert len(it) == sim.instances.iterations.sum()
    spec = it[it.kind == "spec"]
    assert (spec.spec_k >= 1).all() and (spec.new_tokens >= spec.n_seqs).all()
    np.testing.assert_allclose(spec.end_s - spec.start_s, spec.predicted_s, rtol=1e-9)


def test_real_loop_refuses_what_it_cannot_draft():
    from goodput.profiler.serve import speculation_of

    cfg = _spec_cfg("vllm", "fixed")
    cfg.scheduler.section("speculation").proposer = "ngram"
    with pytest.raises(ConfigError, match="proposer='ngram'"):
        speculation_of(cfg)
    cfg = _spec_cfg("vllm", "fixed")
    assert speculation_of(cfg)[0].name == "llama-3.2-1b"
    assert speculation_of(_spec_cfg("vllm", "none")) is None


# ---------------------------------------------------------------- the tiny model on the CPU
torch = pytest.importorskip("torch")


def _tiny_spec_loop(blocks, k=3, policy="vllm", attention="triton"):
    from goodput.profiler.serve import build_runners, make_executor
    from goodput.profiler.serve.loop import WallClock
    from goodput.profiler.shapes import TINY_CPU_MODEL

    cfg = load_config(None, {
        "cluster": [{"model": "tiny-cpu", "gpu": "h100", "tp": 1, "count": 1}],
        "scheduler": {"policy": policy, "num_gpu_blocks": blocks, "max_batch_size": 16,
                      "max_batched_tokens": 512, "sarathi": {"chunk_size": 64, "token_budget": 64},
                      "speculation": {"method": "fixed", "fixed": {"k": k},
                                      "draft_pass_s": 1e-4}}})
    # the tiny model has no profile: a catalog roofline prices the simulator's decisions
    cost = make_cost_model(get_model("llama-3.1-8b"), get_gpu("h100"), 1, cfg.cost_model)
    cap = instance_capacity(cfg, TINY_CPU_MODEL)
    runner, draft = build_runners(cfg, cap, 200, device="cpu", attention=attention)
    return ServingLoop(cfg, cap, TINY_CPU_MODEL.max_context,
                       make_executor(cfg, runner, 200, 0, draft), WallClock(), cost)


@pytest.mark.parametrize("blocks,policy,attention", [(400, "vllm", "triton"), (400, "sarathi", "flash"),
                                                    (40, "vllm", "fast")])
def test_tiny_model_speculates_through_real_draft_and_verify(blocks, policy, attention):
    rng = np.random.default_rng(1)
    n = 16
    df = pd.DataFrame({"request_id": np.arange(n), "arrival_s": np.zeros(n),
                       "prompt_tokens": rng.integers(5, 120, n),
                       "output_tokens": rng.integers(2, 40, n)})
    loop = _tiny_spec_loop(blocks, policy=policy, attention=attention)
    res = loop.run(df)
    req, it = res.requests, res.iterations
    assert (req.outcome == "completed").all()
    assert (req.generated_tokens == req.output_tokens).all()
    spec = it[it.kind == "spec"]
    assert len(spec) > 0 and (spec.spec_k == 3).all()
    # each step keeps between one and k + 1 tokens per sequence
    assert ((spec.new_tokens >= spec.n_seqs) & (spec.new_tokens <= 4 * spec.n_seqs)).all()
    # the log keeps the simulator's price of each step, not the measured span that replaced it
    assert (spec.predicted_s != spec.end_s - spec.start_s).all()
    assert (spec.predicted_draft_s == spec.spec_k * 1e-4).all()  # draft_pass_s x k
    store = loop.executor.store
    assert store.pages_in_use == 0 and not store.slot_of  # lookahead pages all came back
    if blocks == 40:
        assert res.instance["preemptions"] > 0


def _scattered_batch(q_lens, ctx_lens, pages):
    """A tiny-model layer with KV pages scattered over a pool of ``pages``, the batch's queries,
    metadata and the paged kernel's output: the reference every attention path must equal."""
    from goodput.profiler.batches import build_meta_from_table, page_table
    from goodput.profiler.layers import DecoderLayer
    from goodput.profiler.paged_attention import paged_attention
    from goodput.profiler.shapes import TINY_CPU_MODEL, ShardShapes

    s = ShardShapes.from_spec(TINY_CPU_MODEL, 1)
    gen = torch.Generator().manual_seed(0)
    layer = DecoderLayer(s, pages + 1, "cpu", gen)
    need = [-(-(q + c) // 16) for q, c in zip(q_lens, ctx_lens, strict=True)]
    table = page_table(need, np.random.default_rng(0).permutation(pages)[:sum(need)])
    q = torch.randn(sum(q_lens), s.q_heads, s.head_dim, generator=gen).to(torch.bfloat16)
    meta = build_meta_from_table(q_lens, ctx_lens, table, s.group, s.kv_heads, s.head_dim,
                                 torch.device("cpu"), 8)
    return s, layer, table, q, paged_attention(q, layer.k_cache, layer.v_cache, meta, layer.scale)


def test_flash_prompt_path_equals_the_paged_reference():
    """The packed-gather prompt path (FlashAttention on the GPU, its float32 reference here)
    computes the same attention as the paged kernel for a mixed batch: a fresh prompt, a chunk
    over a cached prefix, decodes."""
    from goodput.profiler.serve.attention import IterationAttention

    q_lens, ctx_lens = [37, 20, 1, 1, 1], [0, 45, 70, 3, 130]
    s, layer, table, q, ref = _scattered_batch(q_lens, ctx_lens, 63)
    fa = IterationAttention(q_lens, ctx_lens, table, 2, s, torch.device("cpu"), 8)
    got = fa(q, layer)
    torch.testing.assert_close(got.float(), ref.float(), atol=2e-2, rtol=2e-2)


def test_fast_path_pads_long_prompts_and_keeps_other_rows_on_triton():
    """The ``fast`` backend: a whole prompt of >= 1024 tokens on the cuDNN path (padded to a
    multiple of 512; its float32 reference here), a short prompt, a chunk over a prefix and
    decodes on the paged kernel, here with the cuDNN prompt in the middle (rows scattered)."""
    from goodput.profiler.serve.attention import FastAttention, cudnn_chosen

    q_lens, ctx_lens = [20, 1100, 37, 1, 1], [40, 0, 0, 70, 3]
    chosen = cudnn_chosen(q_lens, ctx_lens, 3)
    assert chosen == [1]
    s, layer, table, q, ref = _scattered_batch(q_lens, ctx_lens, 199)
    fast = FastAttention(q_lens, ctx_lens, table, chosen, s, torch.device("cpu"), 8)
    assert fast.spans[0][2] == 1536 and fast.tail is None
    torch.testing.assert_close(fast(q, layer).float(), ref.float(), atol=2e-2, rtol=2e-2)


def test_unknown_attention_backend_is_refused():
    from goodput.profiler.serve.runner import ModelRunner
    from goodput.profiler.shapes import TINY_CPU_MODEL

    with pytest.raises(ValueError, match="attention='fastest'"):
        ModelRunner(TINY_CPU_MODEL, 8, "cpu", attention="fastest")


def test_derive_copies_traces_and_rejects_unknown_fields(tmp_path):
    """Derived cases keep the trace and change only the overrides; a misspelt field fails with
    its name before anything runs on a GPU."""
    import json

    from goodput.profiler.serve.variants import derive, parse_overrides
    from goodput.sim.config import load_config

    src = tmp_path / "src" / "vllm-load30"
    src.mkdir(parents=True)
    cfg = _spec_cfg("vllm", "none")
    import yaml

    from goodput.sim.config import to_dict
    (src / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    poisson_requests(5, rate=1).to_csv(src / "trace.csv", index=False)
    made = derive(tmp_path / "src", tmp_path / "out", parse_overrides(
        ["scheduler.speculation.method=fixed", "scheduler.speculation.fixed.k=3"]), "k3-")
    assert [m.name for m in made] == ["k3-vllm-load30"]
    got = load_config(made[0] / "config.yaml")
    assert got.scheduler.section("speculation").section("fixed").k == 3
    assert (made[0] / "trace.csv").read_text() == (src / "trace.csv").read_text()
    assert json.loads((made[0] / "design.json").read_text())["overrides"] == {
        "scheduler.speculation.method": "fixed", "scheduler.speculation.fixed.k": 3}
    with pytest.raises(ConfigError, match="FIELD=VALUE"):
        parse_overrides(["scheduler.policy"])
    with pytest.raises(ConfigError, match="nonsense"):
        derive(tmp_path / "src", tmp_path / "bad", {"scheduler.nonsense": 1})
