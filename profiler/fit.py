"""Fit the profiled cost model on a measured table and report its held-out error.

``fit_profile(dir)`` reads ``measurements.csv``, holds out a seeded 20% of the batch points,
fits ``goodput.sim.costmodel.profiled`` on the rest and the component sweeps, scores the held-out points
(absolute percentage error of the per-layer time, the quantity the table measures) and writes:

* ``fit.json``: the parameters ``ProfiledCostModel`` loads (fitted on the training 80%, so the
  reported error is the error of exactly the model that ships);
* ``fit_report.json``: median / P95 error overall and per batch kind, the worst points, the seed
  and the command that reproduces it.
"""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np

from goodput.profiler.batches import expand
from goodput.sim.costmodel.profiled import (
    FEATURES,
    LIN_SCALE_KNOTS,
    PiecewiseLinear,
    ProfiledCostModel,
    attention_features,
    lin_scale_basis,
)

HOLDOUT = 0.2
#: Largest relative correction of the context-free sweep the fit may apply (see fit_attention).
LIN_SCALE_BOUND = 0.15


def load_rows(profile: Path) -> list[dict]:
    table = Path(profile) / "measurements.csv"
    if not table.exists():
        raise FileNotFoundError(f"no measurements.csv in '{profile}'; run `goodput profile run` "
                                "first (argument DIR must be a profile directory)")
    with table.open() as f:
        return [r for r in csv.DictReader(f) if r["status"] == "ok"]


def _sweep(rows, kind) -> PiecewiseLinear:
    pts = sorted((int(r["code"].split("=")[1]), float(r["median_s"])) for r in rows
                 if r["kind"] == kind)
    if not pts:
        raise ValueError(f"the table has no measured '{kind}' rows; rerun `goodput profile run`")
    return PiecewiseLinear([p[0] for p in pts], [p[1] for p in pts])


def split_holdout(batch_rows, frac=HOLDOUT, seed=0):
    """Seeded split of the batch rows: (train, test). Same table, same seed -> same split."""
    rows = sorted(batch_rows, key=lambda r: (r["subkind"], r["code"]))
    rng = np.random.default_rng(seed)
    test_idx = set(rng.permutation(len(rows))[:round(frac * len(rows))].tolist())
    return ([r for i, r in enumerate(rows) if i not in test_idx],
            [r for i, r in enumerate(rows) if i in test_idx])


def _fit_line_rel(s, t):
    """a + b * s minimising relative error, both >= 0."""
    s, t = np.asarray(s, float), np.asarray(t, float)
    a_mat = np.stack([1 / t, s / t], 1)
    (a, b), *_ = np.linalg.lstsq(a_mat, np.ones_like(t), rcond=None)
    if b < 0:
        a, b = float(np.median(t)), 0.0
    elif a < 0:
        a, b = 0.0, float(np.sum(s * t / t**2) / np.sum(s * s / t**2))
    return float(a), float(b)


def fit_decode(train):
    per_b: dict[int, list] = {}
    for r in train:
        q, c = expand(r["code"])
        if r["subkind"] == "decode" or (all(x == 1 for x in q)):
            per_b.setdefault(len(q), []).append((sum(c), float(r["median_s"])))
    knots = []
    for b, pts in sorted(per_b.items()):
        if len({s for s, _ in pts}) < 2:
            continue  # one context cannot fix a line; the neighbours' interpolation covers B
        a, slope = _fit_line_rel([p[0] for p in pts], [p[1] for p in pts])
        knots.append((b, a, slope))
    if not knots:
        raise ValueError("no batch size has decode points at two contexts; the grid is too small")
    return {"B": [k[0] for k in knots], "a": [k[1] for k in knots], "b": [k[2] for k in knots]}


def _partial_model(fit: dict) -> ProfiledCostModel:
    return ProfiledCostModel({**fit, "attention": {"features": list(FEATURES),
                                                   "coef": [0.0] * len(FEATURES)}})


def fit_attention(train, fit: dict):
    """Bounded least squares on the residual of non-decode batches after the decode part.

    Columns: the attention features (coefficients >= 0) and lin(T) times hat functions of
    log2 T (``lin_scale_basis``), coefficients bounded to +-LIN_SCALE_BOUND: a relative
    correction of the context-free sweep, smooth in log T. Why: the sweep runs GEMMs back to back
    while a batch interleaves them with memory-bound attention, and an H100/H200 under sustained
    GEMM load lowers its clock to stay in its power limit, so the sweep reads a few percent slow
    where GEMMs are compute-bound (the fitted corrections come out negative there).
    Rows are weighted by 1 / measured time (relative error). Returns (coef, lin_scale).
    """
    from scipy.optimize import lsq_linear

    base = _partial_model(fit)
    xs, ys, ws = [], [], []
    for r in train:
        q, c = expand(r["code"])
        if all(x == 1 for x in q):
            continue
        t = float(r["median_s"])
        t_new = sum(q)
        xs.append(attention_features(q, c, base.group, base.kv_heads, base.sm_count)
                  + [base.lin(t_new) * h for h in lin_scale_basis(t_new)])
        ys.append(t - base.layer_time(q, c))
        ws.append(1 / t)
    n_s = len(LIN_SCALE_KNOTS)
    if not xs:
        return [0.0] * len(FEATURES), [0.0] * n_s
    x = np.asarray(xs) * np.asarray(ws)[:, None]
    y = np.asarray(ys) * np.asarray(ws)
    scale = np.maximum(np.abs(x).max(0), 1e-30)
    lo = np.r_[np.zeros(len(FEATURES)), np.full(n_s, -LIN_SCALE_BOUND)] * scale
    hi = np.r_[np.full(len(FEATURES), np.inf), np.full(n_s, LIN_SCALE_BOUND)] * scale
    sol = lsq_linear(x / scale, y, bounds=(lo, hi)).x / scale
    return sol[:len(FEATURES)].tolist(), sol[len(FEATURES):].tolist()


