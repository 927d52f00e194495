"""Turn a simulator run into the numbers a capacity planner decides on.

Inputs are the simulator's tables (per-request rows, per-instance timeseries samples, the
instance table) plus the simulated span. Everything is vectorised numpy/pandas because a run may
hold a million requests. Conventions, fixed here so every report means the same thing:

* Latency statistics (mean/p50/p90/p99) are over **completed** requests only: a request that
  never finished has no end-to-end latency to average.
* SLO attainment and goodput count **all** requests: a rejected or unfinished request is a miss,
  otherwise shedding load would look like a way to improve attainment.
* Token throughput and $/token use tokens of **completed** requests (prompt + generated), i.e.
  work delivered to a user; half-generated answers at the end of the run are not "served".
* Rates divide by ``sim_duration_s`` (first arrival to last event).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from goodput.sim.schema import COMPLETED, OPTIONAL_DEFAULTS, OUTCOMES, REJECTED, REQUIRED_COLUMNS, UNFINISHED
from goodput.sim.summary_text import format_summary  # noqa: F401  (re-exported: planner, tests)

#: the request table's columns and outcomes are defined once, in goodput.sim.schema
REQUIRED = REQUIRED_COLUMNS
#: optional request column -> default (None: copy output_tokens), so hand-built or older tables
#: still summarise
OPTIONAL = OPTIONAL_DEFAULTS
_COMPLETED, _REJECTED, _UNFINISHED = (OUTCOMES[c] for c in (COMPLETED, REJECTED, UNFINISHED))
DERIVED = ("queueing_delay_s", "ttft_s", "tpot_s", "e2e_s", "normalized_latency_s_per_token")
LATENCY_COLUMNS = ("ttft_s", "tpot_s", "e2e_s", "queueing_delay_s",
                   "normalized_latency_s_per_token", "max_tbt_s")
PERCENTILES = (50, 90, 99)
TIMESERIES_REQUIRED = ("time_s", "instance", "batch_size", "waiting", "kv_used_blocks",
                       "kv_total_blocks")
INSTANCES_REQUIRED = ("instance", "price_per_hour", "busy_s")


class MetricsError(ValueError):
    """Unusable metrics input; the message names the field and how to fix it."""


def _require(df: pd.DataFrame, columns, table: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise MetricsError(f"{table} table is missing required column(s) {missing}; "
                           f"it has {list(df.columns)}. Pass the simulator's {table} output "
                           f"or add these columns.")


def request_metrics(raw: pd.DataFrame) -> pd.DataFrame:
    """Copy of ``raw`` with defaults filled and the derived latency columns added.

    tpot_s = (completion - first_token) / (output_tokens - 1): the first token's time belongs to
    TTFT, so only the remaining gaps are per-output-token time; NaN for 1-token outputs (no gap).
    normalized latency is NaN for zero-output (prefill-only) requests rather than inf.
    """
    _require(raw, REQUIRED, "requests")
    df = raw.copy()
    for col, default in OPTIONAL.items():
        if col not in df.columns:
            df[col] = df["output_tokens"] if col == "generated_tokens" else default
    bad = ~df["outcome"].isin(OUTCOMES)
    if bad.any():
        raise MetricsError(f"requests.outcome has unknown value(s) "
                           f"{sorted(map(str, df.loc[bad, 'outcome'].unique()))[:5]}; "
                           f"expected one of {list(OUTCOMES)}")
    out_tok = df["output_tokens"].to_numpy(dtype=float)
    arrival = df["arrival_s"].to_numpy(dtype=float)
    first_tok = df["first_token_s"].to_numpy(dtype=float)
    done = df["completion_s"].to_numpy(dtype=float)
    e2e = done - arrival
    with np.errstate(divide="ignore", invalid="ignore"):
        df["queueing_delay_s"] = df["first_scheduled_s"].to_numpy(dtype=float) - arrival
        df["ttft_s"] = first_tok - arrival
        df["tpot_s"] = np.where(out_tok > 1, (done - first_tok) / (out_tok - 1), np.nan)
        df["e2e_s"] = e2e
        df["normalized_latency_s_per_token"] = np.where(out_tok > 0, e2e / out_tok, np.nan)
    return df


def ensure_derived(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` itself if it already has the derived columns, else request_metrics(df)."""
    return df if all(c in df.columns for c in DERIVED) else request_metrics(df)


