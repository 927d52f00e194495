"""Disaggregated prefill/decode pools as designs of the design search (goodput.planner.design_search).

A disaggregated design (DistServe, Splitwise) serves prompts on prefill instances and decodes on
decode instances, KV moved over the modelled network. Its capacities are per phase, not per
request slice, so it is screened apart from the colocated designs:

* **Phase capacities** of one instance of every (GPU, TP) in ``--gpus`` x ``--tp``, measured by
  goodput.planner.placement (prefill: TTFT attainment on the trace's prompts; decode: TPOT attainment fed
  by the best prefill candidate), at the planner's ``--rel-tol``, in parallel.
* **Cheapest pair** for the planned rate R: every prefill candidate p with every decode
  candidate d, ceil(R / cap_p) and ceil(R / cap_d) instances, priced per GPU (a prefill on one GPU
  type and decodes on another is allowed). At the measured capacities (rates that passed) this
  is the design's *estimate*; at each search's smallest failing rate it is its *bound*. The
  finalist uses the measured capacities themselves and verification only adds instances, so its
  verified cost is never below the bound.
* **Proof**: the plan (two groups, roles prefill and decode) is re-simulated on the planning
  trace with its own timestamps (goodput.planner.verify.simulate_plan); while attainment is short, one
  instance is added to the phase whose bound is met less often (TTFT: prefill, TPOT: decode),
  within availability and the power budget, for at most ``--verify-rounds`` rounds.

Scheduler sections (Sarathi budget, speculation) are not applied to pools: the placement search
takes the batching policy alone, so a disaggregated design is one per policy.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from goodput.planner.assemble import PlanOptions, trace_meta
from goodput.planner.errors import PlannerError
from goodput.planner.parallel import run_parallel
from goodput.planner.placement_types import PhaseCapacity
from goodput.planner.plan import Plan, PlanGroup

KV_TRANSFER = "layer_by_layer"


@dataclass
class Pair:
    prefill: PhaseCapacity
    decode: PhaseCapacity
    n_prefill: int
    n_decode: int
    cost: float  # $/h


@dataclass
class DisaggScreen:
    prefill: list[PhaseCapacity]
    decode: list[PhaseCapacity]
    estimate: Pair | None  # cheapest pair at measured capacities
    bound: Pair | None  # cheapest pair at the smallest failing rates

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([{"bucket": f"phase:{c.phase}", "type": f"{c.gpu}-tp{c.tp}",
                              "rate": c.rate, "limit": c.limit, "probes": len(c.probes),
                              "cost_source": ""} for c in self.prefill + self.decode])


def _task(opts: PlanOptions, policy: str, prefill_gpu: str, decode_gpu: str, lengths):
    from goodput.planner.placement import PlacementTask

    return PlacementTask(
        model=opts.model, prefill_gpu=prefill_gpu, decode_gpu=decode_gpu, lengths=lengths,
        ttft_s=opts.ttft_s, tpot_s=opts.tpot_s or 1e9, attainment=opts.attainment_target,
        policy=policy, cost_model=str(opts.cost_model.get("kind", "auto")),
        kv_transfer=KV_TRANSFER, min_requests=min(opts.min_probe_requests, opts.max_probe_requests),
        max_requests=opts.max_probe_requests, rel_tol=opts.rel_tol, seed=opts.seed)


def _prefill_job(item) -> PhaseCapacity:
    from goodput.planner.placement import prefill_capacity

    task, tp = item
    return prefill_capacity(task, tp)


def _decode_job(item) -> PhaseCapacity:
    from goodput.planner.placement import decode_capacity

    task, tp, feed = item
    return decode_capacity(task, tp, feed)


def phase_upper(c: PhaseCapacity, target: float) -> float:
    """Smallest probed rate above the capacity that failed (inf: none; 0: no probe at all)."""
    if c.rate <= 0 and not c.probes:
        return 0.0
    failed = [float(p[0]) for p in c.probes
              if p[0] > c.rate and (p[1] is None or p[1] < target)]
    return min(failed) if failed else math.inf


def cheapest(prefill: list[PhaseCapacity], decode: list[PhaseCapacity], rate: float,
             price: dict[str, float], cap_of: Callable[[PhaseCapacity], float]) -> Pair | None:
    """The cheapest (prefill, decode) pair carrying ``rate`` at capacities ``cap_of`` (ties:
    fewer GPUs)."""
    best: Pair | None = None
    for p in prefill:
        for d in decode:
            cp, cd = cap_of(p), cap_of(d)
            if cp <= 0 or cd <= 0:
                continue
            n_p = max(1, math.ceil(rate / cp * (1 - 1e-9)))
            n_d = max(1, math.ceil(rate / cd * (1 - 1e-9)))
            cost = n_p * price[p.gpu] * p.gpus + n_d * price[d.gpu] * d.gpus
            gpus = n_p * p.gpus + n_d * d.gpus
            if best is None or (cost, gpus) < (best.cost - 1e-9,
                                               best.n_prefill * best.prefill.gpus
                                               + best.n_decode * best.decode.gpus):
                best = Pair(p, d, n_p, n_d, cost)
    return best


def screen_disagg(trace, opts: PlanOptions, policy: str, rate: float,
                  log: Callable = lambda s: None) -> DisaggScreen:
    """Phase capacities of every (GPU, TP), then the estimate and bound pairs (module doc)."""
    from goodput.planner.prices import price_of
    from goodput.sim.catalog import get_gpu

    df = trace.df if hasattr(trace, "df") else trace
    lengths = df[["prompt_tokens", "output_tokens"]].to_numpy(dtype=np.int64)
    gpus = [get_gpu(g).name for g in opts.gpus]
    price = {g: price_of(get_gpu(g), opts.prices)[0] for g in gpus}
    label = "disaggregated phase capacities" if opts.progress else None
    pre = run_parallel(_prefill_job, [(_task(opts, policy, g, g, lengths), tp)
                                      for g in gpus for tp in opts.tps],
                       opts.backend, opts.workers, progress=label)
    feed = max(pre, key=lambda c: c.rate)
    if feed.rate <= 0:
        raise PlannerError(f"disaggregated {policy}: no prefill instance meets the TTFT bound "
                           f"({'; '.join(f'{c.name}: {c.limit}' for c in pre)})")
    dec = run_parallel(_decode_job, [(_task(opts, policy, feed.gpu, g, lengths), tp, feed)
                                     for g in gpus for tp in opts.tps],
                       opts.backend, opts.workers, progress=label)
    for c in pre + dec:
        log(f"disaggregated {policy}: {c.phase} {c.name}: {c.rate:.3f} req/s per instance"
            + (f" ({c.limit})" if c.limit else ""))
    target = opts.attainment_target
    est = cheapest(pre, dec, rate, price, lambda c: c.rate)
    bound = cheapest(pre, dec, rate, price, lambda c: min(phase_upper(c, target), 1e9))
    return DisaggScreen(pre, dec, est, bound)


def pair_plan(pair: Pair, opts: PlanOptions, policy: str, price: dict[str, float], slicing,
              meta: dict) -> Plan:
    groups = [PlanGroup(pair.prefill.gpu, pair.prefill.tp, pair.n_prefill,
                        price[pair.prefill.gpu] * pair.prefill.gpus, role="prefill"),
              PlanGroup(pair.decode.gpu, pair.decode.tp, pair.n_decode,
                        price[pair.decode.gpu] * pair.decode.gpus, role="decode")]
    sched = {k: v for k, v in opts.scheduler.items() if k not in ("speculation", "policy")}
    return Plan(model=opts.model, slo={"ttft_s": opts.ttft_s, "tpot_s": opts.tpot_s,
                                       "attainment_target": opts.attainment_target},
                groups=groups, slices=[], input_edges=list(slicing.input_edges),
                output_edges=list(slicing.output_edges), slice_factor=slicing.slice_factor,
                scheduler={**sched, "policy": policy}, cost_model=dict(opts.cost_model),
                trace=meta, seed=opts.seed,
                network={"kv_transfer": KV_TRANSFER, "decode_dispatch": "least_loaded"},
                solver={"name": "pair enumeration (goodput.planner.design_disagg)", "status": "Optimal"})


def _phase_short(check, plan: Plan) -> str:
    """'prefill' when TTFT is met less often than TPOT, else 'decode'."""
    from goodput.sim.metrics import SLO, slo_met

    req = check.requests
    ttft = float(slo_met(req, SLO(plan.slo["ttft_s"], None)).mean())
    tpot = float(slo_met(req, SLO(None, plan.slo["tpot_s"])).mean())
    return "prefill" if ttft < tpot else "decode"


def _fits(plan: Plan, opts: PlanOptions, tdp: dict[str, float]) -> bool:
    for gpu, limit in (opts.availability or {}).items():
        if sum(g.tp * g.count for g in plan.groups if g.gpu.lower() == gpu.lower()) > limit:
            return False
    if opts.power_budget_w is not None:
        return sum(tdp[g.gpu] * g.tp * g.count for g in plan.groups) <= opts.power_budget_w
    return True


def prove_disagg(plan: Plan, trace, opts: PlanOptions, log: Callable = lambda s: None):
    """Re-simulate, adding one instance to the short phase per round (module docstring)."""
    from goodput.planner.verify import simulate_plan
    from goodput.sim.catalog import get_gpu

    tdp = {g.gpu: get_gpu(g.gpu).tdp_w for g in plan.groups}
    history: list[dict] = []
    best = None
    action = "cheapest pair at measured phase capacities"
    for i in range(opts.verify_rounds + 1):
        check = simulate_plan(plan, trace, opts.seed, max_requests=opts.verify_requests)
        history.append({"round": i, "action": action,
                        "cost_per_hour": round(plan.cost_per_hour, 4),
                        "instances": {g.key: g.count for g in plan.groups},
                        "attainment": round(check.attainment, 6),
                        "meets_target": bool(check.meets_target)})
        log(f"verify: round {i}: {action}: ${plan.cost_per_hour:.2f}/h, attainment "
            f"{check.attainment:.1%}")
        if check.meets_target:
            return replace(plan, verification=history), check
        if best is None or check.attainment > best[1].attainment:
            best = (plan, check)
        phase = _phase_short(check, plan)
        grown = replace(plan, groups=[replace(g, count=g.count + (g.role == phase))
                                      for g in plan.groups])
        if not _fits(grown, opts, tdp):
            break
        plan, action = grown, f"one more {phase} instance"
    assert best is not None
    return replace(best[0], verification=history), best[1]


def finalist_disagg(trace, opts: PlanOptions, policy: str, scr: DisaggScreen,
                    log: Callable = lambda s: None):
    """The estimate pair as a plan, proved; a PlanOutcome like make_plan's."""
    from goodput.planner.ilp import InstanceType
    from goodput.planner.pipeline import PlanOutcome, plan_summary, planning_slices
    from goodput.planner.prices import price_of
    from goodput.sim.catalog import get_gpu

    if scr.estimate is None:
        raise PlannerError(f"disaggregated {policy}: no prefill + decode pair meets the SLO")
    slicing, burst = planning_slices(trace, opts)
    specs = {g: get_gpu(g) for g in opts.gpus}
    price = {s.name: price_of(s, opts.prices)[0] for s in specs.values()}
    plan = pair_plan(scr.estimate, opts, policy, price, slicing, trace_meta(trace, slicing))
    plan, check = prove_disagg(plan, trace, opts, log)
    types = [InstanceType(s.name, 1, price[s.name], s.tdp_w) for s in specs.values()]
    out = PlanOutcome(plan, check, scr.table(), slicing, types, {}, {},
                      ilp_cost=scr.estimate.cost, burst=burst)
    out.plan = replace(plan, summary={**plan_summary(out, opts), "burst": dict(burst)})
    return out
