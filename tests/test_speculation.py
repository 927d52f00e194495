"""Speculative decoding: hand-derived latency, token conservation, acceptance counters, SmartSpec's
adaptive k, and bad configs (docs/speculation.md)."""
from __future__ import annotations

import pandas as pd
import pytest

import goodput.sim.simulator as simulator
from goodput.sim.catalog import get_gpu, get_model
from goodput.sim.config import ConfigError, SchedulerConfig, load_config, to_dict
from goodput.sim.costmodel.base import Batch
from goodput.sim.costmodel.roofline import RooflineCostModel
from goodput.sim.engine.speculation import Acceptance, SpeculationConfig, make_speculation
from goodput.sim.engine.speculation_draws import acceptance_uniform
from goodput.sim.metrics import request_metrics
from goodput.sim.simulator import simulate
from tests.conftest import poisson_requests

TARGET = RooflineCostModel(get_model("llama-3.1-8b"), get_gpu("h100"), 1)
DRAFT = RooflineCostModel(get_model("llama-3.2-1b"), get_gpu("h100"), 1)


def spec_overrides(method="fixed", **kw):
    out = {"cost_model.kind": "roofline", "scheduler.speculation.method": method}
    if "draft_pass_s" not in kw:
        out["scheduler.speculation.draft_model"] = "llama-3.2-1b"
    out.update({f"scheduler.speculation.{k}": v for k, v in kw.items()})
    return out


def one_request(prompt, output):
    return pd.DataFrame({"request_id": [0], "arrival_s": [0.0], "prompt_tokens": [prompt],
                         "output_tokens": [output]})


def run_capturing(cfg, df):
    """simulate, also returning the instances (for their speculation counters)."""
    seen = []
    build = simulator.build_cluster

    def capture(c, records, *args):
        cluster = build(c, records, *args)
        seen.append(cluster)
        return cluster

    simulator.build_cluster = capture
    try:
        res = simulate(cfg, df)
    finally:
        simulator.build_cluster = build
    return res, seen[0].instances


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("output", [2, 10, 11, 30])
def test_single_request_latency_by_hand(output, fast):
    """k = 2, alpha = 0.5: each step keeps 1 + the leading run of drafts d = 1, 2 whose uniform
    ``acceptance_uniform(seed 0, request 0, tokens generated before the step, d)`` is below 0.5
    (the scalar reference of the engine's numpy draws). Each step drafts 2 tokens (two 1B decode
    passes over the growing context) and verifies 3 on the 8B target."""
    prompt, k = 300, 2
    cfg = load_config(overrides={**spec_overrides(alpha=0.5, **{"fixed.k": k}), "fast_forward": fast})
    res = simulate(cfg, one_request(prompt, output))
    r = request_metrics(res.requests).iloc[0]
    ttft = TARGET.batch_time(Batch([prompt], [0]))
    made, steps, e2e = 1, 0, ttft  # the prefill makes the first token
    kept = []
    while made < output:
        steps += 1
        ctx = prompt + made - 1
        e2e += sum(DRAFT.batch_time(Batch([1], [ctx + i])) for i in range(k))
        e2e += TARGET.batch_time(Batch([k + 1], [ctx]))
        accepted = 0
        while accepted < k and acceptance_uniform(0, 0, made, accepted + 1) < 0.5:
            accepted += 1
        kept.append(1 + accepted)
        made += 1 + accepted
    assert r.outcome == "completed" and r.generated_tokens == output
    assert r.ttft_s == pytest.approx(ttft, rel=1e-12)
    assert r.e2e_s == pytest.approx(e2e, rel=1e-12)
    assert res.instances.iterations.iloc[0] == 1 + steps
    assert res.tbt_hist.sum() == pytest.approx(output - 1)
    if output == 30:  # the draws vary the tokens a step keeps (not the batch's mean each step)
        assert len(set(kept)) == 3


def test_sampled_acceptance_averages_the_expected_count():
    """Without memory pressure, tokens kept per sequence-step average E(k) (k = 4, alpha = 0.8:
    3.3616) over about 20,000 sequence-steps: within 1.5% (one standard error is 0.35%, and a
    request's last step keeps only the tokens it needs, about 1.5 fewer: -0.7%)."""
    df = poisson_requests(300, rate=25, seed=5)
    cfg = load_config(overrides=spec_overrides("fixed", alpha=0.8))
    _res, instances = run_capturing(cfg, df)
    s = instances[0].spec.summary()
    assert instances[0].spec.seq_steps > 15000
    e = Acceptance(0.8).expected(4)
    assert s["spec_tokens_per_step"] == pytest.approx(e, rel=0.015)
    assert s["spec_acceptance"] == pytest.approx((e - 1) / 4, rel=0.025)