def _check_bound(name: str, value) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise MetricsError(f"SLO {name} must be a number of seconds or None, got {value!r}") from None
    if not v > 0:  # also rejects NaN
        raise MetricsError(f"SLO {name} must be > 0 seconds (or None for no bound), got {value!r}")
    return v


@dataclass
class SLO:
    """Latency service-level objective: a request meets it if it completed within both bounds.

    ``None`` means "no bound" for that metric. ``per_class`` maps a request's ``slo_class`` to
    its own full ``(ttft_s, tpot_s)`` pair (or a dict with those keys), replacing the global pair
    for that class; ``None`` there also means no bound. ``attainment_target`` is the fraction of
    requests that must meet the SLO for a configuration to count as adequate.
    """

    ttft_s: float | None
    tpot_s: float | None
    attainment_target: float = 0.9
    per_class: dict[str, tuple | dict] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ttft_s = _check_bound("ttft_s", self.ttft_s)
        self.tpot_s = _check_bound("tpot_s", self.tpot_s)
        t = self.attainment_target
        if not isinstance(t, (int, float)) or not 0 < t <= 1:
            raise MetricsError(f"SLO attainment_target must be a fraction in (0, 1], got {t!r} "
                               f"(write 0.9 for 90%)")
        norm: dict[str, tuple | dict] = {}
        for cls, pair in (self.per_class or {}).items():
            if isinstance(pair, dict):
                unknown = set(pair) - {"ttft_s", "tpot_s"}
                if unknown:
                    raise MetricsError(f"SLO per_class[{cls!r}] has unknown key(s) "
                                       f"{sorted(unknown)}; use ttft_s and tpot_s")
                pair = (pair.get("ttft_s"), pair.get("tpot_s"))
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise MetricsError(f"SLO per_class[{cls!r}] must be (ttft_s, tpot_s), got {pair!r}")
            norm[str(cls)] = (_check_bound(f"per_class[{cls!r}].ttft_s", pair[0]),
                              _check_bound(f"per_class[{cls!r}].tpot_s", pair[1]))
        self.per_class = norm

    @classmethod
    def from_config(cls, cfg) -> SLO:
        """Build from a mapping or an object with ttft_s/tpot_s[/attainment_target/per_class]."""
        get = cfg.get if isinstance(cfg, dict) else (lambda k, d=None: getattr(cfg, k, d))
        return cls(get("ttft_s"), get("tpot_s"), get("attainment_target", 0.9),
                   dict(get("per_class", None) or {}))

    def bounds(self, slo_class: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """Per-request (ttft, tpot) bounds as arrays, inf where unbounded (loops over classes only)."""
        inf = math.inf
        n = len(slo_class)
        ttft = np.full(n, inf if self.ttft_s is None else self.ttft_s)
        tpot = np.full(n, inf if self.tpot_s is None else self.tpot_s)
        cls = slo_class.astype(str).to_numpy()
        for name, (c_ttft, c_tpot) in self.per_class.items():
            mask = cls == name
            ttft[mask] = inf if c_ttft is None else c_ttft
            tpot[mask] = inf if c_tpot is None else c_tpot
        return ttft, tpot


def slo_met(df: pd.DataFrame, slo: SLO) -> pd.Series:
    """Boolean per request: completed, TTFT within bound, and TPOT within bound.

    A NaN TPOT (single-token output) meets the TPOT bound: there is no inter-token gap to violate.
    Rejected and unfinished requests never meet the SLO.
    """
    df = ensure_derived(df)
    b_ttft, b_tpot = slo.bounds(df["slo_class"])
    ttft = df["ttft_s"].to_numpy(dtype=float)
    tpot = df["tpot_s"].to_numpy(dtype=float)
    ok = ((df["outcome"].to_numpy() == _COMPLETED)
          & (np.isinf(b_ttft) | (ttft <= b_ttft))
          & (np.isnan(tpot) | (tpot <= b_tpot)))
    return pd.Series(ok, index=df.index, name="slo_met")


def _num(x) -> float | None:
    """float, or None for NaN/inf so the summary is valid JSON."""
    x = float(x)
    return x if math.isfinite(x) else None


def pct_key(q: float) -> str:
    """Summary key of percentile ``q``: 50 -> 'p50', 99.9 -> 'p99.9'."""
    return f"p{q:g}"


def parse_percentiles(text: str) -> tuple[float, ...]:
    """'50,90,99' -> (50.0, 90.0, 99.0); MetricsError naming --percentiles otherwise."""
    try:
        qs = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise MetricsError(f"--percentiles {text!r}: give comma-separated numbers in (0, 100], "
                           "e.g. --percentiles 50,90,99") from None
    if not qs or any(not 0 < q <= 100 for q in qs):
        raise MetricsError(f"--percentiles {text!r}: each must be in (0, 100], e.g. 50,90,99")
    return qs


def _stats(values: np.ndarray, percentiles=PERCENTILES) -> dict:
    v = values[~np.isnan(values)]
    if v.size == 0:
        return {"mean": None, **{pct_key(p): None for p in percentiles}}
    pct = np.percentile(v, percentiles)
    return {"mean": _num(v.mean()),
            **{pct_key(p): _num(q) for p, q in zip(percentiles, pct, strict=True)}}


def _time_weighted(ts: pd.DataFrame, value: pd.Series) -> pd.Series:
    """Per-instance time-weighted mean of ``value`` (aligned with sorted ``ts``).

    Each sample holds until the instance's next sample; the last sample has no observed end so
    it gets weight 0. An instance whose samples span no time falls back to the plain mean.
    """
    dt = (ts.groupby("instance")["time_s"].shift(-1) - ts["time_s"]).fillna(0.0)
    g = pd.DataFrame({"instance": ts["instance"], "vw": value * dt, "w": dt.where(value.notna(), 0),
                      "v": value})
    agg = g.groupby("instance").agg(vw=("vw", "sum"), w=("w", "sum"), v=("v", "mean"))
    return (agg["vw"] / agg["w"]).where(agg["w"] > 0, agg["v"])


def _timeseries_summary(ts: pd.DataFrame | None) -> dict:
    empty = {"kv_mean_used_fraction": None, "kv_max_used_fraction": None,
             "mean_batch_size": None, "mean_batch_size_when_busy": None, "mean_waiting": None}
    if ts is None or len(ts) == 0:
        return empty
    _require(ts, TIMESERIES_REQUIRED, "timeseries")
    ts = ts.sort_values(["instance", "time_s"], kind="stable").reset_index(drop=True)
    total = ts["kv_total_blocks"].astype(float)
    kv = ts["kv_used_blocks"].astype(float) / total.where(total > 0)
    batch = ts["batch_size"].astype(float)
    return {
        "kv_mean_used_fraction": _num(_time_weighted(ts, kv).mean()),
        "kv_max_used_fraction": _num(kv.max()),
        "mean_batch_size": _num(_time_weighted(ts, batch).mean()),
        "mean_batch_size_when_busy": _num(_time_weighted(ts, batch.where(batch > 0)).mean()),
        "mean_waiting": _num(_time_weighted(ts, ts["waiting"].astype(float)).mean()),
    }


def summarize(requests: pd.DataFrame, timeseries: pd.DataFrame | None, instances: pd.DataFrame,
              sim_duration_s: float, slo: SLO, percentiles=PERCENTILES) -> dict:
    """All headline numbers of one run as a JSON-ready nested dict (NaN becomes None).

    ``requests`` may be raw simulator output or already passed through request_metrics;
    ``percentiles`` are the latency percentiles reported (keys 'p50', 'p99.9', ...).
    """
    dur = float(sim_duration_s)
    if not math.isfinite(dur) or dur < 0:
        raise MetricsError(f"sim_duration_s must be a finite number >= 0, got {sim_duration_s!r}")
    per_s = (lambda x: _num(x / dur)) if dur > 0 else (lambda x: None)
    df = ensure_derived(requests)
    _require(instances, INSTANCES_REQUIRED, "instances")

    outcome = df["outcome"].to_numpy()
    done = outcome == _COMPLETED
    n, n_done = len(df), int(done.sum())
    reasons = df.loc[outcome == _REJECTED, "reject_reason"].astype(str).value_counts()
    counts = {"total": n, "completed": n_done, "rejected": int((outcome == _REJECTED).sum()),
              "unfinished": int((outcome == _UNFINISHED).sum()),
              "rejected_by_reason": {(k or "unspecified"): int(v) for k, v in reasons.items()}}

    out_tokens = float(df["generated_tokens"].to_numpy(dtype=float)[done].sum())
    total_tokens = out_tokens + float(df["prompt_tokens"].to_numpy(dtype=float)[done].sum())
    met = slo_met(df, slo).to_numpy()
    n_met = int(met.sum())
    attainment = n_met / n if n else None
    cls = df["slo_class"].astype(str)
    by_cls = pd.DataFrame({"cls": cls, "met": met}).groupby("cls")["met"].agg(["size", "sum"])
    per_class = {}
    for name, row in by_cls.iterrows():  # one row per SLO class, not per request
        bound = slo.per_class.get(str(name), (slo.ttft_s, slo.tpot_s))
        per_class[name] = {"requests": int(row["size"]), "met": int(row["sum"]),
                           "attainment": float(row["sum"] / row["size"]),
                           "ttft_s": bound[0], "tpot_s": bound[1]}

    inst = instances
    busy_frac = inst["busy_s"].astype(float) / (dur if dur > 0 else np.nan)
    price = float(inst["price_per_hour"].astype(float).sum())
    # each instance is billed for its own lifetime in the run (scale-out, drain) when known
    billed = inst["billed_s"].astype(float) if "billed_s" in inst else pd.Series(dur, inst.index)
    run_cost = float((inst["price_per_hour"].astype(float) * billed).sum()) / 3600.0
    gpus = (inst["num_gpus"] if "num_gpus" in inst else inst.get("tp", pd.Series(1, inst.index)))
    tdp = inst["tdp_w"].astype(float) if "tdp_w" in inst else pd.Series(np.nan, inst.index)
    watts = tdp * gpus.astype(float)  # catalog tdp_w is per GPU
    busy_kwh = float((watts * inst["busy_s"].astype(float)).sum(min_count=1)) / 3.6e6
    span_kwh = float((watts * billed).sum(min_count=1)) / 3.6e6

    return _clean({
        "sim_duration_s": dur,
        "counts": counts,
        "throughput": {"completed_req_per_s": per_s(n_done), "output_tok_per_s": per_s(out_tokens),
                       "total_tok_per_s": per_s(total_tokens)},
        "latency": {c: _stats(df[c].to_numpy(dtype=float)[done], percentiles) for c in LATENCY_COLUMNS},
        "slo": {"ttft_s": slo.ttft_s, "tpot_s": slo.tpot_s,
                "attainment_target": slo.attainment_target, "met": n_met,
                "attainment": attainment,
                "meets_target": None if attainment is None else attainment >= slo.attainment_target,
                "goodput_req_per_s": per_s(n_met), "per_class": per_class},
        "preemptions": int(df["preemptions"].sum()),
        "migrations": int(df["migrations"].sum()),
        "migrated_bytes": float(df["migrated_bytes"].astype(float).sum()),
        "utilisation": {f"{k}_busy_fraction": _num(getattr(busy_frac, k)()) for k in ("mean", "min", "max")},
        "timeseries": _timeseries_summary(timeseries),
        "cost": {"cluster_usd_per_hour": price, "run_usd": run_cost,
                 "usd_per_million_output_tokens": _num(run_cost / out_tokens * 1e6) if out_tokens else None,
                 "usd_per_million_total_tokens":
                     _num(run_cost / total_tokens * 1e6) if total_tokens else None},
        "energy_upper_bound": {
            "note": "estimate, not a measurement: busy_at_tdp = every GPU at TDP while executing "
                    "(idle draw excluded); whole_run_at_tdp = every GPU at TDP all run (hard bound)",
            "busy_at_tdp_kwh": _num(busy_kwh),
            "whole_run_at_tdp_kwh": _num(span_kwh),
            "busy_joules_per_output_token": _num(busy_kwh * 3.6e6 / out_tokens) if out_tokens else None},
    })


def _clean(x):
    """Recursively convert numpy scalars to Python and non-finite floats to None."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return _num(x)
    return x


def save_results(out_dir, requests: pd.DataFrame, timeseries: pd.DataFrame | None,
                 instances: pd.DataFrame, summary: dict, csv: bool = False) -> dict[str, Path]:
    """Write requests.parquet (+ .csv if ``csv``), timeseries.parquet, instances.csv, summary.json.

    Derived latency columns are added to the request table if absent, so the saved file can be
    analysed without re-running request_metrics. Returns name -> path of what was written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    req = ensure_derived(requests)
    paths = {"requests": out / "requests.parquet", "instances": out / "instances.csv",
             "summary": out / "summary.json"}
    req.to_parquet(paths["requests"], index=False)
    if csv:
        paths["requests_csv"] = out / "requests.csv"
        req.to_csv(paths["requests_csv"], index=False)
    if timeseries is not None:
        paths["timeseries"] = out / "timeseries.parquet"
        timeseries.to_parquet(paths["timeseries"], index=False)
    instances.to_csv(paths["instances"], index=False)
    paths["summary"].write_text(json.dumps(_clean(summary), indent=2, allow_nan=False) + "\n")
    return paths


#: label -> dotted path into a summary; the default rows of compare()
KEY_METRICS = {
    "requests": "counts.total", "completed": "counts.completed", "rejected": "counts.rejected",
    "unfinished": "counts.unfinished", "req/s": "throughput.completed_req_per_s",
    "output tok/s": "throughput.output_tok_per_s", "goodput req/s": "slo.goodput_req_per_s",
    "slo attainment": "slo.attainment", "ttft p50 s": "latency.ttft_s.p50",
    "ttft p99 s": "latency.ttft_s.p99", "tpot p50 s": "latency.tpot_s.p50",
    "tpot p99 s": "latency.tpot_s.p99", "e2e p50 s": "latency.e2e_s.p50",
    "e2e p99 s": "latency.e2e_s.p99", "busy fraction": "utilisation.mean_busy_fraction",
    "kv mean fraction": "timeseries.kv_mean_used_fraction", "preemptions": "preemptions",
    "cluster $/h": "cost.cluster_usd_per_hour",
    "$/M output tok": "cost.usd_per_million_output_tokens",
    "kWh busy at TDP (estimate)": "energy_upper_bound.busy_at_tdp_kwh",
}


def _get(d: dict, path: str):
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def compare(summaries: dict[str, dict], metrics: dict[str, str] | None = None) -> pd.DataFrame:
    """Side-by-side table: one row per metric, one column per run label (missing -> NaN)."""
    metrics = metrics or KEY_METRICS
    data = {label: [_get(s, p) for p in metrics.values()] for label, s in summaries.items()}
    table = pd.DataFrame(data, index=pd.Index(list(metrics), name="metric"))
    return table.astype(float) if len(table.columns) else table
