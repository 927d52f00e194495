"""Links that move KV-cache bytes: live migration now, disaggregated prefill/decode later."""
from __future__ import annotations

import numpy as np

from goodput.sim.config import LinkConfig


class Link:
    def __init__(self, cfg: LinkConfig, seed: int = 0):
        # bandwidth > 0, latency and jitter >= 0: checked with the whole config (goodput.sim.config_checks)
        self.nominal_bps = self.bps = cfg.bandwidth_gbs * 1e9
        self.latency = cfg.latency_s
        self.jitter = cfg.jitter_s
        self._rng = np.random.default_rng(seed)

    def transfer_time(self, nbytes: float) -> float:
        t = self.latency + nbytes / self.bps
        if self.jitter:
            t += max(0.0, float(self._rng.normal(0.0, self.jitter)))
        return t

    def scale(self, factor: float) -> None:
        """Degrade (or, with 1, restore) the bandwidth: a fault event; copies started later see it."""
        self.bps = self.nominal_bps * factor
