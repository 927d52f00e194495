"""Time-between-tokens bookkeeping for a decode set without per-token work.

Every member of an instance's decode set produces a token at the end of each *producing*
iteration, so they share one gap series. ``TokenGaps`` keeps (1) a monotone stack of run maxima,
so a request leaving the set gets its largest gap since it joined in O(log runs), and (2) a
log-binned histogram of all gaps weighted by the number of tokens that saw them, so the P99
time-between-tokens over every token of the run costs O(bins) memory. Within a run of k identical
decode iterations the gaps form an arithmetic sequence; it is binned in closed form.
"""
from __future__ import annotations

import bisect
import math

import numpy as np

#: buffered numbers (four a series) at which the buffer is binned
FLUSH_AT = 4 * 8192
#: histogram bin edges: 1 microsecond .. 1000 s, 100 bins per decade (0.2% relative resolution)
EDGES = np.logspace(-6, 3, 901)
_LOG_LO, _PER_DECADE = -6.0, 100


def _bin(x: float) -> int:
    if x <= 1e-6:
        return 0
    i = int((math.log10(x) - _LOG_LO) * _PER_DECADE)
    return min(i, len(EDGES) - 2)


class TokenGaps:
    def __init__(self) -> None:
        self._runs: list[int] = []
        self._vals: list[float] = []
        self._hist = np.zeros(len(EDGES) - 1, dtype=np.float64)
        #: gaps buffered as arithmetic series and binned in bulk: four numbers a series (first,
        #: step, count, weight) one after another in one flat list, extended by ``buf += (...)``:
        #: no tuple kept per series, and numpy reads a flat list of numbers fastest
        self.buf: list[float] = []

    # ---- per-request maximum (suffix max over runs) ----
    def push_run_max(self, run: int, value: float) -> None:
        if not value > -math.inf:
            return
        vals, runs = self._vals, self._runs
        while vals and vals[-1] <= value:
            vals.pop()
            runs.pop()
        vals.append(value)
        runs.append(run)

    def max_since(self, run: int) -> float:
        i = bisect.bisect_left(self._runs, run)
        return self._vals[i] if i < len(self._vals) else math.nan

    # ---- distribution over all tokens ----
    def add(self, gap: float, weight: float) -> None:
        if weight > 0:
            self.buf += (gap, 0.0, 1, weight)
            if len(self.buf) >= FLUSH_AT:
                self.flush()

    def add_arithmetic(self, first: float, step: float, count: int, weight: float) -> None:
        """Add gaps first, first+step, ..., (count values), each seen by ``weight`` tokens."""
        if count > 0 and weight > 0:
            self.buf += (first, step, count, weight)
            if len(self.buf) >= FLUSH_AT:
                self.flush()

    @property
    def hist(self) -> np.ndarray:
        self.flush()
        return self._hist

    def flush(self) -> None:
        if not self.buf:
            return
        flat = np.array(self.buf, dtype=np.float64)
        first, step, count, weight = flat.reshape(-1, 4).T
        self.buf.clear()
        last = first + step * (count - 1)
        b0, b1 = _bins(first), _bins(last)
        same = b0 == b1
        self._hist += np.bincount(b0[same], weights=(count * weight)[same], minlength=len(self._hist))
        # as Python numbers: the same values, and what a compiled build of this module expects
        for f, st, n, w, lo, hi in zip(first[~same].tolist(), step[~same].tolist(),
                                       count[~same].tolist(), weight[~same].tolist(),
                                       b0[~same].tolist(), b1[~same].tolist(), strict=True):
            done = 0  # values j in [0, n) below each bin's upper edge
            n = int(n)
            for b in range(lo, hi):
                below = min(n, max(0, math.ceil((EDGES[b + 1] - f) / st)))
                self._hist[b] += w * (below - done)
                done = below
            self._hist[hi] += w * (n - done)


def _bins(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        i = ((np.log10(np.maximum(x, 1e-6)) - _LOG_LO) * _PER_DECADE).astype(np.int64)
    return np.clip(i, 0, len(EDGES) - 2)


def percentile_from_hist(hist: np.ndarray, q: float) -> float:
    """q-th percentile (0..100) of a TokenGaps histogram (upper edge of the bin; NaN if empty)."""
    total = hist.sum()
    if total <= 0:
        return math.nan
    idx = int(np.searchsorted(np.cumsum(hist), total * q / 100.0))
    return float(EDGES[min(idx + 1, len(EDGES) - 1)])
