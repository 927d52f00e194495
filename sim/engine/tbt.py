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
from typing import Final

import numpy as np

#: histogram bin edges: 1 microsecond .. 1000 s, 100 bins per decade (0.2% relative resolution)
EDGES = np.logspace(-6, 3, 901)
#: the same edges as Python numbers, for binning one series at a time
_EDGE_LIST: Final[list[float]] = EDGES.tolist()
_LOG_LO: Final = -6.0
_PER_DECADE: Final = 100
_LAST_BIN: Final = len(EDGES) - 2
#: as module constants, which a compiled build reads without a lookup per call
_log10: Final = math.log10
_bisect_left: Final = bisect.bisect_left


def _bin(x: float) -> int:
    """The bin of one gap (gaps under a microsecond, and zero, in the first)."""
    if x <= 1e-6:
        return 0
    i = int((_log10(x) - _LOG_LO) * _PER_DECADE)
    return i if i < _LAST_BIN else _LAST_BIN


class TokenGaps:
    """Run maxima and the gap histogram of one decode set.

    Each gap series is binned as it is added (a few arithmetic operations and a logarithm; a
    series straddling bin edges walks the edges it crosses): the histogram counts are whole
    numbers of tokens, so the order they are added in cannot change them."""

    def __init__(self) -> None:
        self._runs: list[int] = []
        self._vals: list[float] = []
        self._counts: list[float] = [0.0] * (len(EDGES) - 1)

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
        i = _bisect_left(self._runs, run)
        return self._vals[i] if i < len(self._vals) else math.nan

    # ---- distribution over all tokens ----
    def add(self, gap: float, weight: float) -> None:
        """One gap, seen by ``weight`` tokens."""
        if weight > 0:
            self._counts[_bin(gap)] += weight

    def add_arithmetic(self, first: float, step: float, count: int, weight: float) -> None:
        """Add gaps first, first+step, ..., (count values), each seen by ``weight`` tokens."""
        if count <= 0 or weight <= 0:
            return
        lo = _bin(first)
        hi = lo if count == 1 or step == 0.0 else _bin(first + step * (count - 1))
        counts = self._counts
        if lo >= hi:  # one bin (a decreasing series is counted in its last value's bin)
            counts[hi] += count * weight
            return
        edges = _EDGE_LIST
        done = 0  # values j in [0, count) below each bin's upper edge
        for b in range(lo, hi):
            below = min(count, max(0, math.ceil((edges[b + 1] - first) / step)))
            counts[b] += weight * (below - done)
            done = below
        counts[hi] += weight * (count - done)

    def take_back_zero_gaps(self, tokens: int) -> None:
        """Remove ``tokens`` zero gaps added before (tokens of a multi-token step past a
        request's output, counted with the step before it was known they were not produced)."""
        self._counts[0] -= tokens

    @property
    def hist(self) -> np.ndarray:
        """Tokens per bin of ``EDGES`` (a copy)."""
        return np.array(self._counts, dtype=np.float64)


def percentile_from_hist(hist: np.ndarray, q: float) -> float:
    """q-th percentile (0..100) of a TokenGaps histogram (upper edge of the bin; NaN if empty)."""
    total = hist.sum()
    if total <= 0:
        return math.nan
    idx = int(np.searchsorted(np.cumsum(hist), total * q / 100.0))
    return float(EDGES[min(idx + 1, len(EDGES) - 1)])
