"""Fidelity experiments: how far is the simulator from a real engine running the same trace?

Three steps, so that only the middle one needs a GPU and everything it produced is committed:

* ``design`` (CPU): request lengths sampled from a real trace, the instance's capacity estimated
  by the simulator with the GPU's profiled cost model, and one *case* per (policy, load): a
  folder with ``config.yaml`` (KV blocks pinned) and ``trace.csv`` (Poisson arrivals at that
  fraction of capacity).
* ``run`` (GPU, ``goodput.profiler.serve``): every case served in real time; writes
  ``real_requests.csv``, ``real_iterations.csv.gz`` (one row per iteration: wall span, GPU span,
  the cost model's prediction), ``real_tbt.csv`` (histogram of every token's gap) and
  ``real_meta.json`` (GPU, driver, torch/CUDA, date, command).
* ``compare`` (CPU): every case simulated with the same config and trace; per-request and
  percentile errors of TTFT, TPOT, E2E and time between tokens; ``fidelity.json`` per model.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from goodput.sim.config import InstanceGroupConfig, SimConfig, load_config, to_dict

CASE_FILES = ("config.yaml", "trace.csv")
METRICS = ("ttft_s", "tpot_s", "e2e_s")
QUANTILES = (50, 90, 99)


def cases_of(model_dir: Path) -> list[Path]:
    """The case folders (config.yaml + trace.csv) under one model's folder, by name."""
    if not Path(model_dir).is_dir():
        raise FileNotFoundError(f"'{model_dir}' is not a folder; give the folder that holds the "
                                "cases of one model (e.g. profiler/fidelity/h200/llama-3.1-8b)")
    cases = sorted(p for p in Path(model_dir).iterdir()
                   if p.is_dir() and all((p / f).exists() for f in CASE_FILES))
    if not cases:
        raise FileNotFoundError(f"no cases (folders with {' and '.join(CASE_FILES)}) under "
                                f"'{model_dir}'; run `goodput fidelity design` first")
    return cases


def load_case(case: Path):
    from goodput.sim.workload.loaders import load_trace

    return load_config(case / "config.yaml"), load_trace(case / "trace.csv")


# ------------------------------------------------------------------------------ design
def base_config(model: str, gpu: str, policy: str, max_batched_tokens: int = 8192) -> SimConfig:
    """One instance, profiled cost model, KV blocks pinned to the count the catalog gives."""
    from goodput.sim.catalog import get_gpu, get_model
    from goodput.sim.engine.kvcache import kv_capacity

    cfg = SimConfig(cluster=[InstanceGroupConfig(model=model, gpu=gpu, tp=1, count=1)])
    s = cfg.scheduler
    s.policy, s.max_batched_tokens = policy, max_batched_tokens
    s.section("sarathi").chunk_size = s.section("sarathi").token_budget = 512
    s.num_gpu_blocks = kv_capacity(get_model(model), get_gpu(gpu), 1, s.block_size,
                                   s.gpu_memory_utilization, s.activation_reserve_gb).total_blocks
    cfg.cost_model.kind = "profiled"
    cfg.progress = False
    return cfg


def sample_lengths(trace_path, n: int, max_tokens: int, seed: int) -> pd.DataFrame:
    from goodput.sim.workload.loaders import load_trace

    df = load_trace(trace_path).df
    df = df[(df.prompt_tokens + df.output_tokens <= max_tokens) & (df.output_tokens >= 1)]
    pick = np.random.default_rng(seed).choice(len(df), size=n, replace=len(df) < n)
    return df.iloc[pick][["prompt_tokens", "output_tokens"]].reset_index(drop=True)


def poisson_trace(lengths: pd.DataFrame, rate: float, seed: int) -> pd.DataFrame:
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, len(lengths))
    return pd.DataFrame({"request_id": np.arange(len(lengths)), "arrival_s": np.cumsum(gaps),
                         "prompt_tokens": lengths.prompt_tokens.to_numpy(),
                         "output_tokens": lengths.output_tokens.to_numpy()})


