"""``output.trace_events`` (CLI ``--trace-events``): a whole run as Chrome/Perfetto trace events.

The trace is only useful if it is the run: the checks round-trip its counts against the run's own
tables (iterations per instance, every request's outcome, preemptions, migrations).
"""
from __future__ import annotations

import json
import os

import pytest

from goodput.sim.engine.trace_events import summarize_trace_events, validate_trace_events
from goodput.sim.simulator import simulate
from goodput.sim.workload.generators import synthesize
from tests.conftest import poisson_requests
from tests.test_policies import cfg_for, util_for_blocks


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("policy,preemption,router,cut", [("vllm", "recompute", "llumnix", None),
                                                          ("sarathi", "swap", "round_robin", 12.0)])
def test_trace_events_round_trip_the_run(tmp_path, fast, policy, preemption, router, cut):
    path = tmp_path / "run.trace.json"
    cfg = cfg_for(policy, count=2, fast=fast, gpu_memory_utilization=util_for_blocks(200),
                  preemption=preemption, swap_space_gb=0.05)
    cfg.router.name = router
    cfg.router.migrate_out_freeness, cfg.router.migrate_in_freeness = 15.0, 25.0
    cfg.output.trace_events = str(path)
    cfg.max_sim_time_s = cut  # a cut: some requests end unfinished
    df = synthesize(200, 15, "uniform:50:1500", "uniform:1:300", arrival="gamma", cv=3, seed=3).df
    res = simulate(cfg, df)
    obj = json.loads(path.read_text())
    validate_trace_events(obj)
    got = summarize_trace_events(obj)
    req = res.requests
    arrived = req[req.instance >= 0]  # requests after the cut never reached an instance
    assert got["requests_ended"] == {k: int(v) for k, v in arrived.outcome.value_counts().items() if v}
    assert got["iterations"] == int(res.instances.iterations.sum())
    assert got["preemptions"] == int(res.instances.preemptions.sum()) > 0
    assert got["migrations"] == res.migration.get("completed", 0)
    assert (req.outcome == "unfinished").any() == (cut is not None)
    if preemption == "swap":
        assert res.instances.swaps.sum() > 0
    assert got["dropped"] == 0
    names = {e["args"]["name"] for e in obj["traceEvents"] if e["ph"] == "M" and e["name"] == "process_name"}
    assert any("llama-3.1-8b" in n for n in names)
    if router == "llumnix":
        assert got["migrations"] > 0


def test_trace_events_same_seed_same_bytes(tmp_path):
    df = poisson_requests(100, rate=10, seed=5)
    out = []
    for name in ("a.json", "b.json"):
        cfg = cfg_for("vllm")
        cfg.output.trace_events = str(tmp_path / name)
        simulate(cfg, df)
        out.append((tmp_path / name).read_bytes())
    assert out[0] == out[1]


def test_trace_events_file_is_created_with_its_folder_and_normal_permissions(tmp_path):
    path = tmp_path / "new" / "folder" / "run.json"
    cfg = cfg_for("vllm")
    cfg.output.trace_events = str(path)
    simulate(cfg, poisson_requests(20, rate=10, seed=6))
    validate_trace_events(json.loads(path.read_text()))
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as any file the user writes, not 0600
    assert [p.name for p in path.parent.iterdir()] == ["run.json"]  # no temporary file left
