"""What ``goodput plan`` prints and writes: verified numbers as headlines, ILP-only ones labelled.

The headline cost, the savings, plan.yaml and the plots all describe the plan that survived
re-simulation (``PlanOutcome.plan``); the ILP's cost before re-simulation appears once, on a line
that says "ILP only". Savings are between two verified plans (the mix and the best single type,
proved the same way); when either is not proved, no savings figure is printed.
"""
from __future__ import annotations

from pathlib import Path

from goodput.planner.pipeline import PlanOutcome


def headline(out: PlanOutcome) -> str:
    plan, s = out.plan, out.plan.summary
    lines = ["", "plan:" if out.check is None else
             ("plan (verified by simulation):" if out.verified else "plan (NOT proved):"),
             plan.table()]
    if s.get("design"):
        d = s["design"]
        lines.append(f"design: {d['name']} (the cheapest verified of {d['designs_searched']} "
                     f"searched, {d['finalists']} proved in full; designs.csv lists them all)")
    if s.get("prices"):
        lines.append("prices: " + "; ".join(f"{g} ${p['usd_per_gpu_hour']:.2f}/GPU-h "
                                            f"({p['source']})" for g, p in s["prices"].items()))
    b = out.baseline
    ilp = (f"ILP only (before re-simulation, not a verified figure): mix ${out.ilp_cost:.2f}/h"
           + (f", best single type {b['type']} ${b['ilp_cost']:.2f}/h" if b else ""))
    lines.append(ilp)
    if out.check is not None:
        for v in plan.verification:
            lines.append(f"verification round {v['round']}: {v['action']} -> "
                         f"${v['cost_per_hour']:.2f}/h, attainment {v['attainment']:.1%}")
        lines.append(out.check.text())
    if s.get("baseline_cost_per_hour") is not None:
        lines.append(f"baseline (verified): best single type {s['baseline_type']} "
                     f"${s['baseline_cost_per_hour']:.2f}/h at {s['baseline_attainment']:.1%}")
    elif b.get("check") is not None:
        lines.append(f"baseline {b['type']}: NOT proved (best attainment "
                     f"{b['check'].attainment:.1%}); no verified savings figure")
    if s.get("savings") is not None:
        lines.append(f"savings (verified plan vs verified best single type): {s['savings']:.1%}")
    burst = s.get("burst") or out.burst
    if burst:
        lines.append(_burst_line(burst))
    return "\n".join(lines)


def _burst_line(b: dict) -> str:
    text = (f"burstiness: busiest {b['window_s']:g} s window at {b['peak_to_mean']:.2f}x the mean "
            f"rate; planned for {b['planned_rate']:.3f} req/s")
    if b.get("headroom") is not None:
        text += (f"; the plan has {b['headroom']:.2f}x headroom over its planned load at measured "
                 f"capacities")
    if b.get("busiest_window_attainment") is not None:
        text += f"; attainment in the busiest window {b['busiest_window_attainment']:.1%}"
    return text


def write_outputs(out: PlanOutcome, dest: Path, front=None, plots: bool = True) -> Path:
    """plan.yaml (the verified plan with its summary), CSVs, plots and report.html (the page a
    person opens: goodput.planner.report_html) under ``dest``."""
    from goodput.planner import plots as P
    from goodput.planner.report_html import write_plan_report

    out.plan.save(dest / "plan.yaml")
    out.capacities.to_csv(dest / "capacities.csv", index=False)
    if out.check is not None:
        out.check.per_slice.to_csv(dest / "attainment_per_slice.csv", index=False)
    if front is not None:
        front.to_csv(dest / "frontier.csv", index=False)
    if out.designs is not None:
        out.designs.to_csv(dest / "designs.csv", index=False)
    if plots:
        P.load_per_type(out.plan, dest / "load_per_type.png")
        if out.check is not None:
            P.attainment_per_slice(out.check.per_slice, out.check.target,
                                   dest / "attainment_per_slice.png",
                                   order=[s.bucket for s in out.plan.slices])
        if front is not None and len(front):
            P.frontier(front, dest / "frontier.png")
        else:  # no sweep: the plan's cost against the alternatives, as labelled bars
            P.cost(out.plan, dest / "cost.png")
    write_plan_report(out, dest, front)
    return dest
