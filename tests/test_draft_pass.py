"""The drafting-span check of speculative runs (``goodput fidelity calibrate --spec``): a per-pass
host term fitted on drafting spans recovers known terms, and scoring measures its error."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from goodput.profiler.serve.spec_calibrate import fit_draft_pass, score_draft_pass


def _steps(per_pass, per_seq, scale, n=400, seed=3, folder="h200/spec"):
    rng = np.random.default_rng(seed)
    k = rng.integers(1, 8, n)
    b = rng.integers(1, 64, n)
    kern = k * (1e-3 + 2e-5 * b)
    wall = (1 + scale) * kern + k * (per_pass + per_seq * b)
    return pd.DataFrame({"draft_s": wall, "kernel_s": kern, "k": k, "n_seqs": b,
                         "folder": folder, "case": "c"})


def test_fit_draft_pass_recovers_known_host_terms():
    steps = _steps(7e-4, 3e-6, 0.04)
    doc = fit_draft_pass(steps, 0.04)
    assert doc["per_iteration_s"] == pytest.approx(7e-4, rel=1e-3)
    assert doc["per_seq_s"] == pytest.approx(3e-6, rel=1e-2)
    assert doc["steps"] == 400 and doc["fitted_on"] == ["h200/spec"]
    assert abs(doc["fit"]["h200/spec"]["median_err_pct"]) < 0.05
    # scored with twice the per-pass host time, every step is over-predicted by its host share
    host_share = (steps.k * (7e-4 + 3e-6 * steps.n_seqs) / steps.draft_s).median()
    worse = score_draft_pass(steps, 0.04, 14e-4, 3e-6)["h200/spec"]
    assert worse["median_err_pct"] > 0.8 * 100 * host_share > 5


def test_step_host_check_fits_on_one_folder_and_scores_the_other(monkeypatch):
    """Steps of folder A run 0.5 ms past their price, folder B's exactly at it: the fitted term is
    0.5 ms, A's error goes to 0 and B's becomes the term's share of its steps."""
    from goodput.profiler.serve import spec_calibrate

    rng = np.random.default_rng(5)
    price = rng.uniform(0.010, 0.020, 300)
    frames = {"A": pd.DataFrame({"predicted_s": price, "wall_s": price + 5e-4, "folder": "h200/A"}),
              "B": pd.DataFrame({"predicted_s": price, "wall_s": price, "folder": "h200/B"})}
    monkeypatch.setattr(spec_calibrate, "_spec_rows", lambda dirs: pd.concat([frames[d] for d in dirs]))
    out = spec_calibrate.step_host_check(["A"], ["B"])
    assert "0.500 ms" in out.splitlines()[0]
    a_line, b_line = out.splitlines()[1:]
    assert "h200/A" in a_line and "+0.00% with it" in a_line.replace("-0.00%", "+0.00%")
    share = 100 * np.median(5e-4 / price)
    assert "h200/B" in b_line and f"+{share:.2f}% with it" in b_line