def fit_overhead(rows):
    pts = [(sum(1 for _ in expand(r["code"])[0]), float(r["median_s"])) for r in rows
           if r["kind"] == "overhead"]
    if len(pts) < 2:
        c0 = pts[0][1] if pts else 0.0
        return {"c0": c0, "c1": 0.0}
    n, t = np.array(pts, float).T
    c1, c0 = np.polyfit(n, t, 1)
    if c1 < 0:
        c0, c1 = float(np.median(t)), 0.0
    return {"c0": float(max(c0, 0.0)), "c1": float(c1)}


def ape_stats(pairs) -> dict:
    if not pairs:
        return {"n": 0}
    e = np.array([abs(p / m - 1) for p, m in pairs]) * 100
    return {"n": len(e), "median_pct": round(float(np.median(e)), 2),
            "p95_pct": round(float(np.percentile(e, 95)), 2), "max_pct": round(float(e.max()), 2)}


def fit_profile(profile, seed: int = 0, holdout: float = HOLDOUT, command: str | None = None):
    """Fit, evaluate on the held-out points, write fit.json and fit_report.json; return report."""
    profile = Path(profile)
    prov = json.loads((profile / "provenance.json").read_text())
    rows = load_rows(profile)
    batch = [r for r in rows if r["kind"] == "batch"]
    train, test = split_holdout(batch, holdout, seed)
    spec, shard = prov["model_spec"], prov["shard"]
    digest = hashlib.sha256((profile / "measurements.csv").read_bytes()).hexdigest()[:10]
    fit = {
        "format": 1, "gpu": prov["gpu"], "model": prov["model"], "tp": prov["tp"],
        "layers": spec["layers"], "hidden_size": spec["hidden_size"],
        "group": shard["q_heads"] // shard["kv_heads"], "kv_heads": shard["kv_heads"],
        "sm_count": prov.get("sm_count") or prov["provenance"].get("sm_count") or 132,
        "profile_version": digest,
        "measured_on": {k: prov["provenance"].get(k) for k in
                        ("device_name", "driver", "cuda", "torch", "date_utc", "git_commit")},
        "linear": _sweep(rows, "linear").to_dict(), "embed": _sweep(rows, "embed").to_dict(),
        "lmhead": _sweep(rows, "lmhead").to_dict(), "overhead": fit_overhead(rows),
        "decode": fit_decode(train),
        "allreduce": prov.get("allreduce"),
    }
    coef, lin_scale = fit_attention(train, fit)
    fit["attention"] = {"features": list(FEATURES), "coef": coef}
    fit["lin_scale"] = {"log2_tokens": list(LIN_SCALE_KNOTS), "scale": lin_scale}
    model = ProfiledCostModel(fit, profile)

    def pairs(rs):
        return [(model.layer_time(*expand(r["code"])), float(r["median_s"])) for r in rs]

    by_kind = {k: ape_stats(pairs([r for r in test if r["subkind"] == k]))
               for k in sorted({r["subkind"] for r in batch})}
    scored = sorted(((abs(p / m - 1) * 100, r["code"], r["subkind"]) for (p, m), r in
                     zip(pairs(test), test, strict=True)), reverse=True)
    heldout = ape_stats(pairs(test))
    report = {
        "profile": f"{prov['gpu']}/{prov['model']}/tp{prov['tp']}",
        "profile_version": digest, "seed": seed, "holdout_fraction": holdout,
        "n_train": len(train), "n_test": len(test),
        "quantity": "per-layer time of the batch (seconds), absolute percentage error",
        "heldout": heldout, "train": ape_stats(pairs(train)), "by_kind": by_kind,
        "worst": [{"error_pct": round(e, 2), "code": c, "kind": k} for e, c, k in scored[:5]],
        "infeasible_points": sum(1 for _ in _infeasible(profile)),
        "command": command or f"goodput profile fit {profile}",
    }
    fit["heldout_error"] = {"median_pct": heldout.get("median_pct"),
                            "p95_pct": heldout.get("p95_pct"), "n": len(test)}
    (profile / "fit.json").write_text(json.dumps(fit, indent=1) + "\n")
    (profile / "fit_report.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def _infeasible(profile: Path):
    with (profile / "measurements.csv").open() as f:
        yield from (r for r in csv.DictReader(f) if r["status"] != "ok")