def saturation_rate(cfg: SimConfig, lengths: pd.DataFrame, seed: int = 0) -> float:
    """Requests/s the instance completes when it is kept overloaded (simulated).

    All requests arrive within a few seconds; the completion rate between the 20th and the 80th
    percentile of completion times (steady state: neither ramp-up nor the drain at the end) is
    the service capacity.
    """
    from goodput.sim.simulator import simulate

    res = simulate(cfg, poisson_trace(lengths, rate=len(lengths) / 2.0, seed=seed))
    done = np.sort(res.requests.completion_s.dropna().to_numpy())
    lo, hi = done[int(0.2 * len(done))], done[int(0.8 * len(done))]
    return (int(0.8 * len(done)) - int(0.2 * len(done))) / (hi - lo)


def design(model: str, gpu: str, out: Path, lengths_trace, policies=("vllm", "sarathi"),
           loads=(0.3, 0.7, 0.9), n: int = 300, seed: int = 0,
           max_batched_tokens: int = 8192, max_tokens: int = 8192,
           engine: str = "auto") -> list[Path]:
    """Write the cases (see module docstring); returns their folders.

    ``engine``: the cost model's engine term while estimating capacity (``cost_model.engine``);
    the cases themselves keep ``auto``, so comparisons use whatever term ships.
    """
    import copy

    from goodput.sim.catalog import get_model

    out = Path(out)
    max_tokens = min(max_tokens, get_model(model).max_context)
    lengths = sample_lengths(lengths_trace, n, max_tokens, seed)
    probe = sample_lengths(lengths_trace, 1000, max_tokens, seed + 1)
    made = []
    for policy in policies:
        cfg = base_config(model, gpu, policy, max_batched_tokens)
        probe_cfg = copy.deepcopy(cfg)
        probe_cfg.cost_model.engine = engine
        cap = saturation_rate(probe_cfg, probe, seed)
        for load in loads:
            case = out / f"{policy}-load{round(load * 100):02d}"
            case.mkdir(parents=True, exist_ok=True)
            (case / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
            poisson_trace(lengths, cap * load, seed + 7).to_csv(case / "trace.csv", index=False)
            (case / "design.json").write_text(json.dumps({
                "policy": policy, "load": load, "capacity_req_s": round(cap, 3),
                "rate_req_s": round(cap * load, 3), "requests": n, "seed": seed,
                "lengths_from": Path(lengths_trace).name, "capacity_engine": engine,
                "capacity_method": "simulated saturation throughput (profiled cost model), "
                                   "completion rate between the 20th and 80th percentile of "
                                   "completions of 1000 sampled requests arriving within 2 s"},
                indent=1) + "\n")
            made.append(case)
    return made


# ------------------------------------------------------------------------------ run (GPU)
def save_real(case: Path, res, meta: dict) -> None:
    res.requests.to_csv(case / "real_requests.csv", index=False)
    res.iterations.to_csv(case / "real_iterations.csv.gz", index=False, float_format="%.7g")
    from goodput.sim.engine.tbt import EDGES

    nz = np.nonzero(res.tbt_hist)[0]
    pd.DataFrame({"lo_s": EDGES[nz], "hi_s": EDGES[nz + 1], "tokens": res.tbt_hist[nz]}).to_csv(
        case / "real_tbt.csv", index=False, float_format="%.7g")
    (case / "real_meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


# ------------------------------------------------------------------------------ compare
def read_tbt_hist(path) -> np.ndarray:
    """The full TokenGaps histogram from a ``real_tbt.csv`` (which stores its non-empty bins)."""
    from goodput.sim.engine.tbt import EDGES

    df = pd.read_csv(path)
    hist = np.zeros(len(EDGES) - 1)
    idx = np.clip(np.searchsorted(EDGES, df.lo_s.to_numpy(), side="left"), 0, len(hist) - 1)
    # lo_s was written with 7 significant digits: take the nearest edge at or below it
    idx = np.where(np.isclose(EDGES[idx], df.lo_s.to_numpy(), rtol=1e-6), idx, idx - 1)
    np.add.at(hist, idx, df.tokens.to_numpy())
    return hist


def _pct_err(sim: float, real: float) -> float:
    return round(100.0 * (sim / real - 1.0), 2) if real > 0 and not math.isnan(sim) else math.nan


def compare_case(case: Path, engine: str = "auto") -> dict:
    """Simulate ``case`` and score it against its real run (see module docstring).

    ``engine``: the cost model's engine overhead (``cost_model.engine``: auto | none | path).
    """
    from goodput.sim.engine.tbt import percentile_from_hist
    from goodput.sim.metrics import request_metrics
    from goodput.sim.simulator import simulate

    cfg, trace = load_case(case)
    cfg.cost_model.engine = engine
    real = request_metrics(pd.read_csv(case / "real_requests.csv"))
    sim_res = simulate(cfg, trace)
    sim = request_metrics(sim_res.requests)
    both = real.merge(sim, on="request_id", suffixes=("_real", "_sim"))
    ok = (both.outcome_real == "completed") & (both.outcome_sim == "completed")
    out: dict[str, Any] = {"case": case.name, "requests": len(real), "compared": int(ok.sum()),
           "cost_model": next(iter(sim_res.cost_sources.values()))}
    design_path = case / "design.json"
    if design_path.exists():
        out.update({k: v for k, v in json.loads(design_path.read_text()).items()
                    if k in ("policy", "load", "rate_req_s", "capacity_req_s")})
    b = both[ok]
    for m in METRICS:
        r, s = b[f"{m}_real"].to_numpy(float), b[f"{m}_sim"].to_numpy(float)
        keep = ~(np.isnan(r) | np.isnan(s)) & (r > 0)
        r, s = r[keep], s[keep]
        row: dict[str, Any] = {
            "per_request_median_ape_pct": round(float(np.median(np.abs(s / r - 1)) * 100), 2)}
        for q in QUANTILES:
            pr, ps = float(np.percentile(r, q)), float(np.percentile(s, q))
            row[f"p{q}"] = {"real": pr, "sim": ps, "err_pct": _pct_err(ps, pr)}
        out[m] = row
    real_tbt = read_tbt_hist(case / "real_tbt.csv")
    sim_tbt = np.asarray(sim_res.tbt_hist)
    out["tbt_s"] = {}
    for q in QUANTILES:
        tr, ts = percentile_from_hist(real_tbt, q), percentile_from_hist(sim_tbt, q)
        out["tbt_s"][f"p{q}"] = {"real": tr, "sim": ts, "err_pct": _pct_err(ts, tr)}
    out["iterations"] = iteration_errors(pd.read_csv(case / "real_iterations.csv.gz"))
    if cfg.scheduler.section("speculation").method != "none":
        from goodput.profiler.serve.spec_step import decisions_fingerprint

        ran = json.loads((case / "real_meta.json").read_text()).get("spec_decisions")
        now = decisions_fingerprint()
        out["spec_decisions"] = {"run": ran, "simulated": now, "same": ran == now}
    out["throughput_tok_s"] = {
        "real": _throughput(real), "sim": _throughput(sim)}
    return out


def _throughput(df: pd.DataFrame) -> float:
    done = df[df.outcome == "completed"]
    span = done.completion_s.max() - df.arrival_s.min()
    return round(float(done.output_tokens.sum() / span), 1) if span > 0 else math.nan


def iteration_errors(it: pd.DataFrame) -> dict:
    """Per-iteration error of the cost model (prediction vs measured wall span), by kind, and
    the host time outside the GPU span (wall - GPU)."""
    it = it.assign(wall_s=it.end_s - it.start_s)
    out = {}
    for kind, g in it.groupby("kind"):
        err = (g.predicted_s / g.wall_s - 1) * 100
        out[kind] = {"n": len(g), "median_err_pct": round(float(err.median()), 2),
                     "median_ape_pct": round(float(err.abs().median()), 2),
                     "median_wall_ms": round(float(g.wall_s.median() * 1e3), 3),
                     "median_gpu_ms": round(float(g.gpu_s.median() * 1e3), 3),
                     "median_host_ms": round(float((g.wall_s - g.gpu_s).median() * 1e3), 3)}
    return out


def compare(model_dir: Path, engine: str = "auto", tag: str = "") -> dict:
    """Score every served case; writes ``fidelity.json`` (``fidelity-<tag>.json`` with a tag)."""
    model_dir = Path(model_dir)
    cases = [c for c in cases_of(model_dir) if (c / "real_requests.csv").exists()]
    if not cases:
        raise FileNotFoundError(f"no real runs under '{model_dir}'; run `goodput fidelity run` "
                                "on a GPU first")
    meta = json.loads((cases[0] / "real_meta.json").read_text())
    report = {"model_dir": str(model_dir), "measured_on": meta.get("provenance"),
              "engine": engine, "tag": tag, "cases": [compare_case(c, engine) for c in cases]}
    name = f"fidelity-{tag}.json" if tag else "fidelity.json"
    (model_dir / name).write_text(json.dumps(report, indent=1) + "\n")
    return report
