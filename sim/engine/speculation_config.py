"""The ``scheduler.speculation`` section, apart from the engine code so that the proposers
(``goodput.sim.engine.proposers``) and the length strategies (``goodput.sim.engine.speculation``) can both
register their own sections on it without importing each other."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from goodput.sim.config import SchedulerConfig, register_section, section_options


@dataclass
class SpeculationConfig:
    """``scheduler.speculation``: the proposer, the acceptance model and the length strategy."""

    method: str = "none"  # none | fixed | table | smartspec (or a registered plugin)
    alpha: float = 0.8  # per-token acceptance rate, in [0, 1] (a trace column alpha overrides it)
    #: who drafts: draft (a draft model) | ngram (prompt lookup) | heads (Medusa / EAGLE / MTP)
    proposer: str = "draft"
    #: candidates per drafted position (> 1: tree speculation, the whole tree verified at once)
    tree_width: int = 1
    #: acceptance of draft position 1, 2, ... (later positions: the last value); empty = alpha
    #: at every position. Drafts further ahead are accepted less often (the draft drifts)
    alpha_by_position: list[float] = field(default_factory=list)
    #: per-request acceptance drawn from a distribution, e.g. "beta:8,2" (mean 0.8); empty =
    #: every request accepts at alpha. A request's draw is seeded by (seed, request id)
    alpha_dist: str = ""
    seed: int = 0
    #: catalog model that drafts (its own cost model: a profile on this GPU, else a roofline)
    draft_model: str = ""
    #: seconds of one draft forward pass over the batch, instead of a draft model's cost
    draft_pass_s: float | None = None
    sections: dict[str, Any] = field(default_factory=dict, metadata={"internal": True})

    def section(self, name: str) -> Any:
        return section_options(self, name, "scheduler.speculation", "method")


register_section(SchedulerConfig, "speculation", SpeculationConfig)
