"""Speculative decoding: how long to speculate (strategies by name), what is accepted, what it costs.

A speculative step drafts ``k`` tokens per running sequence (``k`` forward passes of a small draft
model, or a fixed per-pass cost), then verifies them in one target iteration of ``k + 1`` tokens
per sequence; with a per-token acceptance rate ``alpha`` a sequence keeps on average

    E(k) = (1 - alpha^(k+1)) / (1 - alpha)        (1 <= E(k) <= k + 1)

tokens per step (the accepted prefix plus the target's own next token; Leviathan et al. 2023).
How ``k`` is chosen is a strategy, registered by name like the batching policies, each with its
own config section (``scheduler.speculation.<method>``): ``none`` (the default), ``fixed`` and
``smartspec`` (SmartSpec, arXiv 2406.14066: per batch the ``k`` in ``0..max_k`` that maximises
goodput = E(k) / step time(k), priced by the cost models; ``k = 0`` is a plain decode).

Every member of the batch advances by the same count per step (the engine's decode set keeps one
counter): the expected value, with the fractional part carried per instance in exact integer
units (``Acceptance.UNITS`` per token), so step ``j`` of a run yields
``(c + j E) // U - (c + (j-1) E) // U`` tokens and a run of any length is closed form and the
same in fast-forward and step mode (docs/speculation.md says why not random draws).
"""
from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sim.config import ConfigError, SchedulerConfig, register_strategy
from sim.costmodel.base import CostModel
from sim.engine.proposers import Proposer, make_proposer
from sim.engine.speculation_config import SpeculationConfig

#: the largest k a strategy may use (a profile measures verifies up to k = 8)
MAX_K = 16
PROFILED_MAX_K = 8


class Acceptance:
    """Per-token acceptance rate ``alpha``: expected tokens per verify of ``k`` drafts. With a
    tree of ``width`` candidates per position a level is accepted when any candidate is, with
    probability ``p = 1 - (1 - alpha)^width`` (candidates treated as independent draws), so
    E(k) = (1 - p^(k+1)) / (1 - p)."""

    UNITS = 1 << 30  # the carried fraction's resolution (tokens are exact integers of these)

    def __init__(self, alpha: float, width: int = 1, by_position: list[float] | None = None):
        if not 0.0 <= alpha < 1.0:
            raise ConfigError(f"scheduler.speculation.alpha must be in [0, 1), got {alpha}")
        for a in by_position or ():
            if not 0.0 <= a < 1.0:
                raise ConfigError(f"scheduler.speculation.alpha_by_position: {a} is not in [0, 1)")
        if width < 1:
            raise ConfigError(f"scheduler.speculation.tree_width must be >= 1, got {width}")
        self.alpha = alpha
        self.width = width
        self.level = 1.0 - (1.0 - alpha) ** width  # a drafted position is accepted
        #: per-position acceptance (a tree level's), or None when every position accepts at alpha
        self.levels = [1.0 - (1.0 - a) ** width for a in by_position] if by_position else None

    def expected(self, k: int, alpha: float | None = None) -> float:
        """E(k) at this acceptance, or for one request accepting at ``alpha`` (positions then
        scale by alpha / the configured alpha, so a request's drift follows the same profile)."""
        if self.levels is None or alpha is not None:
            scale = 1.0 if alpha is None or self.alpha == 0 else alpha / self.alpha
            if self.levels is not None:
                return self._chain([min(0.999, a * scale) for a in self._per_position(k)])
            p = self.level if alpha is None else 1.0 - (1.0 - alpha) ** self.width
            return float(k + 1) if p >= 1.0 else (1.0 - p ** (k + 1)) / (1.0 - p)
        return self._chain(self._per_position(k))

    def _per_position(self, k: int) -> list[float]:
        lv = self.levels
        assert lv is not None
        return [lv[min(i, len(lv) - 1)] for i in range(k)]

    @staticmethod
    def _chain(levels: list[float]) -> float:
        """1 + sum over j of the chance that positions 1..j are all accepted."""
        total, run = 1.0, 1.0
        for p in levels:
            run *= p
            total += run
        return total

    def verify_tokens(self, k: int) -> int:
        """Tokens a verify computes per sequence: the target's own next one plus the tree."""
        return 1 + k * self.width

    def units(self, k: int) -> int:
        """E(k) in units of 1 / UNITS tokens."""
        return round(self.expected(k) * self.UNITS)


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


