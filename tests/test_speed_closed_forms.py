"""The engine-speed shortcuts (issue 21) give exactly what the long way gives.

Each shortcut replaces several calls with one (a run priced in one loop, a policy's prediction
cut to what the instance keeps, SimPy's ``step`` inlined in ``run``, the roofline's memo split by
token and sequence count); these check each against the long way bit for bit, plus a
hand-derivable case for the new pricing call.
"""
from __future__ import annotations

import random

import pytest
import simpy

from goodput.sim.catalog import get_gpu, get_model
from goodput.sim.config import CostModelConfig
from goodput.sim.costmodel.base import Batch, CostModel
from goodput.sim.costmodel.factory import make_cost_model
from goodput.sim.costmodel.roofline import RooflineCostModel
from goodput.sim.engine.clock import SimClock
from goodput.sim.engine.records import RecordSink
from goodput.sim.engine.sequence import Sequence
from tests.test_mixed_runs import sarathi


class Toy(CostModel):
    """batch_time = new tokens + context / 2: every iteration's cost by hand."""

    def batch_time(self, batch: Batch) -> float:
        return float(sum(batch.new_tokens)) + 0.5 * sum(batch.context_tokens)

    def decode_coefficients(self, batch_size: int) -> tuple[float, float]:
        return float(batch_size), 0.5


def test_default_run_times_by_hand():
    """Two iterations of one chunk next to two decodes (contexts 5 and 7): iteration 0 is new
    [3, 1, 1] over [10, 5, 7] = 5 + 11; iteration 1 is [2, 1, 1] over [13, 6, 8] = 4 + 13.5."""
    durs = Toy().run_times([[3], [2]], [10], 2, 1, 12, 7, lambda extra: [5 + extra, 7 + extra])
    assert durs == [16.0, 17.5]
    assert Toy().run_times([[3, 4], [1, 1]], [0, 2]) == [7.0 + 1.0, 2.0 + 0.5 * (3 + 6)]


@pytest.mark.parametrize("model,gpu,tp", [("llama-3.1-8b", "h100", 1), ("llama-3.1-70b", "a100-80gb", 2)])
def test_roofline_run_times_equal_iteration_time(model, gpu, tp):
    """The roofline's one-loop pricing of a run equals pricing each iteration, to the bit, with
    and without a decode group, for chunks of one token (a recompute's tail) and many."""
    cost = make_cost_model(get_model(model), get_gpu(gpu), tp, CostModelConfig(kind="roofline"))
    rng = random.Random(5)
    for _ in range(200):
        m = rng.randint(1, 3)
        ctx0 = [rng.randint(0, 6000) for _ in range(m)]
        sizes = [[rng.choice([1, rng.randint(1, 512)]) for _ in range(m)] for _ in range(rng.randint(1, 6))]
        decodes = rng.choice([0, rng.randint(1, 128)])
        contexts = [rng.randint(1, 4000) for _ in range(decodes)]
        csum, cmax = sum(contexts), max(contexts, default=0)
        got = cost.run_times(sizes, ctx0, decodes, 1, csum, cmax,
                             lambda extra, c=contexts: [x + extra for x in c])
        want, ctx = [], list(ctx0)
        for j, new in enumerate(sizes):
            if decodes:
                want.append(cost.iteration_time(new, ctx, decodes, 1, csum + j * decodes, cmax + j))
            else:
                want.append(cost.iteration_time(new, ctx))
            ctx = [c + n for c, n in zip(ctx, new, strict=True)]
        assert got == want


def test_roofline_memo_parts_sum_as_before():
    """The context-free time assembled from its per-token and per-sequence parts is the sum
    the roofline always computed, in the same order (the same bits)."""
    cost = RooflineCostModel(get_model("llama-3.1-70b"), get_gpu("a100-80gb"), 2)
    for tokens, seqs in [(1, 1), (512, 128), (300, 7), (8000, 1), (129, 128), (512, 1)]:
        embed = tokens * cost.model.hidden_size * cost._act / cost._bw
        direct = (cost._linear_time(tokens) + cost._lm_head_time(seqs) + embed
                  + cost._allreduce_time(tokens) + cost._fixed_gpu_time(seqs))
        assert cost._context_free_time(tokens, seqs) == direct
        cost._free_cache.clear()  # the pair again, from the parts alone
        assert cost._context_free_time(tokens, seqs) == direct


