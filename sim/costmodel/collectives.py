"""Measured tensor-parallel collectives: the table, its latency/bandwidth fit, interpolation.

``goodput profile collectives --world N`` (profiler/collectives.py) writes
``profiler/profiles/<gpu>/collectives/tp<N>.csv`` with columns ``op, world, bytes, median_s,
p10_s, p90_s`` for ``all_reduce``, ``all_gather`` and ``send_recv``. This module reads it without
torch (the simulator never needs torch) and answers "how long does one ``op`` of ``nbytes`` take".

Why a table *and* a fit: NCCL switches algorithm and protocol with the message size (LL, LL128,
Simple; ring or tree), so small messages do not follow one formula. (The eager sweep times small
messages at the host's launch rate; ``CollectiveCurve.bandwidth_bound_from`` says from which
size a table is evidence about the link, and the profiled cost model uses it only from there.)
Between measured sizes the time is interpolated piecewise-linearly in bytes; below the smallest
it is that point's time (latency-bound); beyond the largest it grows with the fitted bandwidth
from the last measured point (continuous, never a jump). The fit, least squares in relative
error, is

    all_reduce:  t = latency + 2 (n-1)/n * bytes / bus_bw      (ring)
    all_gather:  t = latency +   (n-1)/n * bytes / bus_bw      (bytes = gathered output)
    send_recv:   t = latency +             bytes / bw          (one point-to-point message)

    reduce_scatter: t = latency + (n-1)/n * bytes / bus_bw     (bytes = the full input)

so ``bus_bw`` is comparable with nccl-tests' "busbw".

Two kinds of table per GPU and world (``collectives_path``): ``tp<N>.csv`` from the eager sweep
and ``tp<N>.graph.csv`` from ``--graph``, whose calls are captured in CUDA graphs, so its
``median_s`` is GPU time at every size, with the host's launch cost in columns of its own
(``GRAPH_COLUMNS``). ``find_table`` prefers the graph table: the eager one times launches below
~8 MiB. ``CollectivesTable.charge`` is the one rule for how a table enters a cost model.
"""
from __future__ import annotations

import bisect
import csv
import json
import math
from pathlib import Path

OPS = ("all_reduce", "all_gather", "send_recv")
#: ops of the graph-captured sweep: reduce-scatter is the other half of a ring all-reduce and
#: what sequence-parallel TP issues instead of it
GRAPH_OPS = ("all_reduce", "all_gather", "reduce_scatter", "send_recv")
COLUMNS = ("op", "world", "bytes", "median_s", "p10_s", "p90_s")
#: ``tp<N>.graph.csv``: median/p10/p90 are the GPU time per call of graph replays
#: (``timing=cuda-graph``; ``eager-cpu`` on a machine without CUDA, where gloo calls are timed
#: as they run); ``eager_s`` the per-call time of the same calls issued eagerly back to back
#: (what ``tp<N>.csv`` measures), ``launch_s`` the host's time to submit one eager call,
#: ``calls`` the calls per timed replay
GRAPH_COLUMNS = (*COLUMNS, "eager_s", "launch_s", "calls", "timing")
#: ``timing`` values: the eager table (no column), the graph table on a GPU, and its CPU fallback
TIMINGS = ("eager", "cuda-graph", "eager-cpu")


def bus_factor(op: str, world: int) -> float:
    """Bytes each link carries per message byte (the ``bytes`` coefficient of the formula)."""
    if op == "all_reduce":
        return 2.0 * (world - 1) / world
    if op in ("all_gather", "reduce_scatter"):
        return (world - 1) / world
    if op == "send_recv":
        return 1.0
    raise ValueError(f"unknown collective '{op}'; choose one of {list(GRAPH_OPS)}")


def formula_s(op: str, nbytes: float, world: int, latency_s: float,
              bus_bytes_per_s: float) -> float:
    """The latency + bytes / bandwidth model of one collective (see the module docstring)."""
    return latency_s + bus_factor(op, world) * nbytes / bus_bytes_per_s