@register_speculator
class SmartSpec(SpeculationLength):
    """SmartSpec: the k maximising goodput(k) = B E(k) / T(k) for the batch now (T: draft + verify
    from the cost models, k = 0 a plain decode). Re-decided when the batch changes."""

    name = "smartspec"
    Options = SmartSpecOptions

    def __init__(self, options: SmartSpecOptions):
        super().__init__(options)
        if not 1 <= options.max_k <= MAX_K:
            raise ConfigError(f"scheduler.speculation.smartspec.max_k must be in [1, {MAX_K}], "
                              f"got {options.max_k}")

    def max_k(self) -> int:
        return self.options.max_k

    def choose_k(self, spec, batch, ctx_sum, ctx_max, contexts=None) -> int:
        best, best_k = 0.0, 0
        for k in range(self.options.max_k + 1):
            t = sum(spec.step_time(k, batch, ctx_sum, ctx_max, contexts))
            rate = spec.expected(k) / t
            if rate > best * (1.0 + 1e-12):  # ties go to the shorter draft
                best, best_k = rate, k
        return best_k


class Speculation:
    """One instance's speculation: strategy, acceptance, draft cost, the carried fraction of a
    token, the current k, and counters (never read back to decide)."""

    def __init__(self, cfg: SpeculationConfig, target: CostModel, proposer: Proposer | None,
                 strategy: SpeculationLength):
        self.cfg = cfg
        self.target = target
        self.proposer = proposer
        self.strategy = strategy
        self.acceptance = Acceptance(cfg.alpha, cfg.tree_width, cfg.alpha_by_position)
        self.draw = _alpha_draw(cfg)  # per-request acceptance (None: every request at alpha)
        self._batch_e: dict[int, float] = {}  # k -> the batch's mean E(k), for the current epoch
        self._members: list | None = None  # the decode set's members (per-request acceptance)
        self.active = strategy.name != "none"
        self.slow = 1.0  # the draft's slow-down (a straggler instance, see ``use_cost``)
        self.carry = 0  # fraction of a token owed to the batch, in Acceptance.UNITS
        self.k = 0
        self._epoch = -1  # decode-set epoch the current k was chosen at
        # counters
        self.steps = 0  # speculative steps (verify iterations)
        self.seq_steps = 0  # sequence x step pairs
        self.drafted = 0  # draft tokens proposed (k per sequence per step)
        self.emitted = 0  # tokens the steps produced (accepted drafts + bonus tokens)
        self.draft_s = 0.0  # time spent drafting
        self.verify_s = 0.0  # time spent in verify iterations

    def choose(self, epoch: int, batch: int, ctx_sum: int, ctx_max: int,
               contexts: Callable[[], list[int]] | None = None, members: list | None = None) -> int:
        """k for the step starting now: re-decided when the decode set changed (a join or leave),
        which only happens at a boundary both step and fast-forward mode stop at."""
        if epoch != self._epoch:
            self._epoch = epoch
            self._batch_e = {}
            self._members = members
            self.k = self.strategy.choose_k(self, batch, ctx_sum, ctx_max, contexts)
        return self.k

    def expected(self, k: int) -> float:
        """Tokens a member gains per step of k drafts. With per-request acceptance every member
        still advances by the same count (the decode set's closed form): the mean of the
        members' E_i(k), so the batch's tokens are right in expectation and SmartSpec's
        goodput(k) = sum_i E_i(k) / T(k) is B x this / T(k)."""
        if self.draw is None or not self._members:
            return self.acceptance.expected(k)
        e = self._batch_e.get(k)
        if e is None:
            e = self._batch_e[k] = sum(self.acceptance.expected(k, self.draw(s)) for s in self._members) \
                / len(self._members)
        return e

    def units(self, k: int) -> int:
        """``expected(k)`` in units of 1 / Acceptance.UNITS tokens."""
        return round(self.expected(k) * Acceptance.UNITS)

    def use_cost(self, target: CostModel) -> None:
        """The instance's cost model now (a straggler's is slowed: its draft passes are too)."""
        if target is not self.target:
            self.target = target
            self.slow = float(getattr(target, "factor", 1.0))

    def step_time(self, k: int, batch: int, ctx_sum: int, ctx_max: int,
                  contexts: Callable[[], list[int]] | None = None) -> tuple[float, float]:
        """(draft, verify) seconds of one step of k drafts over ``batch`` sequences holding
        ``ctx_sum`` context tokens (the longest ``ctx_max``)."""
        tgt = self.target
        if k == 0:
            a, b = tgt.decode_coefficients(batch)
            return 0.0, a + b * ctx_sum
        assert self.proposer is not None
        da, db = self.proposer.line(k, batch, self.acceptance.width)
        draft = (da + db * ctx_sum) * self.slow
        return draft, tgt.verify_time(batch, self.acceptance.verify_tokens(k), ctx_sum, ctx_max, contexts)

    def step_line(self, k: int, batch: int) -> tuple[float, float, float, float] | None:
        """(draft a, draft b, verify a, verify b): a step of k drafts takes ``draft a + draft b x
        ctx_sum`` drafting and ``verify a + verify b x ctx_sum`` verifying, when the target prices
        verifies by a line (``verify_coefficients``; the roofline where one side bounds
        attention); None otherwise (each step is priced on its own)."""
        line = getattr(self.target, "verify_coefficients", None)
        verify = line(batch, self.acceptance.verify_tokens(k)) if line is not None and k >= 1 else None
        if verify is None:
            return None
        assert self.proposer is not None
        da, db = self.proposer.line(k, batch, self.acceptance.width)
        return da * self.slow, db * self.slow, verify[0], verify[1]

    def record(self, steps: int, batch: int, k: int, emitted: int, draft_s: float, verify_s: float) -> None:
        self.steps += steps
        self.seq_steps += steps * batch
        self.drafted += steps * batch * k
        self.emitted += emitted
        self.draft_s += draft_s
        self.verify_s += verify_s

    def summary(self) -> dict:
        """Acceptance (drafts accepted / proposed), tokens per sequence-step, and the share of
        speculative time spent drafting."""
        accepted = self.emitted - self.seq_steps  # each step's last token is the target's own
        busy = self.draft_s + self.verify_s
        return {"spec_method": self.strategy.name, "spec_steps": self.steps,
                "spec_acceptance": accepted / self.drafted if self.drafted else float("nan"),
                "spec_tokens_per_step": self.emitted / self.seq_steps if self.seq_steps else float("nan"),
                "spec_draft_share": self.draft_s / busy if busy else float("nan")}


