"""PNG plots of a run: latency CDFs, per-instance timeseries and multi-run comparisons.

The timeseries figure (small multiples per instance, idle gaps left as gaps) is built in
goodput.sim.plot_timeseries; this module saves it with the others.

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
from matplotlib.ticker import MaxNLocator

from goodput.sim.metrics import SLO, ensure_derived
from goodput.sim.plot_timeseries import MAX_PANELS, TS_POINTS, timeseries_figure

__all__ = ["CDF_PANELS", "CDF_POINTS", "MAX_PANELS", "TS_POINTS", "cdf_figure", "new_figure",
           "plot_comparison", "plot_latency_cdfs", "plot_timeseries", "save_all_plots",
           "save_figure"]

#: (column, title, x label, scale from seconds, SLO attribute drawn as a vertical line): TTFT
#: and TPOT are tens of milliseconds, so they are drawn in ms (0.015 s ticks crowd and misread)
CDF_PANELS = (("ttft_s", "TTFT", "milliseconds", 1e3, "ttft_s"),
              ("tpot_s", "TPOT", "milliseconds per output token", 1e3, "tpot_s"),
              ("e2e_s", "End-to-end latency", "seconds", 1.0, None))
CDF_POINTS = 2000  # quantiles drawn per CDF, whatever the number of requests


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
    for ax, (col, title, unit, scale, bound_attr) in zip(axes, CDF_PANELS, strict=True):
        drawn = False
        for label, df in runs.items():
            x, y = _cdf_points(df[col].to_numpy(dtype=float))
            if x.size:
                ax.step(x * scale, y, where="post", label=f"{label} (n={len(df):,})")
                drawn = True
        bound = getattr(slo, bound_attr) if (slo is not None and bound_attr) else None
        if bound is not None:
            ax.axvline(bound * scale, color="red", linestyle="--", linewidth=1,
                       label=f"SLO {bound * scale:g} {'ms' if scale > 1 else 's'}")
        if not drawn:
            ax.text(0.5, 0.5, "no completed requests", ha="center", va="center",
                    transform=ax.transAxes)
        ax.set_title(f"{title} ({'ms' if scale > 1 else 's'})")
        ax.set_xlabel(unit)
        ax.set_ylabel("fraction of completed requests")
        ax.set_ylim(0, 1.02)
        ax.set_xlim(left=0)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6))
        ax.grid(alpha=0.3)
        if drawn or bound is not None:
            ax.legend(fontsize="small", loc="best")  # CDFs rise to the right: keep it clear


def cdf_figure(requests_by_label: dict[str, pd.DataFrame], slo: SLO | None = None) -> Figure:
    """TTFT/TPOT/E2E CDFs of the completed requests of each run (not saved: see plot_*)."""
    fig = new_figure(3)
    _draw_cdf_panels(fig.subplots(1, 3), {k: _completed(df) for k, df in requests_by_label.items()},
                     slo)
    return fig


def plot_latency_cdfs(requests: pd.DataFrame, path, slo: SLO | None = None) -> Path:
    """TTFT, TPOT and E2E CDFs over completed requests, with the SLO bounds as red lines."""
    return save_figure(cdf_figure({"run": requests}, slo), path)


def plot_comparison(requests_by_label: dict[str, pd.DataFrame], path, slo: SLO | None = None) -> Path:
    """Overlaid TTFT/TPOT/E2E CDFs of several runs (e.g. candidate configurations)."""
    if not requests_by_label:
        raise ValueError("plot_comparison: requests_by_label is empty; pass {label: requests}")
    return save_figure(cdf_figure(requests_by_label, slo), path)


def plot_timeseries(timeseries: pd.DataFrame | None, path, interval_s: float | None = None,
                    names: dict | None = None) -> Path:
    """Batch size, KV cache used and waiting requests over time: one row per instance up to
    ``MAX_PANELS`` (the cluster's mean and band beyond), idle stretches left as gaps
    (goodput.sim.plot_timeseries says how)."""
    return save_figure(timeseries_figure(timeseries, interval_s, names), path)


def save_all_plots(out_dir, requests: pd.DataFrame, timeseries: pd.DataFrame | None,
                   slo: SLO | None = None, interval_s: float | None = None,
                   instances: pd.DataFrame | None = None) -> list[Path]:
    """Write latency_cdfs.png and timeseries.png into ``out_dir``; returns the written paths.
    ``interval_s`` is the run's sampling period, ``instances`` its instances table (the rows of
    timeseries.png are labelled with their group names)."""
    out = Path(out_dir)
    names = (dict(zip(instances["instance"], instances["group"].astype(str), strict=True))
             if instances is not None and {"instance", "group"} <= set(instances.columns) else None)
    return [plot_latency_cdfs(requests, out / "latency_cdfs.png", slo),
            plot_timeseries(timeseries, out / "timeseries.png", interval_s, names)]
