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

so ``bus_bw`` is comparable with nccl-tests' "busbw".
"""
from __future__ import annotations

import bisect
import csv
import json
import math
from pathlib import Path

OPS = ("all_reduce", "all_gather", "send_recv")
COLUMNS = ("op", "world", "bytes", "median_s", "p10_s", "p90_s")


def bus_factor(op: str, world: int) -> float:
    """Bytes each link carries per message byte (the ``bytes`` coefficient of the formula)."""
    if op == "all_reduce":
        return 2.0 * (world - 1) / world
    if op == "all_gather":
        return (world - 1) / world
    if op == "send_recv":
        return 1.0
    raise ValueError(f"unknown collective '{op}'; choose one of {list(OPS)}")


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


def collectives_path(root, gpu: str, world: int) -> Path:
    """Where the table of ``world`` GPUs lives: ``<root>/<gpu>/collectives/tp<world>.csv``."""
    return Path(root) / gpu / "collectives" / f"tp{int(world)}.csv"


def read_rows(path) -> list[dict]:
    """Rows of a collectives CSV with numeric fields; a missing column is a clear error."""
    path = Path(path)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; expected {list(COLUMNS)} "
                             "(written by `goodput profile collectives`)")
        rows = []
        for r in reader:
            rows.append({"op": r["op"], "world": int(r["world"]), "bytes": float(r["bytes"]),
                         **{k: float(r[k]) for k in ("median_s", "p10_s", "p90_s")}})
    return rows


class CollectivesTable:
    """Every op of one measured ``tp<k>.csv``: ``table.time("all_reduce", nbytes)``."""

    def __init__(self, rows: list[dict], world: int, path: Path | None = None,
                 date: str | None = None):
        self.world, self.path, self.date = int(world), path, date
        bad = sorted({r["world"] for r in rows} - {self.world})
        if bad:
            raise ValueError(f"{path or 'collectives table'}: rows for world {bad} in the table "
                             f"of tp{self.world}; each tp<k>.csv holds one world size")
        self.curves: dict[str, CollectiveCurve] = {}
        for op in dict.fromkeys(r["op"] for r in rows):
            pts = [r for r in rows if r["op"] == op]
            self.curves[op] = CollectiveCurve(op, self.world, [r["bytes"] for r in pts],
                                              [r["median_s"] for r in pts])

    @classmethod
    def from_csv(cls, path) -> CollectivesTable:
        """Load ``tp<k>.csv``; the date comes from ``tp<k>.provenance.json`` beside it."""
        path = Path(path)
        rows = read_rows(path)
        if not rows:
            raise ValueError(f"{path}: the collectives table has no rows")
        date = None
        prov = path.with_suffix(".provenance.json")
        if prov.exists():
            date = (json.loads(prov.read_text()).get("date_utc") or "")[:10] or None
        return cls(rows, rows[0]["world"], path, date)

    def time(self, op: str, nbytes: float) -> float:
        if op not in self.curves:
            raise KeyError(f"{self.path or 'collectives table'} has no '{op}' rows "
                           f"(measured: {sorted(self.curves)})")
        return self.curves[op](nbytes)

    def fits(self) -> dict:
        return {op: c.fit_dict() for op, c in self.curves.items()}


__all__ = [
    "COLUMNS",
    "OPS",
    "CollectiveCurve",
    "CollectivesTable",
    "bus_factor",
    "collectives_path",
    "fit_latency_bandwidth",
    "formula_s",
    "read_rows",
]
