"""The Mélange ILP: cheapest mix of instance types that carries every slice's load.

Variables: an integer instance count n_g per instance type g (a GPU model at one TP degree, so TP
choices compete as separate types), and the share x_sg of slice s's rate served by type g
(continuous in [0, 1], or binary with ``assignment='whole'`` as in Mélange, where
``slice_factor`` then sets the granularity). With r_s the slice rate and c_sg the capacity of one
g-instance on slice s (req/s at which it still meets the SLO),

    minimise   sum_g price_g * n_g
    subject to sum_g x_sg = 1                              for every slice s
               sum_s x_sg * r_s / c_sg <= n_g              for every type g
               sum_{g on GPU model m} tp_g * n_g <= A_m    (availability, GPUs of model m)
               sum_g tdp_g * tp_g * n_g <= P               (power budget, W)

x_sg exists only where c_sg > 0. The load term treats a mix of slices on one instance as additive
fractions of its per-slice capacity, which is the assumption the verification by simulation
checks. A tiny tie-break (1e-6 of the cheapest price per unit of load) prefers, among plans of
equal cost, the assignment that uses the least capacity, so the slack is headroom.
"""
from __future__ import annotations

import itertools
import math
import time
import warnings
from dataclasses import dataclass, field

import pulp

from goodput.planner.errors import PlannerError

SOLVERS = ("cbc", "highs", "auto")


@dataclass(frozen=True)
class InstanceType:
    gpu: str  # catalog name
    tp: int
    price_per_hour: float  # per GPU
    tdp_w: float  # per GPU

    @property
    def key(self) -> str:
        return f"{self.gpu}-tp{self.tp}"

    @property
    def instance_price(self) -> float:
        return self.price_per_hour * self.tp

    @property
    def instance_power_w(self) -> float:
        return self.tdp_w * self.tp


@dataclass
class Solution:
    counts: dict[str, int]  # type key -> instances (only types used)
    shares: dict[str, dict[str, float]]  # slice -> type key -> share of its rate
    load: dict[str, float]  # type key -> load in instances' worth of capacity
    cost_per_hour: float
    power_w: float
    solver: str
    solve_s: float
    status: str = "Optimal"
    notes: list[str] = field(default_factory=list)


def _solver(name: str, time_limit: float | None):
    if name not in SOLVERS:
        raise PlannerError(f"solver={name!r} is not known; choose one of {list(SOLVERS)}")
    if name in ("highs", "auto"):
        for cls in (pulp.HiGHS, pulp.HiGHS_CMD):
            s = cls(msg=False, timeLimit=time_limit)
            if s.available():
                return s, "highs"
        if name == "highs":
            raise PlannerError("solver='highs' needs HiGHS (pip install highspy); use "
                               "solver='cbc' (bundled with PuLP) or 'auto'")
    return cbc(time_limit), "cbc"


def cbc(time_limit: float | None = None):
    """CBC: a separately installed one (COIN_CMD, PuLP 4's way) if present, else PuLP's bundled one.

    Cuts off: with one integer per instance type, branch and bound closes the gap in a few
    hundred nodes, while CBC's root cut rounds dominated the solve time of the 8 types x 64
    slices benchmark (benchmarks/plan_speed.py); the optimum is the same, only found faster.
    """
    opts = {"msg": False, "timeLimit": time_limit, "options": ["cuts off"]}
    coin = pulp.COIN_CMD(**opts)
    if coin.available():
        return coin
    with warnings.catch_warnings():  # PuLP 3.3 deprecates the bundled CBC in favour of pulp[cbc]
        warnings.simplefilter("ignore", DeprecationWarning)
        return pulp.PULP_CBC_CMD(**opts)


def new_var(prob: pulp.LpProblem, name: str, low=None, high=None, cat: str = "Continuous"):
    """A variable attached to ``prob`` (PuLP >= 3.3 API), or a plain LpVariable on older PuLP."""
    if hasattr(prob, "add_variable"):
        return prob.add_variable(name, low, high, cat=cat)
    return pulp.LpVariable(name, low, high, cat=cat)


def check_slices(rates: dict[str, float], cap: dict[str, dict[str, float]],
                 reasons: dict[str, dict[str, str]] | None = None) -> None:
    """Every slice with load needs at least one type that meets its SLO; else name the limits."""
    for s, r in rates.items():
        if r > 0 and not any(c > 0 for c in cap.get(s, {}).values()):
            why = "; ".join(f"{g}: {msg}" for g, msg in (reasons or {}).get(s, {}).items())
            raise PlannerError(f"no GPU configuration meets the SLO for slice {s} ({r:.4g} req/s)"
                               + (f": {why}" if why else "")
                               + ". Loosen the SLO, allow bigger GPUs or a higher --tp, or "
                                 "narrow the slice")