def fit_latency_bandwidth(op: str, world: int, sizes, times) -> tuple[float, float]:
    """(latency_s, bus_bytes_per_s) minimising sum(((model - t) / t)^2), with latency >= 0.

    Relative error, because the times span four orders of magnitude and a plain least squares
    would fit the largest messages only. The model is linear in (latency, 1/bw), so this is a
    2x2 normal-equation solve, constrained to latency >= 0 and 1/bw >= 0. Data without a
    positive slope (all sizes latency-bound) gives an infinite bandwidth.
    """
    pts = [(float(x), float(t)) for x, t in zip(sizes, times, strict=True) if t > 0]
    if not pts:
        raise ValueError(f"fit of {op}: no positive times to fit")
    f = bus_factor(op, world)
    u = [1.0 / t for _, t in pts]          # column of the latency
    v = [f * x / t for x, t in pts]        # column of 1 / bandwidth
    suu, svv = sum(a * a for a in u), sum(b * b for b in v)
    suv = sum(a * b for a, b in zip(u, v, strict=True))
    su, sv = sum(u), sum(v)
    det = suu * svv - suv * suv
    # The problem is convex: the best feasible point is the unconstrained optimum when it has
    # latency >= 0 and a positive slope, else the best of the two boundary fits.
    cands = [(su / suu, 0.0)]                               # latency only
    if sv > 0:
        cands.append((0.0, sv / svv))                       # slope only
    if det > 1e-12 * suu * svv:
        lat, g = (su * svv - sv * suv) / det, (suu * sv - suv * su) / det
        if lat >= 0 and g > 0:
            cands.append((lat, g))

    def err(c):
        return sum((c[0] * a + c[1] * b - 1.0) ** 2 for a, b in zip(u, v, strict=True))

    lat, g = min(cands, key=err)
    return lat, (1.0 / g if g > 0 else math.inf)


def _non_decreasing(ys: list[float]) -> list[float]:
    """Pool-adjacent-violators: the closest non-decreasing sequence (least squares).

    A larger message must never be predicted cheaper than a smaller one; where timing noise
    made it measure so, the two points are replaced by their mean. Already-monotone data is
    returned unchanged, so the curve is exact at every measured point then.
    """
    sums: list[float] = []  # one pooled block each: sum of its values and their count
    counts: list[int] = []
    for y in ys:
        sums.append(y)
        counts.append(1)
        while len(sums) > 1 and sums[-2] / counts[-2] > sums[-1] / counts[-1]:
            s, c = sums.pop(), counts.pop()
            sums[-1] += s
            counts[-1] += c
    out: list[float] = []
    for s, c in zip(sums, counts, strict=True):
        out += [s / c] * c
    return out


