"""Planner figures: the verified cost frontier, load per GPU type, attainment per slice.

Same approach as goodput.sim.plots: Figure + Agg canvas, never pyplot, so no display or global figure
registry is involved.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from goodput.sim.plots import new_figure, save_figure


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
        if len(d) == 1:  # one value is no curve: its costs as labelled bars
            _point_bars(ax, d.iloc[0], param)
            continue
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
        ax.set_xlabel(_LABELS[param])
        ax.set_ylabel("cluster cost ($/h)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Cost frontier (each point re-simulated)")
    return save_figure(fig, path)


_LABELS = {"tpot": "TPOT SLO (ms)", "ttft": "TTFT SLO (ms)", "attainment": "attainment target"}


def _point_bars(ax, row, param: str | None, title: str | None = None) -> None:
    """A sweep of one value (or no sweep): the verified plan, the verified best single type and
    the ILP-only cost as bars with their dollar figures (a one-point line would say nothing)."""
    mix = row.get("mix")
    name = "verified plan" if bool(row["verified"]) else "plan (NOT proved)"
    bars = [(f"{name}\n{mix}" if isinstance(mix, str) and mix else name, row["cost"],
             "tab:blue" if bool(row["verified"]) else "tab:red")]
    if row.get("baseline_cost") is not None and row["baseline_cost"] == row["baseline_cost"]:
        bars.append(("verified best\nsingle type", row["baseline_cost"], "tab:orange"))
    bars.append(("ILP only\n(not verified)", row["ilp_only_cost"], "lightgrey"))
    drawn = ax.bar(range(len(bars)), [b[1] for b in bars], color=[b[2] for b in bars])
    ax.bar_label(drawn, labels=[f"${b[1]:.2f}/h" for b in bars], fontsize=8, padding=2)
    ax.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=8)
    ax.set_ylabel("cluster cost ($/h)")
    ax.set_ylim(0, max(b[1] for b in bars) * 1.18 or 1.0)
    if param is not None:
        value = row["value"] * (1e3 if param in ("tpot", "ttft") else 1.0)
        title = f"{_LABELS[param]} = {value:g} (one value swept)"
    ax.set_title(title or "", fontsize=9)
    ax.grid(alpha=0.3, axis="y")


def cost(plan, path) -> Path:
    """cost.png of a plan without a sweep: its cost next to the verified best single type and
    the ILP-only figure, at the plan's SLO (labelled bars, no one-point curve)."""
    s, slo = plan.summary, plan.slo
    row = {"verified": bool(s.get("verified")), "cost": plan.cost_per_hour,
           "mix": "\n".join(f"{g.count} x {g.key}" for g in plan.groups if g.count),
           "baseline_cost": s.get("baseline_cost_per_hour"),
           "ilp_only_cost": s.get("ilp_only_cost_per_hour", plan.cost_per_hour)}
    bounds = [f"{k} <= {slo[f'{k.lower()}_s'] * 1e3:g} ms" for k in ("TTFT", "TPOT")
              if slo.get(f"{k.lower()}_s") is not None]
    fig = _figure(width=5.5, height=3.8)
    _point_bars(fig.add_subplot(), row, None,
                f"Cost at {', '.join(bounds)}, {slo.get('attainment_target', 0.9):.0%} attainment")
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