def _saturated_sarathi_instance():
    """A Sarathi instance with running decodes and a long prompt in prefill."""
    from goodput.sim.simulator import build_cluster

    cfg = sarathi(True, chunk=64, budget=96, count=1, blocks=4000)
    inst = build_cluster(cfg, RecordSink()).instances[0]
    for rid in range(20):  # short prompts that become decodes
        inst.submit(Sequence(rid, 0.0, 17 + rid, 400))
    for _ in range(12):
        plan = inst.next_plan(0.0)
        assert plan is not None
        inst.finish_iteration(plan, 0.0, 0.01)
    inst.submit(Sequence(99, 0.0, 3000, 10))
    return inst


def test_upcoming_limit_only_cuts_the_prediction():
    inst = _saturated_sarathi_instance()
    plan = inst.next_plan(0.0)
    assert plan is not None and plan.prefills and inst.decode.members
    full = inst.policy.upcoming(inst, plan)
    assert len(full) > 3
    for limit in range(len(full) + 2):
        assert inst.policy.upcoming(inst, plan, limit) == full[:limit]


@pytest.mark.parametrize("chunk,budget,blocks", [(128, 256, 900), (512, 512, 3000), (100, 130, 600),
                                                 (64, 96, 400)])
def test_one_prompt_rows_equal_the_loop(monkeypatch, chunk, budget, blocks):
    """Sarathi's closed form for one prompt in prefill gives exactly the rows of the general
    loop, at every boundary of whole simulations (roomy and tight KV, decodes squeezing the
    budget), and both outcomes -- rows, and None where blocks could run short -- occur."""
    from goodput.sim.engine.policies.sarathi import SarathiPolicy
    from goodput.sim.simulator import simulate
    from tests.conftest import poisson_requests

    closed = SarathiPolicy._one_prompt_rows
    upcoming = SarathiPolicy.upcoming
    seen = {"rows": 0, "none": 0}

    def counted(self, *args):
        rows = closed(self, *args)
        seen["none" if rows is None else "rows"] += 1
        return rows

    def checked(self, view, plan, limit=1 << 30):
        fast = upcoming(self, view, plan, limit)
        monkeypatch.setattr(SarathiPolicy, "_one_prompt_rows", lambda *a: None)
        loop = upcoming(self, view, plan, limit)
        monkeypatch.setattr(SarathiPolicy, "_one_prompt_rows", counted)
        assert fast == loop
        return fast

    monkeypatch.setattr(SarathiPolicy, "_one_prompt_rows", counted)
    monkeypatch.setattr(SarathiPolicy, "upcoming", checked)
    df = poisson_requests(250, rate=10, prompt=(20, 3000), output=(1, 200), seed=23)
    simulate(sarathi(True, chunk=chunk, budget=budget, blocks=blocks), df)
    assert seen["rows"] > 20


