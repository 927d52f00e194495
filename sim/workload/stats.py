"""Summary statistics of a trace: what a user checks before trusting a simulation built on it.

Rate and burstiness decide queueing; prompt/output percentiles decide prefill/decode cost and
KV-cache pressure; for traces with `prefix_blocks`, the share of prompt tokens a prefix cache
could reuse bounds what prefix caching can save. Rows the loader dropped by option are reported
too, so a filtered trace is never mistaken for the whole file.
"""
from __future__ import annotations

import math

import numpy as np

from .prefix import parse_blocks, sharing
from .schema import PREFIX_BLOCK_TOKENS, Trace, TraceError

PERCENTILES = (50, 90, 99)


def _dist(x: np.ndarray) -> dict:
    if len(x) == 0:
        return {"mean": math.nan, **{f"p{q}": math.nan for q in PERCENTILES}, "min": math.nan,
                "max": math.nan}
    p = np.percentile(x, PERCENTILES)
    return {"mean": float(x.mean()),
            **{f"p{q}": float(v) for q, v in zip(PERCENTILES, p, strict=True)},
            "min": int(x.min()), "max": int(x.max())}


def prefix_sharing(trace: Trace) -> dict | None:
    """`prefix.sharing` of the trace's prefix_blocks; None when no row lists any."""
    df = trace.df
    if "prefix_blocks" not in df.columns:
        return None

    def fail(pos: int, problem: str, fix: str) -> TraceError:
        return TraceError(f"{trace.source}: column 'prefix_blocks', row {pos}: {problem}. {fix}")

    blocks = parse_blocks(df["prefix_blocks"], fail)
    if len(blocks.rows) == 0:
        return None
    bt = int((trace.meta or {}).get("prefix_block_tokens", PREFIX_BLOCK_TOKENS))
    return sharing(blocks, df["prompt_tokens"].to_numpy(dtype=np.int64), bt)


def trace_stats(trace: Trace) -> dict:
    """Counts, duration, rate, inter-arrival CV and length percentiles of a trace.

    rate_rps = (count-1)/duration (arrivals per second between first and last request);
    interarrival_cv = std/mean of the gaps (population std): 1 for Poisson, >1 bursty;
    NaN when there are fewer than 3 requests (one gap has no spread).
    """
    df = trace.df
    a = df["arrival_s"].to_numpy(dtype=np.float64)
    gaps = np.diff(a)
    cv = float(gaps.std() / gaps.mean()) if len(gaps) >= 2 and gaps.mean() > 0 else math.nan
    prompt = df["prompt_tokens"].to_numpy()
    output = df["output_tokens"].to_numpy()
    meta = trace.meta or {}
    return {
        "source": trace.source,
        "format": trace.format,
        "count": len(df),
        "rows_read": int(meta.get("rows_read", len(df))),
        "dropped": dict(meta.get("dropped", {})),
        "failed_kept": int(meta.get("failed_kept", 0)),
        "ignored_columns": list(meta.get("ignored_columns", [])),
        "sorted_on_load": bool(meta.get("sorted", False)),
        "start_s": float(a[0]) if len(a) else math.nan,
        "duration_s": float(trace.duration_s),
        "rate_rps": float(trace.rate),
        "interarrival_cv": cv,
        "prompt": _dist(prompt),
        "output": _dist(output),
        "prompt_tokens_total": int(prompt.sum()),
        "output_tokens_total": int(output.sum()),
        "arrivals": meta.get("arrivals"),
        "prefix": prefix_sharing(trace),
    }


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:,.1f}" if abs(v) >= 100 else f"{v:,.3f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def format_stats(s: dict) -> str:
    """Human-readable multi-line summary of `trace_stats` output."""
    lines = [f"trace      {s['source']}  (format: {s['format']})",
             f"requests   {s['count']:,}  (rows read: {s['rows_read']:,})"]
    for why, n in s["dropped"].items():
        lines.append(f"dropped    {n:,} rows: {why}")
    if s["failed_kept"]:
        lines.append(f"kept       {s['failed_kept']:,} failed requests with output_tokens=1")
    if s["sorted_on_load"]:
        lines.append("note       arrivals were sorted on load (the file was out of order)")
    if s["arrivals"]:
        lines.append(f"arrivals   synthesized: {s['arrivals']}")
    if s["ignored_columns"]:
        lines.append(f"ignored    columns {s['ignored_columns']}")
    lines += [f"duration   {_fmt(s['duration_s'])} s   rate {_fmt(s['rate_rps'])} req/s   "
              f"inter-arrival CV {_fmt(s['interarrival_cv'])}",
              f"{'tokens':10} {'mean':>10} {'p50':>10} {'p90':>10} {'p99':>10} {'max':>10} "
              f"{'total':>15}"]
    for name in ("prompt", "output"):
        d = s[name]
        lines.append(f"{name:10} " + " ".join(f"{_fmt(d[k]):>10}" for k in
                                              ("mean", "p50", "p90", "p99", "max"))
                     + f" {s[name + '_tokens_total']:>15,}")
    if s.get("prefix"):
        lines += _prefix_lines(s["prefix"])
    return "\n".join(lines)


def _prefix_lines(p: dict) -> list[str]:
    bt = p["block_tokens"]
    return [
        f"prefix     {p['rows_with_blocks']:,} requests list {bt}-token blocks: "
        f"{p['block_refs']:,} block refs, {p['repeated_block_fraction']:.1%} repeat an earlier "
        f"block",
        f"           distinct blocks {p['distinct_blocks']:,} ({p['distinct_block_tokens']:,} "
        f"tokens); distinct full-block chains {p['cacheable_blocks']:,} "
        f"({p['cacheable_tokens']:,} tokens: an unbounded cache's working set)",
        f"           an unbounded prefix cache (full blocks, first come) could reuse "
        f"{p['reusable_fraction']:.1%} of prompt tokens ({p['reusable_tokens']:,})",
    ] + ([f"           {p['ids_with_several_predecessors']:,} block ids follow different blocks "
          f"in different requests (kept apart: the cache keys a block by its whole chain)"]
         if p["ids_with_several_predecessors"] else [])


def print_stats(trace: Trace) -> dict:
    s = trace_stats(trace)
    print(format_stats(s))
    return s
