"""timeseries.png: batch size, KV cache used and waiting requests over time, drawn to be read.

* **Small multiples.** One row per instance (columns: the three series), sharing the time axis
  and each column's y axis, so instances are compared by position instead of being untangled
  from one overlaid tangle. Beyond ``MAX_PANELS`` instances a row each stops being readable: the
  figure shows the cluster instead, the mean over instances with the min-max band (each
  instance's last sample held, so an idle one counts as 0), and its title says so.
* **Gaps stay gaps.** An idle instance records one sample (batch 0, nothing waiting) and then
  none until work arrives; a straight line from that sample to the next would draw a ramp that
  never happened. Where the sample before a silence longer than the sampling period says idle,
  the line is broken (NaN). A silence after a *busy* sample is a fast-forwarded run of
  iterations (goodput.sim.engine: no event, no sample), and is drawn through.
* **Honest axes.** Every y axis starts at 0 (an all-zero series gets 0..1, not a centred axis
  with negative ticks); counts get integer ticks, the KV share is in percent.

Large inputs are reduced first (time-bin means per instance, as goodput.sim.plots does for CDFs), so a
million-sample run plots as fast as a small one.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

#: (column, title) of the three series, one column of panels each
PANELS = (("batch_size", "batch size (sequences)"), ("kv_fraction", "KV cache used"),
          ("waiting", "waiting requests"))
MAX_PANELS = 8  # instances drawn one row each; more are drawn as the cluster's mean and band
TS_POINTS = 1000  # time bins per instance line
REQUIRED = ("time_s", "instance", "batch_size", "waiting", "kv_used_blocks", "kv_total_blocks")


def _time_bins(t: pd.Series, points: int) -> np.ndarray:
    """Index of each sample's bin among ``points`` equal bins spanning the whole run."""
    v = t.to_numpy(dtype=float)
    span = v.max() - v.min()
    if span <= 0:
        return np.zeros(len(v), dtype=np.int64)
    return np.minimum(((v - v.min()) / span * points).astype(np.int64), points - 1)


def _downsample(ts: pd.DataFrame, columns: list[str], points: int = TS_POINTS) -> pd.DataFrame:
    """Mean of each column per (instance, time bin) when an instance has more than ``points`` samples.

    Bins span the whole run so all instances share bin edges; the bin's time is its mean sample
    time, which keeps sparse instances where their samples actually were. ``_idle`` (when
    present) keeps the bin's last value: whether the instance was idle when the bin ended.
    """
    if ts.groupby("instance").size().max() <= points:
        return ts
    keep = ["instance", "time_s", *columns] + (["_idle"] if "_idle" in ts else [])
    keyed = ts[keep].assign(_bin=_time_bins(ts["time_s"], points))
    agg = {c: ("last" if c == "_idle" else "mean") for c in keep if c != "instance"}
    return keyed.groupby(["instance", "_bin"], sort=True).agg(agg).reset_index().drop(columns="_bin")


def held_grid(ts: pd.DataFrame, columns: list[str], points: int) -> tuple[np.ndarray, dict]:
    """Every instance's state on one regular time grid, each sample held until the next (an idle
    instance records 0 and then nothing, so it counts as 0 until it works again; before its first
    sample, NaN): ``(grid, {column: array (instances, points)})``."""
    t0, t1 = float(ts["time_s"].min()), float(ts["time_s"].max())
    grid = np.linspace(t0, t1, max(2, points))
    groups = [g for _, g in ts.groupby("instance", sort=True)]
    out = {c: np.full((len(groups), grid.size), np.nan) for c in columns}
    for i, g in enumerate(groups):
        idx = np.searchsorted(g["time_s"].to_numpy(dtype=float), grid, side="right") - 1
        ok = idx >= 0
        for c in columns:
            out[c][i, ok] = g[c].to_numpy(dtype=float)[idx[ok]]
    return grid, out


def break_gaps(t: np.ndarray, y: np.ndarray, idle: np.ndarray, max_step: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """``(t, y)`` with a NaN point inserted inside every silence longer than ``max_step`` that
    follows an idle sample, so a line drawn through them leaves the idle stretch empty."""
    t, y = np.asarray(t, dtype=float), np.asarray(y, dtype=float)
    if t.size < 2:
        return t, y
    gap = np.flatnonzero((np.diff(t) > max_step) & np.asarray(idle, dtype=bool)[:-1])
    if not gap.size:
        return t, y
    return (np.insert(t, gap + 1, (t[gap] + t[gap + 1]) / 2), np.insert(y, gap + 1, np.nan))


def sampling_step(ts: pd.DataFrame, interval_s: float | None) -> float:
    """The sampling period: ``interval_s`` when it is set (> 0), else the median spacing of one
    instance's consecutive samples (``interval_s`` 0 samples every iteration boundary)."""
    if interval_s:
        return float(interval_s)
    d = ts.groupby("instance")["time_s"].diff().to_numpy(dtype=float)
    d = d[np.isfinite(d) & (d > 0)]
    return float(np.median(d)) if d.size else 0.0


def _prepared(timeseries: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in REQUIRED if c not in timeseries.columns]
    if missing:
        raise ValueError(f"plot_timeseries: timeseries is missing column(s) {missing}; pass the "
                         f"simulator's timeseries table")
    total = timeseries["kv_total_blocks"].astype(float)
    ts = timeseries.assign(kv_fraction=timeseries["kv_used_blocks"].astype(float)
                           / total.where(total > 0),
                           _idle=(timeseries["batch_size"] == 0) & (timeseries["waiting"] == 0))
    return ts.sort_values(["instance", "time_s"], kind="stable")


def _style(ax, col: str, top: float, t: np.ndarray | None = None, zero: bool = False) -> None:
    """y from 0 (a share up to its own scale, at least 5%; a count up to at least 1: an all-zero
    series gets 0..1 and says so, never a centred axis with negative ticks); x over the run."""
    if col == "kv_fraction":
        ax.set_ylim(0, min(1.02, max(0.05, top * 1.1)))
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    else:
        ax.set_ylim(0, max(1.0, top * 1.2))  # headroom for the label in the corner
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    if t is not None and len(t):
        if zero or top == 0:
            ax.text(0.5, 0.5, "0 throughout", ha="center", va="center", color="grey",
                    transform=ax.transAxes, fontsize="small")
        lo, hi = float(np.nanmin(t)), float(np.nanmax(t))
        if hi > lo:
            ax.set_xlim(lo, hi)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=8))
    ax.grid(alpha=0.3)


