"""Simulate, then derive metrics, summary, files and plots: what ``goodput simulate`` prints."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from sim.config import SimConfig, to_dict
from sim.engine.tbt import percentile_from_hist
from sim.metrics import SLO, request_metrics, save_results, summarize
from sim.outputs import check_replaceable, folder_lock, staged_folder
from sim.simulator import SimResult, simulate


def slo_of(cfg: SimConfig) -> SLO:
    return SLO(cfg.slo.ttft_s, cfg.slo.tpot_s, cfg.slo.attainment_target)


def token_level_summary(result: SimResult) -> dict:
    """Time-between-tokens over every generated token, decode stalls and migrations."""
    hist = result.tbt_hist
    inst = result.instances
    pct = {f"tbt_p{q}_s": percentile_from_hist(hist, q) if hist is not None else None
           for q in (50, 90, 99)}
    out: dict = {k: (None if v is None or v != v else v) for k, v in pct.items()}
    out["decode_stall_s"] = float(inst["decode_stall_s"].sum()) if "decode_stall_s" in inst else 0.0
    out["stall_iterations"] = int(inst["stall_iterations"].sum()) if "stall_iterations" in inst else 0
    out["swaps"] = int(inst["swaps"].sum()) if "swaps" in inst else 0
    out["migrations"] = result.migration
    return out


def pool_summary(result: SimResult) -> dict:
    """Disaggregated pools: where completed requests' time to a decoding batch went (queueing,
    prefill, KV hand-off including any wait for decode room), KV bytes moved, the busiest link."""
    q = result.requests
    done = q[(q["outcome"] == "completed") & q["kv_landed_s"].notna()]

    def stats(x) -> dict:
        x = np.asarray(x, dtype=float)
        if not len(x):
            return {"mean": None, "p50": None, "p99": None}
        return {"mean": float(x.mean()), "p50": float(np.percentile(x, 50)),
                "p99": float(np.percentile(x, 99))}

    links = result.links
    busiest = (links.sort_values("utilisation", ascending=False).iloc[0].to_dict()
               if links is not None and len(links) else None)
    return {**result.kv_transfer, "handed_off": len(done),
            "queue_s": stats(done["first_scheduled_s"] - done["arrival_s"]),
            "prefill_s": stats(done["first_token_s"] - done["first_scheduled_s"]),
            "kv_handoff_s": stats(done["kv_landed_s"] - done["kv_handoff_s"]),
            "busiest_link": busiest}


def run_and_report(cfg: SimConfig, trace, count: int | None = None) -> SimResult:
    """Run one simulation; fill ``result.summary``; write files and plots if ``output.dir`` is set
    (all at once when complete: see sim.outputs)."""
    if not cfg.output.dir:
        return _run(cfg, trace, count)
    with folder_lock(Path(cfg.output.dir)):  # a second run on this folder is refused, not raced
        check_replaceable(Path(cfg.output.dir))  # before simulating, not after
        return _run(cfg, trace, count)


def _run(cfg: SimConfig, trace, count: int | None) -> SimResult:
    result = simulate(cfg, trace, count)
    result.requests = request_metrics(result.requests)
    slo = slo_of(cfg)
    result.summary = summarize(result.requests, result.timeseries, result.instances,
                               result.sim_duration_s, slo)
    result.summary["tokens"] = token_level_summary(result)
    if result.kv_transfer:
        result.summary["disaggregation"] = pool_summary(result)
    result.summary["cost_model"] = result.cost_sources
    result.summary["wall_s"] = result.wall_s
    if cfg.output.dir:
        with staged_folder(Path(cfg.output.dir)) as out:
            save_results(out, result.requests, result.timeseries, result.instances, result.summary,
                         csv=cfg.output.csv)
            (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
            if result.links is not None:
                result.links.to_csv(out / "links.csv", index=False)
            if cfg.output.plots:
                from sim.plots import save_all_plots
                save_all_plots(out, result.requests, result.timeseries, slo)
            trace_file = Path(cfg.output.trace_events) if cfg.output.trace_events else None
            if trace_file is not None and trace_file.parent.resolve() == Path(cfg.output.dir).resolve():
                os.replace(trace_file, out / trace_file.name)  # published with the other results
    return result
