"""Who drafts the tokens a speculative step verifies, and what drafting costs and holds in memory.

A proposer is a small strategy class registered by name (``scheduler.speculation.proposer``),
each with its own config section (``scheduler.speculation.<proposer>``):

* ``draft`` (the default): a smaller model of the same tokenizer (``draft_model``: its own
  profile on this GPU, else a roofline; or a fixed ``draft_pass_s`` per pass). k sequential passes
  per step, pass i attending the context plus the i tokens drafted before it; its weights and KV
  take GPU memory next to the target's.
* ``ngram``: prompt lookup (vLLM's ``[ngram]``): candidate tokens copied from the context, no
  model, a CPU cost per step (``step_s`` + ``per_seq_s`` x batch) whatever k is; no memory.
* ``heads``: extra decoding heads or multi-token-prediction layers (Medusa, EAGLE, DeepSeek's
  MTP): each draft pass runs ``layers_per_pass`` decoder layers of the target's shape, priced as
  that share of a target decode pass; ``sequential`` (MTP, EAGLE: one pass per draft token) or
  all k heads in one pass (Medusa); their weights and KV take memory.

Tree speculation (``tree_width`` w > 1) drafts w candidates per position; the verify checks the
whole tree (1 + k w tokens per sequence) at once and a level is accepted when any of its w
candidates is (``goodput.sim.engine.speculation.Acceptance``). Drafting w candidates runs each pass over
w x batch rows.

Drafting time is a line in the batch's context sum, ``a + b x ctx_sum``, for every proposer, so
a run of speculative steps is priced by the same arithmetic in step and fast-forward mode.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from goodput.sim.catalog import get_gpu, get_model
from goodput.sim.config import ConfigError, register_strategy
from goodput.sim.costmodel.base import CostModel
from goodput.sim.costmodel.speculative import draft_cost_model, target_model_name
from goodput.sim.engine.speculation_config import SpeculationConfig

#: every proposer by ``scheduler.speculation.proposer``
PROPOSERS: dict[str, type[Proposer]] = {}


def register_proposer(cls: type[Proposer]) -> type[Proposer]:
    return register_strategy(PROPOSERS, SpeculationConfig, cls, "proposer")


class Proposer:
    name: ClassVar[str] = "base"
    Options: ClassVar[Any] = None

    def __init__(self, options: Any, cfg: SpeculationConfig, target: CostModel | None):
        self.options, self.cfg, self.target = options, cfg, target

    def line(self, k: int, batch: int, width: int) -> tuple[float, float]:
        """Drafting seconds of one step of k positions x ``width`` candidates over ``batch``
        sequences, as (a, b): ``a + b x ctx_sum``."""
        raise NotImplementedError

    def memory(self, target_model: str, tp: int) -> tuple[float, float]:
        """(weight bytes, KV bytes per token), per GPU, that drafting adds next to the target's."""
        return 0.0, 0.0


