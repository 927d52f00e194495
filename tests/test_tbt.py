"""Token-gap bookkeeping: bulk-binned arithmetic series equal binning every gap one by one."""
from __future__ import annotations

import math

import numpy as np
import pytest

from goodput.sim.engine.tbt import EDGES, TokenGaps, percentile_from_hist


def brute(series):
    hist = np.zeros(len(EDGES) - 1)
    for first, step, count, weight in series:
        for j in range(count):
            x = first + j * step
            i = min(max(int((math.log10(max(x, 1e-6)) + 6) * 100), 0), len(EDGES) - 2)
            hist[i] += weight
    return hist


def test_arithmetic_series_bin_like_single_gaps():
    rng = np.random.default_rng(0)
    series = [(float(rng.uniform(1e-3, 0.05)), float(rng.uniform(0, 2e-4)), int(rng.integers(1, 400)),
               int(rng.integers(1, 64))) for _ in range(300)]
    gaps = TokenGaps()
    for s in series:
        gaps.add_arithmetic(*s)
    np.testing.assert_allclose(gaps.hist, brute(series))
    assert gaps.hist.sum() == sum(c * w for _, _, c, w in series)


def test_percentile_and_suffix_max():
    gaps = TokenGaps()
    gaps.add_arithmetic(0.010, 0.0, 99, 1)
    gaps.add(0.200, 1)
    assert percentile_from_hist(gaps.hist, 50) == pytest.approx(0.010, rel=0.03)
    assert percentile_from_hist(gaps.hist, 99.5) == pytest.approx(0.200, rel=0.03)
    for run, value in enumerate([0.5, 0.2, 0.3, 0.1]):
        gaps.push_run_max(run, value)
    assert [gaps.max_since(r) for r in range(4)] == [0.5, 0.3, 0.3, 0.1]
    assert math.isnan(gaps.max_since(4))
