"""Prove a plan: re-simulate the mixed cluster on a trace and report SLO attainment.

``simulate_plan`` builds one instance group per plan type (named by the type key, which the
size-aware router matches), runs ``goodput.sim.run.run_and_report`` with the plan's SLO, scheduler and
cost-model settings, and breaks attainment down per slice bucket and per instance type, so a
shortfall points at where capacity is missing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from goodput.planner.errors import PlannerError
from goodput.planner.plan import Plan
from goodput.planner.routing import router_for
from goodput.planner.slices import labels_for


@dataclass
class PlanCheck:
    attainment: float
    target: float
    per_slice: pd.DataFrame  # bucket, requests, met, attainment
    per_type: pd.DataFrame  # type, instances, requests, attainment, busy_fraction
    summary: dict = field(repr=False, default_factory=dict)
    #: the simulated requests with their bucket, the type that served them and slo_met
    requests: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)

    @property
    def meets_target(self) -> bool:
        return self.attainment >= self.target

    def text(self) -> str:
        lines = [f"simulated attainment {self.attainment:.1%} (target {self.target:.0%}): "
                 f"{'meets' if self.meets_target else 'MISSES'} the SLO target"]
        lines.append(self.per_type.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        return "\n".join(lines)


def plan_config(plan: Plan, seed: int | None = None, out_dir: str | Path = "", plots: bool = False):
    from goodput.sim.config import CostModelConfig, InstanceGroupConfig, SchedulerConfig, SimConfig, from_dict

    cfg = SimConfig(
        cluster=[InstanceGroupConfig(model=plan.model, gpu=g.gpu, tp=g.tp, count=g.count,
                                     name=g.key, role=g.role) for g in plan.groups],
        scheduler=from_dict(SchedulerConfig, plan.scheduler, "scheduler"),
        cost_model=from_dict(CostModelConfig, plan.cost_model, "cost_model"),
        seed=plan.seed if seed is None else seed)
    if plan.disaggregated:  # prefill/decode pools: DistServe's dispatch, KV over the network
        from goodput.sim.config import NetworkConfig

        cfg.network = from_dict(NetworkConfig, plan.network, "network")
        cfg.router.name = "least_outstanding_tokens"
    else:
        cfg.router.name = router_for(plan)
    cfg.router.seed = cfg.seed
    cfg.slo.ttft_s = plan.slo.get("ttft_s")
    cfg.slo.tpot_s = plan.slo.get("tpot_s")
    cfg.slo.attainment_target = plan.slo.get("attainment_target", 0.9)
    cfg.output.dir = str(out_dir) if out_dir else ""
    cfg.output.plots = plots
    cfg.output.timeseries_interval_s = 5.0
    return cfg


def _load(trace, rate: float | None, seed: int):
    if hasattr(trace, "df") or isinstance(trace, pd.DataFrame):
        return trace
    from goodput.sim.config import TraceConfig
    from goodput.sim.inputs import build_trace

    tr, _ = build_trace(TraceConfig(path=str(trace), rate=rate), seed)
    return tr


def simulate_plan(plan: Plan, trace, seed: int | None = None, rate: float | None = None,
                  max_requests: int | None = None, out_dir: str | Path = "",
                  plots: bool = False) -> PlanCheck:
    """Re-simulate ``plan`` on ``trace`` (Trace, DataFrame or path; ``rate`` for length-only files)."""
    from goodput.sim.run import run_and_report

    seed = plan.seed if seed is None else seed
    tr = _load(trace, rate, seed)
    df = tr.df if hasattr(tr, "df") else tr
    if max_requests is not None:
        df = df.iloc[:max_requests]
    if len(df) == 0:
        raise PlannerError("simulate_plan: the trace has no requests")
    cfg = plan_config(plan, seed, out_dir, plots)
    result = run_and_report(cfg, df, len(df))
    req = result.requests
    met = _met(req, plan)
    buckets = labels_for(req, plan.input_edges, plan.output_edges)
    per_slice = (pd.DataFrame({"bucket": buckets, "met": met}).groupby("bucket", sort=False)["met"]
                 .agg(requests="size", met="sum").reset_index())
    per_slice["attainment"] = per_slice["met"] / per_slice["requests"]
    inst = result.instances[["instance", "group", "busy_s"]]
    joined = pd.DataFrame({"instance": req["instance"].to_numpy(), "met": met}).merge(
        inst, on="instance", how="left")
    met_by_type = joined.groupby("group")["met"].agg(requests="size", attainment="mean")
    dur = max(result.sim_duration_s, 1e-12)
    busy = inst.groupby("group").agg(instances=("instance", "size"), busy_s=("busy_s", "mean"))
    per_type = busy.join(met_by_type, how="left").fillna({"requests": 0})
    per_type["busy_fraction"] = per_type.pop("busy_s") / dur
    per_type = per_type.reset_index().rename(columns={"group": "type"})
    req = req.assign(bucket=buckets, type=joined["group"].to_numpy(), slo_met=met)
    return PlanCheck(float(result.summary["slo"]["attainment"]),
                     float(cfg.slo.attainment_target), per_slice, per_type, result.summary, req)


def _met(req: pd.DataFrame, plan: Plan):
    from goodput.sim.metrics import SLO, slo_met

    slo = SLO(plan.slo.get("ttft_s"), plan.slo.get("tpot_s"), plan.slo.get("attainment_target", 0.9))
    return slo_met(req, slo).to_numpy()
