"""PNG plots of a run: latency CDFs, per-instance timeseries and multi-run comparisons.

Figures are built with ``matplotlib.figure.Figure`` and rendered by the Agg canvas directly, never
through pyplot: no display is needed, no global figure registry grows across many plots, and the
figure is released as soon as it goes out of scope after saving. Large inputs are reduced before
drawing (CDFs to a fixed number of quantiles, timeseries to time-bin means) so plotting a
million-request run costs about the same as a small one.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sim.metrics import SLO, ensure_derived

#: (column, title, SLO attribute drawn as a vertical line)
CDF_PANELS = (("ttft_s", "TTFT (s)", "ttft_s"), ("tpot_s", "TPOT (s/token)", "tpot_s"),
              ("e2e_s", "End-to-end latency (s)", None))
CDF_POINTS = 2000  # quantiles drawn per CDF, whatever the number of requests
TS_POINTS = 1000  # time bins per instance line
MAX_LEGEND = 12  # above this many lines the legend is dropped


def new_figure(ncols: int, nrows: int = 1, width: float = 5.0, height: float = 3.6) -> Figure:
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    fig.clear()  # drop artists now; no pyplot registry holds the figure
    return path


def _cdf_points(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, F(x)) of the empirical CDF, at most CDF_POINTS points, finite values only."""
    v = np.sort(values[np.isfinite(values)])
    if v.size == 0:
        return v, v
    if v.size > CDF_POINTS:
        idx = np.linspace(0, v.size - 1, CDF_POINTS).round().astype(np.int64)
        return v[idx], (idx + 1) / v.size
    return v, np.arange(1, v.size + 1) / v.size


def _completed(requests: pd.DataFrame) -> pd.DataFrame:
    df = ensure_derived(requests)
    return df[df["outcome"] == "completed"]


def _draw_cdf_panels(axes, runs: dict[str, pd.DataFrame], slo: SLO | None) -> None:
    for ax, (col, title, bound_attr) in zip(axes, CDF_PANELS, strict=True):
        drawn = False
        for label, df in runs.items():
            x, y = _cdf_points(df[col].to_numpy(dtype=float))
            if x.size:
                ax.step(x, y, where="post", label=f"{label} (n={len(df):,})")
                drawn = True
        bound = getattr(slo, bound_attr) if (slo is not None and bound_attr) else None
        if bound is not None:
            ax.axvline(bound, color="red", linestyle="--", linewidth=1, label=f"SLO {bound:g}")
        if not drawn:
            ax.text(0.5, 0.5, "no completed requests", ha="center", va="center",
                    transform=ax.transAxes)
        ax.set_title(title)
        ax.set_xlabel("seconds")
        ax.set_ylabel("fraction of completed requests")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        if drawn or bound is not None:
            ax.legend(fontsize="small", loc="lower right")


def plot_latency_cdfs(requests: pd.DataFrame, path, slo: SLO | None = None) -> Path:
    """TTFT, TPOT and E2E CDFs over completed requests, with the SLO bounds as red lines."""
    fig = new_figure(3)
    _draw_cdf_panels(fig.subplots(1, 3), {"run": _completed(requests)}, slo)
    return save_figure(fig, path)


def plot_comparison(requests_by_label: dict[str, pd.DataFrame], path, slo: SLO | None = None) -> Path:
    """Overlaid TTFT/TPOT/E2E CDFs of several runs (e.g. candidate configurations)."""
    if not requests_by_label:
        raise ValueError("plot_comparison: requests_by_label is empty; pass {label: requests}")
    fig = new_figure(3)
    runs = {label: _completed(df) for label, df in requests_by_label.items()}
    _draw_cdf_panels(fig.subplots(1, 3), runs, slo)
    return save_figure(fig, path)


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
    time, which keeps sparse instances where their samples actually were.
    """
    if ts.groupby("instance").size().max() <= points:
        return ts
    keyed = ts[["instance", "time_s", *columns]].assign(_bin=_time_bins(ts["time_s"], points))
    return keyed.groupby(["instance", "_bin"], sort=True).mean().reset_index().drop(columns="_bin")


def _cluster_mean(ts: pd.DataFrame, columns: list[str], points: int = TS_POINTS) -> pd.DataFrame:
    """Mean over all instances' samples per time bin: the readable line when instances are many."""
    keyed = ts[["time_s", *columns]].assign(_bin=_time_bins(ts["time_s"], points))
    return keyed.groupby("_bin", sort=True).mean()


def plot_timeseries(timeseries: pd.DataFrame | None, path) -> Path:
    """Batch size, KV-cache used fraction and waiting-queue length over time, one line per instance."""
    fig = new_figure(1, nrows=3, width=10.0, height=2.8)
    axes = fig.subplots(3, 1, sharex=True)
    panels = (("batch_size", "batch size"), ("kv_fraction", "KV used fraction"),
              ("waiting", "waiting requests"))
    if timeseries is None or len(timeseries) == 0:
        for ax, (_, title) in zip(axes, panels, strict=True):
            ax.set_ylabel(title)
            ax.text(0.5, 0.5, "no timeseries samples", ha="center", va="center",
                    transform=ax.transAxes)
        return save_figure(fig, path)
    missing = [c for c in ("time_s", "instance", "batch_size", "waiting", "kv_used_blocks",
                           "kv_total_blocks") if c not in timeseries.columns]
    if missing:
        raise ValueError(f"plot_timeseries: timeseries is missing column(s) {missing}; pass the "
                         f"simulator's timeseries table")
    total = timeseries["kv_total_blocks"].astype(float)
    ts = timeseries.assign(kv_fraction=timeseries["kv_used_blocks"].astype(float)
                           / total.where(total > 0))
    ts = _downsample(ts.sort_values(["instance", "time_s"], kind="stable"),
                     ["batch_size", "kv_fraction", "waiting"])
    groups = list(ts.groupby("instance", sort=True))  # one entry per instance, not per row
    many = len(groups) > MAX_LEGEND
    mean = _cluster_mean(ts, [c for c, _ in panels]) if many else None
    for ax, (col, title) in zip(axes, panels, strict=True):
        for inst, g in groups:
            ax.plot(g["time_s"].to_numpy(), g[col].to_numpy(dtype=float), linewidth=0.8,
                    alpha=0.25 if many else 1.0, label=f"instance {inst}")
        if mean is not None:
            ax.plot(mean["time_s"].to_numpy(), mean[col].to_numpy(dtype=float), color="black",
                    linewidth=1.5, label="mean over instances")
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
    axes[1].set_ylim(0, 1.02)
    axes[-1].set_xlabel("simulated time (s)")
    if not many:
        axes[0].legend(fontsize="small", ncols=min(len(groups), 6), loc="upper right")
    else:
        axes[0].set_title(f"{len(groups)} instances (faint); black: mean over instances",
                          fontsize="small")
    return save_figure(fig, path)


def save_all_plots(out_dir, requests: pd.DataFrame, timeseries: pd.DataFrame | None,
                   slo: SLO | None = None) -> list[Path]:
    """Write latency_cdfs.png and timeseries.png into ``out_dir``; returns the written paths."""
    out = Path(out_dir)
    return [plot_latency_cdfs(requests, out / "latency_cdfs.png", slo),
            plot_timeseries(timeseries, out / "timeseries.png")]
