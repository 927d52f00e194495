"""Burstiness: how far the trace's busiest windows run above its mean, and what the plan absorbs.

Capacities are measured with Poisson arrivals at a steady rate, and the ILP provisions for the
trace's mean rate; the proof then replays the trace with its own timestamps, so bursts are
tested. ``burst_report`` measures the per-window arrival rate (windows of ``window_s``) and gives
the peak-to-mean ratio; with ``rate_percentile`` P the planner provisions for the P-th percentile
window rate instead of the mean (``scale_slicing``). ``burst_absorbed`` says what the final plan
absorbs: its headroom over the planned load at the measured (undearated) capacities, which is the
rate multiple it can take before a type passes its measured capacity, and the simulated
attainment inside the busiest window.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from goodput.planner.slices import Slicing


def window_rates(arrivals: np.ndarray, window_s: float) -> np.ndarray:
    """Arrivals per second in consecutive windows of ``window_s`` (the last, partial one dropped
    unless it is the only one)."""
    a = np.sort(np.asarray(arrivals, dtype=float))
    a = a - a[0]
    span = float(a[-1]) if len(a) else 0.0
    n = max(1, int(span // window_s))
    counts = np.bincount(np.minimum((a // window_s).astype(np.int64), n - 1), minlength=n)[:n]
    width = window_s if span >= window_s else max(span, 1e-12)
    return counts / width


def burst_report(trace, slicing: Slicing, window_s: float = 300.0,
                 rate_percentile: float | None = None) -> dict:
    df = trace.df if hasattr(trace, "df") else trace
    rates = window_rates(df["arrival_s"].to_numpy(), window_s)
    mean = slicing.total_rate
    peak = float(rates.max())
    rep = {"window_s": float(window_s), "windows": len(rates), "mean_rate": round(mean, 6),
           "peak_rate": round(peak, 6), "peak_to_mean": round(peak / mean, 4) if mean > 0 else None,
           "planned_rate": round(mean, 6), "rate_percentile": rate_percentile}
    if rate_percentile is not None:
        rep["planned_rate"] = round(float(np.percentile(rates, rate_percentile)), 6)
    return rep


def scale_slicing(slicing: Slicing, factor: float) -> Slicing:
    """The same buckets and slices with every rate multiplied by ``factor``."""
    return replace(slicing, total_rate=slicing.total_rate * factor,
                   buckets=[replace(b, rate=b.rate * factor) for b in slicing.buckets],
                   slices=[replace(s, rate=s.rate * factor) for s in slicing.slices])


def burst_absorbed(plan, cap: dict, check, window_s: float) -> dict:
    """Headroom of ``plan`` at measured capacities, and attainment in the busiest window."""
    load: dict[str, float] = {}
    for s in plan.slices:
        for g, share in s.shares.items():
            c = cap.get(s.bucket, {}).get(g, 0.0)
            if c > 0:
                load[g] = load.get(g, 0.0) + s.rate * share / c
    heads = [g.count / load[g.key] for g in plan.groups if load.get(g.key, 0) > 0]
    out: dict = {"headroom": round(min(heads), 4) if heads else None}
    if check is not None and not check.requests.empty and "arrival_s" in check.requests:
        req = check.requests
        a = req["arrival_s"].to_numpy(dtype=float)
        idx = ((a - a.min()) // window_s).astype(np.int64)
        counts = np.bincount(idx)
        busiest = int(np.argmax(counts))
        out["busiest_window_start_s"] = round(float(a.min() + busiest * window_s), 3)
        out["busiest_window_attainment"] = round(float(req["slo_met"].to_numpy()[idx == busiest]
                                                       .mean()), 6)
    return out