def test_one_prompt_rows_fall_back_when_blocks_run_short(monkeypatch):
    """With free blocks shrunk (a reservation) below what the rest of the prompt and the decode
    steps until it finishes take, the closed form declines and the loop's shorter answer
    stands; with enough, both agree on the whole prompt."""
    from goodput.sim.engine.policies.sarathi import SarathiPolicy

    answers = set()
    for left in range(0, 400, 7):  # free blocks left after the reservation
        inst = _saturated_sarathi_instance()
        plan = inst.next_plan(0.0)
        assert plan is not None and len(plan.prefills) == 1 and not inst.waiting
        inst.kv.reserve(max(0, inst.kv.total - inst.kv.used - left))
        fast = inst.policy.upcoming(inst, plan)
        seq, n = plan.prefills[0]
        done = seq.prefilled + n
        budget = inst.policy.token_budget - len(inst.running)
        answers.add(inst.policy._one_prompt_rows(inst, done, seq.prefill_target, -(-done // inst.bs),
                                                 budget, True, 1 << 30) is None)
        with monkeypatch.context() as m:
            m.setattr(SarathiPolicy, "_one_prompt_rows", lambda *a: None)
            assert inst.policy.upcoming(inst, plan) == fast
    assert answers == {True, False}


def test_decode_blocks_at_adds_up_to_decode_step_blocks():
    inst = _saturated_sarathi_instance()
    assert inst.decode.members and inst.kv.phases.size
    for n in (1, 2, 5, 16, 17, 40):
        assert sum(inst.decode_blocks_at(j) for j in range(n)) == inst.decode_step_blocks(n)


def _workload(env, log: list, use_call_later: bool):
    """Processes, timeouts with equal times, scheduled calls scheduling more calls."""

    def proc(name, delays):
        for d in delays:
            yield env.timeout(d)
            log.append((env.now, name))

    env.process(proc("a", [1.0, 0.5, 0.5]))
    env.process(proc("b", [1.5, 0.0, 2.0]))

    def tick(n):
        def fire(_ev):
            log.append((env.now, f"tick{n}"))
            if n < 6:
                env.call_later(0.5, tick(n + 1)) if use_call_later else env.timeout(0.5).callbacks.append(
                    tick(n + 1))
        return fire

    if use_call_later:
        env.call_later(0.0, tick(0))
    else:
        env.timeout(0.0).callbacks.append(tick(0))


@pytest.mark.parametrize("until", [None, 2.0, 2.5, 100])
def test_sim_clock_run_matches_simpy(until):
    """Same callbacks in the same order at the same times as SimPy's own loop, with and
    without ``until`` (an event at exactly ``until`` does not run, as in SimPy)."""
    mine, ref = [], []
    clock = SimClock()
    _workload(clock, mine, True)
    env = simpy.Environment()
    env.call_later = None  # type: ignore[attr-defined]  # the reference schedules timeouts
    _workload(env, ref, False)
    assert clock.run(until) == env.run(until)
    assert mine == ref and clock.now == env.now
    if until is not None and until < 100:  # and it resumes where it stopped
        clock.run()
        env.run()
        assert mine == ref and clock.now == env.now


def test_sim_clock_step_matches_simpy():
    """Stepping one event at a time (scheduled calls sit on the heap as one-element lists, SimPy
    events as themselves) runs the same callbacks in the same order as SimPy's ``step``."""
    mine, ref = [], []
    clock = SimClock()
    _workload(clock, mine, True)
    env = simpy.Environment()
    env.call_later = None  # type: ignore[attr-defined]
    _workload(env, ref, False)
    while clock.peek() < float("inf"):
        clock.step()
    while env.peek() < float("inf"):
        env.step()
    assert mine == ref and clock.now == env.now
    with pytest.raises(simpy.core.EmptySchedule):
        clock.step()


def test_upcoming_is_empty_when_a_prompt_finishes_in_the_plan():
    """``mixed_run.run_sizes`` skips ``upcoming`` when a prompt of the plan finishes in its first
    iteration; the policy's answer there is ``[]``, for every prompt length around the chunk."""
    for prompt in (1, 30, 63, 64, 65, 95, 96, 97, 200):
        inst = _saturated_sarathi_instance()
        inst.submit(Sequence(500 + prompt, 0.0, prompt, 5))
        for _ in range(80):
            plan = inst.next_plan(0.0)
            assert plan is not None
            if any(s.prefilled + n >= s.prefill_target for s, n in plan.prefills):
                assert inst.policy.upcoming(inst, plan) == []
            inst.finish_iteration(plan, 0.0, 0.01)


def test_sim_clock_run_until_event_and_failures():
    clock = SimClock()
    done = clock.timeout(3.0, value="v")
    assert clock.run(done) == "v" and clock.now == 3.0
    assert clock.run(done) == "v"  # already processed

    def boom(_ev):
        raise KeyError("from a callback")

    clock.call_later(1.0, boom)
    with pytest.raises(KeyError):
        clock.run()
    clock2 = SimClock()
    clock2.event().fail(ValueError("failed event"))
    with pytest.raises(ValueError, match="failed event"):
        clock2.run()
    with pytest.raises(RuntimeError, match="until"):
        SimClock().run(clock2.event())
    with pytest.raises(ValueError, match="greater"):
        SimClock(5.0).run(4.0)


def test_quiet_boundaries_skip_only_marked_schedules():
    """A boundary with nothing queued skips the policy's call only for a ``schedule`` marked
    ``quiet_decode_only``; a subclass overriding it unmarked is asked every time."""
    from goodput.sim.engine.policies import POLICIES
    from goodput.sim.engine.policies.base import quiet_schedule
    from goodput.sim.engine.policies.sarathi import SarathiPolicy
    from goodput.sim.engine.policies.vllm import VLLMPolicy

    class Unmarked(VLLMPolicy):
        def schedule(self, view, now):
            return super().schedule(view, now)

    class Remarked(Unmarked):
        quiet_decode_only = True

        def schedule(self, view, now):
            return super().schedule(view, now)

    class Inherits(SarathiPolicy):  # the marked schedule itself: still quiet
        pass

    assert quiet_schedule(SarathiPolicy) and quiet_schedule(VLLMPolicy) and quiet_schedule(Inherits)
    assert not quiet_schedule(Unmarked)
    assert quiet_schedule(Remarked)
    assert {n for n, c in POLICIES.items() if quiet_schedule(c)} >= {"vllm", "sarathi", "orca", "static"}
