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

Everything but ``n = m`` on the measured GPU is an *estimate* and ``describe()`` says so.
tests/test_costmodel_tp.py checks the rule (steps, monotonicity in n, TP2 reproduction, and that
decode never speeds up faster with TP than the weight-streaming bound allows).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from sim.catalog import GPUSpec, get_gpu
from sim.costmodel.collectives import CollectivesTable, collectives_path

#: per-step latency of a ring all-reduce, seconds (NCCL tuning model, ring LL protocol)
HOP_S = {"nvlink": 0.6e-6, "pcie": 1.0e-6}
#: the GPU whose measured table anchors the estimate
REFERENCE_GPU = "h200"
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
    measured: CollectivesTable | None = None  # this GPU's own table at some world, if any

    def floor(self, world: int) -> float:
        if world <= 1:
            return 0.0
        extra = ring_steps(world) - ring_steps(self.measured_world)
        return max(0.0, self.floor_s + extra * HOP_S[self.link])

    def time(self, nbytes: float, world: int) -> float:
        """Seconds of one all-reduce of ``nbytes`` over ``world`` GPUs (0 for one GPU)."""
        if world <= 1:
            return 0.0
        t = self.floor(world) + (ring_steps(world) / world) * nbytes / (
            self.bus_eff * self.link_bytes_per_s)
        own = self.measured
        if own is not None and own.world == world:
            curve = own.curves["all_reduce"]
            if nbytes >= curve.bandwidth_bound_from():
                t = max(t, curve(nbytes))
        return t

    def is_measured(self, world: int) -> bool:
        return self.measured is not None and self.measured.world == world

    def describe(self, world: int) -> dict:
        kind = "measured" if self.is_measured(world) else "estimated"
        return {
            "kind": kind,
            "floor_us": round(self.floor(world) * 1e6, 2),
            "bus_bytes_per_s": self.bus_eff * self.link_bytes_per_s,
            "rule": (f"floor {self.floor_s * 1e6:.1f} us at tp{self.measured_world} "
                     f"({self.measured_on}) + {HOP_S[self.link] * 1e6:.1f} us per extra ring "
                     f"step; bus bw = {self.bus_eff:.2f} x {self.link} "
                     f"{self.link_bytes_per_s / 1e9:.0f} GB/s"),
            "label": (f"all-reduce {kind} for {self.gpu} tp{world}"
                      + ("" if kind == "measured" else
                         " (rule from the measured TP2 table; no multi-GPU measurement here)")),
        }


def _table(root: Path, gpu: str, world: int) -> CollectivesTable | None:
    path = collectives_path(root, gpu, world)
    if not path.exists():
        return None
    t = CollectivesTable.from_csv(path)
    return t if "all_reduce" in t.curves else None


@cache
def _anchor(root: str) -> dict:
    """floor, bus efficiency and world of the reference GPU's smallest measured table (under
    ``root``, else under the shipped profiles)."""
    from sim.costmodel.profile_store import PROFILES_ROOT

    for world, base in [(w, b) for b in dict.fromkeys((Path(root), PROFILES_ROOT))
                        for w in (2, 4, 8)]:
        t = _table(base, REFERENCE_GPU, world)
        if t is None:
            continue
        ref = get_gpu(REFERENCE_GPU)
        bw = t.curves["all_reduce"].bus_bytes_per_s
        link = (ref.nvlink_gbs or ref.pcie_gbs) * 1e9
        date = t.date or "date unknown"
        return {"floor_s": latency_floor(t), "bus_eff": min(1.0, bw / link), "world": world,
                "gpu": REFERENCE_GPU, "where": f"{REFERENCE_GPU}/collectives/tp{world}.csv, {date}"}
    return {**FALLBACK, "where": "fallback constants (no collectives table readable)"}


def tp_allreduce(gpu: GPUSpec, root=None) -> TPAllReduce:
    """The all-reduce model for ``gpu``, anchored on the measured reference table."""
    from sim.costmodel.profile_store import profiles_root

    return _tp_allreduce(gpu, str(profiles_root(root)))


@cache
def _tp_allreduce(gpu: GPUSpec, root_s: str) -> TPAllReduce:
    root = Path(root_s)
    a = _anchor(root_s)
    link = "nvlink" if gpu.nvlink_gbs > 0 else "pcie"
    gbs = gpu.nvlink_gbs if gpu.nvlink_gbs > 0 else gpu.pcie_gbs
    own = None
    for world in (2, 4, 8):
        own = _table(root, gpu.name, world)
        if own is not None:
            break
    return TPAllReduce(gpu.name, gbs * 1e9, link, a["floor_s"], int(a["world"]), a["bus_eff"],
                       a["where"], own)


__all__ = ["HOP_S", "TPAllReduce", "latency_floor", "ring_steps", "tp_allreduce"]
