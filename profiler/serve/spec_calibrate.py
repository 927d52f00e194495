"""Speculative steps of real serving runs against the simulator's price for them: the per-step
table (drafting and verifying), and two checks of whether a host term the simulator lacks would
help -- one per draft pass (``draft_pass_check``) and one per step (``step_host_check``, fitted on
some folders and scored on others). Both report; neither writes a term the simulator applies,
because neither carried in the committed runs (docs/fidelity.md, "Speculative decoding on the
real engine")."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from goodput.profiler.serve.calibrate import iteration_table, served_logs


def _draft_kernel_lines(cfg):
    """(intercept(batch), slope) of one draft pass's kernel time, from the draft's own profile
    without any host term: a decode pass is linear in its batch's total context."""
    from goodput.sim.catalog import get_gpu
    from goodput.sim.costmodel.base import Batch
    from goodput.sim.costmodel.profiled import ProfiledCostModel, find_profile

    spec, g = cfg.scheduler.section("speculation"), cfg.cluster[0]
    path = find_profile(get_gpu(g.gpu).name, spec.draft_model, g.tp)
    if path is None:
        raise FileNotFoundError(f"no profile for the draft {spec.draft_model!r} on {g.gpu}")
    cm = ProfiledCostModel.from_dir(path, engine="none")

    def at(b: int, ctx_sum: float) -> float:
        per, rest = divmod(int(ctx_sum), b)
        return cm.kernel_time(Batch.decode([per + (i < rest) for i in range(b)]))
    return at, int(spec.tree_width)


def draft_steps(spec_dirs) -> pd.DataFrame:
    """Every logged speculative step with its drafting span measured (CUDA events around the k
    draft passes) and the draft's kernel-only time for the same passes: pass i of k attends
    each sequence's context plus the i tokens drafted before it."""
    frames = []
    for d, case, cfg, it in served_logs(spec_dirs):
        it = it[(it.kind == "spec") & it.draft_s.notna() & (it.spec_k > 0)]
        if it.empty:
            continue
        at, width = _draft_kernel_lines(cfg)
        kern = []
        for b, ctx, k in zip(it.n_seqs, it.context_tokens, it.spec_k, strict=True):
            rows = int(b) * width
            first, second = at(rows, ctx * width), at(rows, ctx * width + rows)
            kern.append(k * first + (second - first) * k * (k - 1) / 2)
        frames.append(pd.DataFrame({"draft_s": it.draft_s.to_numpy(float),
                                    "kernel_s": np.asarray(kern), "k": it.spec_k.to_numpy(int),
                                    "n_seqs": it.n_seqs.to_numpy(int) * width,
                                    "folder": f"{Path(d).parent.name}/{Path(d).name}",
                                    "case": case.name}))
    if not frames:
        raise FileNotFoundError(f"no speculative steps with a measured draft span under "
                                f"{list(map(str, spec_dirs))}")
    return pd.concat(frames, ignore_index=True)


def fit_draft_pass(steps: pd.DataFrame, kernel_scale: float) -> dict:
    """Host seconds per draft pass (``per_iteration_s + per_seq_s * n_seqs``) on top of the
    draft's kernels scaled like the target's: each of the k passes waits on the host for its
    drafted tokens (a synchronous copy, then the next pass's inputs), which the target's engine
    term, fitted on iterations that also schedule and do bookkeeping, does not describe."""
    from scipy.optimize import least_squares

    w, kern = steps.draft_s.to_numpy(float), steps.kernel_s.to_numpy(float)
    k, n = steps.k.to_numpy(float), steps.n_seqs.to_numpy(float)

    def residual(p):
        return ((1 + kernel_scale) * kern + k * (p[0] + p[1] * n) - w) / w

    sol = least_squares(residual, [2e-4, 0.0], loss="soft_l1", f_scale=0.02,
                        bounds=([0.0, 0.0], [0.05, 1e-3]))
    return {"per_iteration_s": float(sol.x[0]), "per_seq_s": float(sol.x[1]),
            "steps": len(steps), "fitted_on": sorted(steps.folder.unique()),
            "fit": score_draft_pass(steps, kernel_scale, float(sol.x[0]), float(sol.x[1]))}


def score_draft_pass(steps: pd.DataFrame, kernel_scale: float, per_pass_s: float,
                     per_seq_s: float) -> dict:
    """Median signed and P95 absolute error of the priced drafting span, per folder."""
    pred = ((1 + kernel_scale) * steps.kernel_s + steps.k * (per_pass_s + per_seq_s * steps.n_seqs))
    err = pred / steps.draft_s - 1
    return {f: {"steps": int(m.sum()), "median_err_pct": round(float(err[m].median()) * 100, 2),
                "p95_ape_pct": round(float(err[m].abs().quantile(0.95)) * 100, 2)}
            for f in sorted(steps.folder.unique()) for m in [steps.folder == f]}


