"""Fast-forwarding decode runs must give exactly the per-request results of stepping.

An equivalence matrix: every router x batching policy x preemption mode (recompute, swap with
swap space that lasts and swap space that runs out), Llumnix live migration under overload,
drain / scale-out events and ``max_sim_time_s`` cuts. Every case runs the same trace with
``fast_forward`` on and off and checks, for both runs, conservation (each request of the input
recorded exactly once; a completed request generated exactly its output tokens), then that every
per-request column agrees to rtol 1e-9, and that the scenario really exercised what it is meant
to (preemptions, swaps, swap fallback, migrations, unfinished requests at a cut).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from goodput.sim.config import ClusterEvent, InstanceGroupConfig, SimConfig
from goodput.sim.simulator import simulate
from tests.conftest import poisson_requests, with_priorities

COLUMNS = ["instance", "first_scheduled_s", "first_token_s", "completion_s", "generated_tokens",
           "preemptions", "max_tbt_s", "outcome"]
MIGRATION_COLUMNS = ["migrations", "migrated_bytes"]
INSTANCE_COLUMNS = ["iterations", "preemptions", "swaps"]

ROUTERS = ["round_robin", "least_outstanding_tokens", "least_kv", "power_of_two", "llumnix"]
PAGED = ["vllm", "sarathi", "decode_priority"]  # policies that preempt (recompute or swap)
RESERVING = ["orca", "static"]  # reserve a request's whole length up front: never preempt
POLICY_MODES = [(p, m) for p in PAGED for m in ("recompute", "swap")] + [(p, "recompute") for p in RESERVING]

def make_cfg(fast, *, router="round_robin", policy="vllm", preemption="recompute", count=2,
             blocks=800, mem=None, swap_gb=4.0, max_batch=256, cutoff=None, events=(),
             migration=True, link_gbs=25.0, max_stages=8, watermark=0.01):
    cfg = SimConfig(cluster=[InstanceGroupConfig(model="llama-3.1-8b", gpu="h100", count=count)])
    cfg.scheduler.policy = policy
    cfg.scheduler.preemption = preemption
    cfg.scheduler.swap_space_gb = swap_gb
    cfg.scheduler.max_batch_size = max_batch
    cfg.scheduler.watermark = watermark
    if mem is not None:
        cfg.scheduler.gpu_memory_utilization = mem
    else:
        cfg.scheduler.num_gpu_blocks = blocks  # small cache: memory pressure
    cfg.cost_model.kind = "roofline"
    cfg.router.name = router
    cfg.router.migration = migration
    cfg.router.link.bandwidth_gbs = link_gbs
    cfg.router.max_stages = max_stages
    cfg.events = [ClusterEvent(**e) for e in events]
    cfg.fast_forward = fast
    cfg.max_sim_time_s = cutoff
    return cfg


def both(df, make=None, **kw):
    """(fast-forward result, step result) of one scenario, each checked for conservation;
    ``make(fast, **kw)`` builds the config (``make_cfg`` unless given)."""
    make = make or make_cfg
    fast, step = simulate(make(True, **kw), df), simulate(make(False, **kw), df)
    for name, res in (("fast-forward", fast), ("step", step)):
        assert_conserved(df, res, name)
    return fast, step


def assert_conserved(df, res, name=""):
    r = res.requests
    missing = sorted(set(df.request_id) - set(r.request_id))
    assert r.request_id.is_unique, f"{name}: a request is recorded twice"
    assert len(r) == len(df) and not missing, \
        f"{name}: {len(r)} rows for {len(df)} requests, missing {missing[:10]}"
    done = r[r.outcome == "completed"]
    bad = done[done.generated_tokens != done.output_tokens]
    assert bad.empty, f"{name}: completed requests with generated != output: {bad.request_id.tolist()[:10]}"
    assert (r.generated_tokens <= r.output_tokens).all(), f"{name}: generated more than output"


def assert_same(a, b, columns=COLUMNS):
    assert (a.requests.request_id.to_numpy() == b.requests.request_id.to_numpy()).all()
    for col in columns:
        x, y = a.requests[col], b.requests[col]
        if x.dtype.kind == "f":
            np.testing.assert_allclose(x.to_numpy(), y.to_numpy(), rtol=1e-9, atol=1e-9, err_msg=col)
        else:
            diff = int((x.astype(str) != y.astype(str)).sum())
            assert diff == 0, f"{col}: {diff} requests differ"
    for col in INSTANCE_COLUMNS:
        assert a.instances[col].tolist() == b.instances[col].tolist(), col
    assert a.migration == b.migration


def swaps(res) -> int:
    return int(res.instances["swaps"].sum())


def preemptions(res) -> int:
    return int(res.instances["preemptions"].sum())


def completed(res) -> int:
    return int((res.requests.outcome == "completed").sum())


# --------------------------------------------------------------------------- unpressured baselines
@pytest.mark.parametrize("router", ROUTERS)
def test_equivalence_moderate_load(router):
    df = poisson_requests(800, rate=25, seed=10)
    fast, step = both(df, router=router, mem=0.9)
    assert completed(fast) == len(df)
    assert_same(fast, step, COLUMNS + MIGRATION_COLUMNS)  # iterations per instance included


def test_equivalence_with_batch_limit_and_cutoff():
    df = poisson_requests(1000, rate=30, seed=12)
    fast, step = both(df, mem=0.9, max_batch=8, cutoff=20.0)
    assert (fast.requests.outcome == "unfinished").any()
    assert_same(fast, step)


# ---------------------------------------------------------- routers x policies x preemption mode
def case(case_id, *args):
    return pytest.param(*args, id=case_id)


MATRIX = [case(f"{r}-{p}-{m}", r, p, m) for r in ROUTERS for p, m in POLICY_MODES]


@pytest.mark.parametrize("router,policy,preemption", MATRIX)
def test_router_policy_preemption_matrix(router, policy, preemption):
    df = poisson_requests(400, rate=20, seed=13)
    fast, step = both(df, router=router, policy=policy, preemption=preemption, blocks=800)
    assert completed(step) == len(df)
    if policy in PAGED:
        assert preemptions(step) > 0  # memory pressure really preempted
    if preemption == "swap":
        assert swaps(step) > 0
    assert_same(fast, step, COLUMNS + MIGRATION_COLUMNS)


# ---------------------------------------------- swap space that runs out: falls back to recompute
EXHAUST = [case(f"exhaust-{r}-{p}", r, p) for r in ("round_robin", "least_kv", "llumnix") for p in PAGED]


@pytest.mark.parametrize("router,policy", EXHAUST)
def test_swap_space_exhaustion(router, policy):
    df = poisson_requests(400, rate=20, seed=14)
    # 0.04 GB of host memory holds ~19 blocks: the first victims swap, later ones are recomputed
    fast, step = both(df, router=router, policy=policy, preemption="swap", blocks=700, swap_gb=0.04)
    assert 0 < swaps(step) < preemptions(step)
    assert_same(fast, step, COLUMNS + MIGRATION_COLUMNS)


# ------------------------------------------------------------- Llumnix live migration, overloaded
MIGRATE = [case(f"migrate-{p}-{m}", p, m) for p, m in POLICY_MODES if p != "static"]


@pytest.mark.parametrize("policy,preemption", MIGRATE)
def test_llumnix_migration_under_overload(policy, preemption):
    """4 small instances at 80 req/s, 20% high priority: freeness-based dispatch cannot keep
    them balanced, so requests are live-migrated. (Static batching takes no migrations.)"""
    df = with_priorities(poisson_requests(400, rate=80, seed=15), 0.2, seed=15)
    fast, step = both(df, router="llumnix", policy=policy, preemption=preemption, count=4, blocks=600)
    assert step.migration["completed"] > 0 and (step.requests.migrations > 0).any()
    if policy in PAGED:
        assert preemptions(step) > 0
    if preemption == "swap":
        assert swaps(step) > 0
    assert_same(fast, step, COLUMNS + MIGRATION_COLUMNS)


# ------------------------------------------------------------------ drain and scale-out events
EVENTS = {
    "drain": [{"time_s": 3.0, "action": "drain", "instance": 0}],
    "scale_out": [{"time_s": 3.0, "action": "scale_out", "group": 0}],
    "drain+scale_out": [{"time_s": 2.0, "action": "drain", "instance": 1},
                        {"time_s": 5.0, "action": "scale_out", "group": 0}],
}
EVENT_CASES = [case(f"{r}-{e}-{p}-{m}", r, e, p, m) for r in ROUTERS for e in EVENTS
               for p, m in (("vllm", "recompute"), ("vllm", "swap"), ("sarathi", "swap"))]


@pytest.mark.parametrize("router,events,policy,preemption", EVENT_CASES)
def test_drain_and_scale_out(router, events, policy, preemption):
    df = poisson_requests(400, rate=40, seed=17)
    fast, step = both(df, router=router, policy=policy, preemption=preemption, count=3, blocks=600,
                      events=EVENTS[events])
    assert completed(step) == len(df)
    r = step.requests
    if "drain" in events:
        ev = EVENTS[events][0]
        # nothing arriving after the drain is routed to the drained instance
        assert not (r[r.arrival_s > ev["time_s"]].instance == ev["instance"]).any()
    if "scale_out" in events:
        assert len(step.instances) == 4 and (r.instance == 3).any()
    if router == "llumnix" and "drain" in events:
        assert step.migration["completed"] > 0
    assert preemptions(step) > 0
    if preemption == "swap":
        assert swaps(step) > 0
    assert_same(fast, step, COLUMNS + MIGRATION_COLUMNS)


# ------------------------------------------------------------------------- max_sim_time_s cuts
CUT_CONFIGS = {
    "rr-vllm-recompute": {"router": "round_robin", "policy": "vllm", "preemption": "recompute"},
    "rr-vllm-swap": {"router": "round_robin", "policy": "vllm", "preemption": "swap"},
    "lot-sarathi-swap": {"router": "least_outstanding_tokens", "policy": "sarathi", "preemption": "swap"},
    "kv-decode_priority-recompute": {"router": "least_kv", "policy": "decode_priority"},
    "p2-orca": {"router": "power_of_two", "policy": "orca"},
    "rr-static": {"router": "round_robin", "policy": "static"},
    "llumnix-vllm-recompute": {"router": "llumnix", "policy": "vllm", "count": 4, "blocks": 600},
    "llumnix-sarathi-swap-drain": {"router": "llumnix", "policy": "sarathi", "preemption": "swap",
                                   "count": 4, "blocks": 600,
                                   "events": [{"time_s": 2.0, "action": "drain", "instance": 0}]},
}
CUTS = [0.5, 2.0, 4.0, 7.0, 11.0]
CUT_CASES = [case(f"{c}-cut{t}", c, t) for c in CUT_CONFIGS for t in CUTS]


@pytest.mark.parametrize("config,cut", CUT_CASES)
def test_max_sim_time_cut(config, cut):
    """Overloaded (60 req/s for ~7 s): every cut leaves requests running, queued (or swapped),
    and not yet arrived; all of them are recorded once, identically in both modes."""
    df = with_priorities(poisson_requests(400, rate=60, seed=18), 0.2, seed=18)
    fast, step = both(df, cutoff=cut, **CUT_CONFIGS[config])
    r = step.requests
    assert (r.outcome == "unfinished").any()
    assert ((r.outcome == "unfinished") & (r.generated_tokens > 0)).any() or cut < 1.0
    if cut < df.arrival_s.max():
        assert (r.reject_reason == "arrives after max_sim_time_s").any()
    assert_same(fast, step, COLUMNS + MIGRATION_COLUMNS)


# ------------------------------------------------------- a cut inside a live migration's copy
def _migration_scenario(kind):
    """R0 (priority 1, 1000 + 3000 tokens) decodes on instance 0 of 2; knobs (``_mig_cfg``) make
    any instance running something a source and only an empty one a destination, so R0 is
    live-migrated at the first rebalancing tick (0.5 s), and back and forth after that.

    slow_link: max_stages=1 over a 0.05 GB/s link: stage 1 copies R0's KV until ~3.3 s, then the
    stop-and-copy of the tokens it produced meanwhile runs until ~4.4 s; R0 is on no instance.
    busy_destination: 25 GB/s; R1 (a 40k-token prompt) arrives at 0.5001 s and goes to instance 1
    (R0's priority headroom makes 0 look fuller), whose ~1.6 s prefill iteration R0's landing must
    wait for: R0 is on no instance from ~0.51 s to ~2.15 s.
    """
    rows = [{"request_id": 0, "arrival_s": 0.0, "prompt_tokens": 1000, "output_tokens": 3000, "priority": 1}]
    kw = {"router": "llumnix", "count": 2, "blocks": 8000, "migration": True}
    if kind == "slow_link":
        kw.update(link_gbs=0.05, max_stages=1)
    else:
        rows.append({"request_id": 1, "arrival_s": 0.5001, "prompt_tokens": 40000, "output_tokens": 20,
                     "priority": 0})
    return pd.DataFrame(rows), kw


#: (scenario, cut): before the stop-and-copy, inside it, after the landing
MIGRATION_CUTS = [case(f"{k}-cut{t}", k, t) for k, cuts in
                  (("slow_link", (2.0, 3.8, 4.2, 5.0)), ("busy_destination", (0.505, 1.0, 1.8, 2.5)))
                  for t in cuts]


@pytest.mark.parametrize("kind,cut", MIGRATION_CUTS)
def test_cut_during_migration_copy(kind, cut):
    """A request detached from its source (Migration._stop_and_copy) and not yet landed
    (Migration._land) sits in no instance queue; it must still be recorded, as unfinished."""
    df, kw = _migration_scenario(kind)
    fast, step = simulate(_mig_cfg(True, kw, cut), df), simulate(_mig_cfg(False, kw, cut), df)
    assert_conserved(df, fast, "fast-forward")
    assert_conserved(df, step, "step")
    assert (step.requests.outcome == "unfinished").any()
    assert_same(fast, step, COLUMNS + MIGRATION_COLUMNS)


def test_migration_scenarios_migrate():
    """The scenarios above really move R0 (uncut, both modes agree)."""
    for kind in ("slow_link", "busy_destination"):
        df, kw = _migration_scenario(kind)
        fast, step = simulate(_mig_cfg(True, kw, None), df), simulate(_mig_cfg(False, kw, None), df)
        assert_conserved(df, step)
        assert step.requests.migrations.iloc[0] > 0 and completed(step) == len(df)
        assert_same(fast, step, COLUMNS + MIGRATION_COLUMNS)


def _mig_cfg(fast, kw, cut):
    cfg = make_cfg(fast, cutoff=cut, **kw)
    cfg.router.migrate_out_freeness = 1e9  # anything running is a source
    cfg.router.migrate_in_freeness = cfg.scheduler.num_gpu_blocks - 1  # only an empty instance receives
    return cfg


def test_memoised_context_free_time_is_bit_identical():
    """The roofline memoises its context-free term by (tokens, sequences) (engine speed); a
    warmed model prices every iteration exactly as a fresh one and as the uncached formula, so
    the memo cannot make a step run and a fast-forwarded run differ."""
    from goodput.sim.catalog import get_gpu, get_model
    from goodput.sim.config import CostModelConfig
    from goodput.sim.costmodel.factory import make_cost_model

    def fresh():
        cfg = CostModelConfig()
        cfg.kind = "roofline"
        return make_cost_model(get_model("llama-3.1-70b"), get_gpu("a100-80gb"), 2, cfg)

    shapes = [([512], [0], 0), ([300, 212], [512, 0], 0), ([384], [1024], 128), ([1], [4000], 3),
              ([512], [0], 0), ([384], [1024], 128)]
    warm = fresh()
    for new, ctx, dec in shapes * 2:
        warm.iteration_time(new, ctx, dec, 1, 900 * dec, 1200 if dec else 0)
    for new, ctx, dec in shapes:
        args = (new, ctx, dec, 1, 900 * dec, 1200 if dec else 0)
        one = fresh()
        assert warm.iteration_time(*args) == one.iteration_time(*args)
        tokens, seqs = sum(new) + dec, len(new) + dec
        m = fresh()
        direct = (m._linear_time(tokens) + m._lm_head_time(seqs)
                  + tokens * m.model.hidden_size * m._act / m._bw + m._allreduce_time(tokens)
                  + m._fixed_gpu_time(seqs))
        assert warm._context_free_time(tokens, seqs) == direct
