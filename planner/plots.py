"""Planner figures: the verified cost frontier, load per GPU type, attainment per slice.

Same approach as sim.plots: Figure + Agg canvas, never pyplot, so no display or global figure
registry is involved.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from sim.plots import new_figure, save_figure


def _figure(width: float = 6.0, height: float = 3.8) -> Figure:
    return new_figure(1, 1, width, height)


def frontier(df: pd.DataFrame, path) -> Path:
    """One panel per swept parameter: verified cost (filled where proved), the verified best
    single type, and the ILP-only cost (dashed, labelled so)."""
    params = list(dict.fromkeys(df["param"]))
    fig = new_figure(max(1, len(params)), 1, 5.0, 3.8)
    for k, param in enumerate(params):
        ax = fig.add_subplot(1, len(params), k + 1)
        d = df[df["param"] == param].sort_values("value")
        x = d["value"] * (1e3 if param in ("tpot", "ttft") else 1.0)
        ax.plot(x, d["cost"], "o-", color="tab:blue", label="verified plan")
        bad = d[~d["verified"].astype(bool)]
        if len(bad):
            ax.plot(bad["value"] * (1e3 if param in ("tpot", "ttft") else 1.0), bad["cost"], "x",
                    color="tab:red", ms=9, label="NOT proved")
        if d["baseline_cost"].notna().any():
            ax.plot(x, d["baseline_cost"], "s--", color="tab:orange",
                    label="verified best single type")
        ax.plot(x, d["ilp_only_cost"], ":", color="grey", label="ILP only (not verified)")
        ax.set_xlabel({"tpot": "TPOT SLO (ms)", "ttft": "TTFT SLO (ms)",
                       "attainment": "attainment target"}[param])
        ax.set_ylabel("cluster cost ($/h)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Cost frontier (each point re-simulated)")
    return save_figure(fig, path)


def load_per_type(plan, path) -> Path:
    """Instances per type next to the planned load (instances' worth of capacity)."""
    fig = _figure()
    ax = fig.add_subplot()
    keys = [g.key for g in plan.groups]
    pos = range(len(keys))
    ax.bar([p - 0.2 for p in pos], [g.count for g in plan.groups], 0.4, label="instances")
    ax.bar([p + 0.2 for p in pos], [g.load for g in plan.groups], 0.4, label="planned load")
    ax.set_xticks(list(pos), keys, rotation=20)
    ax.set_ylabel("instances")
    proved = plan.summary.get("verified")
    tag = "verified" if proved else ("NOT proved" if proved is False else "ILP only")
    ax.set_title(f"Load per GPU type (${plan.cost_per_hour:.2f}/h, {tag})")
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    return save_figure(fig, path)


def attainment_per_slice(per_slice: pd.DataFrame, target: float, path, order=None) -> Path:
    """Simulated SLO attainment per bucket (in ``order``, e.g. the plan's), target as a line."""
    df = per_slice
    if order is not None:
        rank = {b: i for i, b in enumerate(dict.fromkeys(order))}
        df = df.assign(_r=df["bucket"].map(rank).fillna(len(rank))).sort_values("_r", kind="stable")
    fig = _figure(width=max(6.0, 0.45 * len(df) + 2), height=4.2)
    ax = fig.add_subplot()
    ax.bar(range(len(df)), df["attainment"], color="tab:green")
    ax.axhline(target, color="tab:red", ls="--", label=f"target {target:.0%}")
    ax.set_xticks(range(len(df)), df["bucket"], rotation=70, fontsize=7)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("SLO attainment (simulated)")
    ax.set_title("Attainment per slice")
    ax.legend(loc="lower left")
    return save_figure(fig, path)