def test_per_pass_draft_cost_by_hand():
    prompt, output, k, pass_s = 100, 6, 3, 0.002  # alpha 0: one token a step, the bonus one
    cfg = load_config(overrides=spec_overrides(alpha=0.0, draft_pass_s=pass_s, **{"fixed.k": k}))
    r = request_metrics(simulate(cfg, one_request(prompt, output)).requests).iloc[0]
    want = TARGET.batch_time(Batch([prompt], [0])) + sum(
        k * pass_s + TARGET.batch_time(Batch([k + 1], [prompt + i])) for i in range(output - 1))
    assert r.e2e_s == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("preemption", ["recompute", "swap"])
@pytest.mark.parametrize("method", ["fixed", "smartspec"])
def test_tokens_conserved_and_counters(method, preemption):
    """Every token is made exactly once: by a prefill (the first, and one per recompute) or by a
    speculative/plain decode step, never past the output (no overshoot recorded)."""
    df = poisson_requests(300, rate=25, seed=5)
    cfg = load_config(overrides={**spec_overrides(method, alpha=0.8), "scheduler.num_gpu_blocks": 700,
                                 "scheduler.preemption": preemption})
    res, instances = run_capturing(cfg, df)
    r = res.requests
    assert (r.outcome == "completed").all() and (r.generated_tokens == r.output_tokens).all()
    assert res.tbt_hist.sum() == pytest.approx(float((r.generated_tokens - 1).sum()))
    inst = instances[0]
    spec = inst.spec
    recomputes = int(res.instances.preemptions.sum() - res.instances.swaps.sum())
    assert res.instances.preemptions.sum() > 0
    plain = inst.stats.iterations - spec.steps  # prefill and k = 0 iterations
    assert spec.emitted + len(df) + recomputes <= int(r.generated_tokens.sum())
    assert spec.emitted > 0.8 * int(r.generated_tokens.sum()) and plain > 0
    assert inst.queues.outstanding_tokens == 0
    s = spec.summary()
    if method == "fixed":  # k = 4 everywhere: at most E(k) (steps short of blocks keep one token)
        e = Acceptance(0.8).expected(4)
        assert 0.9 * e < s["spec_tokens_per_step"] < 1.01 * e
        assert 0.85 * (e - 1) / 4 < s["spec_acceptance"] < 1.015 * (e - 1) / 4
    assert 0 < s["spec_draft_share"] < 0.8


def test_expected_accepted_tokens():
    acc = Acceptance(0.8)
    assert acc.expected(0) == 1.0
    assert acc.expected(4) == pytest.approx(1 + 0.8 + 0.64 + 0.512 + 0.4096)
    assert Acceptance(0.0).expected(7) == 1.0


def _spec(method="smartspec", target=TARGET, **kw):
    sched = SchedulerConfig()
    sched.sections["speculation"] = SpeculationConfig(method=method, draft_model="llama-3.2-1b", **kw)
    return make_speculation(sched, target)


