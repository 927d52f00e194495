"""The fit recovers a cost function of the model's own form exactly; the profiled model composes
an iteration as documented; profile lookup and the calibrated fallback behave."""
from __future__ import annotations

import csv
import json

import pytest

from goodput.profiler.batches import expand
from goodput.profiler.fit import fit_profile, split_holdout
from goodput.profiler.grids import GridConfig, build_grid
from goodput.profiler.run import COLUMNS
from goodput.sim.catalog import get_gpu, get_model
from goodput.sim.costmodel.base import Batch
from goodput.sim.costmodel.profiled import (
    ProfiledCostModel,
    attention_features,
    calibrated_roofline,
    find_profile,
)

LAYERS, GROUP = 3, 4
# attention feature weights, per class (launch, blocks, tiles, split, items), t128_attn_work
# and t128_prefix_work
W = [2e-6, 3e-8, 1e-7, 4e-6, 2e-8, 5e-6, 2e-8, 3e-7, 3e-6, 1e-8,
     4e-6, 6e-8, 3e-8, 2e-6, 1e-8, 2e-12, 1e-12]


def lin(t):
    return 1e-5 + 2e-8 * t


def dec_a(b):
    return lin(b) + 3e-6 + 4e-9 * b


def true_layer(q, c):
    dec = [x for y, x in zip(q, c, strict=True) if y == 1]
    t = lin(sum(q)) if len(dec) < len(q) else 0.0
    if dec:
        t += (dec_a(len(dec)) - (lin(len(dec)) if len(dec) < len(q) else 0.0)
              + 1e-10 * sum(dec))
    return t + sum(w * f for w, f in zip(W, attention_features(q, c, GROUP, 2, 132), strict=True))


def write_synthetic(d):
    d.mkdir(parents=True)
    prov = {"gpu": "cpu", "model": "synthetic", "tp": 1,
            "model_spec": {"layers": LAYERS, "hidden_size": 64},
            "shard": {"q_heads": 8, "kv_heads": 2}, "allreduce": None,
            "provenance": {"device_name": "test"}}
    (d / "provenance.json").write_text(json.dumps(prov))
    rows = []

    def add(kind, sub, code, t):
        rows.append({"kind": kind, "subkind": sub, "code": code, "status": "ok",
                     "median_s": repr(t), "p10_s": repr(t), "p90_s": repr(t)})

    for p in build_grid(4096, GridConfig(random_batches=30), seed=0):
        if p.kind in ("linear", "embed", "lmhead"):
            n = int(p.code.split("=")[1])
            add(p.kind, p.subkind, p.code, {"linear": lin(n), "embed": 1e-6 + 1e-10 * n,
                                            "lmhead": 5e-5 + 1e-8 * n}[p.kind])
        elif p.kind == "overhead":
            add(p.kind, p.subkind, p.code, 1e-4 + 1e-6 * len(expand(p.code)[0]))
        else:
            add(p.kind, p.subkind, p.code, true_layer(*expand(p.code)))
    rows.append({"kind": "batch", "subkind": "decode", "code": "512x1@99999",
                 "status": "infeasible", "note": "too big"})
    with (d / "measurements.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in COLUMNS})


@pytest.fixture()
def synthetic(tmp_path):
    d = tmp_path / "cpu" / "synthetic" / "tp1"
    write_synthetic(d)
    return d


def test_fit_recovers_the_model_form_exactly(synthetic):
    rep = fit_profile(synthetic)
    assert rep["heldout"]["n"] == rep["n_test"] > 30
    assert rep["heldout"]["max_pct"] < 1e-3, rep["worst"]
    assert rep["infeasible_points"] == 1
    fit = json.loads((synthetic / "fit.json").read_text())
    assert fit["attention"]["coef"] == pytest.approx(W, rel=1e-3)
    cm = ProfiledCostModel.from_dir(synthetic)
    assert cm.source == f"profile:cpu/synthetic/tp1@{fit['profile_version']}"


def test_holdout_is_seeded_and_twenty_percent(synthetic):
    rows = [{"subkind": "decode", "code": f"{i}x1@1"} for i in range(1, 101)]
    tr1, te1 = split_holdout(rows, 0.2, seed=0)
    _, te2 = split_holdout(list(reversed(rows)), 0.2, seed=0)
    assert len(te1) == 20 and te1 == te2 and len(tr1) == 80
    assert split_holdout(rows, 0.2, seed=1)[1] != te1


def test_iteration_composition_by_hand(synthetic):
    fit_profile(synthetic)
    cm = ProfiledCostModel.from_dir(synthetic)
    ctx = [100, 2000, 37]
    b = len(ctx)
    expected = (LAYERS * (dec_a(b) + 1e-10 * sum(ctx)) + (1e-6 + 1e-10 * b)
                + (5e-5 + 1e-8 * b) + (1e-4 + 1e-6 * b))
    assert cm.batch_time(Batch.decode(ctx)) == pytest.approx(expected, rel=1e-6)
    # A verify of k = 3 samples 4 logit rows per sequence; a 300-token chunk samples one.
    q, c = [4, 4, 300], [50, 60, 0]
    expected = (LAYERS * true_layer(q, c) + (1e-6 + 1e-10 * 308) + (5e-5 + 1e-8 * 9)
                + (1e-4 + 1e-6 * 3))
    assert cm.batch_time(Batch(q, c)) == pytest.approx(expected, rel=1e-5)


def test_decode_linearity_contract_is_exact(synthetic):
    fit_profile(synthetic)
    cm = ProfiledCostModel.from_dir(synthetic)
    for b in (1, 5, 37, 512, 700):
        ctx = [(i * 7919) % 3000 for i in range(b)]
        a, slope = cm.decode_coefficients(b)
        assert cm.batch_time(Batch.decode(ctx)) == pytest.approx(a + slope * sum(ctx), rel=1e-12)


def test_find_profile_and_errors(synthetic, tmp_path):
    root = tmp_path
    assert find_profile("cpu", "synthetic", 1, root=root) is None  # not fitted yet
    fit_profile(synthetic)
    assert find_profile("CPU", "Synthetic", 1, root=root) == synthetic
    assert find_profile("cpu", "synthetic", 2, root=root) is None
    with pytest.raises(FileNotFoundError, match="goodput profile fit"):
        ProfiledCostModel.from_dir(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="new_tokens"):
        ProfiledCostModel.from_dir(synthetic).batch_time(Batch([0], [5]))


def test_calibrated_roofline_source_names_the_gpus(tmp_path):
    m, g = get_model("llama-3.1-8b"), get_gpu("a100-80gb")
    assert calibrated_roofline(m, g, 1, root=tmp_path) is None
    params = {"gemm_flops_efficiency": 0.5, "attention_flops_efficiency": 0.4,
              "memory_bw_efficiency": 0.75, "nvlink_efficiency": 0.7,
              "allreduce_latency_s": 1e-5, "iteration_overhead_s": 2e-4}
    (tmp_path / "calibration.json").write_text(json.dumps({"gpus": ["h100-sxm", "h200"],
                                                           "params": params}))
    cm = calibrated_roofline(m, g, 1, root=tmp_path)
    assert cm.source == "roofline(calibrated from h100-sxm,h200)"
    assert cm.params.memory_bw_efficiency == 0.75
