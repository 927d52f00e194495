"""Per-instance statistics: busy time, iterations, preemptions, stalls and a sampled time series.

Kept apart from the engine so that what is *counted* cannot change what is *decided*; the
instance reports events here and nothing reads these counters back to schedule.
"""
from __future__ import annotations

import math


class InstanceStats:
    def __init__(self, index: int, timeseries_interval_s: float):
        self.index = index
        self.busy_s = 0.0
        self.iterations = 0
        self.preemptions = 0
        self.swaps = 0
        self.failures = 0
        self.stall_s = 0.0  # time running decodes were paused by prefill-only iterations
        self.stall_iterations = 0
        self.interval = timeseries_interval_s
        self.last_sample = -math.inf  # read by the engine to skip sampling cheaply
        self.ts: list[tuple] = []

    def iteration(self, duration: float, count: int = 1) -> None:
        self.busy_s += duration
        self.iterations += count

    def stall(self, duration: float) -> None:
        self.stall_s += duration
        self.stall_iterations += 1

    def preempted(self, swapped: bool) -> None:
        self.preemptions += 1
        if swapped:
            self.swaps += 1

    def sample(self, now: float, batch: int, prefill_tokens: int, running: int, queued: int,
               used_blocks: int, total_blocks: int) -> None:
        if now - self.last_sample >= self.interval:
            self.last_sample = now
            self.ts.append((now, self.index, batch, prefill_tokens, running, queued, used_blocks,
                            total_blocks))