def solve(types: list[InstanceType], rates: dict[str, float], cap: dict[str, dict[str, float]],
          availability: dict[str, int] | None = None, power_budget_w: float | None = None,
          assignment: str = "fractional", solver: str = "cbc", time_limit: float | None = None,
          reasons: dict[str, dict[str, str]] | None = None,
          min_counts: dict[str, int] | None = None) -> Solution:
    """Solve the ILP. ``cap[slice][type_key]`` in req/s; ``availability`` maps GPU name -> GPUs;
    ``min_counts`` (type key -> instances) are lower bounds, which the proof uses to keep
    instances it added."""
    if not types:
        raise PlannerError("no instance types to choose from")
    if assignment not in ("fractional", "whole"):
        raise PlannerError(f"assignment={assignment!r}: use 'fractional' or 'whole'")
    if power_budget_w is not None and not power_budget_w > 0:
        raise PlannerError(f"power_budget_w must be > 0 W, got {power_budget_w}")
    avail = {k.lower(): v for k, v in (availability or {}).items()}
    gpus = {t.gpu.lower() for t in types}
    for k, v in avail.items():
        if k not in gpus:
            raise PlannerError(f"availability names GPU {k!r}, which is not among the planned "
                               f"types {sorted(gpus)}")
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise PlannerError(f"availability[{k!r}] must be a whole number of GPUs >= 0, got {v!r}")
    rates = {s: float(r) for s, r in rates.items() if r > 0}
    if not rates:
        raise PlannerError("zero-rate workload: every slice has rate 0, nothing to provision")
    check_slices(rates, cap, reasons)
    backend, solver_name = _solver(solver, time_limit)

    prob = pulp.LpProblem("melange", pulp.LpMinimize)
    floor = min_counts or {}
    n = {t.key: new_var(prob, f"n_{i}", int(floor.get(t.key, 0)), None, "Integer")
         for i, t in enumerate(types)}
    cat = "Binary" if assignment == "whole" else "Continuous"
    x: dict[tuple[str, str], pulp.LpVariable] = {}  # (slice, type) -> share of the slice
    load: dict[str, list[pulp.LpAffineExpression]] = {t.key: [] for t in types}  # instances' worth
    for i, (s, r) in enumerate(rates.items()):
        for j, t in enumerate(types):
            c = cap.get(s, {}).get(t.key, 0.0)
            if c > 0:
                x[s, t.key] = new_var(prob, f"x_{i}_{j}", 0, 1, cat)
                load[t.key].append((r / c) * x[s, t.key])
    cheapest = min(t.instance_price for t in types)
    prob += (pulp.lpSum(t.instance_price * n[t.key] for t in types)
             + 1e-6 * cheapest * pulp.lpSum(list(itertools.chain.from_iterable(load.values()))))
    for i, s in enumerate(rates):
        prob += pulp.lpSum(v for (ss, _), v in x.items() if ss == s) == 1, f"serve_{i}"
    for j, t in enumerate(types):
        prob += pulp.lpSum(load[t.key]) <= n[t.key], f"cap_{j}"
    for m, limit in avail.items():
        prob += pulp.lpSum(t.tp * n[t.key] for t in types if t.gpu.lower() == m) <= limit, \
            f"avail_{m}"
    if power_budget_w is not None:
        prob += pulp.lpSum(t.instance_power_w * n[t.key] for t in types) <= power_budget_w, "power"

    t0 = time.perf_counter()
    prob.solve(backend)
    solve_s = time.perf_counter() - t0
    status = pulp.LpStatus[prob.status]
    if status != "Optimal":
        raise PlannerError(_diagnose(types, rates, cap, avail, power_budget_w, assignment, status))
    counts = {t.key: round(n[t.key].value() or 0) for t in types}
    shares: dict[str, dict[str, float]] = {s: {} for s in rates}
    for (s, g), v in x.items():
        val = float(v.value() or 0.0)
        if val > 1e-9:
            shares[s][g] = val
    for s, sh in shares.items():  # renormalise away solver round-off
        tot = sum(sh.values())
        shares[s] = {g: v / tot for g, v in sh.items()}
    loads = {g: sum(rates[s] * v / cap[s][g] for s, sh in shares.items() for gg, v in sh.items()
                    if gg == g) for g in counts}
    by_key = {t.key: t for t in types}
    counts = {g: c for g, c in counts.items() if c > 0}
    return Solution(counts=counts, shares=shares, load={g: loads[g] for g in counts},
                    cost_per_hour=sum(by_key[g].instance_price * c for g, c in counts.items()),
                    power_w=sum(by_key[g].instance_power_w * c for g, c in counts.items()),
                    solver=solver_name, solve_s=solve_s, status=status)


def _diagnose(types, rates, cap, avail, power, assignment, status) -> str:
    """Say which limit makes the ILP infeasible by re-solving without it."""
    base = f"no feasible plan (solver status {status})"
    need = None
    try:
        free = solve(types, rates, cap, None, None, assignment)
        need = free
    except PlannerError:
        return base
    parts = []
    if power is not None:
        try:
            solve(types, rates, cap, avail, None, assignment)
            parts.append(f"the power budget of {power:g} W binds (the cheapest plan that ignores "
                         f"it draws {need.power_w:g} W at TDP)")
        except PlannerError:
            pass
    if avail:
        try:
            solve(types, rates, cap, None, power, assignment)
            used = {t.gpu.lower(): 0 for t in types}
            for t in types:
                used[t.gpu.lower()] += t.tp * need.counts.get(t.key, 0)
            over = [f"{m}: {used[m]} GPUs wanted, {a} available" for m, a in avail.items()
                    if used.get(m, 0) > a]
            parts.append("GPU availability binds (" + "; ".join(over or ["limits too tight"]) + ")")
        except PlannerError:
            pass
    if not parts:
        parts.append("availability and power budget bind together")
    return base + ": " + "; ".join(parts)


def single_type_counts(t: InstanceType, rates: dict[str, float],
                       cap: dict[str, dict[str, float]]) -> int | None:
    """Instances of one type alone that carry every slice (None if it fails some slice)."""
    total = 0.0
    for s, r in rates.items():
        c = cap.get(s, {}).get(t.key, 0.0)
        if r > 0 and c <= 0:
            return None
        total += r / c if r > 0 else 0.0
    return max(1, math.ceil(total - 1e-9))
