"""Chunked-prefill runs (``MixedRun``) executed as one event equal stepping them one by one.

Sarathi-Serve puts a prompt chunk next to the decodes in nearly every iteration; the engine runs
the iterations the policy says repeat (``BatchingPolicy.repeats``) as one event. These cases make
such runs common (small chunks, long prompts, saturation) and check, beside per-request equality
with step mode for every router and both preemption modes, that runs really happened, that
arrivals, load-reading routers and cuts landed inside them, and the run's hand-checkable pieces.
"""
from __future__ import annotations

from typing import ClassVar

import pytest

import goodput.sim.engine.instance as instance_mod
from goodput.sim.catalog import get_gpu, get_model
from goodput.sim.config import CostModelConfig
from goodput.sim.costmodel.factory import make_cost_model
from goodput.sim.engine.mixed_run import MixedRun
from goodput.sim.engine.view import Plan
from tests.conftest import poisson_requests
from tests.test_fast_forward import COLUMNS, MIGRATION_COLUMNS, ROUTERS, assert_same, both, make_cfg


@pytest.fixture
def run_lengths(monkeypatch):
    """Records the length of every MixedRun the engine starts."""
    seen: list[int] = []
    priced = MixedRun.priced

    def spy(*a, **k):
        run = priced(*a, **k)
        seen.append(run.k)
        return run

    monkeypatch.setattr(instance_mod.MixedRun, "priced", staticmethod(spy))
    return seen


def sarathi(fast, chunk=128, budget=256, **kw):
    cfg = make_cfg(fast, policy="sarathi", **kw)
    opts = cfg.scheduler.section("sarathi")
    opts.chunk_size, opts.token_budget = chunk, budget
    return cfg


def both_sarathi(df, **kw):
    return both(df, make=sarathi, **kw)


@pytest.mark.parametrize("preemption", ["recompute", "swap"])
@pytest.mark.parametrize("router", ROUTERS)
def test_chunk_runs_equal_step_mode(router, preemption, run_lengths):
    df = poisson_requests(300, rate=12, prompt=(300, 3000), output=(1, 300), seed=21)
    fast, step = both_sarathi(df, router=router, preemption=preemption, blocks=900)
    assert any(k > 1 for k in run_lengths), "no chunked run was fast-forwarded"
    assert fast.instances.iterations.sum() == step.instances.iterations.sum()
    assert_same(fast, step, COLUMNS + MIGRATION_COLUMNS)


@pytest.mark.parametrize("chunk,budget", [(512, 512), (64, 512), (100, 130)])
def test_chunk_and_budget_shapes(chunk, budget, run_lengths):
    """A chunk using the whole budget, one leaving budget for admissions, and one the decodes
    squeeze (budget - running < chunk)."""
    df = poisson_requests(250, rate=9, prompt=(200, 4000), output=(5, 200), seed=22)
    fast, step = both_sarathi(df, chunk=chunk, budget=budget, blocks=1200, mem=None)
    assert any(k > 1 for k in run_lengths)
    assert_same(fast, step)


def test_cut_inside_runs(run_lengths):
    """``max_sim_time_s`` inside a run: the iterations done are applied, the rest unfinished."""
    df = poisson_requests(400, rate=15, prompt=(500, 4000), output=(1, 100), seed=23)
    for cut in (3.0, 7.77, 12.345):
        fast, step = both_sarathi(df, cutoff=cut, blocks=1500)
        assert (step.requests.outcome == "unfinished").any()
        assert_same(fast, step)


def test_run_prices_each_iteration_and_bisects_boundaries():
    cost = make_cost_model(get_model("llama-3.1-8b"), get_gpu("h100"), 1, CostModelConfig(kind="roofline"))

    class Seq:  # the two fields a run reads of a prompt chunk's sequence
        prefilled, prefill_target = 100, 2000

    class NoDecodes:
        members: ClassVar[list] = []

    plan = Plan([(Seq(), 300)], decode_tokens=0)
    sizes = [[300], [300], [300], [250]]
    blocks = lambda t: -(-t // 16)  # noqa: E731
    run = MixedRun.priced(10.0, plan, sizes, cost, NoDecodes(), blocks, extra=0.5)  # type: ignore[arg-type]
    want = [cost.iteration_time([n], [100 + 300 * j]) for j, (n,) in enumerate(sizes)]
    want[0] += 0.5
    assert run.durs == want
    assert run.span(4) == pytest.approx(sum(want))
    assert run.steps_done_by(10.0 + want[0]) == 1 and run.steps_done_by(10.0 + want[0] - 1e-9) == 0
    assert run.first_boundary_at_or_after(want[0] + 1e-9) == 2
    assert run.first_boundary_at_or_after(1e9) == 4
    assert run.work_done(4) == 1150 and run.chunk_tokens(4) == [1150]
    # blocks of chunks 2..j+1 (a step engine allocates a chunk when its iteration starts)
    assert run.chunk_blocks_started(0) == 0
    assert run.chunk_blocks_started(1) == blocks(100 + 600) - blocks(100 + 300)
    assert run.chunk_blocks_started(3) == blocks(100 + 1150) - blocks(100 + 300)
    run.cut(2)
    assert run.k == 2 and len(run.ends) == 2 and run.work_done(2) == 600


def test_sarathi_predicts_full_chunks_then_the_last_piece():
    """One 2,000-token prompt alone on an instance, chunk 512: the run is 512, 512, 512, 464."""
    from goodput.sim.engine.records import RecordSink
    from goodput.sim.engine.sequence import Sequence
    from goodput.sim.simulator import build_cluster

    cfg = sarathi(True, chunk=512, budget=512, count=1, blocks=4000)
    inst = build_cluster(cfg, RecordSink()).instances[0]
    inst.submit(Sequence(0, 0.0, 2000, 10))
    plan = inst.next_plan(0.0)
    assert [n for _, n in plan.prefills] == [512]
    assert inst.policy.upcoming(inst, plan) == [[512], [512], [464]]