def _empty(fig: Figure, text: str) -> Figure:
    axes = fig.subplots(1, len(PANELS))
    for ax, (col, title) in zip(axes, PANELS, strict=True):
        ax.set_title(title)
        _style(ax, col, 0.0)
        ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    return fig


def timeseries_figure(timeseries: pd.DataFrame | None, interval_s: float | None = None,
                      names: dict | None = None) -> Figure:
    """The figure of plot_timeseries (not saved, so tests and notebooks can look at it).

    ``interval_s``: the run's ``output.timeseries_interval_s`` (inferred when None);
    ``names``: instance index -> label (e.g. the group name from instances.csv)."""
    from goodput.sim.plots import new_figure

    if timeseries is None or len(timeseries) == 0:
        return _empty(new_figure(len(PANELS), 1, 4.4, 2.6), "no timeseries samples")
    ts = _prepared(timeseries)
    step = sampling_step(ts, interval_s)
    cols = [c for c, _ in PANELS]
    instances = sorted(ts["instance"].unique())
    span = float(ts["time_s"].max() - ts["time_s"].min())
    if len(instances) > MAX_PANELS:
        return _cluster_figure(ts, cols, len(instances), step)
    binned = ts.groupby("instance").size().max() > TS_POINTS and span > 0
    ts = _downsample(ts, cols)
    max_step = max(2 * step, 2.5 * span / TS_POINTS if binned else 0.0)
    fig = new_figure(len(PANELS), len(instances), 4.4, 1.55 if len(instances) > 1 else 2.6)
    axes = np.atleast_2d(fig.subplots(len(instances), len(PANELS), sharex=True, sharey="col",
                                      squeeze=False))
    tops = {c: float(np.nanmax(ts[c].to_numpy(dtype=float), initial=0.0)) for c in cols}
    t_all = ts["time_s"].to_numpy(dtype=float)
    for row, (inst, g) in zip(axes, ts.groupby("instance", sort=True), strict=True):
        t, idle = g["time_s"].to_numpy(dtype=float), g["_idle"].to_numpy(dtype=bool)
        for ax, col in zip(row, cols, strict=True):
            y = g[col].to_numpy(dtype=float)
            x, y = break_gaps(t, y, idle, max_step)
            ax.plot(x, y, linewidth=0.9, color="tab:blue")
            _style(ax, col, tops[col], t_all, zero=not np.nanmax(y, initial=0.0) > 0)
        row[0].set_ylabel(f"instance {inst}", fontsize="small")
        label = (names or {}).get(inst)
        if label:  # the group's name, inside the panel where it cannot collide with the axis
            row[0].text(0.01, 0.97, label, transform=row[0].transAxes, va="top", ha="left",
                        fontsize="x-small", color="dimgrey")
    for ax, (_, title) in zip(axes[0], PANELS, strict=True):
        ax.set_title(title)
    for ax in axes[-1]:
        ax.set_xlabel("simulated time (s)")
    n = len(instances)
    fig.suptitle(f"{n} instance{'s, one row each' if n > 1 else ''}; a gap in a line: the "
                 "instance was idle (no samples)", fontsize="medium")
    return fig


def _cluster_figure(ts: pd.DataFrame, cols: list[str], n: int, step: float) -> Figure:
    """Many instances: the mean over instances with the min-max band, on a grid a couple of
    sampling periods apart (finer would only show which instance happened to sample when)."""
    from goodput.sim.plots import new_figure

    span = float(ts["time_s"].max() - ts["time_s"].min())
    points = int(min(TS_POINTS, max(50, span / (2 * step)))) if step > 0 else TS_POINTS
    grid, held = held_grid(ts, cols, points)
    fig = new_figure(len(PANELS), 1, 4.4, 2.8)
    axes = fig.subplots(1, len(PANELS), sharex=True)
    for ax, (col, title) in zip(axes, PANELS, strict=True):
        v = held[col]
        seen = np.isfinite(v).any(axis=0)
        lo, hi, mean = (np.full(grid.size, np.nan) for _ in range(3))
        lo[seen], hi[seen] = np.nanmin(v[:, seen], axis=0), np.nanmax(v[:, seen], axis=0)
        mean[seen] = np.nanmean(v[:, seen], axis=0)
        ax.fill_between(grid, lo, hi, color="tab:blue", alpha=0.2, linewidth=0,
                        label="min-max over instances")
        ax.plot(grid, mean, color="tab:blue", linewidth=1.0, label="mean over instances")
        ax.set_title(title)
        ax.set_xlabel("simulated time (s)")
        _style(ax, col, float(np.nanmax(hi, initial=0.0)), grid)
    axes[0].legend(fontsize="small", loc="upper right")
    fig.suptitle(f"{n} instances (more than {MAX_PANELS}, so not one row each): mean over "
                 "instances and min-max band, each instance's last sample held", fontsize="medium")
    return fig
