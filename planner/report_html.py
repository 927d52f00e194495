"""report.html of a plan: the verified deployment, how it was proved, and its plots, in one file.

The same kind of page as a run's (goodput.sim.report_html, whose helpers it uses): headline cards
(verified or NOT proved, cost, GPUs, attainment), the plan per instance type, the cost figures
with the ILP-only one labelled so, every verification round, attainment per slice and per type,
the measured capacities, the frontier when swept, the plots embedded, and provenance (goodput
version, commit, a hash of the planning inputs, the trace). Self-contained, so a plan can be
reviewed from the one file.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from goodput.planner.pipeline import PlanOutcome
from goodput.sim.report_html import (
    REPORT,
    card,
    fmt,
    image,
    kv_table,
    page,
    row,
    section,
    table,
    write_atomic,
)

#: the PNGs goodput.planner.report.write_outputs draws, in the order the page shows them
PLOTS = ("cost.png", "frontier.png", "load_per_type.png", "attainment_per_slice.png")


def inputs_hash(plan) -> str:
    """SHA-256 of what the plan was asked for (model, SLO, edges, scheduler, cost model, solver,
    seed, trace record): the same request gives the same hash, whatever was measured."""
    keys = ("model", "slo", "input_edges", "output_edges", "slice_factor", "scheduler",
            "cost_model", "solver", "trace", "seed")
    d = {k: getattr(plan, k) for k in keys}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def _frame(df, max_rows: int = 200) -> str:
    """A DataFrame as a table (first ``max_rows`` rows, and a line saying how many were left)."""
    if df is None or len(df) == 0:
        return "<p>—</p>"
    shown = df.head(max_rows)
    rows = [[v.item() if hasattr(v, "item") else v for v in r] for r in shown.itertuples(index=False)]
    more = f"<p>{len(df) - max_rows:,} more rows in the CSV.</p>" if len(df) > max_rows else ""
    return table([str(c) for c in df.columns], rows) + more


def _groups(plan) -> str:
    rows = [[g.key, g.gpu, g.tp, g.count, g.count * g.tp, g.price_per_hour * g.count, g.load,
             g.load / g.count if g.count else 0.0, len(g.slices)] for g in plan.groups]
    rows.append(["total", "", None, sum(g.count for g in plan.groups), plan.gpus,
                 plan.cost_per_hour, None, None, None])
    return table(("type", "GPU", "TP", "instances", "GPUs", "$/h", "planned load", "utilisation",
                  "slices"), rows)


def _costs(out: PlanOutcome) -> str:
    s, b = out.plan.summary, out.baseline
    base = (f"best single type {s.get('baseline_type') or b.get('type') or '?'} "
            + ("(verified)" if s.get("baseline_cost_per_hour") is not None else "(NOT proved)"))
    rows: list[tuple[str, object]] = [
        ("plan, verified" if out.verified else "plan (NOT proved)", out.plan.cost_per_hour),
        (base, s.get("baseline_cost_per_hour")),
        ("ILP only, before re-simulation (not a verified figure)", out.ilp_cost),
        ("savings, verified plan vs verified best single type",
         None if s.get("savings") is None else f"{s['savings']:.1%}")]
    prices: list[tuple[str, object]] = [(f"price {g}", f"${p['usd_per_gpu_hour']:.2f}/GPU-h ({p['source']})")
              for g, p in (s.get("prices") or {}).items()]
    return table(("figure", "$/h"), rows + prices)


def plan_report(out: PlanOutcome, dest: Path, front=None) -> str:
    """The HTML page of plan ``out`` whose files (CSVs, PNGs) are in ``dest``."""
    from goodput.sim.provenance import git_commit, goodput_version

    plan, check = out.plan, out.check
    slo = plan.slo
    cards = "".join([
        card("verdict", "verified by simulation" if out.verified else
             ("NOT proved" if check is not None else "ILP only (not simulated)"),
             out.verified if check is not None else None),
        card("cluster cost", f"${plan.cost_per_hour:.2f}/h"),
        card("GPUs", f"{plan.gpus}"),
        card(f"simulated attainment (target {slo.get('attainment_target', 0.9):.0%})",
             f"{check.attainment:.1%}" if check is not None else "—",
             check.meets_target if check is not None else None)])
    parts = [f"<div class=\"cards\">{cards}</div>",
             section("Plan", _groups(plan)),
             row(section("Cost", _costs(out)),
                 section("Request", kv_table({"model": plan.model, "slo": slo,
                                              "trace": plan.trace, "seed": plan.seed}))),
             section("Verification rounds", _frame(_rounds(plan)))]
    if check is not None:
        parts.append(row(section("Attainment per slice", _frame(check.per_slice)),
                         section("Attainment per instance type", _frame(check.per_type))))
    if out.designs is not None and len(out.designs):
        cols = ["design", "cost", "attainment", "verified", "status", "estimate_cost",
                "lower_bound_cost", "mix", "why"]
        parts.append(section("Designs searched (cost verified by simulation; estimate and lower "
                             "bound are ILP-only screen figures)", _frame(out.designs[cols])))
    if front is not None and len(front):
        parts.append(section("Cost frontier (each point re-simulated)", _frame(front)))
    burst = plan.summary.get("burst") or out.burst
    if burst:
        parts.append(section("Burstiness", kv_table(dict(burst))))
    parts.append(section("Measured capacities (req/s per instance)", _frame(out.capacities)))
    plots = [dest / name for name in PLOTS if (dest / name).exists()]
    if plots:
        parts.append(section("Plots", *(image(p, p.stem) for p in plots)))
    prov = [("goodput version", goodput_version()), ("commit", git_commit()),
            ("planning inputs sha256", inputs_hash(plan)), ("solver", fmt(plan.solver)),
            ("scheduler", fmt(plan.scheduler)), ("cost model", fmt(plan.cost_model)),
            *((f"trace {k}", fmt(v)) for k, v in plan.trace.items())]
    parts.append(section("Provenance", table(("field", "value"), prov)))
    bounds = ", ".join(f"{k.upper()} <= {slo[f'{k}_s'] * 1e3:g} ms" for k in ("ttft", "tpot")
                       if slo.get(f"{k}_s") is not None)
    subtitle = (f"{plan.model}, {bounds}, {slo.get('attainment_target', 0.9):.0%} of requests | "
                f"trace {plan.trace.get('source', '?')}")
    return page("goodput plan", subtitle, parts, goodput_version())


def _rounds(plan):
    import pandas as pd

    return pd.DataFrame(plan.verification) if plan.verification else None


def write_plan_report(out: PlanOutcome, dest: Path, front=None) -> Path:
    """``dest/report.html`` (written through a temporary file: never half a page)."""
    return write_atomic(Path(dest) / REPORT, plan_report(out, Path(dest), front))
