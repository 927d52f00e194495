"""Tensor-parallel all-reduce for any GPU and TP degree, from the one measured TP2 table.

Why: only a TP2 table exists (``profiler/profiles/h200/collectives/tp2.csv``, two H200s over
NVLink 4). Its small messages (below 8 MiB) take 27-85 us per call, never the ~10 us the old
prior charged; independent GPU-side timings agree (30-45 us). A decode iteration makes
``2 x layers + 1`` such calls (two per layer, one for the vocab-parallel embedding), so this
floor - not the link bandwidth - is what limits how much TP can speed decode up.

The rule (``TPAllReduce.time``), for ``n`` GPUs of a GPU with link bandwidth ``link``::

    t(bytes, n) = floor(n) + 2 (n - 1) / n * bytes / (bus_eff * link)
    floor(n)    = floor_m + (2 (n - 1) - 2 (m - 1)) * hop_s

* ``floor_m``: the per-call floor measured at ``m`` GPUs, the median time of the table's
  latency-bound sizes (those below ``CollectiveCurve.bandwidth_bound_from``: where every time
  is within 2x of the fastest);
* ``2 (n - 1)`` is the step count of a ring all-reduce (reduce-scatter then all-gather); each
  extra step adds one link hop, ``hop_s``: NCCL's own tuning model (src/graph/tuning.cc,
  ``hwLat``, ring / LL protocol) charges 0.6 us per NVLink step and 1.0 us per PCIe step;
* ``bus_eff``: the measured bus bandwidth (the table's latency/bandwidth fit) over the measured
  GPU's catalog NVLink bandwidth (H200 TP2: 350 / 450 GB/s = 0.78), applied to the target GPU's
  NVLink (or PCIe where it has none). On an NVSwitch node a ring's bus bandwidth does not fall
  with ``n``, so the same efficiency holds at TP4 and TP8.

Measured tables of the target GPU replace the rule at their own world size
(``goodput.sim.costmodel.collectives.find_table``): a graph-captured ``tp<n>.graph.csv`` at every
message size (GPU time; it is preferred), an eager ``tp<n>.csv`` only where it is
bandwidth-bound. The anchor, too, comes from a graph table of the reference GPU when one exists,
since the eager floor is the host's launch rate rather than what a call costs inside a
graph-captured forward pass. Everything else is an *estimate*; ``describe()`` says, per TP
degree, which (``by_tp``: ``measured (graph)``, ``measured (eager, >= X MiB)`` or ``estimated``).
tests/test_costmodel_tp.py checks the rule (steps, monotonicity in n, TP2 reproduction, and that
decode never speeds up faster with TP than the weight-streaming bound allows).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from goodput.sim.catalog import GPUSpec, get_gpu
from goodput.sim.costmodel.collectives import CollectivesTable, find_table

#: per-step latency of a ring all-reduce, seconds (NCCL tuning model, ring LL protocol)
HOP_S = {"nvlink": 0.6e-6, "pcie": 1.0e-6}
#: the GPU whose measured table anchors the estimate
REFERENCE_GPU = "h200"
#: the TP degrees whose tables are looked for (one NVSwitch node)
MEASURED_WORLDS = (2, 4, 8)
#: used only when no table is readable at all (the floor of the shipped H200 TP2 table)
FALLBACK = {"floor_s": 40.1e-6, "bus_eff": 0.78, "world": 2, "gpu": "h200"}


def ring_steps(world: int) -> int:
    """Link steps of one ring all-reduce over ``world`` ranks (reduce-scatter + all-gather)."""
    return 2 * (int(world) - 1)


def latency_floor(table: CollectivesTable, op: str = "all_reduce") -> float:
    """Median time of the table's latency-bound sizes: the per-call floor (seconds)."""
    c = table.curves[op]
    start = c.bandwidth_bound_from()
    small = [t for x, t in zip(c.xs, c.measured, strict=True) if x < start] or [min(c.measured)]
    return float(statistics.median(small))


