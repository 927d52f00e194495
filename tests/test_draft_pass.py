"""The drafting-span check of speculative runs (``goodput fidelity calibrate --spec``): a per-pass
host term fitted on drafting spans recovers known terms, and scoring measures its error."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from goodput.profiler.serve.calibrate import fit_draft_pass, score_draft_pass


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
