"""Calibrate the roofline's efficiencies on the profiled GPUs, for GPUs without a profile.

Why: a roofline with datasheet priors can be off by tens of percent; the profiles measure what
GEMMs, attention and memory streaming actually reach on H100 and H200. We fit the four
``RooflineParams`` that the profiles constrain (GEMM and attention FLOP efficiency, memory
bandwidth efficiency, per-iteration overhead) by minimising the squared log error of
``RooflineCostModel.batch_time`` against every measured batch (iteration time composed from the
measured rows: layers x layer + embedding + LM head + overhead, each profile weighted equally).
The link efficiency and all-reduce latency are not measured (one GPU) and keep their priors.

The result, ``profiler/profiles/calibration.json``, records the error on the profiled GPUs and a
leave-one-GPU-out error (fit on one GPU, score on the other): the honest estimate of how well a
calibrated roofline transfers to a GPU nobody profiled.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np

from profiler.batches import expand
from profiler.fit import ape_stats, load_rows
from sim.catalog import get_gpu, get_model
from sim.costmodel.base import Batch
from sim.costmodel.profiled import ProfiledCostModel, logit_rows
from sim.costmodel.roofline import RooflineCostModel, RooflineParams

FITTED = ("gemm_flops_efficiency", "attention_flops_efficiency", "memory_bw_efficiency",
          "iteration_overhead_s")


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
    eff = [1 / (1 + math.exp(-v)) for v in x[:3]]
    return RooflineParams(**dict(zip(FITTED, [*eff, math.exp(x[3])], strict=True)))


def _score(params: RooflineParams, pts, models) -> list[tuple[float, float]]:
    res = []
    for gpu, model, tp, batch, meas in pts:
        key = (gpu, model, tp)
        if key not in models:
            models[key] = (get_model(model), get_gpu(gpu))
        m, g = models[key]
        res.append((RooflineCostModel(m, g, tp, params).batch_time(batch), meas))
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
    x0 = [math.log(getattr(p0, f) / (1 - min(getattr(p0, f), 0.999))) for f in FITTED[:3]]
    x0.append(math.log(p0.iteration_overhead_s))
    best = minimize(loss, x0, method="Nelder-Mead",
                    options={"maxiter": 400, "xatol": 1e-3, "fatol": 1e-6})
    return _params(best.x)


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
    if len(used) > 1:
        for held in used:
            train = [p for p in pts if p[0] != held]
            test = [p for p in pts if p[0] == held]
            error[f"leave_out_{held}"] = ape_stats(_score(_fit(train), test, models))
    cal = {
        "gpus": used, "params": asdict(params), "fitted": list(FITTED),
        "not_fitted": "nvlink_efficiency and allreduce_latency_s keep their priors: all-reduce "
                      "was not measured (one GPU per machine)",
        "error": error, "points": len(pts),
        "quantity": "iteration time, absolute percentage error",
        "command": "goodput profile calibrate",
    }
    (Path(root) / "calibration.json").write_text(json.dumps(cal, indent=1) + "\n")
    return cal
