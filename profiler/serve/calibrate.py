"""Fit a GPU's engine overhead (goodput.sim.costmodel.engine) on the iteration logs of real serving runs.

Each logged iteration gives its measured wall time and the profile's kernel-only prediction for
the same batch; the fit minimises the *relative* error of

    wall = (1 + kernel_scale) * kernel + per_iteration_s + per_seq_s * n_seqs

with a soft-L1 loss, so that the rare iteration stalled by something outside the engine (a
Python garbage collection, a late Triton compile) cannot pull the line. Fitting on one model's
runs and scoring another's (``goodput fidelity compare --engine``) measures how well the
calibration carries over; the shipped file is fitted on all of them.
"""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from goodput.profiler.serve.fidelity import cases_of, load_case


def _profile_model(cfg):
    from goodput.sim.catalog import get_gpu
    from goodput.sim.costmodel.profiled import ProfiledCostModel, find_profile

    g = cfg.cluster[0]
    path = find_profile(get_gpu(g.gpu).name, g.model, g.tp)
    if path is None:
        raise FileNotFoundError(f"no profile for {g.model} on {g.gpu} tp={g.tp}: the engine fit "
                                "needs the profile the runs were predicted with")
    return ProfiledCostModel.from_dir(path, engine="none")


def _batch_of(row) -> tuple[list[int], list[int]] | None:
    """(new tokens, contexts) of a logged iteration, rebuilt from its columns: exact for decodes
    and single prompts, and for any iteration logged with its ``chunks``; the decodes of a mixed
    iteration share the decode context equally (their attention is priced by its sum). None:
    a mixed iteration logged before ``chunks`` existed (its chunk contexts are unknown)."""
    n, tokens, ctx = int(row.n_seqs), int(row.new_tokens), int(row.context_tokens)
    text = row.chunks if isinstance(row.chunks, str) else ""
    if row.kind == "decode":
        pairs: list[tuple[int, int]] = []
    elif text:
        pairs = [(int(q), int(c)) for q, c in (p.split("@") for p in text.split(";"))]
    elif row.kind == "prefill" and n == 1:
        pairs = [(tokens, ctx)]
    else:
        return None
    q_lens, ctx_lens = [q for q, _ in pairs], [c for _, c in pairs]
    d = n - len(pairs)
    if d:
        dq, rq = divmod(tokens - sum(q_lens), d)
        dc, rc = divmod(ctx - sum(ctx_lens), d)
        q_lens += [dq + (i < rq) for i in range(d)]
        ctx_lens += [dc + (i < rc) for i in range(d)]
    return q_lens, ctx_lens


def reprice(it: pd.DataFrame, cfg) -> pd.Series:
    """The profile's kernel-only time of each logged iteration under the profile shipped *now*
    (``_batch_of``): the engine term is then fitted against the profile the simulator will use,
    not the one the run happened to be predicted with. Rows that cannot be rebuilt keep the
    logged ``kernel_s``."""
    from goodput.sim.costmodel.base import Batch

    cm = _profile_model(cfg)
    if "chunks" not in it:
        it = it.assign(chunks="")
    out = it.kernel_s.astype(float).copy()
    for i, row in enumerate(it.itertuples(index=False)):
        if row.kind == "spec":
            continue
        batch = _batch_of(row)
        if batch is not None:
            out.iloc[i] = cm.kernel_time(Batch(*batch))
    return out


def served_logs(dirs):
    """(folder, case folder, config, iteration log) of every served case under ``dirs``."""
    for d in dirs:
        for case in cases_of(Path(d)):
            log = case / "real_iterations.csv.gz"
            if log.exists():
                yield Path(d), case, load_case(case)[0], pd.read_csv(log)


def iteration_table(model_dirs, repriced: bool = True) -> pd.DataFrame:
    """Every logged iteration of every served case: wall_s, kernel_s, n_seqs, kind, model.
    ``repriced``: kernel_s from the current profile (``reprice``), else as the run logged it."""
    frames = []
    for _, case, cfg, it in served_logs(model_dirs):
        if "kernel_s" not in it or it.kernel_s.isna().all():
            # logs written before kernel_s existed: the prediction was profile-only
            cm = _profile_model(cfg)
            it["kernel_s"] = it.predicted_s - cm.overhead_c[0] - cm.overhead_c[1] * it.n_seqs
        if repriced:
            it["kernel_s"] = reprice(it, cfg)
        frames.append(it.assign(wall_s=it.end_s - it.start_s, model=cfg.cluster[0].model,
                                gpu=cfg.cluster[0].gpu, case=case.name))
    if not frames:
        raise FileNotFoundError(f"no real_iterations.csv.gz under {list(map(str, model_dirs))}; "
                                "run `goodput fidelity run` on a GPU first")
    return pd.concat(frames, ignore_index=True)


