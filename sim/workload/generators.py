"""Synthetic traces, and reshaping of real ones (change the rate, cut a time window).

`synthesize` and `synthesize_chunks` draw arrivals and the two lengths from three independent
streams derived from one seed (`arrivals.streams`), so the same seed gives the same trace, and
the chunked form yields exactly the rows of the one-shot form; large sweeps (10^6 requests) can
then stream requests into the simulator or to disk without holding the table. Multi-turn
sessions with shared prefixes (`mooncake_like`) live in `sessions` and are re-exported here.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from .arrivals import ARRIVALS, ArrivalClock, arrival_times, gamma_shape, streams
from .lengths import SPEC_HELP, Empirical, Fixed, LengthDist, LogNormal, Uniform, parse_length_dist
from .schema import OPTIONAL, Trace, TraceError
from .sessions import mooncake_like, save_mooncake, to_canonical


def _dists(prompt_dist, output_dist) -> tuple[LengthDist, LengthDist | None]:
    p = parse_length_dist(prompt_dist)
    if p.joint:
        if output_dist is not None and not (output_dist is p or output_dist == p.spec):
            raise TraceError(f"prompt_dist {p.spec!r} resamples prompt and output lengths "
                             f"together (to keep their correlation); pass output_dist=None, or "
                             f"give a column (…:prompt / …:output) to resample them separately")
        return p, None
    if output_dist is None:
        raise TraceError("output_dist is required unless prompt_dist is a joint empirical "
                         f"distribution; expected {SPEC_HELP}")
    o = parse_length_dist(output_dist)
    if o.joint:
        raise TraceError(f"output_dist {o.spec!r} is a joint (prompt, output) distribution; "
                         f"pass it as prompt_dist with output_dist=None, or add ':output'")
    return p, o


def _check_n(n, name="n") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise TraceError(f"{name}={n!r} must be a whole number >= 1")
    return int(n)


def synthesize_chunks(n: int, rate: float, prompt_dist, output_dist=None,
                      arrival: str = "poisson", cv: float = 1.0, seed: int = 0,
                      chunk: int = 65536) -> Iterator[pd.DataFrame]:
    """Yield canonical DataFrame chunks of a synthetic trace (same rows as `synthesize`)."""
    n, chunk = _check_n(n), _check_n(chunk, "chunk")
    p, o = _dists(prompt_dist, output_dist)
    gamma_shape(rate, arrival, cv)  # validate before the first chunk is produced
    a_rng, p_rng, o_rng = streams(seed)
    clock = ArrivalClock(a_rng, rate, arrival, cv)
    for start in range(0, n, chunk):
        k = min(chunk, n - start)
        if o is None:
            pairs = p.sample(p_rng, k)
            prompt, output = pairs[:, 0], pairs[:, 1]
        else:
            prompt, output = p.sample(p_rng, k), o.sample(o_rng, k)
        df = pd.DataFrame({"request_id": np.arange(start, start + k, dtype=np.int64),
                           "arrival_s": clock.next(k),
                           "prompt_tokens": np.asarray(prompt, dtype=np.int64),
                           "output_tokens": np.asarray(output, dtype=np.int64)})
        for name, default in OPTIONAL.items():
            df[name] = default
        yield df


def synthesize(n: int, rate: float, prompt_dist, output_dist=None, arrival: str = "poisson",
               cv: float = 1.0, seed: int = 0) -> Trace:
    """A synthetic Trace of n requests at `rate` req/s.

    prompt_dist / output_dist: LengthDist objects or spec strings (see `parse_length_dist`);
    a joint empirical prompt_dist ("empirical:PATH") supplies both and output_dist stays None.
    arrival="gamma" with cv>1 gives bursty traffic; cv=1 is Poisson.
    """
    n = _check_n(n)
    p, o = _dists(prompt_dist, output_dist)
    df = next(synthesize_chunks(n, rate, p, o, arrival, cv, seed, chunk=n))
    meta = {"synthetic": True, "n": n, "rate": float(rate), "arrival": arrival,
            "cv": 1.0 if arrival == "poisson" else float(cv), "seed": seed,
            "prompt_dist": p.spec, "output_dist": o.spec if o else p.spec, "dropped": {}}
    return Trace(df=df, source="synthetic", format="canonical", meta=meta)


def rescale(trace: Trace, rate: float | None = None, factor: float | None = None) -> Trace:
    """Speed a trace up or slow it down, keeping its burstiness and request order.

    Give exactly one of: `rate` (target req/s, measured as (n-1)/duration like Trace.rate) or
    `factor` (rate multiplier: 2 = twice as many requests per second, i.e. gaps halved).
    Inter-arrival gaps are divided by the factor; the first arrival stays where it was.
    """
    if (rate is None) == (factor is None):
        raise TraceError("rescale: give exactly one of rate= (target req/s) or factor= "
                         "(rate multiplier)")
    if rate is not None:
        if not (isinstance(rate, (int, float, np.number)) and np.isfinite(rate) and rate > 0):
            raise TraceError(f"rescale: rate={rate!r} must be a positive number of req/s")
        if len(trace) < 2 or trace.duration_s <= 0:
            raise TraceError("rescale: the trace needs >= 2 requests spread over time to have "
                             "a rate; use factor= or synthesize() instead")
        factor = rate / trace.rate
    if not (isinstance(factor, (int, float, np.number)) and np.isfinite(factor) and factor > 0):
        raise TraceError(f"rescale: factor={factor!r} must be a positive number")
    df = trace.df.copy()
    t0 = float(df["arrival_s"].iloc[0]) if len(df) else 0.0
    df["arrival_s"] = t0 + (df["arrival_s"] - t0) / float(factor)
    meta = {**trace.meta, "rescaled_by": float(factor) * trace.meta.get("rescaled_by", 1.0)}
    return Trace(df=df, source=trace.source, format=trace.format, meta=meta)


def time_slice(trace: Trace, start_s: float = 0.0, end_s: float | None = None,
               renumber: bool = False) -> Trace:
    """Requests arriving in [start_s, end_s), with times re-based so start_s becomes t=0.

    Re-basing to the window start (not to the first request in it) keeps the idle lead-in the
    window really had. request_id keeps the original ids so results can be joined back to the
    full trace; renumber=True gives 0..N-1 instead.
    """
    end = np.inf if end_s is None else end_s
    if not (np.isfinite(start_s) and start_s >= 0 and end > start_s):
        raise TraceError(f"time_slice: need 0 <= start_s < end_s (got {start_s}, {end_s})")
    a = trace.df["arrival_s"]
    df = trace.df[(a >= start_s) & (a < end)].copy()
    if len(df) == 0:
        raise TraceError(f"time_slice: no requests arrive in [{start_s}, {end_s}) s; the trace "
                         f"spans [{a.iloc[0]:.3f}, {a.iloc[-1]:.3f}] s")
    df["arrival_s"] = df["arrival_s"] - float(start_s)
    if renumber:
        df["request_id"] = np.arange(len(df), dtype=np.int64)
    df = df.reset_index(drop=True)
    meta = {**trace.meta, "slice_s": [float(start_s), None if end_s is None else float(end_s)],
            "rows_before_slice": len(trace)}
    return Trace(df=df, source=trace.source, format=trace.format, meta=meta)


__all__ = [
    "ARRIVALS",
    "Empirical",
    "Fixed",
    "LengthDist",
    "LogNormal",
    "Uniform",
    "arrival_times",
    "mooncake_like",
    "parse_length_dist",
    "rescale",
    "save_mooncake",
    "synthesize",
    "synthesize_chunks",
    "time_slice",
    "to_canonical",
]
