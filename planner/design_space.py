"""The design space ``goodput plan --search`` explores: every scheduler choice beside the GPU mix.

The ILP already chooses GPU types and TP degrees (``--gpus``, ``--tp``) per request slice. What it
cannot choose is what is cluster-wide: the batching policy (and Sarathi's token budget) and
speculative decoding (``scheduler.speculation``: proposer, acceptance, k policy). A ``Design`` is
one such choice; ``DesignSpace`` is the cross product the user asks for with ``--search``:

    --search policy=vllm,sarathi --search budget=256,1024 --search spec=none,fixed:4,smartspec

``budget`` applies to ``sarathi`` only (a vLLM design has no token budget, so the product does
not repeat it); ``spec`` values are ``none``, ``fixed:K`` (always K drafts) and ``smartspec``
or ``smartspec:MAX_K`` (goodput-adaptive k in 0..MAX_K); ``mode=colocated,disaggregated``
adds prefill/decode pools (goodput.planner.design_disagg: one design per policy, without Sarathi
sections or speculation, which the placement search does not take). The speculation settings that describe
the workload and the drafter rather than a choice (``alpha``, ``proposer``, ``draft_model``) are
given once (``--spec-alpha``, ``--spec-proposer``, ``--spec-draft-model``): the planner must not
invent an acceptance rate, so a search with speculation and no ``--spec-alpha`` is refused.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from goodput.planner.assignments import parse_assignments
from goodput.planner.errors import PlannerError

#: search dimension -> what it sets
DIMENSIONS = {"policy": "scheduler.policy", "budget": "scheduler.sarathi.token_budget",
              "spec": "scheduler.speculation (none | fixed:K | smartspec[:MAX_K])",
              "mode": "colocated (one pool per GPU type) | disaggregated (prefill/decode pools)"}
MODES = ("colocated", "disaggregated")


@dataclass(frozen=True)
class Speculation:
    """One speculation choice: method none / fixed / smartspec and its k."""

    method: str = "none"
    k: int | None = None  # fixed: drafts per step; smartspec: the largest k it may pick

    @property
    def name(self) -> str:
        if self.method == "none":
            return "none"
        return f"{self.method}:{self.k}" if self.k is not None else self.method

    @classmethod
    def parse(cls, text: str) -> Speculation:
        method, _, k = text.strip().lower().partition(":")
        if method not in ("none", "fixed", "smartspec"):
            raise PlannerError(f"--search spec={text!r}: use none, fixed:K or smartspec[:MAX_K]")
        if method == "none":
            if k:
                raise PlannerError(f"--search spec={text!r}: 'none' takes no k")
            return cls()
        if method == "fixed" and not k:
            raise PlannerError(f"--search spec={text!r}: fixed needs its k, e.g. fixed:4")
        try:
            kk = int(k) if k else None
        except ValueError:
            raise PlannerError(f"--search spec={text!r}: k must be a whole number") from None
        if kk is not None and not 1 <= kk <= 16:
            raise PlannerError(f"--search spec={text!r}: k must be in 1..16")
        return cls(method, kk)


@dataclass(frozen=True)
class SpecSettings:
    """What speculation depends on besides the choice: the workload's acceptance and the drafter."""

    alpha: float | None = None
    proposer: str = "draft"
    draft_model: str = ""

    def section(self, spec: Speculation) -> dict:
        if spec.method == "none":
            return {}
        if self.alpha is None:
            raise PlannerError(f"--search spec={spec.name}: give the workload's acceptance rate "
                               f"with --spec-alpha A (0 <= A < 1); the planner does not assume one")
        if not 0 <= self.alpha < 1:
            raise PlannerError(f"--spec-alpha={self.alpha!r}: must be in [0, 1)")
        d: dict = {"method": spec.method, "alpha": self.alpha, "proposer": self.proposer}
        if self.draft_model:
            d["draft_model"] = self.draft_model
        if spec.k is not None:
            d[spec.method] = {"k": spec.k} if spec.method == "fixed" else {"max_k": spec.k}
        return d


@dataclass(frozen=True)
class Design:
    """A cluster-wide scheduler choice; the ILP picks the GPUs under it."""

    policy: str = "vllm"
    token_budget: int | None = None  # sarathi only
    speculation: Speculation = field(default_factory=Speculation)
    mode: str = "colocated"  # colocated | disaggregated

    @property
    def name(self) -> str:
        s = self.policy + (f"/budget {self.token_budget}" if self.token_budget else "")
        s += "" if self.speculation.method == "none" else f" + {self.speculation.name}"
        return s if self.mode == "colocated" else f"disaggregated {s}"

    def scheduler(self, base: dict, spec: SpecSettings) -> dict:
        """``base`` (the plan's scheduler settings) with this design's choices applied."""
        d = {k: v for k, v in base.items() if k not in ("policy", "speculation")}
        d["policy"] = self.policy
        if self.token_budget is not None:
            sar = dict(d.get("sarathi") or {})
            sar["token_budget"] = self.token_budget
            sar["chunk_size"] = min(int(sar.get("chunk_size", 512)), self.token_budget)
            d["sarathi"] = sar
        section = spec.section(self.speculation)
        if section:
            d["speculation"] = section
        return d


@dataclass(frozen=True)
class DesignSpace:
    policies: tuple[str, ...] = ("vllm",)
    budgets: tuple[int, ...] = ()
    speculation: tuple[Speculation, ...] = (Speculation(),)
    modes: tuple[str, ...] = ("colocated",)

    def designs(self) -> list[Design]:
        out: list[Design] = []
        if "colocated" in self.modes:
            for pol, spec in itertools.product(self.policies, self.speculation):
                budgets: tuple[int | None, ...] = self.budgets \
                    if pol == "sarathi" and self.budgets else (None,)
                for b in budgets:
                    d = Design(pol, b, spec)
                    if d not in out:
                        out.append(d)
        if "disaggregated" in self.modes:
            out += [Design(pol, mode="disaggregated") for pol in self.policies]
        return out


def parse_search(items: list[str] | None, default_policy: str = "vllm") -> DesignSpace | None:
    """``['policy=vllm,sarathi', 'spec=none,smartspec']`` -> a DesignSpace (None without items)."""
    if not items:
        return None
    from goodput.sim.engine.policies import POLICIES

    vals = parse_assignments(items, "--search", DIMENSIONS, "dimension", "DIM",
                             " (GPU types and TP come from --gpus and --tp)")
    policies = tuple(dict.fromkeys(vals.get("policy", [default_policy])))
    for p in policies:
        if p not in POLICIES:
            raise PlannerError(f"--search policy={p!r}: unknown batching policy; registered: "
                               f"{sorted(POLICIES)}")
    budgets: list[int] = []
    for b in vals.get("budget", []):
        try:
            budgets.append(int(b))
        except ValueError:
            raise PlannerError(f"--search budget={b!r}: a token budget is a whole number of "
                               f"tokens, e.g. 512") from None
        if budgets[-1] < 1:
            raise PlannerError(f"--search budget={b!r}: must be >= 1 token")
    if budgets and "sarathi" not in policies:
        raise PlannerError("--search budget=...: token budgets are Sarathi's; add sarathi to "
                           "--search policy=")
    spec = tuple(dict.fromkeys(Speculation.parse(s) for s in vals.get("spec", ["none"])))
    modes = tuple(dict.fromkeys(m.lower() for m in vals.get("mode", ["colocated"])))
    for m in modes:
        if m not in MODES:
            raise PlannerError(f"--search mode={m!r}: use colocated and/or disaggregated")
    return DesignSpace(policies, tuple(dict.fromkeys(budgets)), spec, modes)
