"""The frontier: verified cost against the TTFT/TPOT bounds and against the attainment target.

``frontier`` re-plans at every point (capacities cached, so points that share an SLO are cheap)
and proves each point by simulation exactly as ``goodput plan`` does: a row's ``cost`` is the
verified plan's, ``ilp_only_cost`` is the ILP's before any re-simulation (labelled so), and
``verified`` says whether the point met its target. A bound no configuration can meet for some
slice is a row with the reason in ``note``, not dropped silently.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pandas as pd

from goodput.planner.assignments import parse_assignments
from goodput.planner.errors import PlannerError
from goodput.planner.pipeline import PlanOptions, make_plan

#: sweep parameter -> PlanOptions field
PARAMS = {"tpot": "tpot_s", "ttft": "ttft_s", "attainment": "attainment_target"}


def parse_sweeps(items: list[str] | None) -> dict[str, list[float]]:
    """``['tpot=0.04,0.08', 'attainment=0.8,0.95']`` -> {'tpot': [...], 'attainment': [...]}."""
    out: dict[str, list[float]] = {}
    for k, got in parse_assignments(items, "--sweep", PARAMS, "parameter", "PARAM").items():
        try:
            out[k] = [float(x) for x in got]
        except ValueError:
            raise PlannerError(f"--sweep {k}: cannot parse {','.join(got)!r} as comma-separated "
                               "numbers") from None
    return out


def frontier(trace, opts: PlanOptions, sweeps: dict[str, list[float]],
             log: Callable = lambda s: None, known: dict | None = None) -> pd.DataFrame:
    """One verified plan per (parameter, value); ``known`` maps (param, value) to an outcome."""
    rows = []
    for param, values in sweeps.items():
        for v in sorted(set(values)):
            o = replace(opts, verify_baseline=True)
            setattr(o, PARAMS[param], v)
            row = {"param": param, "value": v, "cost": np.nan, "attainment": np.nan,
                   "verified": False, "ilp_only_cost": np.nan, "baseline_cost": np.nan,
                   "baseline_type": "", "mix": "", "note": ""}
            try:
                out = (known or {}).get((param, v)) or make_plan(trace, o, log)
            except PlannerError as exc:
                row["note"] = str(exc)
                rows.append(row)
                continue
            s = out.plan.summary
            row.update(cost=out.plan.cost_per_hour, verified=out.verified,
                       attainment=out.check.attainment if out.check is not None else np.nan,
                       ilp_only_cost=out.ilp_cost, baseline_type=s.get("baseline_type") or "",
                       mix=" + ".join(f"{g.count} {g.key}" for g in out.plan.groups))
            if s.get("baseline_cost_per_hour") is not None:
                row["baseline_cost"] = s["baseline_cost_per_hour"]
            if not out.verified:
                row["note"] = "not proved within the budget"
            log(f"frontier {param}={v:g}: ${row['cost']:.2f}/h verified={row['verified']} "
                f"(ILP only ${row['ilp_only_cost']:.2f}/h)")
            rows.append(row)
    return pd.DataFrame(rows)


def frontier_table(df: pd.DataFrame) -> str:
    cols = ["param", "value", "cost", "attainment", "verified", "baseline_cost", "ilp_only_cost",
            "mix", "note"]
    return df[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}")
