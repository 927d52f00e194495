"""Links that move KV-cache bytes: live migration now, disaggregated prefill/decode later."""
from __future__ import annotations

import numpy as np

from sim.config import ConfigError, LinkConfig


class Link:
    def __init__(self, cfg: LinkConfig, seed: int = 0):
        if cfg.bandwidth_gbs <= 0:
            raise ConfigError("link.bandwidth_gbs must be > 0")
        if cfg.latency_s < 0 or cfg.jitter_s < 0:
            raise ConfigError("link.latency_s and link.jitter_s must be >= 0")
        self.bps = cfg.bandwidth_gbs * 1e9
        self.latency = cfg.latency_s
        self.jitter = cfg.jitter_s
        self._rng = np.random.default_rng(seed)

    def transfer_time(self, nbytes: float) -> float:
        t = self.latency + nbytes / self.bps
        if self.jitter:
            t += max(0.0, float(self._rng.normal(0.0, self.jitter)))
        return t