class CollectiveCurve:
    """Time of one collective op at one world size, as a function of the message bytes."""

    def __init__(self, op: str, world: int, sizes, times):
        if not sizes or len(sizes) != len(times):
            raise ValueError(f"{op} world={world}: need equal, non-empty size and time lists")
        pairs = sorted(zip((float(s) for s in sizes), (float(t) for t in times), strict=True))
        xs = [x for x, _ in pairs]
        if len(set(xs)) != len(xs):
            raise ValueError(f"{op} world={world}: a message size appears twice in the table")
        if any(t <= 0 or not math.isfinite(t) for _, t in pairs):
            raise ValueError(f"{op} world={world}: every time must be positive and finite")
        self.op, self.world = op, int(world)
        self.xs = xs
        self.measured = [t for _, t in pairs]
        self.ys = _non_decreasing(self.measured)
        self.latency_s, self.bus_bytes_per_s = fit_latency_bandwidth(op, world, xs, self.measured)
        self._slope = bus_factor(op, world) / self.bus_bytes_per_s  # seconds per byte

    def __call__(self, nbytes: float) -> float:
        xs, ys = self.xs, self.ys
        if nbytes <= xs[0]:
            return ys[0]
        if nbytes >= xs[-1]:
            return ys[-1] + self._slope * (nbytes - xs[-1])
        i = bisect.bisect_left(xs, nbytes)
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        return y0 + (y1 - y0) * (nbytes - x0) / (x1 - x0)

    def bandwidth_bound_from(self, factor: float = 2.0) -> float:
        """Smallest measured size from which every measured time is at least ``factor`` times
        the table's fastest: above it the message size, not the host, sets the time.

        Why: the sweep times eager calls back to back, so small messages measure the host's
        launch rate (a flat floor of tens of microseconds), not what a collective costs inside
        a forward pass where launches overlap GPU work. Only the part above the floor is
        evidence about the link."""
        floor = min(self.measured)
        start = math.inf
        for x, t in zip(reversed(self.xs), reversed(self.measured), strict=True):
            if t < factor * floor:
                break
            start = x
        return start

    def fit_dict(self) -> dict:
        """The fit, JSON-safe (an infinite bandwidth, i.e. no size-dependent term, is null)."""
        bw = self.bus_bytes_per_s
        return {"latency_s": self.latency_s, "bus_bytes_per_s": bw if math.isfinite(bw) else None,
                "formula": f"latency + {bus_factor(self.op, self.world):.4g} * bytes / bus_bw",
                "sizes": len(self.xs), "max_bytes": int(self.xs[-1])}


def collectives_path(root, gpu: str, world: int, graph: bool = False) -> Path:
    """Where the table of ``world`` GPUs lives: ``<root>/<gpu>/collectives/tp<world>.csv``, or
    ``tp<world>.graph.csv`` for the CUDA-graph sweep (its provenance: ``.provenance.json`` in
    place of ``.csv``)."""
    return Path(root) / gpu / "collectives" / f"tp{int(world)}{'.graph' if graph else ''}.csv"


def _opt_float(text):
    return float(text) if text not in (None, "") else None


def read_rows(path) -> list[dict]:
    """Rows of a collectives CSV with numeric fields; a missing column is a clear error. The
    graph table's extra columns are read when present (``eager_s``, ``launch_s``: None where
    blank)."""
    path = Path(path)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        have = reader.fieldnames or []
        missing = [c for c in COLUMNS if c not in have]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; expected {list(COLUMNS)} "
                             "(written by `goodput profile collectives`)")
        rows = []
        for r in reader:
            row = {"op": r["op"], "world": int(r["world"]), "bytes": float(r["bytes"]),
                   **{k: float(r[k]) for k in ("median_s", "p10_s", "p90_s")}}
            if "timing" in have:
                row.update(timing=r["timing"], eager_s=_opt_float(r.get("eager_s")),
                           launch_s=_opt_float(r.get("launch_s")))
            rows.append(row)
    return rows


