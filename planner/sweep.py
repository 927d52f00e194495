"""Cost against SLO: the mixed and the best single-type cost at several TPOT bounds.

Each point re-measures capacities at that bound (cached, so repeated sweeps are cheap) and solves
the ILP; points are not re-simulated, so they are the ILP's costs before any capacity the
verification loop would add. A bound no configuration can meet for some slice is reported as a
missing point with the reason, not dropped silently.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pandas as pd

from planner.baselines import best_single_type
from planner.errors import PlannerError
from planner.ilp import solve
from planner.pipeline import PlanOptions, instance_types, measure_capacities, slice_inputs
from planner.slices import Slicing


def slo_sweep(slicing: Slicing, opts: PlanOptions, tpot_values, log: Callable = lambda s: None,
              known: dict | None = None) -> pd.DataFrame:
    """One row per TPOT bound; ``known`` maps a bound to (cap, reasons) already measured."""
    types, _ = instance_types(opts.model, opts.gpus, opts.tps, opts.scheduler)
    rows = []
    for v in sorted({float(x) for x in tpot_values}):
        o = replace(opts, tpot_s=v)
        if known and v in known:
            cap, reasons = known[v]
        else:
            cap, reasons, _ = measure_capacities(slicing, types, o, log)
        rates, scap, sreasons = slice_inputs(slicing, cap, reasons)
        row = {"tpot_s": v, "mixed_cost": np.nan, "single_cost": np.nan, "single_type": "",
               "note": ""}
        try:
            sol = solve(types, rates, scap, o.availability, o.power_budget_w, o.assignment,
                        o.solver, reasons=sreasons)
            row["mixed_cost"] = sol.cost_per_hour
            row["mix"] = " + ".join(f"{n} {g}" for g, n in sol.counts.items())
            best = best_single_type(types, rates, scap, o.availability, o.power_budget_w, o.solver)
            if best is not None:
                row["single_cost"], row["single_type"] = best[1].cost_per_hour, best[0].key
        except PlannerError as exc:
            row["note"] = str(exc)
        rows.append(row)
    return pd.DataFrame(rows)
