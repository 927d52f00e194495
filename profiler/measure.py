"""Timing: warm-up, CUDA-graph capture, CUDA-event rounds, median and spread.

Method (per point): run the work eagerly twice (Triton compiles, the allocator settles), capture
it into a CUDA graph when the work is capturable (a serving engine replays graphs for decode; we
replay them for every batch so the numbers are GPU time, with per-iteration CPU cost measured
separately as overhead), then time ``rounds`` rounds of ``calls`` back-to-back replays between
two CUDA events. ``calls`` is chosen so one round lasts about ``round_s``; back-to-back replays
keep the GPU busy the way consecutive layers of a full-depth forward do. Reported: median,
10th and 90th percentile of the per-call time over rounds.

On the CPU the same logic runs with ``time.perf_counter`` and no graphs.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Timing:
    median_s: float
    p10_s: float
    p90_s: float
    rounds: int
    calls: int

    def scaled(self, factor: float) -> Timing:
        return Timing(self.median_s * factor, self.p10_s * factor, self.p90_s * factor,
                      self.rounds, self.calls)


def _quantile(xs, q):
    xs = sorted(xs)
    if len(xs) == 1:
        return xs[0]
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(per_call: list[float], calls: int) -> Timing:
    return Timing(statistics.median(per_call), _quantile(per_call, 0.1),
                  _quantile(per_call, 0.9), len(per_call), calls)


def time_fn(fn, device: torch.device, *, graph: bool = True, rounds: int = 7,
            round_s: float = 2e-3, max_calls: int = 64, budget_s: float = 0.3) -> Timing:
    """Per-call time of ``fn()``; see the module docstring for the method."""
    if device.type != "cuda":
        return _time_cpu(fn, rounds=rounds, round_s=round_s, max_calls=max_calls,
                         budget_s=budget_s)
    fn()  # compiles Triton kernels, settles the allocator
    torch.cuda.synchronize()
    run = fn
    g = None
    if graph:
        # capture_begin/end rather than the torch.cuda.graph context manager: the latter runs
        # gc.collect() and empty_cache() on every capture, ~0.1 s per point at this scale.
        g = torch.cuda.CUDAGraph()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn()  # warm-up on the capture stream, as torch's graph docs require
            g.capture_begin()
            try:
                fn()
            finally:
                g.capture_end()
        torch.cuda.current_stream().wait_stream(side)
        run = g.replay
        run()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    run()
    end.record()
    end.synchronize()
    single = max(start.elapsed_time(end) * 1e-3, 1e-7)
    calls = max(1, min(max_calls, round(round_s / single)))
    rounds = max(3, min(rounds, int(budget_s / (single * calls)) or 3))
    evs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
           for _ in range(rounds)]
    for s, e in evs:
        s.record()
        for _ in range(calls):
            run()
        e.record()
    torch.cuda.synchronize()
    per_call = [s.elapsed_time(e) * 1e-3 / calls for s, e in evs]
    del g
    return summarize(per_call, calls)


def _time_cpu(fn, *, rounds, round_s, max_calls, budget_s) -> Timing:
    fn()
    t0 = time.perf_counter()
    fn()
    single = max(time.perf_counter() - t0, 1e-7)
    calls = max(1, min(max_calls, round(round_s / single)))
    rounds = max(3, min(rounds, int(budget_s / (single * calls)) or 3))
    per_call = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        per_call.append((time.perf_counter() - t0) / calls)
    return summarize(per_call, calls)


def iteration_overhead(prepare, launch, fetch, device: torch.device, iters: int = 20) -> Timing:
    """Per-iteration host time not covered by GPU work, in a synchronous engine loop.

    Each iteration: ``prepare()`` builds and uploads the batch metadata, ``launch()`` enqueues
    the (captured) forward, ``fetch()`` copies the sampled tokens back (a sync). Overhead is the
    wall time of the iteration minus the GPU time between events around ``launch()``.
    """
    cuda = device.type == "cuda"
    samples = []
    for i in range(iters + 3):
        t0 = time.perf_counter()
        prepare()
        if cuda:
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
        g0 = time.perf_counter()
        launch()
        if cuda:
            e.record()
        else:
            g1 = time.perf_counter()
        fetch()
        wall = time.perf_counter() - t0
        gpu = s.elapsed_time(e) * 1e-3 if cuda else g1 - g0
        if i >= 3:
            samples.append(max(0.0, wall - gpu))
    return summarize(samples, 1)