def fit_engine(it: pd.DataFrame, per_chunk: bool = False) -> dict:
    """Fit the engine term on logged iterations (speculative steps, priced by the simulator's
    draft + verify, are left out). ``per_chunk``: one more term, seconds per iteration that
    carries a prompt chunk (mixed or prefill): such iterations do more host work (chunk
    metadata, more attention launches between graph pieces, prefill bookkeeping) than a decode,
    which one per-iteration constant fitted mostly on decodes under-charges (docs/fidelity.md,
    "Mixed iterations"). The simulator's ``EngineOverhead`` does not apply it yet."""
    from scipy.optimize import least_squares

    it = it[it.kind != "spec"]
    w = it.wall_s.to_numpy(float)
    k = it.kernel_s.to_numpy(float)
    n = it.n_seqs.to_numpy(float)
    chunk = it.kind.isin(["mixed", "prefill"]).to_numpy(float)

    def residual(p):
        extra = p[3] * chunk if per_chunk else 0.0
        return ((1 + p[0]) * k + p[1] + p[2] * n + extra - w) / w

    x0, lo, hi = [0.0, 5e-4, 0.0], [-0.4, 0.0, 0.0], [1.0, 0.05, 1e-3]
    if per_chunk:
        x0, lo, hi = [*x0, 0.0], [*lo, 0.0], [*hi, 0.05]
    sol = least_squares(residual, x0, loss="soft_l1", f_scale=0.02, bounds=(lo, hi))
    rho, e0, e1 = (float(x) for x in sol.x[:3])
    err = residual(sol.x)
    by_kind = {kind: {"n": int(m.sum()), "median_err_pct": round(float(np.median(err[m])) * 100, 2),
                      "median_ape_pct": round(float(np.median(np.abs(err[m]))) * 100, 2)}
               for kind in sorted(it.kind.unique()) for m in [(it.kind == kind).to_numpy()]}
    out = {"kernel_scale": rho, "per_iteration_s": e0, "per_seq_s": e1, "residuals": by_kind}
    if per_chunk:
        out["per_chunk_s"] = float(sol.x[3])
    return out


def score_heldout(fit: dict, holdout_dirs) -> dict:
    """The fitted term on iterations it never saw (another model's runs, another session):
    per kind, the median signed error and the P95 of the absolute error of whole iterations
    against their measured wall time. This, not the fit's own residual, is the per-iteration
    error ``describe()`` quotes (goodput.sim.costmodel.errors)."""
    from goodput.sim.costmodel.engine import EngineOverhead

    it = iteration_table(holdout_dirs)
    it = it[it.kind != "spec"]
    # applied to whole columns, as per_case and residuals_by_kind do (apply is plain arithmetic)
    term: Any = EngineOverhead(fit["kernel_scale"], fit["per_iteration_s"], fit["per_seq_s"])
    err = (term.apply(it.kernel_s, it.n_seqs) / it.wall_s - 1).to_numpy(float)
    by_kind = {kind: {"n": int(m.sum()), "median_err_pct": round(float(np.median(err[m])) * 100, 2),
                      "p95_ape_pct": round(float(np.percentile(np.abs(err[m]), 95)) * 100, 2)}
               for kind in sorted(it.kind.unique()) for m in [(it.kind == kind).to_numpy()]}
    return {"on": [f"{Path(d).parent.name}/{Path(d).name}" for d in holdout_dirs],
            "iterations": len(it), "by_kind": by_kind,
            "p95_ape_pct": round(float(np.percentile(np.abs(err), 95)) * 100, 2)}


