"""Collectives captured in CUDA graphs (issue 20): the ``--graph`` sweep's structure, schema and
provenance on the CPU (gloo, the ``eager-cpu`` fallback: CUDA graphs need a GPU), and the cost
model's use of graph tables (preferred over the eager ones, per TP degree, labelled so), on
small synthetic tables in tmp_path; the shipped measured tables are never edited."""
from __future__ import annotations

import csv
import hashlib
import json
import shutil

import pytest

from goodput.sim.catalog import get_gpu, get_model
from goodput.sim.costmodel.base import Batch
from goodput.sim.costmodel.collectives import (
    COLUMNS,
    GRAPH_COLUMNS,
    GRAPH_OPS,
    CollectivesTable,
    bus_factor,
    collectives_path,
    find_table,
)
from goodput.sim.costmodel.profile_store import PROFILES_ROOT
from goodput.sim.costmodel.roofline import RooflineCostModel
from goodput.sim.costmodel.tp_estimate import tp_allreduce


def _find(root, gpu, world, op="all_reduce") -> CollectivesTable:
    table = find_table(root, gpu, world, op)
    assert table is not None, (root, gpu, world, op)
    return table


# ---- the sweep on the CPU (2 gloo processes) ----------------------------------------------------
def test_graph_sweep_on_cpu_writes_every_op_with_graph_schema_and_provenance(tmp_path, capsys):
    from goodput.profiler.cli import main as profile_main

    rc = profile_main(["profile", "collectives", "--graph", "--world", "2", "--device", "cpu",
                       "--sizes", "1K,64K", "--rounds", "2", "--out", str(tmp_path)])
    assert rc == 0
    assert "eager-cpu" in capsys.readouterr().err  # the fallback says so, in one line
    path = collectives_path(tmp_path, "cpu", 2, graph=True)
    assert path.name == "tp2.graph.csv" and not collectives_path(tmp_path, "cpu", 2).exists()
    with path.open() as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == GRAPH_COLUMNS
        rows = list(reader)
    assert {(r["op"], int(r["bytes"])) for r in rows} == {
        (op, n) for op in GRAPH_OPS for n in (1024, 65536)}
    for r in rows:
        assert r["timing"] == "eager-cpu" and int(r["world"]) == 2 and int(r["calls"]) >= 2
        p10, med, p90 = (float(r[k]) for k in ("p10_s", "median_s", "p90_s"))
        assert 0 < p10 <= med <= p90 < 1.0, r
        # no graph on the CPU: the "GPU" columns are the eager rounds, and a synchronous gloo
        # call's submit time is the whole call
        assert float(r["eager_s"]) == med and float(r["launch_s"]) == med
    prov = json.loads(path.with_suffix(".provenance.json").read_text())
    assert path.with_suffix(".provenance.json").name == "tp2.graph.provenance.json"
    for key in ("date_utc", "command", "torch", "git_commit", "device_name", "gpu_names",
                "gpus_visible", "nccl", "topology", "topology_source", "timing", "method"):
        assert key in prov, key
    assert prov["timing_method"] == "eager-cpu" and prov["backend"] == "gloo"
    assert prov["nccl"] is None and prov["gpus_visible"] == 0
    assert "--graph" in prov["command"]
    if shutil.which("nvidia-smi") is None:
        assert prov["topology"] is None and prov["topology_source"].startswith("absent")
    assert prov["status"] == "complete" and prov["ops_failed"] == {}
    assert prov["ops_requested"] == list(GRAPH_OPS) and set(prov["fit"]) == set(GRAPH_OPS)
    assert prov["table_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert not list(path.parent.glob("*.tmp"))  # atomic writes leave no temporary behind
    table = CollectivesTable.from_csv(path)
    assert table.timing == "eager-cpu" and not table.graph  # never mistaken for GPU time
    assert table.date == prov["date_utc"][:10] and set(table.launch_s) == set(GRAPH_OPS)
    assert find_table(tmp_path, "cpu", 2) is not None


def test_a_failed_op_is_recorded_and_the_other_ops_are_kept(tmp_path, monkeypatch):
    import torch.multiprocessing as mp

    import goodput.profiler.collectives_graph as cg

    def fake(world, backend, sizes, op, rounds=None, min_world=2):
        if op == "send_recv":
            raise mp.ProcessRaisedException("RuntimeError: the CUDA graph captured no\nkernels",
                                            1, 4242)
        return [{"op": op, "world": world, "bytes": float(n), "median_s": 1e-5 * (k + 1),
                 "p10_s": 1e-5 * (k + 1), "p90_s": 1e-5 * (k + 1), "eager_s": 4e-5,
                 "launch_s": 3e-5, "calls": 10, "timing": "eager-cpu", "empty_graph": False}
                for k, n in enumerate(sizes)]

    monkeypatch.setattr(cg, "measure_graph_op", fake)
    path = cg.run_graph_collectives(2, "cpu", "cpu", tmp_path, [1024, 4096],
                                    ("all_reduce", "send_recv", "all_gather"))
    prov = json.loads(path.with_suffix(".provenance.json").read_text())
    assert prov["status"] == "partial: 2 of 3 ops" and list(prov["ops_failed"]) == ["send_recv"]
    assert "\n" not in prov["ops_failed"]["send_recv"]  # one line
    assert set(CollectivesTable.from_csv(path).curves) == {"all_reduce", "all_gather"}

    monkeypatch.setattr(cg, "measure_graph_op", lambda *a, **k: fake(2, "gloo", [1], "send_recv"))
    with pytest.raises(ValueError, match="every op failed"):
        cg.run_graph_collectives(2, "cpu", "cpu", tmp_path / "none", [1024], ("send_recv",))


def test_graph_sweep_arguments_name_the_fix():
    import torch

    from goodput.profiler.cli import main as profile_main
    from goodput.profiler.collectives_graph import measure_graph_op, run_graph_collectives

    with pytest.raises(ValueError, match=r"unknown collective.*reduce_scatter"):
        measure_graph_op(2, "gloo", [1024], "broadcast")
    with pytest.raises(ValueError, match="at least 2"):
        measure_graph_op(1, "gloo", [1024], "all_reduce")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device cpu"):
            run_graph_collectives(2, "cuda", "h200", PROFILES_ROOT / "unused")
        assert profile_main(["profile", "collectives", "--graph", "--world", "2"]) == 2


# ---- the table and the cost model (synthetic tables) --------------------------------------------
def _graph_table(root, world, times, gpu="h200", timing="cuda-graph", date="2026-12-02"):
    """A ``tp<world>.graph.csv`` with all-reduce rows ``{bytes: seconds}``."""
    path = collectives_path(root, gpu, world, graph=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(GRAPH_COLUMNS)
        for n, t in times.items():
            w.writerow(["all_reduce", world, n, t, t * 0.97, t * 1.05, t + 3e-5, 3e-5, 50, timing])
    path.with_suffix(".provenance.json").write_text(json.dumps({"date_utc": date + "T00:00"}))
    return path


def _eager_table(root, world, times, gpu="h200"):
    path = collectives_path(root, gpu, world)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for n, t in times.items():
            w.writerow(["all_reduce", world, n, t, t, t])
    return path


#: a graph-captured TP4 all-reduce: ~9 us GPU floor, then ~300 GB/s bus bandwidth
TP4 = {1 << k: 9e-6 + (1.5 * (1 << k)) / 3.0e11 for k in range(10, 29, 2)}


def test_graph_table_is_charged_at_every_size_and_eager_only_where_bandwidth_bound(tmp_path):
    g = CollectivesTable.from_csv(_graph_table(tmp_path, 4, TP4))
    assert g.graph and g.measured_from() == 0.0 and g.kind() == "measured (graph)"
    assert g.launch_s == {"all_reduce": pytest.approx(3e-5)}
    for n in (1, 4096, 1 << 20, 1 << 28):  # the measured GPU time, even below the estimate
        assert g.charge("all_reduce", n, estimate=40e-6) == g.time("all_reduce", n)
    eager = {1 << k: (40e-6 if k < 24 else 40e-6 * 2 ** (k - 23)) for k in range(10, 29, 2)}
    e = CollectivesTable.from_csv(_eager_table(tmp_path, 2, eager))
    assert e.timing == "eager" and e.measured_from() == 1 << 24
    assert e.kind() == "measured (eager, >= 16 MiB)"
    assert e.charge("all_reduce", 4096, estimate=12e-6) == 12e-6  # launch-bound: the estimate
    assert e.charge("all_reduce", 1 << 26, estimate=1.0) == 1.0  # never below the estimate
    assert bus_factor("reduce_scatter", 8) == pytest.approx(0.875)
    rows = [{"op": "all_reduce", "world": 2, "bytes": 1.0, "median_s": 1e-5, "p10_s": 1e-5,
             "p90_s": 1e-5, "timing": t} for t in ("cuda-graph", "eager-cpu")]
    rows[1]["bytes"] = 2.0
    with pytest.raises(ValueError, match="several timings"):
        CollectivesTable(rows, 2)


def test_find_table_prefers_the_graph_table(tmp_path):
    _eager_table(tmp_path, 4, {1024: 4e-5, 1 << 20: 5e-5})
    assert _find(tmp_path, "h200", 4).timing == "eager"
    _graph_table(tmp_path, 4, TP4)
    assert _find(tmp_path, "h200", 4).graph
    assert find_table(tmp_path, "h200", 8) is None
    # a graph table without all-reduce rows does not hide the eager one
    path = collectives_path(tmp_path, "h200", 2, graph=True)
    with path.open("w") as f:
        f.write(",".join(GRAPH_COLUMNS) + "\nsend_recv,2,1024,1e-5,1e-5,1e-5,2e-5,2e-5,10,"
                "cuda-graph\n")
    _eager_table(tmp_path, 2, {1024: 4e-5, 1 << 20: 5e-5})
    assert _find(tmp_path, "h200", 2).timing == "eager"
    assert _find(tmp_path, "h200", 2, op="send_recv").graph


def test_graph_tp4_table_answers_tp4_and_describe_says_which_degrees_are_measured(tmp_path):
    gpu, model = get_gpu("h200"), get_model("llama-3.1-70b")
    _graph_table(tmp_path, 4, TP4)
    ar = tp_allreduce(gpu, root=tmp_path)
    table = ar.table(4)
    assert table is not None and table.graph
    for n in (2048, 16384, 1 << 20, 1 << 27):  # TP4 from the measurement at every size
        assert ar.time(n, 4) == table.time("all_reduce", n)
    assert ar.floor(4) == pytest.approx(9e-6, rel=0.05)  # the graph's GPU floor
    assert "tp4.graph.csv" in ar.measured_on  # the estimate is anchored on it too
    assert ar.by_tp(4) == {"tp2": "estimated", "tp4": "measured (graph)", "tp8": "estimated"}
    d = ar.describe(4)
    assert d["kind"] == "measured" and d["timing"] == "cuda-graph"
    assert "measured (graph)" in d["label"] and "tp4.graph.csv" in d["label"]
    assert ar.describe(8)["kind"] == "estimated" and ar.time(1 << 20, 8) > 0

    cm4 = RooflineCostModel(model, gpu, 4, allreduce=ar)
    desc = cm4.describe()
    assert desc["allreduce"]["by_tp"]["tp4"] == "measured (graph)"
    assert "all-reduce measured (graph)" in desc["provenance"]
    assert "unvalidated" not in desc["error_estimate"]["label"]
    t = 64
    assert cm4._allreduce_time(t) == pytest.approx(
        (2 * model.layers + 1) * table.time("all_reduce", t * model.hidden_size * 2))
    cm8 = RooflineCostModel(model, gpu, 8, allreduce=ar)
    assert "all-reduce estimated" in cm8.describe()["provenance"]
    assert "TP8 collectives estimated" in cm8.describe()["error_estimate"]["label"]


def test_without_graph_tables_tp4_is_estimated_and_the_eager_tp2_table_works_as_before():
    ar = tp_allreduce(get_gpu("h200"))  # the shipped profiles: only the eager tp2.csv
    shipped = CollectivesTable.from_csv(PROFILES_ROOT / "h200" / "collectives" / "tp2.csv")
    if _find(PROFILES_ROOT, "h200", 2).graph or find_table(PROFILES_ROOT, "h200", 4):
        pytest.skip("graph or TP4 tables are shipped now; this checks the eager-only state")
    assert ar.by_tp() == {"tp2": shipped.kind(), "tp4": "estimated", "tp8": "estimated"}
    assert ar.by_tp()["tp2"].startswith("measured (eager, >= ")
    assert ar.describe(4)["kind"] == "estimated" and ar.describe(2)["timing"] == "eager"
    start = shipped.measured_from()
    assert ar.time(2**28, 2) == pytest.approx(max(shipped.time("all_reduce", 2**28),
                                                  ar.floor(2) + 2**28 / (ar.bus_eff * 450e9)))
    assert ar.time(4096, 2) == pytest.approx(ar.floor(2) + 4096 / (ar.bus_eff * 450e9))
    assert start > 4096


def test_profiled_tp4_model_uses_the_graph_table_at_every_size(tmp_path):
    from goodput.sim.costmodel.profiled import ProfiledCostModel

    src = PROFILES_ROOT / "h200" / "llama-3.1-70b" / "tp2" / "fit.json"
    if not src.exists():
        pytest.skip("shipped h200 llama-3.1-70b tp2 profile not present")
    fit = json.loads(src.read_text())
    fit["tp"] = 4  # a stand-in TP4 fit (the shard numbers do not matter here)
    d = tmp_path / "h200" / "llama-3.1-70b" / "tp4"
    d.mkdir(parents=True)
    (d / "fit.json").write_text(json.dumps(fit))
    est = ProfiledCostModel.from_dir(d)
    assert est.collectives is None and "estimated" in est.describe()["allreduce_source"]
    _graph_table(tmp_path, 4, TP4)
    _eager_table(tmp_path, 4, {n: 4e-5 + t for n, t in TP4.items()})  # ignored: graph wins
    cm = ProfiledCostModel.from_dir(d)
    assert cm.collectives is not None and cm.collectives.graph
    calls, h = 2 * cm.layers + 1, cm.hidden
    for tokens in (1, 8, 256, 4096):  # decode sizes too: the graph table is GPU time
        assert cm._allreduce(tokens) == pytest.approx(
            calls * cm.collectives.time("all_reduce", tokens * h * 2), rel=1e-12)
    assert cm._allreduce(1) < est._allreduce(1)  # 9 us GPU time, not the ~40 us launch floor
    desc = cm.describe()
    assert desc["allreduce_source"].startswith("measured (graph)")
    assert "tp4.graph.csv" in desc["allreduce_source"] and "2026-12-02" in desc["allreduce_source"]
    assert "all-reduce measured (graph)" in desc["error_estimate"]["label"]
    ctx = [100, 2000, 37]  # decode linearity is unchanged
    a, b = cm.decode_coefficients(len(ctx))
    assert cm.batch_time(Batch.decode(ctx)) == a + b * sum(ctx)
