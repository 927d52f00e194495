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

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sim.catalog import get_gpu, get_model
from sim.config import ConfigError, SchedulerConfig, register_section, register_strategy, section_options
from sim.costmodel.base import CostModel
from sim.costmodel.speculative import draft_cost_model, target_model_name

#: the largest k a strategy may use (a profile measures verifies up to k = 8)
MAX_K = 16
PROFILED_MAX_K = 8


@dataclass
class SpeculationConfig:
    """``scheduler.speculation``: the proposer, the acceptance model and the length strategy."""

    method: str = "none"  # none | fixed | smartspec (or a registered plugin)
    alpha: float = 0.8  # per-token acceptance rate, in [0, 1)
    #: catalog model that drafts (its own cost model: a profile on this GPU, else a roofline)
    draft_model: str = ""
    #: seconds of one draft forward pass over the batch, instead of a draft model's cost
    draft_pass_s: float | None = None
    sections: dict[str, Any] = field(default_factory=dict, metadata={"internal": True})

    def section(self, name: str) -> Any:
        return section_options(self, name, "scheduler.speculation", "method")


register_section(SchedulerConfig, "speculation", SpeculationConfig)


class Acceptance:
    """Per-token acceptance rate ``alpha``: expected tokens per verify of ``k`` drafts."""

    UNITS = 1 << 30  # the carried fraction's resolution (tokens are exact integers of these)

    def __init__(self, alpha: float):
        if not 0.0 <= alpha < 1.0:
            raise ConfigError(f"scheduler.speculation.alpha must be in [0, 1), got {alpha}")
        self.alpha = alpha

    def expected(self, k: int) -> float:
        a = self.alpha
        return (1.0 - a ** (k + 1)) / (1.0 - a)

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
            rate = spec.acceptance.expected(k) / t
            if rate > best * (1.0 + 1e-12):  # ties go to the shorter draft
                best, best_k = rate, k
        return best_k


class Speculation:
    """One instance's speculation: strategy, acceptance, draft cost, the carried fraction of a
    token, the current k, and counters (never read back to decide)."""

    def __init__(self, cfg: SpeculationConfig, target: CostModel,
                 draft: CostModel | None, strategy: SpeculationLength):
        self.cfg = cfg
        self.target = target
        self.draft = draft
        self.strategy = strategy
        self.acceptance = Acceptance(cfg.alpha)
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
               contexts: Callable[[], list[int]] | None = None) -> int:
        """k for the step starting now: re-decided when the decode set changed (a join or leave),
        which only happens at a boundary both step and fast-forward mode stop at."""
        if epoch != self._epoch:
            self._epoch = epoch
            self.k = self.strategy.choose_k(self, batch, ctx_sum, ctx_max, contexts)
        return self.k

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
        if self.cfg.draft_pass_s is not None:
            draft = k * self.cfg.draft_pass_s
        else:
            assert self.draft is not None
            a, b = self.draft.decode_coefficients(batch)
            # pass i attends to the context plus the i tokens drafted before it
            draft = k * a + b * (k * ctx_sum + batch * k * (k - 1) // 2)
        draft *= self.slow
        return draft, tgt.verify_time(batch, k + 1, ctx_sum, ctx_max, contexts)

    def step_line(self, k: int, batch: int) -> tuple[float, float, float, float] | None:
        """(draft a, draft b, verify a, verify b): a step of k drafts takes ``draft a + draft b x
        ctx_sum`` drafting and ``verify a + verify b x ctx_sum`` verifying, when the target prices
        verifies by a line (``verify_coefficients``; the roofline where one side bounds
        attention); None otherwise (each step is priced on its own)."""
        line = getattr(self.target, "verify_coefficients", None)
        verify = line(batch, k + 1) if line is not None else None
        if verify is None or k < 1:
            return None
        if self.cfg.draft_pass_s is not None:
            da, db = k * self.cfg.draft_pass_s, 0.0
        else:
            assert self.draft is not None
            a, b = self.draft.decode_coefficients(batch)
            da, db = k * a + b * (batch * k * (k - 1) // 2), b * k
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
    Acceptance(cfg.alpha)  # validate even when off
    draft = None
    if strategy.name != "none":
        if cfg.draft_pass_s is not None:
            if cfg.draft_pass_s < 0:
                raise ConfigError(f"scheduler.speculation.draft_pass_s must be >= 0, got {cfg.draft_pass_s}")
        else:
            draft = _draft_cost(cfg, target)
        if strategy.max_k() > PROFILED_MAX_K and target.source.startswith("profile:"):
            raise ConfigError(f"scheduler.speculation: k up to {strategy.max_k()} is beyond the "
                              f"profiled verify range (k <= {PROFILED_MAX_K}) of {target.source}; "
                              f"use k <= {PROFILED_MAX_K} or cost_model.kind=roofline")
    return Speculation(cfg, target, draft, strategy)


def _draft_cost(cfg: SpeculationConfig, target: CostModel) -> CostModel:
    if not cfg.draft_model:
        raise ConfigError("scheduler.speculation: give draft_model (a catalog model, e.g. "
                          "llama-3.2-1b) or draft_pass_s (seconds per draft pass)")
    try:
        spec = get_model(cfg.draft_model)
        tgt = get_model(target_model_name(target))
    except ValueError as exc:
        raise ConfigError(f"scheduler.speculation.draft_model: {exc}") from None
    if spec.vocab_size != tgt.vocab_size:
        raise ConfigError(f"scheduler.speculation.draft_model '{spec.name}' has a vocabulary of "
                          f"{spec.vocab_size} tokens, the target '{tgt.name}' {tgt.vocab_size}: "
                          "a draft must share the target's tokenizer")
    if spec.param_count() >= tgt.param_count():
        raise ConfigError(f"scheduler.speculation.draft_model '{spec.name}' is not smaller than "
                          f"the target '{tgt.name}'")
    return draft_cost_model(target, spec, get_gpu)
