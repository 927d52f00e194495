"""Proposers (draft model, n-gram lookup, extra heads / MTP), tree speculation, the static
batch-size-to-k table and the memory a draft takes, against hand-derived values."""
from __future__ import annotations

import pytest

from goodput.sim.catalog import get_gpu, get_model
from goodput.sim.config import ConfigError, load_config
from goodput.sim.costmodel.roofline import RooflineCostModel
from goodput.sim.engine.kvcache import kv_capacity
from goodput.sim.engine.proposers import HeadsOptions, NGramOptions
from goodput.sim.engine.speculation import (
    Acceptance,
    SpeculationConfig,
    TableK,
    TableOptions,
    make_speculation,
)
from goodput.sim.simulator import simulate
from tests.conftest import poisson_requests


def target() -> RooflineCostModel:
    return RooflineCostModel(get_model("llama-3.1-8b"), get_gpu("h100"), 1)


def sched(**spec):
    cfg = load_config(None, {"scheduler": {"speculation": {"method": "fixed", **spec}}})
    return cfg.scheduler


def test_tree_acceptance_is_per_level_any_candidate():
    a = Acceptance(0.6, width=3)
    p = 1 - 0.4 ** 3
    assert a.level == pytest.approx(p)
    assert a.expected(4) == pytest.approx((1 - p ** 5) / (1 - p))
    assert a.verify_tokens(4) == 13
    assert Acceptance(0.6).expected(4) == pytest.approx((1 - 0.6 ** 5) / 0.4)
    with pytest.raises(ConfigError, match="tree_width must be >= 1"):
        Acceptance(0.6, width=0)


def test_ngram_drafts_at_a_cpu_cost_per_step():
    spec = make_speculation(sched(proposer="ngram", ngram={"step_s": 1e-4, "per_seq_s": 2e-5}), target())
    draft, verify = spec.step_time(4, 8, 8000, 1500)
    assert draft == pytest.approx(1e-4 + 8 * 2e-5)  # whatever k is
    assert verify == pytest.approx(target().verify_time(8, 5, 8000, 1500, None))
    with pytest.raises(ConfigError, match=r"ngram\.step_s and per_seq_s must be >= 0"):
        make_speculation(sched(proposer="ngram", ngram={"step_s": -1.0}), target())


