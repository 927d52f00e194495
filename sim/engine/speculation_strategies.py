"""Speculation-length strategies: how many tokens to draft per step, registered by name.

Each strategy is a small class registered like the batching policies
(``scheduler.speculation.method``), with an optional ``Options`` dataclass that becomes its config
section ``scheduler.speculation.<method>``: ``none`` (the default), ``fixed``, ``table`` (vLLM's
static batch-size-to-k table) and ``smartspec`` (SmartSpec, arXiv 2406.14066: per decision the
``k`` in ``0..max_k`` maximising goodput(k) = sum_i E_i(k) / T(k), each request's acceptance
estimated online). ``goodput.sim.engine.speculation`` runs them for an instance.
"""
from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from goodput.sim.config import ConfigError, register_strategy
from goodput.sim.engine.speculation_acceptance import expected_by_k
from goodput.sim.engine.speculation_config import SpeculationConfig

if TYPE_CHECKING:
    from goodput.sim.engine.speculation import Speculation

#: the largest k a strategy may use (a profile measures verifies up to k = 8)
MAX_K = 16
PROFILED_MAX_K = 8

#: every speculation-length strategy by ``scheduler.speculation.method``
SPECULATORS: dict[str, type[SpeculationLength]] = {}


def register_speculator(cls: type[SpeculationLength]) -> type[SpeculationLength]:
    """Class decorator: make a speculation method available by its ``name``, with its section."""
    return register_strategy(SPECULATORS, SpeculationConfig, cls, "speculation method")


class SpeculationLength(ABC):
    """Chooses the draft length k (0: a plain decode) for the decode set as it is now."""

    name: ClassVar[str] = "base"
    Options: ClassVar[Any] = None

    def __init__(self, options: Any):
        self.options = options

    def max_k(self) -> int:
        return 0

    def horizon(self) -> int | None:
        """Speculative steps a decision holds (None: until the decode set changes)."""
        return None

    def observe(self, spec: Speculation, members: list, accepted: np.ndarray, k: int) -> None:
        """The steps of a run happened: ``accepted[j, i]`` drafts of member i were accepted in
        step j (strategies that learn acceptance online update their estimates here; the
        others learn nothing)."""
        return None

    @abstractmethod
    def choose_k(self, spec: Speculation, batch: int, ctx_sum: int, ctx_max: int,
                 contexts: Callable[[], list[int]] | None = None) -> int:
        """k for a batch of ``batch`` sequences holding ``ctx_sum`` context tokens (the longest
        ``ctx_max``; ``contexts()`` lists them for cost models that price one by one)."""


@register_speculator
class NoSpeculation(SpeculationLength):
    name = "none"

    def choose_k(self, spec, batch, ctx_sum, ctx_max, contexts=None) -> int:
        return 0


@dataclass
class FixedOptions:
    k: int = 4  # draft tokens per step


@register_speculator
class FixedK(SpeculationLength):
    name = "fixed"
    Options = FixedOptions

    def __init__(self, options: FixedOptions):
        super().__init__(options)
        if not 1 <= options.k <= MAX_K:
            raise ConfigError(f"scheduler.speculation.fixed.k must be in [1, {MAX_K}], got {options.k}")

    def max_k(self) -> int:
        return self.options.k

    def choose_k(self, spec, batch, ctx_sum, ctx_max, contexts=None) -> int:
        return self.options.k


@dataclass
class TableOptions:
    #: [batch size, k] rows, batch sizes ascending: a batch of B runs the k of the last row whose
    #: batch size is <= B (vLLM's static policy of disabling speculation above a batch size)
    thresholds: list[list[int]] = field(default_factory=lambda: [[1, 4], [16, 2], [64, 0]])


@register_speculator
class TableK(SpeculationLength):
    """A static batch-size-to-k table. Known to collapse throughput at its thresholds: one more
    sequence changes k for the whole batch."""

    name = "table"
    Options = TableOptions

    def __init__(self, options: TableOptions):
        super().__init__(options)
        rows = options.thresholds
        ok = bool(rows) and all(len(r) == 2 and r[0] >= 1 and 0 <= r[1] <= MAX_K for r in rows)
        if not ok or any(a[0] >= b[0] for a, b in itertools.pairwise(rows)):
            raise ConfigError("scheduler.speculation.table.thresholds must be [batch size >= 1, k in "
                              f"0..{MAX_K}] rows with batch sizes ascending, e.g. [[1, 4], [16, 2], [64, 0]]")

    def max_k(self) -> int:
        return max(k for _, k in self.options.thresholds)

    def choose_k(self, spec, batch, ctx_sum, ctx_max, contexts=None) -> int:
        k = 0
        for size, kk in self.options.thresholds:
            if batch >= size:
                k = kk
        return k