class CollectivesTable:
    """Every op of one measured table: ``table.time("all_reduce", nbytes)``.

    ``timing`` says what ``median_s`` is: ``eager`` (``tp<k>.csv``: launch-bound below some
    size), ``cuda-graph`` (GPU time at every size) or ``eager-cpu`` (the graph sweep's CPU
    fallback; timed like ``eager``)."""

    def __init__(self, rows: list[dict], world: int, path: Path | None = None,
                 date: str | None = None, timing: str | None = None):
        self.world, self.path, self.date = int(world), path, date
        where = path or "collectives table"
        bad = sorted({r["world"] for r in rows} - {self.world})
        if bad:
            raise ValueError(f"{where}: rows for world {bad} in the table "
                             f"of tp{self.world}; each tp<k>.csv holds one world size")
        kinds = sorted({r.get("timing") or "eager" for r in rows})
        if timing is None and len(kinds) > 1:
            raise ValueError(f"{where}: rows of several timings {kinds}; one table holds one "
                             "(rerun `goodput profile collectives` to rewrite it)")
        self.timing = timing or (kinds[0] if kinds else "eager")
        if self.timing not in TIMINGS:
            raise ValueError(f"{where}: timing '{self.timing}' is not one of {list(TIMINGS)}")
        self.curves: dict[str, CollectiveCurve] = {}
        self.launch_s: dict[str, float] = {}  # median host submit time per eager call, per op
        for op in dict.fromkeys(r["op"] for r in rows):
            pts = [r for r in rows if r["op"] == op]
            self.curves[op] = CollectiveCurve(op, self.world, [r["bytes"] for r in pts],
                                              [r["median_s"] for r in pts])
            launch = sorted(r["launch_s"] for r in pts if r.get("launch_s") is not None)
            if launch:
                self.launch_s[op] = launch[len(launch) // 2]
        #: smallest message each op's measurement is charged for (see ``charge``)
        self._from = {op: (0.0 if self.graph else c.bandwidth_bound_from())
                      for op, c in self.curves.items()}

    @classmethod
    def from_csv(cls, path) -> CollectivesTable:
        """Load a table; the date comes from its ``.provenance.json`` beside it."""
        path = Path(path)
        rows = read_rows(path)
        if not rows:
            raise ValueError(f"{path}: the collectives table has no rows")
        date = None
        prov = path.with_suffix(".provenance.json")
        if prov.exists():
            date = (json.loads(prov.read_text()).get("date_utc") or "")[:10] or None
        return cls(rows, rows[0]["world"], path, date)

    @property
    def graph(self) -> bool:
        """True when ``median_s`` is GPU time of CUDA-graph replays at every size."""
        return self.timing == "cuda-graph"

    def time(self, op: str, nbytes: float) -> float:
        if op not in self.curves:
            raise KeyError(f"{self.path or 'collectives table'} has no '{op}' rows "
                           f"(measured: {sorted(self.curves)})")
        return self.curves[op](nbytes)

    def measured_from(self, op: str = "all_reduce") -> float:
        """Smallest message the measurement is charged for: every size of a graph table, else
        where the eager sweep is bandwidth-bound (``CollectiveCurve.bandwidth_bound_from``:
        below it the eager sweep timed the host's launch rate)."""
        self.time(op, 0.0)  # the clear error for a missing op
        return self._from[op]

    def charge(self, op: str, nbytes: float, estimate: float) -> float:
        """Seconds a cost model charges for one ``op`` of ``nbytes``: a graph table's GPU time;
        an eager table's time where it is bandwidth-bound (never below ``estimate``, the rule
        it replaces), else ``estimate``."""
        if nbytes < self.measured_from(op):
            return estimate
        t = self.time(op, nbytes)
        return t if self.graph else max(estimate, t)

    def kind(self, op: str = "all_reduce") -> str:
        """``measured (graph)`` or ``measured (eager, >= X MiB)``: how far the table is used."""
        if self.graph:
            return "measured (graph)"
        start = self.measured_from(op)
        where = (f">= {start / 2**20:.0f} MiB" if math.isfinite(start)
                 else "launch-bound at every size")
        return f"measured ({self.timing}, {where})"

    def fits(self) -> dict:
        return {op: c.fit_dict() for op, c in self.curves.items()}


def find_table(root, gpu: str, world: int, op: str = "all_reduce") -> CollectivesTable | None:
    """The measured table of ``gpu`` at ``world`` that has ``op`` rows: the graph-captured one
    when present (GPU time at every size), else the eager one, else None."""
    for graph in (True, False):
        path = collectives_path(root, gpu, world, graph)
        if path.exists():
            table = CollectivesTable.from_csv(path)
            if op in table.curves:
                return table
    return None


__all__ = [
    "COLUMNS",
    "GRAPH_COLUMNS",
    "GRAPH_OPS",
    "OPS",
    "TIMINGS",
    "CollectiveCurve",
    "CollectivesTable",
    "bus_factor",
    "collectives_path",
    "find_table",
    "fit_latency_bandwidth",
    "formula_s",
    "read_rows",
]