def make_speculation(sched: SchedulerConfig, target: CostModel) -> Speculation:
    """The speculation of an instance whose target model is priced by ``target``."""
    cfg: SpeculationConfig = sched.section("speculation")
    cls = SPECULATORS.get(cfg.method.lower())
    if cls is None:
        raise ConfigError(f"unknown scheduler.speculation.method '{cfg.method}'; choose one of "
                          f"{sorted(SPECULATORS)}")
    strategy = cls(cfg.section(cls.name) if cls.Options is not None else None)
    acceptance = Acceptance(cfg.alpha, cfg.tree_width, cfg.alpha_by_position)  # validate even when off
    _alpha_draw(cfg)
    proposer = None
    if strategy.name != "none":
        proposer = make_proposer(cfg, target)
        drafted = acceptance.verify_tokens(strategy.max_k()) - 1
        if drafted > PROFILED_MAX_K and target.source.startswith("profile:"):
            raise ConfigError(f"scheduler.speculation: verifies of up to {drafted} drafted tokens "
                              f"(k {strategy.max_k()} x tree_width {cfg.tree_width}) are beyond the "
                              f"profiled verify range (<= {PROFILED_MAX_K}) of {target.source}; "
                              f"draft fewer or use cost_model.kind=roofline")
    return Speculation(cfg, target, proposer, strategy)


def _alpha_draw(cfg: SpeculationConfig) -> Callable[[object], float] | None:
    """``alpha_dist`` as a function of a request: its acceptance, drawn once from a Beta
    distribution seeded by (seed, request id), so step and fast-forward mode (and reruns) agree."""
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
    import numpy as np

    seed = cfg.seed

    def draw(seq) -> float:
        v = seq.alpha
        if v != v:  # NaN: not drawn yet (a trace may also give it)
            v = seq.alpha = min(0.999, float(np.random.default_rng([seed, seq.rid]).beta(a, b)))
        return v
    return draw