def calibrate(model_dirs, out: Path, name: str | None = None, per_chunk: bool = False,
              holdout_dirs=()) -> dict:
    it = iteration_table(model_dirs)
    gpus = sorted(it.gpu.unique())
    if len(gpus) != 1:
        raise ValueError(f"the runs span several GPUs {gpus}; calibrate one GPU at a time")
    fit = fit_engine(it, per_chunk)
    meta = {}
    for d in model_dirs:
        for case in cases_of(Path(d)):
            if (case / "real_meta.json").exists():
                meta = json.loads((case / "real_meta.json").read_text()).get("provenance", {})
                break
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=False).stdout.strip()
    except OSError:
        commit = ""
    keys = ("kernel_scale", "per_iteration_s", "per_seq_s") + (("per_chunk_s",) if per_chunk else ())
    doc = {"params": {k: fit[k] for k in keys},
           "name": name or f"{gpus[0]}-serve-loop",
           "gpu": gpus[0],
           "form": "(1 + kernel_scale) * kernel + per_iteration_s + per_seq_s * n_seqs"
                   + (" + per_chunk_s * [a prompt chunk in the batch]" if per_chunk else ""),
           "fitted_on": sorted(f"{m}/{c}" for m, c in set(zip(it.model, it.case, strict=True))),
           "iterations": len(it), "fit_residuals": fit["residuals"],
           **({"heldout": score_heldout(fit, holdout_dirs)} if holdout_dirs else {}),
           "engine": "goodput.profiler.serve (random-weight model, piecewise CUDA graphs, eager paged "
                     "attention, synchronous token copy)",
           "runs_measured_on": {k: meta.get(k) for k in ("device_name", "driver", "torch",
                                                          "cuda", "date_utc")},
           "fitted_utc": datetime.now(UTC).isoformat(timespec="seconds"),
           "git_commit": commit,
           "command": " ".join(["goodput", *sys.argv[1:]]) if sys.argv else ""}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def per_case(model_dirs, engine=None) -> str:
    """One engine fit per case, and the GPU span beyond the kernel prediction of its decodes:
    shows which part of the term is stable across runs and models and which is not. With an
    ``engine`` (EngineOverhead), also how far the slowest iterations are from its prediction."""
    it = iteration_table(model_dirs)
    ratio = it.wall_s / engine.apply(it.kernel_s, it.n_seqs) if engine is not None else None
    lines = []
    for (model, case), g in it.groupby(["model", "case"]):
        f = fit_engine(g)
        d = g[g.kind == "decode"]
        line = (f"{model:14s} {case:15s} kernel x {1 + f['kernel_scale']:.3f} + "
                f"{f['per_iteration_s'] * 1e3:.3f} ms + {f['per_seq_s'] * 1e6:5.1f} us/seq;"
                f" decodes: GPU span - kernels {(d.gpu_s - d.kernel_s).median() * 1e3:.3f} "
                f"ms, host after GPU {(d.wall_s - d.gpu_s).median() * 1e3:.3f} ms")
        if ratio is not None:
            line += f"; slowest iteration {ratio[g.index].max():.2f}x '{engine.name}'"
        lines.append(line)
    if ratio is not None:
        lines.append(f"all cases: {int((ratio > 1.5).sum())} of {len(ratio)} iterations over "
                     f"1.5x '{engine.name}', 99.9th percentile {ratio.quantile(0.999):.2f}x, "
                     f"slowest {ratio.max():.2f}x")
    return "\n".join(lines)


def residuals_by_kind(model_dirs, engine) -> str:
    """Median signed error of ``engine`` applied to the logged kernel times, per folder and
    iteration kind, and per Sarathi case for the mixed iterations: where a shortfall of one
    kind (mixed) stands against the others (docs/fidelity.md, "Mixed iterations")."""
    lines = []
    for d in model_dirs:
        it = iteration_table([d])
        it = it[it.kind != "spec"]
        err = engine.apply(it.kernel_s, it.n_seqs) / it.wall_s - 1
        kinds = ", ".join(f"{k} {100 * err[it.kind == k].median():+.1f}% (n={int((it.kind == k).sum())})"
                          for k in ("decode", "mixed", "prefill") if (it.kind == k).any())
        mixed = it.kind == "mixed"
        cases = ", ".join(f"{c} {100 * err[mixed & (it.case == c)].median():+.1f}%"
                          for c in sorted(it[mixed].case.unique()))
        lines.append(f"{d}: {kinds}; mixed by case: {cases}")
    return "\n".join(lines)


def describe(doc: dict) -> str:
    p = doc["params"]
    lines = [f"engine overhead '{doc['name']}' from {doc['iterations']} iterations: "
             f"kernel x {1 + p['kernel_scale']:.3f} + {p['per_iteration_s'] * 1e3:.3f} ms "
             f"+ {p['per_seq_s'] * 1e6:.2f} us/seq"
             + (f" + {p['per_chunk_s'] * 1e3:.3f} ms per iteration with a prompt chunk"
                if "per_chunk_s" in p else "")]
    for kind, r in doc["fit_residuals"].items():
        lines.append(f"  {kind:8s} n={r['n']:6d}  median error {r['median_err_pct']:+.2f}%  "
                     f"median |error| {r['median_ape_pct']:.2f}%")
    held = doc.get("heldout")
    if held:
        lines.append(f"held out ({held['iterations']} iterations of {', '.join(held['on'])}): "
                     f"P95 |error| {held['p95_ape_pct']:.1f}%")
        for kind, r in held["by_kind"].items():
            lines.append(f"  {kind:8s} n={r['n']:6d}  median error {r['median_err_pct']:+.2f}%  "
                         f"P95 |error| {r['p95_ape_pct']:.2f}%")
    return "\n".join(lines)


__all__ = ["calibrate", "describe", "fit_engine", "iteration_table", "per_case", "reprice",
           "residuals_by_kind", "score_heldout", "served_logs"]
