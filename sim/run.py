"""Simulate, then derive metrics, summary, files and plots: what ``goodput simulate`` prints.

The summary also carries ``provenance`` (what made the run: goodput.sim.provenance) and ``load``
(offered load against what the cluster processed, and the headroom beside busy time).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from goodput.sim.compound_metrics import compound_summary, write_steps
from goodput.sim.config import ConfigError, SimConfig, to_dict
from goodput.sim.engine.tbt import percentile_from_hist
from goodput.sim.metrics import PERCENTILES, SLO, _num, request_metrics, save_results, summarize
from goodput.sim.outputs import folder_lock, holds_results, staged_folder
from goodput.sim.prefix_metrics import prefix_summary
from goodput.sim.simulator import SimResult, simulate


def slo_of(cfg: SimConfig) -> SLO:
    return SLO(cfg.slo.ttft_s, cfg.slo.tpot_s, cfg.slo.attainment_target)


def token_level_summary(result: SimResult, percentiles=PERCENTILES) -> dict:
    """Time-between-tokens over every generated token, decode stalls and migrations."""
    hist = result.tbt_hist
    inst = result.instances
    pct = {f"tbt_p{q:g}_s": percentile_from_hist(hist, q) if hist is not None else None
           for q in percentiles}
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


def load_summary(result: SimResult, cfg: SimConfig, summary: dict) -> dict:
    """Offered load (prompt + output tokens per second of the trace's arrivals) against what the
    cluster processed, and the headroom beside busy time.

    ``busy`` only says an instance had *some* batch running; ``headroom`` estimates the share of
    batch capacity left unused: 1 - max(busy x mean batch when busy / max_batch_size, mean KV
    blocks used). A cluster busy 97% with 3 of 256 batch slots filled has ~99% headroom.
    """
    q = result.requests
    arrivals = q["arrival_s"].to_numpy(dtype=float)
    tokens = float(q["prompt_tokens"].astype(float).sum() + q["output_tokens"].astype(float).sum())
    span = float(arrivals.max() - arrivals.min()) if len(arrivals) > 1 else 0.0
    offered = tokens / span if span > 0 else None
    processed = summary["throughput"]["total_tok_per_s"]
    busy = summary["utilisation"]["mean_busy_fraction"]
    ts = summary["timeseries"]
    fill = (ts["mean_batch_size_when_busy"] / cfg.scheduler.max_batch_size
            if ts["mean_batch_size_when_busy"] is not None and cfg.scheduler.max_batch_size else None)
    used = [x for x in (busy * fill if busy is not None and fill is not None else None,
                        ts["kv_mean_used_fraction"]) if x is not None]
    return {"offered_req_per_s": _num(len(arrivals) / span) if span > 0 else None,
            "offered_tok_per_s": _num(offered) if offered is not None else None,
            "processed_tok_per_s": processed,
            "processed_fraction": (_num(processed / offered) if offered and processed is not None
                                   else None),
            "busy_fraction": busy, "batch_fill_when_busy": _num(fill) if fill is not None else None,
            "headroom": _num(min(1.0, max(0.0, 1.0 - max(used)))) if used else None}


def run_and_report(cfg: SimConfig, trace, count: int | None = None, *, force: bool = True,
                   provenance: dict | None = None, percentiles=PERCENTILES) -> SimResult:
    """Run one simulation; fill ``result.summary``; write files and plots if ``output.dir`` is set
    (all at once when complete: see goodput.sim.outputs).

    ``force=False`` refuses an ``output.dir`` that holds an earlier run's results (``goodput
    simulate`` without ``--force``); the default replaces them, as notebooks re-running a cell
    expect. ``provenance`` is the record of goodput.sim.provenance.collect (collected here if None);
    ``percentiles`` are the latency percentiles of the summary.
    """
    if not cfg.output.dir:
        return _run(cfg, trace, count, provenance, percentiles)
    out = Path(cfg.output.dir)
    with folder_lock(out):  # a second run on this folder is refused, not raced
        if holds_results(out) and not force:  # before simulating, not after
            raise existing_results_error(out)
        return _run(cfg, trace, count, provenance, percentiles)


def existing_results_error(out: Path) -> ConfigError:
    return ConfigError(f"output.dir {out}: holds the results of an earlier run; pass --force to "
                       "replace them, or give a new folder (--out)")


def _run(cfg: SimConfig, trace, count: int | None, provenance: dict | None,
         percentiles) -> SimResult:
    from goodput.sim.provenance import collect

    prov = provenance if provenance is not None else collect(cfg, trace)
    result = simulate(cfg, trace, count)
    result.requests = request_metrics(result.requests)
    slo = slo_of(cfg)
    result.summary = summarize(result.requests, result.timeseries, result.instances,
                               result.sim_duration_s, slo, percentiles=percentiles)
    result.summary["tokens"] = token_level_summary(result, percentiles)
    result.summary["load"] = load_summary(result, cfg, result.summary)
    compound = compound_summary(result.requests, result.steps, result.clients, cfg.slo,
                                result.sim_duration_s, percentiles)
    if compound is not None:  # sessions, closed loop, embed / rag requests (docs/compound.md)
        result.summary["compound"] = compound
    if result.kv_transfer:
        result.summary["disaggregation"] = pool_summary(result)
    if cfg.scheduler.section("prefix_cache").enabled:
        result.summary["prefix_cache"] = prefix_summary(result.requests, result.instances)
    result.summary["cost_model"] = result.cost_sources
    result.summary["wall_s"] = result.wall_s
    result.summary["provenance"] = {**prov, "cost_sources": result.cost_sources}
    if cfg.output.dir:
        with staged_folder(Path(cfg.output.dir)) as out:
            save_results(out, result.requests, result.timeseries, result.instances, result.summary,
                         csv=cfg.output.csv)
            (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
            if result.links is not None:
                result.links.to_csv(out / "links.csv", index=False)
            write_steps(out, result.steps, cfg.output.csv)
            if cfg.output.plots:
                from goodput.sim.plots import save_all_plots
                save_all_plots(out, result.requests, result.timeseries, slo,
                               cfg.output.timeseries_interval_s, result.instances)
            from goodput.sim.report_html import write_run_report

            write_run_report(out, result.summary)  # report.html: the tables and the plots above
            trace_file = Path(cfg.output.trace_events) if cfg.output.trace_events else None
            if trace_file is not None and trace_file.parent.resolve() == Path(cfg.output.dir).resolve():
                os.replace(trace_file, out / trace_file.name)  # published with the other results
    return result
