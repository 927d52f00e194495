"""Acceptance of speculative drafts: per-token rates, per position and per request.

A drafted position is accepted with a rate ``alpha`` (the run's, a request's own from the trace
column ``alpha`` or drawn from ``alpha_dist``, scaled along ``alpha_by_position`` when drafts
further ahead are accepted less often). With a tree of ``width`` candidates per position a level
is accepted when any candidate is: ``p = 1 - (1 - alpha)^width`` (candidates treated as
independent). ``levels`` gives the per-member, per-position rates the seeded draws are compared
with (``goodput.sim.engine.speculation_draws``); ``expected`` is their mean outcome,
E(k) = 1 + sum_j prod_{i<=j} p_i, which is (1 - p^(k+1)) / (1 - p) at a constant ``p``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from goodput.sim.config import ConfigError
from goodput.sim.engine.speculation_config import SpeculationConfig


def check_alpha(value: float, where: str) -> float:
    """``value`` if it is an acceptance rate (in [0, 1]), else one line naming ``where``."""
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ConfigError(f"{where} must be in [0, 1], got {value}")
    return value


class Acceptance:
    """The run's acceptance model: ``alpha``, the tree width and the per-position profile."""

    def __init__(self, alpha: float, width: int = 1, by_position: Sequence[float] | None = None):
        check_alpha(alpha, "scheduler.speculation.alpha")
        for a in by_position or ():
            check_alpha(a, "scheduler.speculation.alpha_by_position values")
        if width < 1:
            raise ConfigError(f"scheduler.speculation.tree_width must be >= 1, got {width}")
        self.alpha = alpha
        self.width = width
        self.profile = list(by_position) if by_position else None  # per-token rate by position
        self.level = 1.0 - (1.0 - alpha) ** width  # a drafted position is accepted

    def _position_rates(self, k: int) -> np.ndarray:
        """Per-token rate of draft positions 1..k at the run's alpha (the last value beyond)."""
        prof = self.profile
        if prof is None:
            return np.full(k, self.alpha)
        return np.array([prof[min(i, len(prof) - 1)] for i in range(k)], dtype=float)

    def levels(self, alphas: np.ndarray, k: int) -> np.ndarray:
        """``(B, k)``: the acceptance of draft positions 1..k for members accepting at
        ``alphas`` (NaN: the run's alpha); a request's own rate scales the position profile by
        its ratio to the run's alpha, so its drift follows the same shape."""
        rates = self._position_rates(k)[None, :]
        a = np.where(np.isnan(alphas), self.alpha, alphas)[:, None]
        if self.profile is not None:
            scale = a / self.alpha if self.alpha > 0 else np.ones_like(a)
            rates = np.minimum(1.0, rates * scale)
        else:
            rates = np.broadcast_to(a, (a.shape[0], k))
        return 1.0 - (1.0 - rates) ** self.width if self.width > 1 else np.array(rates, dtype=float)

    def expected(self, k: int, alpha: float | None = None) -> float:
        """E(k): tokens kept per step of k drafts, at the run's acceptance or one request's."""
        if self.profile is None:
            p = self.level if alpha is None else 1.0 - (1.0 - alpha) ** self.width
            return float(k + 1) if p >= 1.0 else (1.0 - p ** (k + 1)) / (1.0 - p)
        row = self.levels(np.array([math.nan if alpha is None else alpha]), k)[0]
        return 1.0 + float(np.cumprod(row).sum())

    def verify_tokens(self, k: int) -> int:
        """Tokens a verify computes per sequence: the target's own next one plus the tree."""
        return 1 + k * self.width


def expected_by_k(estimates: np.ndarray, width: int, max_k: int) -> np.ndarray:
    """``sum_i E_i(k)`` for k = 0..max_k, member i accepting every position at ``estimates[i]``
    (a tree level ``1 - (1 - a)^width``): the numerator of SmartSpec's goodput."""
    p = 1.0 - (1.0 - estimates) ** width
    powers = p[:, None] ** np.arange(max_k + 1)[None, :]  # p^0 .. p^max_k
    return np.cumsum(powers, axis=1).sum(axis=0)


def alpha_draw(cfg: SpeculationConfig) -> Callable[[object], float] | None:
    """``alpha_dist`` as a function of a request: its acceptance, drawn once from a Beta
    distribution seeded by (seed, request id), so step and fast-forward mode (and reruns) agree.
    A request whose trace gave an ``alpha`` keeps it. None without ``alpha_dist``."""
    if not cfg.alpha_dist:
        return None
    kind, _, params = cfg.alpha_dist.partition(":")
    try:
        a, b = (float(x) for x in params.split(","))
    except ValueError:
        a = b = -1.0
    if kind.strip().lower() != "beta" or not (a > 0 and b > 0):
        raise ConfigError(f"scheduler.speculation.alpha_dist={cfg.alpha_dist!r}: write beta:A,B with "
                          "A, B > 0 (mean A / (A + B), e.g. beta:8,2)")
    seed = cfg.seed

    def draw(seq) -> float:
        v = seq.alpha
        if v != v:  # NaN: not drawn yet (a trace may also give it)
            v = seq.alpha = float(np.random.default_rng([seed, seq.rid]).beta(a, b))
        return v
    return draw