@dataclass(frozen=True)
class TPAllReduce:
    """Per-call all-reduce model of one target GPU (see the module docstring)."""

    gpu: str
    link_bytes_per_s: float  # the target's NVLink (or PCIe) per direction, bytes/s
    link: str  # "nvlink" | "pcie"
    floor_s: float  # per-call floor at the measured world size
    measured_world: int
    bus_eff: float
    measured_on: str  # where the anchor numbers come from
    measured: tuple[CollectivesTable, ...] | None = None  # this GPU's own tables, any worlds

    def __post_init__(self) -> None:
        # per world size, this GPU's own table and the per-call floor: both fixed by the fields,
        # and ``time`` is asked for every new message size a simulation prices (not a field:
        # equality, hashing and ``replace`` see only the fields)
        object.__setattr__(self, "_by_world", {})

    def _world(self, world: int) -> tuple[CollectivesTable | None, float]:
        known: dict[int, tuple[CollectivesTable | None, float]] = self._by_world  # type: ignore[attr-defined]
        got = known.get(world)
        if got is None:
            own = next((t for t in self.measured or () if t.world == world), None)
            if world <= 1:
                floor = 0.0
            elif own is not None and own.graph:  # the measured GPU time of a small call
                floor = latency_floor(own)
            else:
                extra = ring_steps(world) - ring_steps(self.measured_world)
                floor = max(0.0, self.floor_s + extra * HOP_S[self.link])
            got = known[world] = (own, floor)
        return got

    def table(self, world: int) -> CollectivesTable | None:
        """This GPU's measured table at ``world`` (graph preferred when both were found)."""
        return self._world(world)[0]

    def floor(self, world: int) -> float:
        return 0.0 if world <= 1 else self._world(world)[1]

    def time(self, nbytes: float, world: int) -> float:
        """Seconds of one all-reduce of ``nbytes`` over ``world`` GPUs (0 for one GPU)."""
        if world <= 1:
            return 0.0
        own, floor = self._world(world)
        t = floor + (ring_steps(world) / world) * nbytes / (self.bus_eff * self.link_bytes_per_s)
        return t if own is None else own.charge("all_reduce", nbytes, t)

    def is_measured(self, world: int) -> bool:
        return self.table(world) is not None

    def status(self, world: int) -> str:
        """``measured (graph)``, ``measured (eager, >= X MiB)``, ``estimated`` or ``none``."""
        if world <= 1:
            return "none (tp=1)"
        own = self.table(world)
        return own.kind() if own is not None else "estimated"

    def by_tp(self, world: int | None = None) -> dict[str, str]:
        """``{"tp2": status, "tp4": ..., "tp8": ...}`` (and ``world`` when it is another)."""
        worlds = sorted({*MEASURED_WORLDS, *([world] if world and world > 1 else [])})
        return {f"tp{n}": self.status(n) for n in worlds}

    def describe(self, world: int) -> dict:
        own = self.table(world)
        kind = "measured" if own is not None else "estimated"
        if own is not None:
            where = own.path.name if own.path is not None else "in memory"
            label = (f"all-reduce {own.kind()} for {self.gpu} tp{world} "
                     f"({where}, {own.date or 'date unknown'})")
        else:
            label = (f"all-reduce estimated for {self.gpu} tp{world} (rule anchored on "
                     f"{self.measured_on}; no tp{world} measurement of this GPU)")
        return {
            "kind": kind,
            "timing": own.timing if own is not None else None,
            "floor_us": round(self.floor(world) * 1e6, 2),
            "bus_bytes_per_s": self.bus_eff * self.link_bytes_per_s,
            "rule": (f"floor {self.floor_s * 1e6:.1f} us at tp{self.measured_world} "
                     f"({self.measured_on}) + {HOP_S[self.link] * 1e6:.1f} us per extra ring "
                     f"step; bus bw = {self.bus_eff:.2f} x {self.link} "
                     f"{self.link_bytes_per_s / 1e9:.0f} GB/s"),
            "label": label,
            "by_tp": self.by_tp(world),
        }


@cache
def _anchor(root: str) -> dict:
    """floor, bus efficiency and world of the reference GPU's smallest measured table (under
    ``root``, else under the shipped profiles); a graph-captured table before an eager one."""
    from goodput.sim.costmodel.profile_store import PROFILES_ROOT

    for base in dict.fromkeys((Path(root), PROFILES_ROOT)):
        tables = [t for w in MEASURED_WORLDS
                  if (t := find_table(base, REFERENCE_GPU, w)) is not None]
        tables.sort(key=lambda t: (not t.graph, t.world))
        if not tables:
            continue
        t = tables[0]
        ref = get_gpu(REFERENCE_GPU)
        bw = t.curves["all_reduce"].bus_bytes_per_s
        link = (ref.nvlink_gbs or ref.pcie_gbs) * 1e9
        name = t.path.name if t.path is not None else f"tp{t.world}"
        date = t.date or "date unknown"
        return {"floor_s": latency_floor(t), "bus_eff": min(1.0, bw / link), "world": t.world,
                "gpu": REFERENCE_GPU, "where": f"{REFERENCE_GPU}/collectives/{name}, {date}"}
    return {**FALLBACK, "where": "fallback constants (no collectives table readable)"}


def tp_allreduce(gpu: GPUSpec, root=None) -> TPAllReduce:
    """The all-reduce model for ``gpu``, anchored on the measured reference table."""
    from goodput.sim.costmodel.profile_store import profiles_root

    return _tp_allreduce(gpu, str(profiles_root(root)))


@cache
def _tp_allreduce(gpu: GPUSpec, root_s: str) -> TPAllReduce:
    root = Path(root_s)
    a = _anchor(root_s)
    link = "nvlink" if gpu.nvlink_gbs > 0 else "pcie"
    gbs = gpu.nvlink_gbs if gpu.nvlink_gbs > 0 else gpu.pcie_gbs
    own = tuple(t for w in MEASURED_WORLDS if (t := find_table(root, gpu.name, w)) is not None)
    return TPAllReduce(gpu.name, gbs * 1e9, link, a["floor_s"], int(a["world"]), a["bus_eff"],
                       a["where"], own or None)


__all__ = ["HOP_S", "MEASURED_WORLDS", "TPAllReduce", "latency_floor", "ring_steps",
           "tp_allreduce"]
