"""Savings of the mixed (Mélange) plan over the best single GPU type, in the style of Mélange.

Workloads, built from the shipped length distributions in ../shared/traces/ (arrivals synthesized,
Poisson, at each of --rates req/s, --requests requests, seed 0; the lengths are the same draws at
every rate, so capacities are measured once per workload and SLO):
  chat     short-context chat: ShareGPT lengths (sharegpt_8k_filtered_stats_llama2_tokenizer.csv)
  summ     long-context summarisation: arXiv lengths (arxiv_summarization_..._filtered_v2.csv)
  mix      80% chat / 20% summarisation lengths
SLOs: TPOT 40 ms and 120 ms, TTFT --ttft-slo (default 1 s), 90% attainment.
Both plans are proved the same way (planner.prove: re-simulated on the workload, searching
cheapest-first for a plan whose simulated attainment reaches 90%; the single-type search may only
use that type). Savings = 1 - mixed $/h / single-type $/h, after verification.

Usage: python benchmarks/plan_savings.py [--gpus l4,a10g,a100-80gb,h100] [--rates 4,16]
       [--requests 4000] [--workers 2] [--cache-dir DIR] [--verbose]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TRACES = REPO.parent / "shared" / "traces"
CHAT = TRACES / "sharegpt_8k_filtered_stats_llama2_tokenizer.csv"
SUMM = TRACES / "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv"


def workload(name: str, rate: float, n: int, seed: int = 0):
    from sim.workload import load_lengths, synthesize
    from sim.workload.lengths import Empirical

    chat = load_lengths(CHAT).to_numpy()
    summ = load_lengths(SUMM).to_numpy()
    if name == "chat":
        values = chat
    elif name == "summ":
        values = summ
    else:  # 80/20: resampling uniformly from 4 chat rows per summarisation row
        rng = np.random.default_rng(seed)
        values = np.vstack([chat[rng.integers(0, len(chat), 8000)],
                            summ[rng.integers(0, len(summ), 2000)]])
    trace = synthesize(n, rate, Empirical(values, source=name), seed=seed)
    trace.source = f"{name}@{rate:g}req/s"
    return trace


def single_type_verified(out, opts, trace, log):
    """The best single type, proved by the same search as the mix, restricted to that type."""
    from planner.baselines import best_single_type
    from planner.pipeline import build_plan, slice_inputs
    from planner.prove import prove

    rates, scap, _ = slice_inputs(out.slicing, out.cap, out.reasons)
    best = best_single_type(out.types, rates, scap)
    if best is None:
        return None, None, None
    t, sol = best
    plan = build_plan(out.slicing, [t], sol, out.cap, opts, out.plan.trace)
    plan, check = prove(plan, trace, out.slicing, [t], out.cap, out.reasons, opts, log)
    return t, plan, check


def _f(v, fmt: str) -> str:
    return "-" if v is None else fmt.format(v)


def run_one(wl: str, rate: float, tpot: float, trace, args, log) -> dict:
    from planner.baselines import savings
    from planner.pipeline import PlanOptions, make_plan

    t0 = time.perf_counter()
    opts = PlanOptions(model=args.model, ttft_s=args.ttft_slo, tpot_s=tpot,
                       gpus=args.gpus.split(","), workers=args.workers, cache_dir=args.cache_dir)
    out = make_plan(trace, opts, log)
    t, splan, scheck = single_type_verified(out, opts, trace, log)
    r = {"workload": wl, "rate": rate, "tpot": tpot,
         "mix": " + ".join(f"{g.count} {g.key}" for g in out.plan.groups),
         "mixed": out.plan.cost_per_hour, "mixed_att": out.check.attainment,
         "single_type": f"{splan.groups[0].count} {t.key}" if splan else "none",
         "single": splan.cost_per_hour if splan else None,
         "single_att": scheck.attainment if scheck else None}
    r["savings"] = savings(r["mixed"], r["single"])
    r["cost_models"] = dict(out.capacities.groupby("type")["cost_source"].first())
    print(f"{wl} {rate:g} req/s tpot={tpot * 1e3:g}ms: mixed {r['mix']} ${r['mixed']:.2f}/h "
          f"({r['mixed_att']:.1%}); single {r['single_type']} {_f(r['single'], '${:.2f}/h')} "
          f"({_f(r['single_att'], '{:.1%}')}); saved {_f(r['savings'], '{:.1%}')} "
          f"[{time.perf_counter() - t0:.0f} s]", flush=True)
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpus", default="l4,a10g,a100-80gb,h100")
    ap.add_argument("--model", default="llama-3.1-8b")
    ap.add_argument("--rates", default="4,16", help="req/s, comma-separated")
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--ttft-slo", type=float, default=1.0)
    ap.add_argument("--tpot-slos", default="0.04,0.12")
    ap.add_argument("--workloads", default="chat,summ,mix")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    if not (CHAT.exists() and SUMM.exists()):
        print(f"length files not found in {TRACES}", file=sys.stderr)
        return 2
    log = (lambda s: print(f"  [{s}]", flush=True)) if args.verbose else (lambda s: None)
    rows = []
    for wl in args.workloads.split(","):
        for rate in [float(x) for x in args.rates.split(",")]:
            trace = workload(wl, rate, args.requests)
            d = trace.df
            print(f"{wl}: {len(d)} requests, prompt mean {d.prompt_tokens.mean():.0f} (p90 "
                  f"{d.prompt_tokens.quantile(0.9):.0f}), output mean {d.output_tokens.mean():.0f} "
                  f"tokens, {trace.rate:.2f} req/s", flush=True)
            for tpot in [float(x) for x in args.tpot_slos.split(",")]:
                rows.append(run_one(wl, rate, tpot, trace, args, log))
    print("\n| workload | req/s | TPOT SLO | mixed plan | $/h | attain. | best single type | $/h "
          "| attain. | savings |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workload']} | {r['rate']:g} | {r['tpot'] * 1e3:g} ms | {r['mix']} | "
              f"{r['mixed']:.2f} | {r['mixed_att']:.1%} | {r['single_type']} | "
              f"{_f(r['single'], '{:.2f}')} | {_f(r['single_att'], '{:.1%}')} | "
              f"{_f(r['savings'], '{:.1%}')} |")
    sources = {}
    for r in rows:
        sources.update(r["cost_models"])
    print("\ncost models: " + "; ".join(f"{k}: {v}" for k, v in sorted(sources.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
