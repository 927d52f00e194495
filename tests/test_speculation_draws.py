"""Sampled per-request acceptance, SmartSpec's online estimate and choice, the trace column
``alpha`` and the token-budget cap (docs/speculation.md, "Acceptance drawn per step")."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from goodput.sim.config import ConfigError, SchedulerConfig, load_config
from goodput.sim.engine.sequence import Sequence
from goodput.sim.engine.speculation import SmartSpec, SmartSpecOptions, SpeculationConfig, make_speculation
from goodput.sim.engine.speculation_acceptance import Acceptance
from goodput.sim.engine.speculation_draws import acceptance_uniform, acceptance_uniforms, accepted_counts
from goodput.sim.engine.speculation_run import budget_cap
from goodput.sim.simulator import simulate
from goodput.sim.workload.loaders import load_trace
from goodput.sim.workload.schema import TraceError
from tests.conftest import poisson_requests
from tests.test_speculation import run_capturing, spec_overrides


def test_numpy_draws_equal_the_scalar_reference():
    rng = np.random.default_rng(1)
    rids = [*rng.integers(0, 2 ** 62, 50).tolist(), 0, 1, 2 ** 53 + 1]
    pos = rng.integers(1, 100_000, len(rids)).tolist()
    for seed in (0, 7, 2**40 + 3):
        u = acceptance_uniforms(seed, rids, pos, 6)
        want = [[acceptance_uniform(seed, r, p, d) for d in range(1, 7)]
                for r, p in zip(rids, pos, strict=True)]
        assert u.tolist() == want  # bit for bit
    assert u.min() >= 0.0 and u.max() < 1.0


def test_draws_depend_on_the_request_not_the_batch():
    alone = acceptance_uniforms(3, [42], [17], 4)[0]
    batch = acceptance_uniforms(3, [5, 42, 9], [2, 17, 300], 4)[1]
    assert alone.tolist() == batch.tolist()
    other = acceptance_uniforms(3, [42], [18], 4)[0]
    assert alone.tolist() != other.tolist()  # another position, other draws


def test_draws_are_uniform():
    u = acceptance_uniforms(0, np.arange(20_000), np.full(20_000, 9), 4).ravel()
    assert abs(u.mean() - 0.5) < 0.005 and abs((u < 0.8).mean() - 0.8) < 0.005


def test_accepted_counts_are_the_leading_run():
    u = np.array([[0.1, 0.2, 0.3], [0.9, 0.1, 0.1], [0.1, 0.95, 0.1], [0.5, 0.5, 0.5]])
    levels = np.array([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5], [0.5, 0.9, 0.5], [0.6, 0.6, 0.4]])
    assert accepted_counts(u, levels).tolist() == [3, 0, 1, 2]
    assert accepted_counts(np.zeros((2, 0)), np.zeros((2, 0))).tolist() == [0, 0]


def test_levels_per_member_position_and_tree():
    acc = Acceptance(0.8, width=2, by_position=[0.8, 0.4])
    lv = acc.levels(np.array([np.nan, 0.4]), 3)
    # request 1 at the run's alpha: 0.8, 0.4, 0.4 per token; request 2 scaled by 0.4 / 0.8
    rates = np.array([[0.8, 0.4, 0.4], [0.4, 0.2, 0.2]])
    np.testing.assert_allclose(lv, 1 - (1 - rates) ** 2, rtol=1e-15)
    assert Acceptance(1.0).expected(3) == 4.0


class _Stand:
    """What SmartSpec reads from a Speculation: members, the prior, the cap and T(k)."""

    def __init__(self, members, t0, t1, prior=0.8):
        self.members, self.k_cap, self.epoch = members, 16, 0
        self.acceptance = SimpleNamespace(level=prior)
        self._t = (t0, t1)

    def step_total(self, k, batch, ctx_sum, ctx_max, contexts=None):
        return self._t[0] + self._t[1] * k  # a linear T(k)


def _members(*alphas):
    """Members whose SmartSpec estimate is ``alphas`` (NaN: nothing observed yet)."""
    out = []
    for i, a in enumerate(alphas):
        s = Sequence(i, 0.0, 10, 10)
        s.alpha_accepted, s.alpha_checked = a, 1.0
        out.append(s)
    return out


def test_smartspec_chooses_k_by_hand():
    """Estimates 0.9 and 0.5, T(k) = 10 + 4k: sum_i E_i(k) is 2, 3.4, 4.46, 5.314 for k = 0..3,
    goodput 0.2, 0.2429, 0.2478, 0.2415: k = 2. With T(k) = 10 + 12k, k = 1 gives 3.4 / 22 =
    0.155 < 0.2: k = 0 (a plain decode)."""
    s = SmartSpec(SmartSpecOptions(max_k=8))
    assert s.choose_k(_Stand(_members(0.9, 0.5), 10.0, 4.0), 2, 0, 0) == 2
    assert s.choose_k(_Stand(_members(0.9, 0.5), 10.0, 12.0), 2, 0, 0) == 0
    # a member not observed yet counts at the prior (0.9 here): two at 0.9, T = 10 + 2k,
    # sum E = 20 (1 - 0.9^(k+1)): goodput at k = 6, 7, 8 is 10.434 / 22 = 0.47428,
    # 11.3906 / 24 = 0.47461, 12.2516 / 26 = 0.47122: k = 7
    assert s.choose_k(_Stand(_members(0.9, float("nan")), 10.0, 2.0, prior=0.9), 2, 0, 0) == 7
    assert s.choose_k(_Stand(_members(0.9, 0.5), 10.0, 4.0), 2, 0, 0) == 2


def test_smartspec_moving_average_by_hand():
    """Moving averages (0.85 old / 0.15 new) of accepted drafts and checked positions, from the
    prior 0.8 as one pseudo-position. Steps of k = 4 accepting 3, 0, 4 check 4, 1, 4 positions:
    accepted 0.8 -> 1.13 -> 0.9605 -> 1.416425, checked 1 -> 1.45 -> 1.3825 -> 1.775125."""
    s = SmartSpec(SmartSpecOptions())
    members = _members(float("nan"), 0.5)
    members[0].alpha_accepted = float("nan")
    spec = SimpleNamespace(acceptance=SimpleNamespace(level=0.8), members=members, epoch=0)
    s.observe(spec, members, np.array([[3, 4], [0, 4], [4, 4]]), 4)
    assert members[0].alpha_accepted == pytest.approx(1.416425, rel=1e-14)
    assert members[0].alpha_checked == pytest.approx(1.775125, rel=1e-14)
    # the other started at 0.5 / 1 and accepted all 4 each time (4 checked): 4 - 3.5 x 0.85^3
    assert members[1].alpha_accepted == pytest.approx(4 - 3.5 * 0.85 ** 3, rel=1e-14)
    assert members[1].alpha_checked == pytest.approx(4 - 3 * 0.85 ** 3, rel=1e-14)
    est = s.estimates(spec, 2)
    assert est[0] == pytest.approx(1.416425 / 1.775125, rel=1e-14)
    s.observe(spec, members, np.zeros((2, 2)), 0)  # k = 0 steps draft nothing: no observation
    assert s.estimates(spec, 2)[0] == est[0]


def test_smartspec_estimate_converges_to_the_true_rate():
    """The ratio of the two averages is the truncated geometric's maximum-likelihood rate: over
    many steps it approaches the true 0.8 (accepted / k per step would approach 0.59)."""
    s = SmartSpec(SmartSpecOptions(ema_keep=0.999))
    members = _members(*([float("nan")] * 400))
    for m in members:
        m.alpha_accepted = float("nan")
    spec = SimpleNamespace(acceptance=SimpleNamespace(level=0.3), members=members, epoch=0)
    rows = [accepted_counts(acceptance_uniforms(0, np.arange(400), np.full(400, j), 4), 0.8)
            for j in range(3000)]
    s.observe(spec, members, np.array(rows), 4)
    assert abs(float(s.estimates(spec, 400).mean()) - 0.8) < 0.01


def test_smartspec_redecides_every_n_steps():
    sched = SchedulerConfig()
    sched.sections["speculation"] = SpeculationConfig(
        method="smartspec", draft_pass_s=1e-4, sections={"smartspec": SmartSpecOptions(redecide_steps=3)})
    from tests.test_speculation import TARGET
    spec = make_speculation(sched, TARGET)
    calls = []
    choose = spec.strategy.choose_k
    spec.strategy.choose_k = lambda *a, **kw: calls.append(1) or choose(*a, **kw)  # type: ignore[method-assign]
    members = _members(0.8, 0.8)
    spec.choose(1, 2, 400, 200, None, members)
    assert spec.steps_left() == 3
    spec.record(members, np.ones((2, 2), dtype=int), spec.k, 4, 0.0, 0.0)
    assert spec.steps_left() == 1
    spec.choose(1, 2, 400, 200, None, members)
    assert len(calls) == 1  # still held
    spec.record(members, np.ones((1, 2), dtype=int), spec.k, 2, 0.0, 0.0)
    spec.choose(1, 2, 400, 200, None, members)
    assert len(calls) == 2 and spec.steps_left() == 3  # expired: re-decided
    spec.choose(2, 2, 400, 200, None, members)
    assert len(calls) == 3  # the batch changed


def test_token_budget_caps_k():
    def inst(budget, width=1):
        return SimpleNamespace(policy=SimpleNamespace(token_budget=budget),
                               spec=SimpleNamespace(acceptance=Acceptance(0.8, width)))
    assert budget_cap(inst(64), 16) == 3  # 16 x (1 + 3) = 64
    assert budget_cap(inst(64), 40) == 0  # not even one draft each: a plain decode
    assert budget_cap(inst(512, width=2), 50) == 4  # 50 x (1 + 4 x 2) = 450 <= 512
    assert budget_cap(SimpleNamespace(policy=SimpleNamespace()), 50) == 16


def test_sarathi_verify_fits_the_token_budget():
    df = poisson_requests(120, rate=400, seed=3, prompt=(20, 60))
    cfg = load_config(overrides={**spec_overrides("fixed", alpha=0.8), "scheduler.policy": "sarathi",
                                 "scheduler.sarathi.token_budget": 96, "scheduler.sarathi.chunk_size": 96})
    seen = []
    import goodput.sim.engine.speculation_run as sr
    plan = sr.plan_spec_run

    def spy(inst, now, extra, fast):
        run = plan(inst, now, extra, fast)
        if run is not None:
            seen.append((run.batch, run.spec_k))
        return run
    sr_plan, sr.plan_spec_run = sr.plan_spec_run, spy
    import goodput.sim.engine.instance as si
    si_plan, si.plan_spec_run = si.plan_spec_run, spy
    try:
        res, _ = run_capturing(cfg, df)
    finally:
        sr.plan_spec_run, si.plan_spec_run = sr_plan, si_plan
    assert (res.requests.outcome == "completed").all()
    assert seen and all(b * (k + 1) <= 96 for b, k in seen)
    assert min(k for _, k in seen) < 4 < max(b for b, _ in seen)  # capped below fixed.k = 4


def _csv(tmp_path, alphas):
    df = poisson_requests(len(alphas), rate=4, seed=1)
    df["alpha"] = alphas
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    return path


def test_trace_alpha_column_flows_to_the_requests(tmp_path):
    n = 40
    trace = load_trace(_csv(tmp_path, [0.0] * (n // 2) + [""] * (n // 2)))
    assert trace.df.alpha.iloc[0] == 0.0 and np.isnan(trace.df.alpha.iloc[-1])
    cfg = load_config(overrides=spec_overrides("fixed", alpha=1.0))
    res, instances = run_capturing(cfg, trace)
    spec = instances[0].spec
    assert (res.requests.outcome == "completed").all()
    # alpha 0 rows keep one token a step, alpha 1 (the config's, for empty cells) keep k + 1
    all_zero, _ = run_capturing(cfg, load_trace(_csv(tmp_path, [0.0] * n)))
    assert all_zero.instances.iterations.sum() > res.instances.iterations.sum()
    assert 1.0 < spec.summary()["spec_tokens_per_step"] < 5.0
    zero_spec = run_capturing(cfg, load_trace(_csv(tmp_path, [0.0] * n)))[1][0].spec
    assert zero_spec.summary()["spec_tokens_per_step"] == 1.0


@pytest.mark.parametrize("value", ["1.5", "-0.2", "high"])
def test_trace_alpha_outside_0_1_is_one_line(tmp_path, value):
    with pytest.raises(TraceError) as err:
        load_trace(_csv(tmp_path, ["0.5", "0.7", value, "0.1"]))
    text = str(err.value)
    assert "column 'alpha'" in text and "row 2" in text and "\n" not in text, text


def test_dataframe_alpha_checked_before_simulating():
    df = poisson_requests(5, rate=4, seed=1)
    df["alpha"] = [0.5, 0.5, 0.5, 2.0, 0.5]
    msg = r"trace column 'alpha', row 3: value 2\.0 is not an acceptance rate"
    with pytest.raises(ValueError, match=msg):
        simulate(load_config(overrides=spec_overrides("fixed")), df)


def test_alpha_one_accepts_every_draft():
    df = pd.DataFrame({"request_id": [0], "arrival_s": [0.0], "prompt_tokens": [100], "output_tokens": [41]})
    _res, instances = run_capturing(load_config(overrides=spec_overrides("fixed", alpha=1.0)), df)
    assert instances[0].spec.steps == 8  # 40 tokens after the prefill's, 5 a step
    with pytest.raises(ConfigError, match=r"alpha must be in \[0, 1\], got 1\.01"):
        simulate(load_config(overrides=spec_overrides("fixed", alpha=1.01)), df)
