"""Fidelity machinery: engine-overhead model and fit, case design, real-run files, comparison."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from goodput.sim.catalog import get_model
from goodput.sim.config import load_config, to_dict
from goodput.sim.costmodel.base import Batch
from goodput.sim.costmodel.engine import EngineOverhead, resolve_engine
from goodput.sim.costmodel.profiled import ProfiledCostModel, find_profile

REPO = Path(__file__).resolve().parents[1]
PROFILE = find_profile("h200", "llama-3.1-8b", 1)
pytestmark = pytest.mark.skipif(PROFILE is None, reason="shipped H200 profile missing")


def _engine(tmp_path, rho=0.05, e0=8e-4, e1=1e-5, gpu="h200"):
    path = tmp_path / gpu / "engine.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"params": {"kernel_scale": rho, "per_iteration_s": e0,
                                           "per_seq_s": e1}, "name": "test-engine"}))
    return path


def test_engine_term_replaces_the_profile_host_term_and_keeps_decode_linear(tmp_path):
    eng = EngineOverhead.load(_engine(tmp_path))
    base = ProfiledCostModel.from_dir(PROFILE, engine="none")
    cm = ProfiledCostModel.from_dir(PROFILE, engine=str(_engine(tmp_path)))
    assert cm.source.endswith("+engine:test-engine") and "+engine" not in base.source
    for batch in (Batch([1] * 7, [100, 2000, 5, 0, 64, 900, 30]),
                  Batch([512, 1, 1], [0, 300, 4000]), Batch([37], [1000])):
        k = cm.kernel_time(batch)
        assert k == pytest.approx(base.batch_time(batch) - base._overhead(batch.size), rel=1e-12)
        assert cm.batch_time(batch) == pytest.approx(eng.apply(k, batch.size), rel=1e-12)
    # the fast-forward contract: a pure decode batch costs a + b * sum(ctx)
    a, b = cm.decode_coefficients(7)
    ctx = [100, 2000, 5, 0, 64, 900, 30]
    assert cm.batch_time(Batch([1] * 7, ctx)) == pytest.approx(a + b * sum(ctx), rel=1e-12)


def test_resolve_engine_auto_none_and_errors(tmp_path):
    path = _engine(tmp_path)
    assert resolve_engine("auto", tmp_path, "h200").name == "test-engine"
    assert resolve_engine("auto", tmp_path, "h100") is None  # no file: profile host term
    assert resolve_engine("none", tmp_path, "h200") is None
    assert resolve_engine(str(path), tmp_path / "x", "h100").name == "test-engine"
    with pytest.raises(FileNotFoundError, match=r"cost_model\.engine"):
        resolve_engine(str(tmp_path / "missing.json"), tmp_path, "h200")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"params": {"kernel_scale": 0.1, "per_iteration_s": -1,
                                          "per_seq_s": 0}}))
    with pytest.raises(ValueError, match="host terms >= 0"):
        EngineOverhead.load(bad)
    bad.write_text(json.dumps({"params": {"kernel_scale": 0.1}}))
    with pytest.raises(ValueError, match="missing field"):
        EngineOverhead.load(bad)


def test_fit_engine_recovers_known_parameters():
    from goodput.profiler.serve.calibrate import fit_engine

    rng = np.random.default_rng(0)
    n = rng.integers(1, 200, 3000)
    k = rng.uniform(4e-3, 60e-3, 3000)
    wall = 1.04 * k + 9e-4 + 7e-6 * n
    wall[::97] *= 30  # rare stalls must not pull the fit
    it = pd.DataFrame({"wall_s": wall, "kernel_s": k, "n_seqs": n,
                       "kind": np.where(n > 100, "decode", "mixed")})
    fit = fit_engine(it)
    assert fit["kernel_scale"] == pytest.approx(0.04, abs=2e-3)
    assert fit["per_iteration_s"] == pytest.approx(9e-4, rel=0.05)
    assert fit["per_seq_s"] == pytest.approx(7e-6, rel=0.1)
    assert abs(fit["residuals"]["decode"]["median_err_pct"]) < 0.5


def _virtual_case(case: Path, policy: str, rate: float, n: int = 120, seed: int = 1):
    """A case whose 'real' run is the loop clocked by the profile-only cost model."""
    from goodput.profiler.serve import CostModelExecutor, ServingLoop, VirtualClock, instance_capacity
    from goodput.profiler.serve.fidelity import base_config, poisson_trace, save_real

    case.mkdir(parents=True)
    cfg = base_config("llama-3.1-8b", "h200", policy)
    cfg.cost_model.engine = "none"
    rng = np.random.default_rng(seed)
    lengths = pd.DataFrame({"prompt_tokens": rng.integers(20, 3000, n),
                            "output_tokens": rng.integers(2, 300, n)})
    trace = poisson_trace(lengths, rate, seed)
    (case / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    trace.to_csv(case / "trace.csv", index=False)
    (case / "design.json").write_text(json.dumps({"policy": policy, "load": 0.5,
                                                  "rate_req_s": rate, "capacity_req_s": 2 * rate}))
    cost = ProfiledCostModel.from_dir(PROFILE, engine="none")
    clock = VirtualClock()
    model = get_model("llama-3.1-8b")
    loop = ServingLoop(cfg, instance_capacity(cfg, model), model.max_context,
                       CostModelExecutor(cost, clock), clock, cost)
    res = loop.run(trace)
    save_real(case, res, {"provenance": {"device_name": "virtual"}, "device": "virtual"})
    return res


def test_compare_scores_zero_error_when_real_equals_simulation(tmp_path):
    from goodput.profiler.serve.fidelity import compare
    from goodput.profiler.serve.report import case_table, markdown_report

    root = tmp_path / "fid" / "h200" / "llama-3.1-8b"
    _virtual_case(root / "vllm-a", "vllm", 12.0)
    _virtual_case(root / "sarathi-b", "sarathi", 12.0)
    rep = compare(root, engine="none")
    assert [c["case"] for c in rep["cases"]] == ["sarathi-b", "vllm-a"]
    for c in rep["cases"]:
        assert c["compared"] == c["requests"] == 120
        for m in ("ttft_s", "tpot_s", "e2e_s"):
            assert c[m]["per_request_median_ape_pct"] == pytest.approx(0, abs=1e-6)
            for q in (50, 90, 99):
                assert c[m][f"p{q}"]["err_pct"] == pytest.approx(0, abs=1e-6)
        assert c["tbt_s"]["p99"]["err_pct"] == pytest.approx(0, abs=1e-6)
        assert c["throughput_tok_s"]["real"] == c["throughput_tok_s"]["sim"]
    assert (root / "fidelity.json").exists()
    # a different engine term makes the simulation slower than the "real" run
    rep2 = compare(root, engine=str(_engine(tmp_path, rho=0.1, e0=2e-3)), tag="slow")
    assert (root / "fidelity-slow.json").exists()
    assert all(c["tpot_s"]["p50"]["err_pct"] > 5 for c in rep2["cases"])
    assert "| vllm-a |" in case_table(rep) and "### h200 / llama-3.1-8b" in \
        markdown_report(tmp_path / "fid")
    from goodput.cli import main

    png = tmp_path / "cdf.png"
    assert main(["fidelity", "plot", str(root / "vllm-a"), "--engine", "none",
                 "--out", str(png)]) == 0
    assert png.stat().st_size > 10_000


def test_calibrate_writes_engine_from_iteration_logs(tmp_path):
    from goodput.profiler.serve.calibrate import calibrate

    root = tmp_path / "h200" / "llama-3.1-8b"
    _virtual_case(root / "vllm-a", "vllm", 10.0)
    # the 'real' iterations are exactly the profile's prediction: kernel x 1 + its host term
    doc = calibrate([root], tmp_path / "engine.json", name="virt")
    cm = ProfiledCostModel.from_dir(PROFILE, engine="none")
    assert doc["params"]["kernel_scale"] == pytest.approx(0.0, abs=2e-3)
    assert doc["params"]["per_iteration_s"] == pytest.approx(cm.overhead_c[0], rel=0.05)
    assert doc["fitted_on"] == ["llama-3.1-8b/vllm-a"] and doc["gpu"] == "h200"
    assert EngineOverhead.load(tmp_path / "engine.json").name == "virt"
    from goodput.profiler.serve.calibrate import per_case

    line = per_case([root])
    assert line.startswith("llama-3.1-8b") and "vllm-a" in line and "kernel x 1.000" in line
    # scored against an engine term that matches the 'real' iterations exactly: ratio 1.00x
    exact = EngineOverhead(0.0, cm.overhead_c[0], cm.overhead_c[1], name="exact")
    assert "0 of" in per_case([root], exact) and "slowest 1.00x" in per_case([root], exact)


def test_design_writes_cases_at_fractions_of_capacity(tmp_path):
    from goodput.profiler.serve.fidelity import design

    lengths = REPO / "traces" / "sample_chat.csv"
    if not lengths.exists():
        pytest.skip("shipped sample trace missing")
    cases = design("llama-3.1-8b", "h200", tmp_path, lengths, policies=("vllm",),
                   loads=(0.5, 0.9), n=40, seed=3)
    assert [c.name for c in cases] == ["vllm-load50", "vllm-load90"]
    d50, d90 = (json.loads((c / "design.json").read_text()) for c in cases)
    assert d50["capacity_req_s"] == d90["capacity_req_s"] > 0
    assert d90["rate_req_s"] == pytest.approx(0.9 * d90["capacity_req_s"], rel=1e-3)
    cfg = load_config(cases[0] / "config.yaml")
    assert cfg.scheduler.num_gpu_blocks > 0 and cfg.cost_model.kind == "profiled"
    tr = pd.read_csv(cases[0] / "trace.csv")
    assert len(tr) == 40 and tr.arrival_s.is_monotonic_increasing


def test_run_cases_on_the_cpu_writes_every_file(tmp_path):
    pytest.importorskip("torch")
    from goodput.profiler.serve.run_cases import run_cases

    case = tmp_path / "tiny" / "vllm-a"
    case.mkdir(parents=True)
    cfg = load_config(None, {"cluster": [{"model": "tiny-cpu", "gpu": "h100", "tp": 1,
                                          "count": 1}],
                             "scheduler": {"policy": "vllm", "num_gpu_blocks": 300,
                                           "max_batch_size": 16, "max_batched_tokens": 512}})
    (case / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    rng = np.random.default_rng(0)
    pd.DataFrame({"request_id": np.arange(12), "arrival_s": np.sort(rng.uniform(0, 0.2, 12)),
                  "prompt_tokens": rng.integers(5, 120, 12),
                  "output_tokens": rng.integers(1, 20, 12)}).to_csv(case / "trace.csv",
                                                                    index=False)
    run_cases(tmp_path / "tiny", device="cpu", log=lambda *_: None)
    for f in ("real_requests.csv", "real_iterations.csv.gz", "real_tbt.csv", "real_meta.json"):
        assert (case / f).exists(), f
    req = pd.read_csv(case / "real_requests.csv")
    assert (req.outcome == "completed").all()
    meta = json.loads((case / "real_meta.json").read_text())
    assert meta["device"] == "cpu" and meta["provenance"]["torch"]


def test_reprice_rebuilds_every_logged_iteration_with_the_current_profile(tmp_path):
    """The logged composition (``chunks``) lets a fit re-price each iteration with the profile
    shipped now: with the profile the run was predicted with, every row comes back as logged
    (mixed chunk-plus-decode iterations included), so the fit never mixes two profiles."""
    from goodput.profiler.serve.calibrate import _batch_of, iteration_table

    root = tmp_path / "h200" / "llama-3.1-8b"
    _virtual_case(root / "sarathi-b", "sarathi", 12.0)
    logged = iteration_table([root], repriced=False)
    again = iteration_table([root])
    assert set(logged.kind) >= {"mixed", "decode"}
    assert (logged.chunks.fillna("") != "").sum() == (logged.kind != "decode").sum()
    assert again.kernel_s.to_numpy() == pytest.approx(logged.kernel_s.to_numpy(), rel=1e-6)
    # an old log without chunks: decodes and lone prompts are exact, a mixed row cannot be rebuilt
    row = pd.Series({"kind": "mixed", "n_seqs": 3, "new_tokens": 300, "context_tokens": 900,
                     "chunks": float("nan")})
    assert _batch_of(row) is None
    assert _batch_of(pd.Series({**row, "kind": "decode", "new_tokens": 3})) == ([1, 1, 1],
                                                                              [300, 300, 300])
    assert _batch_of(pd.Series({"kind": "mixed", "n_seqs": 3, "new_tokens": 300, "context_tokens": 900,
                                "chunks": "298@100"})) == ([298, 1, 1], [100, 400, 400])


def test_heldout_score_is_stored_and_becomes_the_describe_error(tmp_path):
    """A term fitted on one folder and scored on another whose iterations it predicts exactly has
    a held-out error of 0; off by a known factor, that factor. describe() quotes the larger of the
    profile's and the engine term's held-out P95."""
    from goodput.profiler.serve.calibrate import calibrate, score_heldout
    from goodput.sim.costmodel.errors import profiled_error

    fit_root, held_root = tmp_path / "h200" / "llama-3.1-8b", tmp_path / "h200" / "llama-2-7b"
    _virtual_case(fit_root / "vllm-a", "vllm", 10.0)
    _virtual_case(held_root / "vllm-b", "vllm", 8.0)
    doc = calibrate([fit_root], tmp_path / "engine.json", holdout_dirs=[held_root])
    held = doc["heldout"]
    assert held["on"] == ["h200/llama-2-7b"] and held["iterations"] > 0
    assert held["p95_ape_pct"] == pytest.approx(0.0, abs=1.5)
    # the same term with every host second doubled is off by the host share on every iteration
    fit = {**doc["params"], "per_iteration_s": 2 * doc["params"]["per_iteration_s"]}
    assert score_heldout(fit, [held_root])["p95_ape_pct"] > held["p95_ape_pct"] + 1.0
    cm = ProfiledCostModel.from_dir(PROFILE, engine=str(tmp_path / "engine.json"))
    (tmp_path / "worse.json").write_text(json.dumps({**doc, "heldout": {**held, "p95_ape_pct": 55.0}}))
    est = profiled_error(ProfiledCostModel.from_dir(PROFILE, engine=str(tmp_path / "worse.json")))[
        "error_estimate"]
    assert est["pct"] == 55.0 and "whole iterations +-55%" in est["label"]
    assert "engine.json heldout" in est["basis"] and "h200/llama-2-7b" in est["basis"]
    assert profiled_error(cm)["error_estimate"]["pct"] == cm.fit["heldout_error"]["p95_pct"]
