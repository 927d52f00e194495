"""A deployment plan: instances per type, which slices go where, its cost and per-type load.

The plan is what ``goodput plan`` writes (plan.yaml) and what ``simulate_plan`` replays. It carries
everything needed to rebuild the cluster and the size-aware router without the planning trace:
the bucket edges, each slice's share per instance type, the SLO, and the scheduler and cost-model
settings the capacities were measured with. ``verification`` records every re-simulation and what
was added after it, so a reader sees how the final plan was proved.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from goodput.planner.errors import PlannerError

PLAN_VERSION = 1


@dataclass
class PlanGroup:
    gpu: str
    tp: int
    count: int
    price_per_hour: float  # per instance (GPU price x tp)
    load: float = 0.0  # planned load in instances' worth of capacity (<= count)
    slices: list[str] = field(default_factory=list)
    #: mixed (colocated) or prefill / decode (a disaggregated design from ``--search``)
    role: str = "mixed"

    @property
    def key(self) -> str:
        return f"{self.gpu}-tp{self.tp}" + ("" if self.role == "mixed" else f"-{self.role}")


@dataclass
class PlanSlice:
    name: str
    bucket: str
    rate: float  # req/s
    shares: dict[str, float]  # type key -> share of this slice's rate
    capacity: dict[str, float] = field(default_factory=dict)  # type key -> req/s per instance


@dataclass
class Plan:
    model: str
    slo: dict  # ttft_s, tpot_s, attainment_target
    groups: list[PlanGroup]
    slices: list[PlanSlice]
    input_edges: list[int]
    output_edges: list[int]
    slice_factor: int = 1
    scheduler: dict = field(default_factory=dict)
    cost_model: dict = field(default_factory=dict)
    trace: dict = field(default_factory=dict)  # source, requests, rate, duration_s
    solver: dict = field(default_factory=dict)
    verification: list[dict] = field(default_factory=list)
    #: network settings (kv_transfer, ...) of a disaggregated plan; empty when colocated
    network: dict = field(default_factory=dict)
    #: headline figures (verified cost/attainment, ILP-only cost, verified baseline, savings,
    #: prices and their sources, burstiness); written by goodput.planner.pipeline.make_plan
    summary: dict = field(default_factory=dict)
    seed: int = 0
    version: int = PLAN_VERSION

    @property
    def cost_per_hour(self) -> float:
        return sum(g.price_per_hour * g.count for g in self.groups)

    @property
    def disaggregated(self) -> bool:
        return any(g.role != "mixed" for g in self.groups)

    @property
    def gpus(self) -> int:
        return sum(g.tp * g.count for g in self.groups)

    def bucket_shares(self) -> dict[str, dict[str, float]]:
        """Share of each bucket's rate per type: a rate-weighted sum over its slices."""
        acc: dict[str, dict[str, float]] = {}
        rate: dict[str, float] = {}
        for s in self.slices:
            rate[s.bucket] = rate.get(s.bucket, 0.0) + s.rate
            for g, v in s.shares.items():
                acc.setdefault(s.bucket, {})
                acc[s.bucket][g] = acc[s.bucket].get(g, 0.0) + v * s.rate
        return {b: {g: v / rate[b] for g, v in sh.items()} for b, sh in acc.items() if rate[b] > 0}

    def table(self) -> str:
        """The plan as aligned text: one row per instance type, then the total."""
        rows = [f"{'type':<18}{'instances':>10}{'GPUs':>6}{'$/h':>10}{'load':>8}{'util':>7}  slices"]
        for g in self.groups:
            util = g.load / g.count if g.count else 0.0
            rows.append(f"{g.key:<18}{g.count:>10}{g.count * g.tp:>6}"
                        f"{g.price_per_hour * g.count:>10.2f}{g.load:>8.2f}{util:>7.0%}  "
                        f"{len(g.slices)}")
        rows.append(f"{'total':<18}{sum(g.count for g in self.groups):>10}{self.gpus:>6}"
                    f"{self.cost_per_hour:>10.2f}")
        return "\n".join(rows)

    # ---------------------------------------------------------------- YAML io
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["cost_per_hour"] = round(self.cost_per_hour, 6)
        return d

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(_plain(self.to_dict()), sort_keys=False))
        return path

    @classmethod
    def from_dict(cls, d: dict, source: str = "plan") -> Plan:
        if not isinstance(d, dict):
            raise PlannerError(f"{source}: a plan must be a mapping, got {type(d).__name__}")
        d = dict(d)
        d.pop("cost_per_hour", None)  # derived; recomputed from the groups
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise PlannerError(f"{source}: unknown plan field(s) {sorted(unknown)}; valid: "
                               f"{sorted(names)}")
        missing = [k for k in ("model", "slo", "groups", "slices", "input_edges", "output_edges")
                   if k not in d]
        if missing:
            raise PlannerError(f"{source}: plan is missing field(s) {missing}")
        if d.get("version", PLAN_VERSION) != PLAN_VERSION:
            raise PlannerError(f"{source}: plan version {d['version']} is not supported (this "
                               f"planner reads version {PLAN_VERSION})")
        try:
            d["groups"] = [PlanGroup(**g) for g in d["groups"]]
            d["slices"] = [PlanSlice(**s) for s in d["slices"]]
        except TypeError as exc:
            raise PlannerError(f"{source}: malformed groups/slices entry: {exc}") from None
        plan = cls(**d)
        plan.validate(source)
        return plan

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        path = Path(path)
        if not path.exists():
            raise PlannerError(f"{path}: no such plan file")
        return cls.from_dict(yaml.safe_load(path.read_text()), str(path))

    def validate(self, source: str = "plan") -> None:
        keys = set()
        for i, g in enumerate(self.groups):
            if g.count < 1 or g.tp < 1:
                raise PlannerError(f"{source}: groups[{i}] ({g.key}) needs count >= 1 and tp >= 1")
            if g.role not in ("mixed", "prefill", "decode"):
                raise PlannerError(f"{source}: groups[{i}].role={g.role!r}: use mixed, prefill "
                                   f"or decode")
            keys.add(g.key)
        for s in self.slices:
            extra = set(s.shares) - keys
            if extra:
                raise PlannerError(f"{source}: slice {s.name} sends load to {sorted(extra)}, "
                                   f"which the plan has no instances of")
            if s.rate > 0 and abs(sum(s.shares.values()) - 1) > 1e-6:
                raise PlannerError(f"{source}: slice {s.name} shares sum to "
                                   f"{sum(s.shares.values()):.6f}, not 1")


def _plain(x):
    """Plain Python types only, so the YAML has no numpy tags."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        return x.item()
    return x