@pytest.mark.parametrize("sequential", [True, False])
def test_heads_cost_a_share_of_a_target_pass(sequential):
    t = target()
    spec = make_speculation(sched(proposer="heads", heads={"layers_per_pass": 2.0,
                                                            "sequential": sequential}), t)
    a, b = t.decode_coefficients(4)
    share = 2.0 / get_model("llama-3.1-8b").layers
    draft, _ = spec.step_time(3, 4, 1000, 400)
    # sequential: 3 passes, pass i attending the i tokens drafted before it; else one pass
    expect = share * (3 * a + b * (4 * 3 * 2 // 2) + 3 * b * 1000) if sequential else share * (a + b * 1000)
    assert draft == pytest.approx(expect)


def test_a_tree_verifies_every_candidate_and_drafts_them_all():
    t = target()
    spec = make_speculation(sched(tree_width=2, draft_pass_s=1e-3), t)
    draft, verify = spec.step_time(3, 4, 1000, 400)
    assert draft == pytest.approx(3e-3)
    assert verify == pytest.approx(t.verify_time(4, 7, 1000, 400, None))


def test_static_table_picks_k_by_batch_size():
    table = TableK(TableOptions([[1, 5], [8, 3], [32, 0]]))
    assert [table.choose_k(None, b, 0, 0) for b in (1, 7, 8, 31, 32, 200)] == [5, 5, 3, 3, 0, 0]
    for bad in ([[8, 3], [1, 5]], [[0, 2]], [[1, 99]], []):
        with pytest.raises(ConfigError, match=r"table\.thresholds"):
            TableK(TableOptions(bad))


def test_unknown_proposer_names_the_choices():
    with pytest.raises(ConfigError, match=r"unknown scheduler\.speculation\.proposer 'medusa'.*heads"):
        make_speculation(sched(proposer="medusa"), target())


def test_a_draft_model_takes_weights_and_kv_next_to_the_target():
    m, d, gpu = get_model("llama-3.1-8b"), get_model("llama-3.2-1b"), get_gpu("h100")
    alone = kv_capacity(m, gpu, 1, 16, 0.9, 2.0)
    cfg = load_config(None, {"cluster": [{"model": "llama-3.1-8b", "gpu": "h100"}],
                             "cost_model": {"kind": "roofline"},
                             "scheduler": {"speculation": {"method": "fixed",
                                                           "draft_model": "llama-3.2-1b"}}})
    res = simulate(cfg, poisson_requests(5, 1.0))
    free = gpu.memory_bytes * 0.9 - m.weight_bytes(1) - d.weight_bytes(1) - 2e9
    expect = int(free // ((m.kv_bytes_per_token(1) + d.kv_bytes_per_token(1)) * 16))
    assert int(res.instances.kv_blocks.iloc[0]) == expect < alone.total_blocks
    # n-gram lookup holds nothing
    cfg.scheduler.sections["speculation"] = SpeculationConfig(method="fixed", proposer="ngram",
                                                             sections={"ngram": NGramOptions()})
    res = simulate(cfg, poisson_requests(5, 1.0))
    assert int(res.instances.kv_blocks.iloc[0]) == alone.total_blocks


def test_mtp_layers_take_their_weights_and_kv():
    m, gpu = get_model("llama-3.1-8b"), get_gpu("h100")
    cfg = load_config(None, {"cluster": [{"model": "llama-3.1-8b", "gpu": "h100"}],
                             "cost_model": {"kind": "roofline"},
                             "scheduler": {"speculation": {"method": "fixed", "proposer": "heads"}}})
    cfg.scheduler.sections["speculation"].sections["heads"] = HeadsOptions(layers_per_pass=1.0)
    res = simulate(cfg, poisson_requests(5, 1.0))
    f = 1 / m.layers
    free = gpu.memory_bytes * 0.9 - m.weight_bytes(1) * (1 + f) - 2e9
    assert int(res.instances.kv_blocks.iloc[0]) == int(free // (m.kv_bytes_per_token(1) * (1 + f) * 16))


def test_position_dependent_acceptance_chains_the_positions():
    a = Acceptance(0.8, by_position=[0.9, 0.7, 0.5])
    # positions 1..5: 0.9, 0.7, 0.5, 0.5, 0.5
    expect = 1 + 0.9 + 0.9 * 0.7 + 0.9 * 0.7 * 0.5 + 0.9 * 0.7 * 0.25 + 0.9 * 0.7 * 0.125
    assert a.expected(5) == pytest.approx(expect)
    assert Acceptance(0.8, by_position=[0.8]).expected(4) == pytest.approx(Acceptance(0.8).expected(4))
    with pytest.raises(ConfigError, match=r"alpha_by_position values must be in \[0, 1\], got 1\.2"):
        Acceptance(0.8, by_position=[0.9, 1.2])


def test_per_request_acceptance_is_drawn_seeded_and_sets_levels():
    import numpy as np

    from goodput.sim.engine.sequence import Sequence

    spec = make_speculation(sched(alpha_dist="beta:8,2", seed=3, draft_pass_s=1e-3), target())
    members = [Sequence(rid, 0.0, 100, 50) for rid in (4, 9, 17)]
    alphas = [float(np.random.default_rng([3, r]).beta(8, 2)) for r in (4, 9, 17)]
    assert all(s.alpha != s.alpha for s in members)  # drawn lazily, on first use
    drawn = spec.member_arrays(1, members)[-1]
    assert [s.alpha for s in members] == alphas == drawn.tolist()
    levels = spec.levels(1, 3, drawn)
    assert levels.shape == (3, 3) and np.array_equal(levels, np.repeat(drawn[:, None], 3, axis=1))
    assert spec.acceptance.expected(3, alphas[0]) == pytest.approx((1 - alphas[0] ** 4) / (1 - alphas[0]))
    for bad in ("beta:0,2", "normal:1,2", "beta:8"):
        with pytest.raises(ConfigError, match="alpha_dist"):
            make_speculation(sched(alpha_dist=bad, draft_pass_s=1e-3), target())


def test_per_request_acceptance_runs_the_same_in_both_modes():
    import numpy as np

    def run(fast):
        cfg = load_config(None, {"cluster": [{"model": "llama-3.1-8b", "gpu": "h100"}],
                                 "cost_model": {"kind": "roofline"}, "fast_forward": fast,
                                 "scheduler": {"speculation": {"method": "smartspec", "draft_pass_s": 5e-4,
                                                               "alpha_dist": "beta:6,3",
                                                               "alpha_by_position": [0.85, 0.7]}}})
        return simulate(cfg, poisson_requests(150, 6.0)).requests

    a, b = run(True), run(False)
    for col in ("first_token_s", "completion_s"):
        np.testing.assert_allclose(a[col].to_numpy(), b[col].to_numpy(), rtol=1e-9, err_msg=col)
    assert (a.outcome == "completed").all()