@register_proposer
class DraftModel(Proposer):
    name = "draft"

    def __init__(self, options, cfg, target):
        super().__init__(options, cfg, target)
        self.draft: CostModel | None = None
        if cfg.draft_pass_s is not None:
            if cfg.draft_pass_s < 0:
                raise ConfigError(f"scheduler.speculation.draft_pass_s must be >= 0, got {cfg.draft_pass_s}")
        elif target is not None:
            self.draft = _draft_cost(cfg, target)

    def line(self, k, batch, width):
        if self.cfg.draft_pass_s is not None:
            return k * self.cfg.draft_pass_s, 0.0
        assert self.draft is not None
        a, b = self.draft.decode_coefficients(batch * width)
        # pass i attends the context plus the i tokens drafted before it, for each candidate
        return k * a + b * width * (batch * k * (k - 1) // 2), b * k * width

    def memory(self, target_model, tp):
        if not self.cfg.draft_model:
            return 0.0, 0.0
        spec = _checked_draft(self.cfg, target_model)
        dtp = tp if spec.heads % tp == 0 else 1
        # a draft on one GPU of a TP group (heads not divisible) sits on the first one: the worst
        return spec.weight_bytes(dtp), spec.kv_bytes_per_token(dtp)


@dataclass
class NGramOptions:
    #: CPU seconds per step over the batch and per sequence (vLLM's prompt lookup is numpy on
    #: the host: tens of microseconds a request); not measured here, set them from your engine
    step_s: float = 50e-6
    per_seq_s: float = 10e-6


@register_proposer
class NGram(Proposer):
    name = "ngram"
    Options = NGramOptions

    def __init__(self, options: NGramOptions, cfg, target):
        super().__init__(options, cfg, target)
        if options.step_s < 0 or options.per_seq_s < 0:
            raise ConfigError("scheduler.speculation.ngram.step_s and per_seq_s must be >= 0")

    def line(self, k, batch, width):
        return self.options.step_s + self.options.per_seq_s * batch, 0.0


@dataclass
class HeadsOptions:
    #: decoder layers of the target's shape one draft pass runs (MTP / EAGLE: 1; Medusa heads:
    #: about 0.1 - an MLP head per position next to the shared LM head)
    layers_per_pass: float = 1.0
    #: one pass per draft token (MTP, EAGLE) or every head in one pass (Medusa)
    sequential: bool = True


@register_proposer
class Heads(Proposer):
    name = "heads"
    Options = HeadsOptions

    def __init__(self, options: HeadsOptions, cfg, target):
        super().__init__(options, cfg, target)
        if not options.layers_per_pass > 0:
            raise ConfigError("scheduler.speculation.heads.layers_per_pass must be > 0")
        self.share = 0.0
        if target is not None:
            layers = get_model(target_model_name(target)).layers
            self.share = options.layers_per_pass / layers

    def line(self, k, batch, width):
        assert self.target is not None
        a, b = self.target.decode_coefficients(batch * width)
        passes = k if self.options.sequential else 1
        grow = batch * k * (k - 1) // 2 if self.options.sequential else 0
        return self.share * (passes * a + b * width * grow), self.share * b * passes * width

    def memory(self, target_model, tp):
        m = get_model(target_model)
        f = self.options.layers_per_pass / m.layers
        kv = m.kv_bytes_per_token(tp) * f if self.options.sequential else 0.0  # MTP layers cache KV
        return m.weight_bytes(tp) * f, kv


def make_proposer(cfg: SpeculationConfig, target: CostModel | None) -> Proposer:
    cls = PROPOSERS.get(cfg.proposer.lower())
    if cls is None:
        raise ConfigError(f"unknown scheduler.speculation.proposer '{cfg.proposer}'; choose one of "
                          f"{sorted(PROPOSERS)}")
    return cls(cfg.section(cls.name) if cls.Options is not None else None, cfg, target)


def speculation_memory(cfg: SpeculationConfig, target_model: str, tp: int) -> tuple[float, float]:
    """(weight bytes, KV bytes per token) per GPU that speculation adds (0, 0 when it is off)."""
    if cfg.method == "none":
        return 0.0, 0.0
    return make_proposer(cfg, None).memory(target_model, tp)


def _checked_draft(cfg: SpeculationConfig, target_model: str):
    """The draft's catalog entry, checked against the target's (same tokenizer, smaller)."""
    if not cfg.draft_model:
        raise ConfigError("scheduler.speculation: give draft_model (a catalog model, e.g. "
                          "llama-3.2-1b) or draft_pass_s (seconds per draft pass), or another "
                          f"proposer ({', '.join(sorted(PROPOSERS))})")
    try:
        spec = get_model(cfg.draft_model)
        tgt = get_model(target_model)
    except ValueError as exc:
        raise ConfigError(f"scheduler.speculation.draft_model: {exc}") from None
    if spec.vocab_size != tgt.vocab_size:
        raise ConfigError(f"scheduler.speculation.draft_model '{spec.name}' has a vocabulary of "
                          f"{spec.vocab_size} tokens, the target '{tgt.name}' {tgt.vocab_size}: "
                          "a draft must share the target's tokenizer")
    if spec.param_count() >= tgt.param_count():
        raise ConfigError(f"scheduler.speculation.draft_model '{spec.name}' is not smaller than "
                          f"the target '{tgt.name}'")
    return spec


def _draft_cost(cfg: SpeculationConfig, target: CostModel) -> CostModel:
    return draft_cost_model(target, _checked_draft(cfg, target_model_name(target)), get_gpu)
