"""Arrival processes at a target rate: Poisson, and Gamma renewal with a chosen burstiness.

Inter-arrival gaps are Gamma(shape=1/cv^2, mean=1/rate). The coefficient of variation (std/mean
of the gaps) is then exactly `cv`: cv=1 is the exponential, i.e. a Poisson process, and larger cv
gives bursts separated by lulls (BurstGPT reports cv well above 1 for real chat traffic). Poisson
is drawn by the same Gamma call with shape 1, so `arrival="gamma", cv=1` and `arrival="poisson"`
give identical times for the same seed.

The first request arrives at t=0 and request i at the sum of gaps 1..i, so the measured rate
(n-1)/duration is an unbiased estimate of `rate`. Gaps come out in chunks with a running offset
(`ArrivalClock`) so a million-request trace never has to exist in memory at once, and the chunked
sequence is bit-identical to the one-shot sequence.
"""
from __future__ import annotations

import math

import numpy as np

from .schema import TraceError

ARRIVALS = ("poisson", "gamma")


def streams(seed: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent generators for arrivals, prompt lengths and output lengths.

    Separate streams mean changing a length distribution does not move any arrival time (and
    vice versa), which keeps A/B comparisons between workloads paired.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TraceError(f"seed={seed!r}: pass an integer seed so runs are reproducible")
    arrivals, prompts, outputs = (np.random.default_rng(s)
                                  for s in np.random.SeedSequence(int(seed)).spawn(3))
    return arrivals, prompts, outputs


def gamma_shape(rate: float, arrival: str, cv: float | None) -> float:
    """Validate (rate, arrival, cv) and return the Gamma shape parameter of the gaps."""
    if not isinstance(rate, (int, float, np.number)) or not math.isfinite(rate) or rate <= 0:
        raise TraceError(f"rate={rate!r}: the arrival rate must be a positive number of req/s")
    if arrival not in ARRIVALS:
        raise TraceError(f"arrival={arrival!r}: use one of {list(ARRIVALS)}")
    if arrival == "poisson":
        if cv is not None and cv != 1.0:
            raise TraceError(f"cv={cv!r} was given with arrival='poisson', whose cv is always 1; "
                             f"use arrival='gamma' for a different burstiness")
        return 1.0
    cv = 1.0 if cv is None else cv
    if not isinstance(cv, (int, float, np.number)) or not math.isfinite(cv) or cv <= 0:
        raise TraceError(f"cv={cv!r}: the inter-arrival coefficient of variation must be > 0 "
                         f"(1 = Poisson, >1 = bursty, <1 = more regular)")
    return 1.0 / (cv * cv)


class ArrivalClock:
    """Draws arrival times chunk by chunk; consecutive `next(k)` calls continue one process."""

    def __init__(self, rng: np.random.Generator, rate: float, arrival: str = "poisson",
                 cv: float | None = None):
        self.rng = rng
        self.rate = float(rate)
        self.shape = gamma_shape(rate, arrival, cv)
        self.t = 0.0
        self.started = False

    def next(self, k: int) -> np.ndarray:
        g = self.rng.gamma(self.shape, 1.0 / (self.rate * self.shape), size=k)
        if not self.started and k > 0:
            g[0] = 0.0  # first request at t=0; its gap is drawn anyway to keep streams aligned
            self.started = True
        # Prepend the carried time so the running sum adds in the same order as a one-shot
        # cumsum would; chunked and whole traces then agree to the last bit.
        out = np.cumsum(np.concatenate(([self.t], g)))[1:]
        if k:
            self.t = float(out[-1])
        return out


def arrival_times(n: int, rate: float, arrival: str = "poisson", cv: float | None = None,
                  seed: int = 0) -> np.ndarray:
    """n arrival times (s) starting at 0; uses the same stream as `synthesize(seed=seed)`."""
    rng = streams(seed)[0]
    return ArrivalClock(rng, rate, arrival, cv).next(int(n))
