"""Bucket a trace into request-size slices: input-length x output-length buckets.

Mélange's observation is that the cheapest GPU for a request depends on its size (short prompts
with short answers are cheap on small GPUs; long prompts need a big GPU's compute and memory), so
the planner sizes the cluster per bucket rather than for an average request. Each bucket keeps
every (prompt, output) pair that fell into it, because the capacity search replays exactly those
lengths. ``slice_factor`` splits a bucket's rate into that many equal slices, so the ILP can give
parts of one bucket to different GPU types even when it assigns slices whole (Mélange's
formulation); with fractional assignment it changes nothing but the table's granularity.
"""
from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from goodput.planner.errors import PlannerError

#: default inner bucket edges (tokens); buckets are [0,e0), [e0,e1), ..., [e_last, inf)
DEFAULT_INPUT_EDGES = (256, 1024, 2048, 4096)
DEFAULT_OUTPUT_EDGES = (64, 256, 512)


def parse_edges(value, name: str) -> tuple[int, ...]:
    """Inner edges from '256,1024' or a sequence; they must be strictly increasing whole tokens > 0."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        try:
            value = [int(p) for p in parts]
        except ValueError:
            raise PlannerError(f"{name}: expected comma-separated whole token counts, got "
                               f"{value!r}") from None
    edges = tuple(int(v) for v in value)
    if any(e < 1 for e in edges):
        raise PlannerError(f"{name}: edges must be >= 1 token, got {list(edges)}")
    if any(b <= a for a, b in itertools.pairwise(edges)):
        raise PlannerError(f"{name}: edges must be strictly increasing, got {list(edges)}")
    return edges


def _range_text(lo: int, hi: int | None) -> str:
    return f"[{lo},{'inf' if hi is None else hi})"


@dataclass
class Bucket:
    """One input x output length bucket of the trace and the requests that fell into it."""

    label: str
    input_range: tuple[int, int | None]
    output_range: tuple[int, int | None]
    count: int
    rate: float  # req/s of the whole trace that falls in this bucket
    lengths: np.ndarray = field(repr=False)  # (count, 2) int64 prompt/output pairs, sorted


@dataclass
class Slice:
    """The unit the ILP assigns: a bucket, or 1/slice_factor of one."""

    name: str
    bucket: str
    rate: float


@dataclass
class Slicing:
    input_edges: tuple[int, ...]
    output_edges: tuple[int, ...]
    slice_factor: int
    buckets: list[Bucket]
    slices: list[Slice]
    total_rate: float
    duration_s: float
    requests: int

    def bucket(self, label: str) -> Bucket:
        for b in self.buckets:
            if b.label == label:
                return b
        raise PlannerError(f"unknown bucket {label!r}; known: {[b.label for b in self.buckets]}")

    def label_of(self, prompt: int, output: int) -> str:
        """Bucket label for one request (used per request by the router)."""
        return bucket_label(bisect.bisect_right(self.input_edges, prompt),
                            bisect.bisect_right(self.output_edges, output),
                            self.input_edges, self.output_edges)

    def labels(self, df: pd.DataFrame) -> np.ndarray:
        """Bucket label of every row of a table with prompt_tokens/output_tokens columns."""
        return labels_for(df, self.input_edges, self.output_edges)


def bucket_label(i: int, j: int, input_edges, output_edges) -> str:
    ie, oe = (0, *input_edges), (0, *output_edges)
    ihi = input_edges[i] if i < len(input_edges) else None
    ohi = output_edges[j] if j < len(output_edges) else None
    return f"in{_range_text(ie[i], ihi)}out{_range_text(oe[j], ohi)}"


def labels_for(df: pd.DataFrame, input_edges, output_edges) -> np.ndarray:
    i = np.searchsorted(np.asarray(input_edges), df["prompt_tokens"].to_numpy(), side="right")
    j = np.searchsorted(np.asarray(output_edges), df["output_tokens"].to_numpy(), side="right")
    names = {(a, b): bucket_label(a, b, input_edges, output_edges)
             for a in range(len(input_edges) + 1) for b in range(len(output_edges) + 1)}
    return np.array([names[(a, b)] for a, b in zip(i.tolist(), j.tolist(), strict=True)],
                    dtype=object)


def trace_rate(df: pd.DataFrame, source: str = "trace") -> tuple[float, float]:
    """(req/s, span in s), with rate = (n - 1) / span as ``Trace.rate`` measures it.

    A trace with fewer than two requests, or all arriving at one instant, has no rate to plan for.
    """
    n = len(df)
    if n < 2:
        raise PlannerError(f"{source}: zero-rate trace ({n} request(s)); the planner needs at "
                           f"least 2 requests spread over time to know the load to provision for")
    arr = df["arrival_s"].to_numpy(dtype=float)
    span = float(arr.max() - arr.min())
    if not span > 0:
        raise PlannerError(f"{source}: zero-rate trace (all {n} requests arrive at t="
                           f"{arr[0]:g} s, span 0 s); rescale it to a rate (--rate) first")
    return (n - 1) / span, span


def make_slices(trace, input_edges=DEFAULT_INPUT_EDGES, output_edges=DEFAULT_OUTPUT_EDGES,
                slice_factor: int = 1) -> Slicing:
    """Bucket ``trace`` (a Trace or canonical DataFrame); empty buckets are left out."""
    df = trace.df if hasattr(trace, "df") else trace
    source = getattr(trace, "source", "") or "trace"
    input_edges = parse_edges(input_edges, "input_edges")
    output_edges = parse_edges(output_edges, "output_edges")
    if isinstance(slice_factor, bool) or not isinstance(slice_factor, (int, np.integer)) \
            or slice_factor < 1:
        raise PlannerError(f"slice_factor must be a whole number >= 1, got {slice_factor!r}")
    rate, span = trace_rate(df, source)
    labels = labels_for(df, input_edges, output_edges)
    pairs = df[["prompt_tokens", "output_tokens"]].to_numpy(dtype=np.int64)
    n = len(df)
    buckets, slices = [], []
    for i in range(len(input_edges) + 1):
        for j in range(len(output_edges) + 1):
            label = bucket_label(i, j, input_edges, output_edges)
            mask = labels == label
            count = int(mask.sum())
            if count == 0:
                continue
            sel = pairs[mask]
            sel = sel[np.lexsort((sel[:, 1], sel[:, 0]))]  # order-free, so the cache key is too
            ie, oe = (0, *input_edges), (0, *output_edges)
            b = Bucket(label, (ie[i], input_edges[i] if i < len(input_edges) else None),
                       (oe[j], output_edges[j] if j < len(output_edges) else None),
                       count, rate * count / n, sel)
            buckets.append(b)
            for k in range(slice_factor):
                name = label if slice_factor == 1 else f"{label}#{k}"
                slices.append(Slice(name, label, b.rate / slice_factor))
    return Slicing(input_edges, output_edges, int(slice_factor), buckets, slices, rate, span, n)


def slice_table(slicing: Slicing) -> pd.DataFrame:
    return pd.DataFrame([{"bucket": b.label, "requests": b.count, "rate": b.rate,
                          "prompt_mean": float(b.lengths[:, 0].mean()),
                          "output_mean": float(b.lengths[:, 1].mean())}
                         for b in slicing.buckets])