def test_smartspec_hand_derived_choice():
    """k maximises E(k) / (draft(k) + verify(k)) for the batch; k = 0 is a plain decode."""
    spec = _spec(alpha=0.8)
    for bsz, ctx in ((1, 500), (32, 32 * 800), (256, 256 * 1500)):
        rates = []
        for k in range(9):
            if k == 0:
                t = TARGET.batch_time(Batch.decode([ctx // bsz] * bsz))
            else:
                a, b = DRAFT.decode_coefficients(bsz)
                t = k * a + b * (k * ctx + bsz * k * (k - 1) / 2) \
                    + TARGET.batch_time(Batch([k + 1] * bsz, [ctx // bsz] * bsz))
            rates.append(Acceptance(0.8).expected(k) / t)
        assert spec.strategy.choose_k(spec, bsz, ctx, ctx // bsz) == max(range(9), key=rates.__getitem__)


@pytest.mark.parametrize("kind", ["roofline", "profiled"])
def test_adaptive_k_falls_as_batch_grows(kind):
    from goodput.sim.config import CostModelConfig
    from goodput.sim.costmodel.factory import make_cost_model

    target = make_cost_model(get_model("llama-3.1-8b"), get_gpu("h100"), 1, CostModelConfig(kind=kind))
    spec = _spec(target=target, alpha=0.8)
    batches = (1, 4, 16, 64, 96, 128, 192, 256, 384, 512)
    ks = [spec.strategy.choose_k(spec, b, b * 256, 256) for b in batches]  # 256-token contexts
    assert ks[0] == 3 and ks[-1] <= 1 and max(ks) == ks[0], ks
    if kind == "profiled":  # the measured profile is smooth in the batch: k never rises
        assert ks == sorted(ks, reverse=True) and ks[-1] == 0, ks
    # the roofline's compute/memory knees can lift k by one past a knee (as at 256 x 1024 here)


BAD = [
    ({"scheduler.speculation.fixed.k": 0}, "scheduler.speculation.fixed.k must be in [1, 16], got 0"),
    ({"scheduler.speculation.alpha": 1.5}, "scheduler.speculation.alpha must be in [0, 1], got 1.5"),
    ({"scheduler.speculation.alpha": -0.1}, "scheduler.speculation.alpha must be in [0, 1], got -0.1"),
    ({"scheduler.speculation.draft_model": "nope-7b"},
     "scheduler.speculation.draft_model: unknown model 'nope-7b'"),
    ({"scheduler.speculation.draft_model": "llama-2-7b"}, "has a vocabulary of 32000 tokens"),
    ({"scheduler.speculation.draft_model": "llama-3.1-70b"}, "is not smaller than the target"),
    ({"scheduler.speculation.method": "medusa"}, "unknown scheduler.speculation.method 'medusa'"),
    ({"scheduler.speculation.method": "smartspec", "scheduler.speculation.smartspec.max_k": 0},
     "smartspec.max_k must be in [1, 16]"),
    ({"scheduler.speculation.fixed.kk": 2}, "unknown config field(s) scheduler.speculation.fixed.kk"),
    ({"scheduler.speculation.draft_model": ""}, "give draft_model"),
    ({"cost_model.kind": "profiled", "scheduler.speculation.fixed.k": 9}, "beyond the profiled verify range"),
    ({"cost_model.kind": "profiled", "scheduler.speculation.method": "smartspec",
      "scheduler.speculation.smartspec.max_k": 5, "scheduler.speculation.tree_width": 2},
     "verifies of up to 10 drafted tokens (k 5 x tree_width 2) are beyond the profiled verify range"),
    ({"scheduler.speculation.alpha_by_position": [0.9, 1.5]},
     "scheduler.speculation.alpha_by_position values must be in [0, 1], got 1.5"),
    ({"scheduler.speculation.method": "smartspec", "scheduler.speculation.smartspec.redecide_steps": 0},
     "scheduler.speculation.smartspec.redecide_steps must be >= 1, got 0"),
    ({"scheduler.speculation.method": "smartspec", "scheduler.speculation.smartspec.ema_keep": 1.0},
     "scheduler.speculation.smartspec.ema_keep must be in [0, 1), got 1.0"),
    ({"scheduler.speculation.alpha_dist": "beta:8,2", "scheduler.speculation.seed": -1},
     "scheduler.speculation.seed must be >= 0, got -1"),
]


@pytest.mark.parametrize(("over", "msg"), BAD, ids=[m[:30] for _, m in BAD])
def test_bad_config_is_one_clear_line(over, msg):
    df = one_request(100, 5)
    with pytest.raises(ConfigError) as err:
        cfg = load_config(overrides={**spec_overrides(), **over})
        simulate(cfg, df)
    text = str(err.value)
    assert msg in text and "\n" not in text, text


def test_none_is_the_default_and_identical_to_no_section():
    df = poisson_requests(100, rate=10, seed=2)
    plain = simulate(load_config(overrides={"cost_model.kind": "roofline"}), df)
    none = simulate(load_config(overrides={"cost_model.kind": "roofline",
                                           "scheduler.speculation.method": "none"}), df)
    pd.testing.assert_frame_equal(plain.requests, none.requests)
    assert to_dict(load_config())["scheduler"]["speculation"]["method"] == "none"


def test_example_config_loads_and_round_trips():
    cfg = load_config("examples/speculative.yaml")
    spec = cfg.scheduler.section("speculation")
    assert spec.method == "smartspec" and spec.draft_model == "llama-3.2-1b"
    again = load_config(overrides=None)
    assert again.scheduler.section("speculation").method == "none"
    data = to_dict(cfg)
    assert data["scheduler"]["speculation"]["smartspec"]["max_k"] == spec.section("smartspec").max_k