@dataclass
class SmartSpecOptions:
    max_k: int = 8  # the longest draft considered (k = 0 .. max_k)
    #: speculative steps between decisions (k is also re-decided whenever the batch changes)
    redecide_steps: int = 32
    #: weight of the old value in each request's moving averages of its acceptance
    ema_keep: float = 0.85


@register_speculator
class SmartSpec(SpeculationLength):
    """SmartSpec: the k maximising goodput(k) = sum_i E_i(k) / T(k) for the batch now, where
    E_i(k) = sum_{j<=k} p_i^j from request i's estimated acceptance ``p_i`` and T(k) = draft +
    verify from the cost models (k = 0: a plain decode).

    ``p_i`` is learnt online from what the request's steps showed: a step that accepted ``a`` of
    ``k`` drafts checked ``min(a + 1, k)`` positions (those past the first rejection are never
    checked) and accepted ``a`` of them. Exponential moving averages (``ema_keep`` old,
    1 - ``ema_keep`` new) of both counts, started from the configured rate as one pseudo-position,
    give ``p_i = accepted / checked``: the truncated geometric's maximum-likelihood rate, where the
    per-step ratio accepted / k would read 0.59 for a true 0.8 at k = 4 and make SmartSpec draft
    too little."""

    name = "smartspec"
    Options = SmartSpecOptions

    def __init__(self, options: SmartSpecOptions):
        super().__init__(options)
        if not 1 <= options.max_k <= MAX_K:
            raise ConfigError(f"scheduler.speculation.smartspec.max_k must be in [1, {MAX_K}], "
                              f"got {options.max_k}")
        if options.redecide_steps < 1:
            raise ConfigError("scheduler.speculation.smartspec.redecide_steps must be >= 1, got "
                              f"{options.redecide_steps}")
        if not 0.0 <= options.ema_keep < 1.0:
            raise ConfigError("scheduler.speculation.smartspec.ema_keep must be in [0, 1), got "
                              f"{options.ema_keep}")

    def max_k(self) -> int:
        return self.options.max_k

    def horizon(self) -> int | None:
        return self.options.redecide_steps

    @staticmethod
    def _averages(spec: Speculation, members: list) -> tuple[np.ndarray, np.ndarray]:
        """The members' (accepted, checked) moving averages, the prior where none observed."""
        acc = np.array([s.alpha_accepted for s in members], dtype=float)
        chk = np.array([s.alpha_checked for s in members], dtype=float)
        fresh = np.isnan(acc)
        return np.where(fresh, spec.acceptance.level, acc), np.where(fresh, 1.0, chk)

    #: since the last decision: (members, accepted and checked averages then, the steps' rows)
    _period: tuple[list, np.ndarray, np.ndarray, list] | None = None

    def estimates(self, spec: Speculation, batch: int) -> np.ndarray:
        """Each member's estimated per-position acceptance (the prior where none observed).
        Called at a decision: the averages then are the base the next steps fold into."""
        members = spec.members
        if not members:
            return np.full(batch, spec.acceptance.level)
        acc, chk = self._averages(spec, members)
        self._period = (members, acc, chk, [])
        return acc / chk

    def observe(self, spec, members, accepted, k) -> None:
        """Fold the run's steps into the members' averages. All steps since the decision are
        folded from the averages at the decision at once, ``keep^S base + (1 - keep) sum_j
        keep^(S-1-j) x_j``: the same arithmetic on the same numbers whether they arrived as one
        fast-forwarded run or as single steps, and a few array operations per run."""
        if k < 1 or not members:
            return
        period = self._period
        if period is None or len(period[0]) != len(members):
            acc, chk = self._averages(spec, members)
            period = self._period = (members, acc, chk, [])
        base_members, acc0, chk0, rows = period
        rows.append(accepted)
        x = rows[0] if len(rows) == 1 else np.vstack(rows)
        steps = len(x)
        keep = self.options.ema_keep
        w = ((1.0 - keep) * keep ** np.arange(steps - 1, -1, -1, dtype=float))[:, None]
        decay = keep ** steps
        acc = decay * acc0 + (x * w).sum(axis=0)
        chk = decay * chk0 + (np.minimum(x + 1, k) * w).sum(axis=0)
        # the requests carry their averages (a preempted or migrated one takes them along)
        for s, a, c in zip(base_members, acc.tolist(), chk.tolist(), strict=True):
            s.alpha_accepted, s.alpha_checked = a, c

    def choose_k(self, spec, batch, ctx_sum, ctx_max, contexts=None) -> int:
        top = min(self.options.max_k, spec.k_cap)
        gains = expected_by_k(self.estimates(spec, batch), 1, top)
        best, best_k = 0.0, 0
        for k in range(top + 1):
            t = spec.step_total(k, batch, ctx_sum, ctx_max, contexts)
            rate = float(gains[k]) / t
            if rate > best * (1.0 + 1e-12):  # ties go to the shorter draft
                best, best_k = rate, k
        return best_k
