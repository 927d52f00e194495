"""Calibrate the roofline's efficiencies on the profiled GPUs, for GPUs without a profile.

Why: a roofline with datasheet priors can be off by tens of percent; the profiles measure what
GEMMs, attention and memory streaming actually reach on H100 and H200. We fit the six
``RooflineParams`` that the profiles constrain (GEMM and attention FLOP efficiency, memory
bandwidth efficiency, per-iteration overhead, per-layer launch cost, per-sequence-per-layer
cost) by minimising the squared log error of
``RooflineCostModel.batch_time`` against every measured batch (iteration time composed from the
measured rows: layers x layer + embedding + LM head + overhead, each profile weighted equally).
The all-reduce is not fitted: ``allreduce_rule="measured"`` takes it from the measured TP2
table's rule (goodput.sim.costmodel.tp_estimate), the same one the profiled TP2 points are composed with.

The result, ``profiler/profiles/calibration.json``, records the error on the profiled GPUs and a
leave-one-GPU-out error (fit on one GPU, score on the other), overall and by phase and TP: the
honest estimate of how well a calibrated roofline transfers to a GPU nobody profiled.
``python -m goodput.profiler.calibrate --table`` prints that table (docs/costmodel.md quotes it).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from goodput.profiler.batches import expand
from goodput.profiler.fit import ape_stats, load_rows
from goodput.sim.catalog import get_gpu, get_model
from goodput.sim.costmodel.base import Batch
from goodput.sim.costmodel.profiled import ProfiledCostModel, logit_rows
from goodput.sim.costmodel.roofline import RooflineCostModel, RooflineParams

FITTED = ("gemm_flops_efficiency", "attention_flops_efficiency", "memory_bw_efficiency",
          "iteration_overhead_s", "layer_launch_s", "per_seq_layer_s")
N_EFF = 3


def _profiles(root: Path, gpus=None):
    for fit in sorted(Path(root).glob("*/*/tp*/fit.json")):
        d = fit.parent
        gpu = d.parent.parent.name
        if gpus and gpu not in gpus:
            continue
        try:
            get_gpu(gpu)
            get_model(d.parent.name)
        except ValueError:
            continue  # e.g. the CPU mode's tiny model
        yield gpu, d


def measured_points(root: Path, gpus=None, per_profile: int = 80, seed: int = 0):
    """[(gpu, model, tp, Batch, measured iteration seconds)], a seeded sample per profile."""
    rng = np.random.default_rng(seed)
    out = []
    for gpu, d in _profiles(root, gpus):
        cm = ProfiledCostModel.from_dir(d)
        rows = [r for r in load_rows(d) if r["kind"] == "batch"]
        idx = rng.permutation(len(rows))[:per_profile]
        for i in sorted(idx):
            q, c = expand(rows[i]["code"])
            t = sum(q)
            meas = (cm.layers * float(rows[i]["median_s"]) + cm.embed(t)
                    + cm.lmhead(logit_rows(q)) + cm._allreduce(t) + cm._overhead(len(q)))
            out.append((gpu, d.parent.name, cm.tp, Batch(q, c), meas))
    return out


def _params(x) -> RooflineParams:
    eff = [1 / (1 + math.exp(-v)) for v in x[:N_EFF]]
    kw: dict[str, Any] = dict(zip(FITTED, [*eff, *(math.exp(v) for v in x[N_EFF:])],
                                  strict=True))
    return RooflineParams(**kw)


def phase(batch: Batch) -> str:
    """decode (every sequence computes one token), prefill (none does) or mixed."""
    ones = sum(1 for q in batch.new_tokens if q == 1)
    return "decode" if ones == batch.size else "prefill" if ones == 0 else "mixed"


def _score(params: RooflineParams, pts, models) -> list[tuple[float, float]]:
    res = []
    built: dict = {}
    for gpu, model, tp, batch, meas in pts:
        key = (gpu, model, tp)
        if key not in models:
            models[key] = (get_model(model), get_gpu(gpu))
        if key not in built:
            m, g = models[key]
            built[key] = RooflineCostModel(m, g, tp, params)
        res.append((built[key].batch_time(batch), meas))
    return res


def _fit(pts) -> RooflineParams:
    from scipy.optimize import minimize

    models: dict = {}
    groups: dict = {}
    for i, p in enumerate(pts):
        groups.setdefault(p[:3], []).append(i)

    def loss(x):
        pairs = _score(_params(x), pts, models)
        errs = [np.mean([math.log(pairs[i][0] / pairs[i][1]) ** 2 for i in idx])
                for idx in groups.values()]
        return float(np.mean(errs))

    p0 = RooflineParams()
    x0 = [math.log(getattr(p0, f) / (1 - min(getattr(p0, f), 0.999))) for f in FITTED[:N_EFF]]
    x0 += [math.log(p0.iteration_overhead_s), math.log(2e-6), math.log(0.1e-6)]
    best = minimize(loss, x0, method="Nelder-Mead",
                    options={"maxiter": 1500, "xatol": 1e-3, "fatol": 1e-7})
    return _params(best.x)


def _by(pairs, pts, key) -> dict:
    out: dict = {}
    for pair, p in zip(pairs, pts, strict=True):
        out.setdefault(key(p), []).append(pair)
    return {k: ape_stats(v) for k, v in sorted(out.items())}


def calibrate(root: Path, gpus=None) -> dict:
    """Fit, score, and write ``root/calibration.json``; returns its content."""
    pts = measured_points(root, gpus)
    if not pts:
        raise ValueError(f"no fitted profiles of catalog GPUs/models under '{root}'; run "
                         "`goodput profile run` and `goodput profile fit` first")
    used = sorted({p[0] for p in pts})
    params = _fit(pts)
    models: dict = {}
    error = {"calibrated": ape_stats(_score(params, pts, models)),
             "uncalibrated_priors": ape_stats(_score(RooflineParams(), pts, models))}
    by_phase: dict = {}
    if len(used) > 1:
        for held in used:
            train = [p for p in pts if p[0] != held]
            test = [p for p in pts if p[0] == held]
            fitted = _fit(train)
            pairs = _score(fitted, test, models)
            error[f"leave_out_{held}"] = ape_stats(pairs)
            by_phase[f"leave_out_{held}"] = {
                **{f"{k}": v for k, v in _by(pairs, test, lambda p: phase(p[3])).items()},
                **{f"tp{k}": v for k, v in _by(pairs, test, lambda p: p[2]).items()},
                "signed_median_pct": round(float(np.median([100 * (a / b - 1)
                                                            for a, b in pairs])), 2),
                "fitted_params": asdict(fitted)}
    cal = {
        "gpus": used, "params": asdict(params), "fitted": list(FITTED),
        "not_fitted": "allreduce_rule=measured: the TP all-reduce is the measured TP2 rule "
                      "(goodput.sim.costmodel.tp_estimate); nvlink_efficiency and allreduce_latency_s "
                      "are unused priors",
        "error": error, "error_by_phase": by_phase, "points": len(pts),
        "quantity": "iteration time, absolute percentage error",
        "command": "goodput profile calibrate",
    }
    (Path(root) / "calibration.json").write_text(json.dumps(cal, indent=1) + "\n")
    return cal


def loo_table(cal: dict) -> str:
    """Markdown table of the leave-one-GPU-out errors recorded in a calibration."""
    rows = ["| held-out GPU | slice | n | median % | P95 % | max % |", "|---|---|---|---|---|---|"]
    for held, d in cal.get("error_by_phase", {}).items():
        gpu = held.removeprefix("leave_out_")
        rows.append(_row(gpu, "all", cal["error"][held]))
        for k, v in d.items():
            if isinstance(v, dict) and "n" in v:
                rows.append(_row(gpu, k, v))
        rows.append(f"| {gpu} | signed median | | {d.get('signed_median_pct')} | | |")
    for k in ("calibrated", "uncalibrated_priors"):
        if k in cal.get("error", {}):
            rows.append(_row("(none: fit on all)" if k == "calibrated" else "(priors)", "all",
                             cal["error"][k]))
    return "\n".join(rows)


def _row(gpu, sl, st) -> str:
    return (f"| {gpu} | {sl} | {st.get('n')} | {st.get('median_pct')} | {st.get('p95_pct')} | "
            f"{st.get('max_pct')} |")


def main(argv=None) -> None:
    import argparse

    from goodput.sim.costmodel.profile_store import PROFILES_ROOT

    ap = argparse.ArgumentParser(description="calibrate the roofline on the profiles and print "
                                 "the leave-one-GPU-out error table")
    ap.add_argument("--root", default=str(PROFILES_ROOT))
    ap.add_argument("--table", action="store_true",
                    help="print the table of the existing calibration.json, do not refit")
    args = ap.parse_args(argv)
    root = Path(args.root)
    cal = (json.loads((root / "calibration.json").read_text()) if args.table
           else calibrate(root))
    print(loo_table(cal))


if __name__ == "__main__":
    main()