def draft_pass_check(spec_dirs, engine) -> str:
    """Does a draft pass need a host term of its own? The simulator prices each of a step's k
    draft passes with the target's engine term (``engine``); this fits a per-pass host term on
    the measured drafting spans instead and scores both, per folder."""
    steps = draft_steps(spec_dirs)
    fit = fit_draft_pass(steps, engine.kernel_scale)
    ours = score_draft_pass(steps, engine.kernel_scale, engine.per_iteration_s, engine.per_seq_s)
    lines = [f"draft pass host term fitted on {fit['steps']} steps: {fit['per_iteration_s'] * 1e3:.3f} ms + "
             f"{fit['per_seq_s'] * 1e6:.2f} us/seq per pass (engine term '{engine.name}': "
             f"{engine.per_iteration_s * 1e3:.3f} ms + {engine.per_seq_s * 1e6:.2f} us/seq)"]
    for f in sorted(ours):
        a, b = ours[f], fit["fit"][f]
        lines.append(f"  {f}: {a['steps']} steps; drafting span median error {a['median_err_pct']:+.1f}% "
                     f"(P95 |error| {a['p95_ape_pct']:.1f}%) with the engine term, "
                     f"{b['median_err_pct']:+.1f}% ({b['p95_ape_pct']:.1f}%) with the fitted one")
    return "\n".join(lines)


def spec_steps(model_dirs) -> str:
    """Speculative steps of each served case: the simulator's price against the measured step,
    split into drafting (k draft passes, CUDA events around them) and verifying (the rest of the
    GPU span), medians of the per-step ratios."""
    lines = ["| case | steps | median k | median batch | step: measured / predicted ms | draft: "
             "error | verify: error | host after GPU ms |", "|---|---|---|---|---|---|---|---|"]
    for d in model_dirs:
        it = iteration_table([d])
        for case, g in it[it.kind == "spec"].groupby("case"):
            verify = g.gpu_s - g.draft_s
            pverify = g.predicted_s - g.predicted_draft_s
            lines.append(
                f"| {case} | {len(g)} | {g.spec_k.median():.0f} | {g.n_seqs.median():.0f} | "
                f"{g.wall_s.median() * 1e3:.2f} / {g.predicted_s.median() * 1e3:.2f} | "
                f"{100 * ((g.predicted_draft_s / g.draft_s).median() - 1):+.1f}% | "
                f"{100 * ((pverify / verify).median() - 1):+.1f}% | "
                f"{(g.wall_s - g.gpu_s).median() * 1e3:.2f} |")
    return "\n".join(lines)


def _spec_rows(dirs) -> pd.DataFrame:
    frames = []
    for d in dirs:
        it = iteration_table([d], repriced=False)
        it = it[it.kind == "spec"]
        frames.append(it.assign(folder=f"{Path(d).parent.name}/{Path(d).name}"))
    return pd.concat(frames, ignore_index=True)


def step_host_check(fit_dirs, held_dirs) -> str:
    """A host term per speculative step on top of the simulator's price (as the runs logged it),
    fitted (soft-L1, relative error) on ``fit_dirs`` and scored on ``held_dirs``: the medians of
    the step's relative error before and after, per folder."""
    from scipy.optimize import least_squares

    fit, held = _spec_rows(fit_dirs), _spec_rows(held_dirs)

    def err(df: pd.DataFrame, extra: float) -> np.ndarray:
        w = df.wall_s.to_numpy(float)
        return (df.predicted_s.to_numpy(float) + extra - w) / w

    sol = least_squares(lambda p: err(fit, p[0]), [0.0], loss="soft_l1", f_scale=0.02)
    extra = float(sol.x[0])
    lines = [f"per-step host term fitted on {len(fit)} steps of {', '.join(sorted(fit.folder.unique()))}: "
             f"{extra * 1e3:.3f} ms"]
    for label, df in (("fitted", fit), ("held out", held)):
        for f, g in df.groupby("folder"):
            before, after = 100 * np.median(err(g, 0.0)), 100 * np.median(err(g, extra))
            lines.append(f"  {label:8s} {f}: {len(g)} steps, median error {before:+.2f}% "
                         f"without, {after:+.2f}% with it")
    return "\n".join(lines)


__all__ = ["draft_pass_check", "draft_steps", "fit_draft_pass", "score_draft_pass", "spec_steps",
           "step_host_check"]
