"""Speculative decoding: how long to speculate (strategies by name) and what a step costs.

A speculative step drafts ``k`` tokens per running sequence (``k`` forward passes of a small
draft model, or a fixed per-pass cost), then verifies them in one target iteration of ``k + 1``
tokens per sequence. Each sequence keeps its own accepted drafts plus the target's own token,
drawn per step from seeded per-request, per-position uniforms (``goodput.sim.engine.speculation_draws``)
against its acceptance rates (``goodput.sim.engine.speculation_acceptance``); on average

    E(k) = (1 - alpha^(k+1)) / (1 - alpha)        (1 <= E(k) <= k + 1)

(Leviathan et al. 2023). How ``k`` is chosen is a strategy, registered by name like the batching
policies, each with its own config section (``scheduler.speculation.<method>``): ``none`` (the
default), ``fixed``, ``table`` and ``smartspec`` (SmartSpec, arXiv 2406.14066: the ``k`` in
``0..max_k`` maximising goodput(k) = sum_i E[accepted_i(k)] / T(k), each request's acceptance
estimated online; ``k = 0`` is a plain decode).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from goodput.sim.config import ConfigError, SchedulerConfig
from goodput.sim.costmodel.base import CostModel
from goodput.sim.engine.proposers import Proposer, make_proposer
from goodput.sim.engine.speculation_acceptance import Acceptance, alpha_draw
from goodput.sim.engine.speculation_config import SpeculationConfig
from goodput.sim.engine.speculation_draws import request_keys
from goodput.sim.engine.speculation_strategies import (
    MAX_K,
    PROFILED_MAX_K,
    SPECULATORS,
    FixedK,
    FixedOptions,
    NoSpeculation,
    SmartSpec,
    SmartSpecOptions,
    SpeculationLength,
    TableK,
    TableOptions,
    register_speculator,
)

__all__ = ["MAX_K", "PROFILED_MAX_K", "SPECULATORS", "Acceptance", "FixedK", "FixedOptions",
           "NoSpeculation", "SmartSpec", "SmartSpecOptions", "Speculation", "SpeculationConfig",
           "SpeculationLength", "TableK", "TableOptions", "make_speculation", "register_speculator"]

_UNPRICED = object()  # a step line not looked up yet


class Speculation:
    """One instance's speculation: strategy, acceptance, draft cost, the current k and the
    step it was decided at, per-epoch arrays of the decode set's members, and counters (never
    read back to decide)."""

    def __init__(self, cfg: SpeculationConfig, target: CostModel, proposer: Proposer | None,
                 strategy: SpeculationLength):
        self.cfg = cfg
        self.target = target
        self.proposer = proposer
        self.strategy = strategy
        self.acceptance = Acceptance(cfg.alpha, cfg.tree_width, cfg.alpha_by_position)
        self.draw = alpha_draw(cfg)  # per-request acceptance (None: every request at alpha)
        self.active = strategy.name != "none"
        self.slow = 1.0  # the draft's slow-down (a straggler instance, see ``use_cost``)
        self.k = 0
        self.k_cap = MAX_K  # the largest k the batch may verify now (a token budget)
        self.members: list = []  # the decode set's members when k was decided
        self._epoch = -1  # decode-set epoch the current k was chosen at
        self._since = 0  # speculative steps run since k was decided
        self._arrays: tuple | None = None  # (epoch, keys, prompts, outputs, growing, alphas)
        self._levels: tuple[int, int, np.ndarray] | None = None  # (epoch, k, levels)
        #: (k, batch) -> a step's (draft a, draft b, verify a, verify b) line, or None
        self._lines: dict[tuple[int, int], tuple[float, float, float, float] | None] = {}
        # counters
        self.steps = 0  # speculative steps (verify iterations)
        self.seq_steps = 0  # sequence x step pairs
        self.drafted = 0  # draft tokens proposed (k per sequence per step)
        self.emitted = 0  # tokens the steps produced (accepted drafts + bonus tokens)
        self.draft_s = 0.0  # time spent drafting
        self.verify_s = 0.0  # time spent in verify iterations

    def choose(self, epoch: int, batch: int, ctx_sum: int, ctx_max: int,
               contexts: Callable[[], list[int]] | None = None, members: list | None = None,
               k_cap: int = MAX_K) -> int:
        """k for the step starting now: re-decided when the decode set changed (a join or leave)
        or the strategy's decision expired (``horizon`` speculative steps), both at boundaries
        that step and fast-forward mode stop at. ``k_cap``: the largest k that fits the
        batch's token budget."""
        horizon = self.strategy.horizon()
        if epoch != self._epoch or k_cap != self.k_cap or (horizon is not None and self._since >= horizon):
            self._epoch = epoch
            self._since = 0
            self.k_cap = k_cap
            self.members = list(members) if members is not None else []
            self.k = min(k_cap, self.strategy.choose_k(self, batch, ctx_sum, ctx_max, contexts))
        return self.k

    @property
    def epoch(self) -> int:
        """The decode-set epoch the current k was decided in."""
        return self._epoch

    def steps_left(self) -> int:
        """Speculative steps the current decision still holds (a run stops there)."""
        horizon = self.strategy.horizon()
        return 1 << 60 if horizon is None else max(1, horizon - self._since)

    def expected(self, k: int) -> float:
        """Mean tokens a member keeps per step of k drafts at the run's acceptance."""
        return self.acceptance.expected(k)

    def member_arrays(self, epoch: int, members: list) -> tuple:
        """(draw keys, prompts, outputs, growing mask, alphas) of the decode set's members, built
        once per epoch (membership changes bump it)."""
        arr = self._arrays
        if arr is None or arr[0] != epoch:
            draw = self.draw
            alphas = [draw(s) for s in members] if draw is not None else [s.alpha for s in members]
            arr = self._arrays = (
                epoch,
                request_keys(self.cfg.seed, [s.rid for s in members]),
                np.array([s.prompt for s in members], dtype=np.int64),
                np.array([s.output for s in members], dtype=np.int64),
                np.array([not s.reserved for s in members], dtype=bool),
                np.array(alphas, dtype=float),
            )
        return arr[1:]

    def levels(self, epoch: int, k: int, alphas: np.ndarray) -> np.ndarray:
        """``(B, k)`` per-member acceptance of draft positions 1..k (cached per epoch and k)."""
        lv = self._levels
        if lv is None or lv[0] != epoch or lv[1] != k:
            lv = self._levels = (epoch, k, self.acceptance.levels(alphas, k))
        return lv[2]

    def use_cost(self, target: CostModel) -> None:
        """The instance's cost model now (a straggler's is slowed: its draft passes are too)."""
        if target is not self.target:
            self.target = target
            self.slow = float(getattr(target, "factor", 1.0))
            self._lines = {}

    def step_total(self, k: int, batch: int, ctx_sum: int, ctx_max: int,
                   contexts: Callable[[], list[int]] | None = None) -> float:
        """Seconds of one step of k drafts (draft + verify; k = 0 a plain decode): by the step's
        line when the cost model has one (as the run prices it, cached per batch size), else
        ``step_time``."""
        key = (k, batch)
        line: Any = self._lines.get(key, _UNPRICED)
        if line is _UNPRICED:
            if k == 0:
                a, b = self.target.decode_coefficients(batch)
                line = (0.0, 0.0, a, b)
            else:
                line = self.step_line(k, batch)
            self._lines[key] = line
        if line is None:
            return sum(self.step_time(k, batch, ctx_sum, ctx_max, contexts))
        da, db, va, vb = line
        return da + db * ctx_sum + va + vb * ctx_sum

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

    def record(self, members: list, accepted: np.ndarray, k: int, emitted: int, draft_s: float,
               verify_s: float) -> None:
        """A run of ``len(accepted)`` steps of k drafts happened (``accepted[j, i]``: drafts of
        member i kept in step j); the strategy learns from it."""
        steps = len(accepted)
        self.steps += steps
        self._since += steps
        self.seq_steps += steps * len(members)
        self.drafted += steps * len(members) * k
        self.emitted += emitted
        self.draft_s += draft_s
        self.verify_s += verify_s
        self.strategy.observe(self, members, accepted, k)

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
    if cfg.seed < 0:
        raise ConfigError(f"scheduler.speculation.seed must be >= 0, got {cfg.seed}")
    alpha_draw(cfg)
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
