"""Savings of the mixed (Mélange) plan over the best single GPU type, in the style of Mélange.

Workloads, built from real length distributions in ../shared/traces/ (arrivals synthesized,
Poisson, at each of --rates req/s, --requests requests, seed 0; the lengths are the same draws at
every rate, so capacities are measured once per workload and SLO):
  chat     short-context chat: --chat sharegpt (ShareGPT lengths, sharegpt_8k_filtered_...csv,
           prompt mean 2,340 tokens) or --chat azure-conv (the Azure LLM inference conversation
           trace's lengths, AzureLLMInferenceTrace_conv.csv, prompt mean 1,155: the most chat-like
           and shortest-prompt real file there)
  summ     long-context summarisation: arXiv lengths (arxiv_summarization_..._filtered_v2.csv)
  mix      80% chat / 20% summarisation lengths
Requests longer than the model's context (prompt + output > max_context) are dropped before
sampling (the count is printed): an engine rejects them, so no GPU mix could serve them.
SLOs: TPOT 40 ms and 120 ms, TTFT --ttft-slo (default 1 s), 90% attainment.
Both plans are proved the same way by make_plan (goodput.planner.prove: re-simulated on the workload,
converging on a plan whose simulated attainment reaches 90%; the single-type proof may only use
that type). Savings = 1 - mixed $/h / single-type $/h, both after verification.

Prices: the catalog's unless --price GPU=USD (repeatable) or --prices FILE (goodput.planner.prices).
--melange is Mélange's setting (Griggs et al. 2024): Llama-2-7B, Azure conversation lengths for
chat, and Mélange's published prices A10G $1.01/h, A100-80GB $3.67/h (L4 and H100 keep the
catalog's $0.80/h and $6.88/h unless --price sets them).

Usage: python benchmarks/plan_savings.py [--melange] [--gpus l4,a10g,a100-80gb,h100]
       [--model M] [--chat sharegpt|azure-conv] [--price GPU=USD ...] [--prices FILE]
       [--rates 4,16] [--requests 4000] [--cost-model auto|roofline] [--workers 2]
       [--cache-dir DIR] [--verbose]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TRACES = REPO.parent / "shared" / "traces"
CHATS = {"sharegpt": TRACES / "sharegpt_8k_filtered_stats_llama2_tokenizer.csv",
         "azure-conv": TRACES / "AzureLLMInferenceTrace_conv.csv"}
SUMM = TRACES / "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv"
#: Mélange's published per-GPU-hour prices (Griggs et al. 2024); the other GPUs keep the catalog's
MELANGE_PRICES = ("a10g=1.01", "a100-80gb=3.67")
#: the savings over the best single GPU type Mélange reports per workload (its abstract: up to
#: 77% conversational, 33% document, 51% mixed; the issue quotes the ranges)
MELANGE_SAVINGS = {"chat": "9-77%", "summ": "2-33%", "mix": "4-51%"}


def _lengths(path: Path, max_context: int | None) -> tuple[np.ndarray, int]:
    """(prompt, output) pairs of a file, without those beyond the model's context; and how
    many were dropped."""
    from goodput.sim.workload import load_lengths

    v = load_lengths(path).to_numpy()
    if not max_context:
        return v, 0
    keep = v.sum(axis=1) <= max_context
    return v[keep], int((~keep).sum())


def workload(name: str, rate: float, n: int, seed: int = 0, chat_file: str = "sharegpt",
             max_context: int | None = None):
    from goodput.sim.workload import synthesize
    from goodput.sim.workload.lengths import Empirical

    chat, _ = _lengths(CHATS[chat_file], max_context)
    summ, _ = _lengths(SUMM, max_context)
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


def _per_dollar(out, trace) -> str:
    """Measured capacity per $/h of every type on the workload's most common bucket: which GPU
    is the most cost-efficient per request where most requests are."""
    from goodput.planner.slices import labels_for

    labels = labels_for(trace.df, out.slicing.input_edges, out.slicing.output_edges)
    top = pd.Series(labels).value_counts().index[0]
    price = {t.key: t.instance_price for t in out.types}
    caps = out.capacities[out.capacities.bucket == top]
    return f"{top}: " + ", ".join(f"{row.type} {row.rate / price[row.type]:.2f}"
                                  for row in caps.itertuples())


def _f(v, fmt: str) -> str:
    return "-" if v is None else fmt.format(v)


def run_one(wl: str, rate: float, tpot: float, trace, args, log) -> dict:
    from goodput.planner.baselines import savings
    from goodput.planner.pipeline import PlanOptions, make_plan

    t0 = time.perf_counter()
    opts = PlanOptions(model=args.model, ttft_s=args.ttft_slo, tpot_s=tpot,
                       gpus=args.gpus.split(","), workers=args.workers, cache_dir=args.cache_dir,
                       prices=args.price_table, cost_model={"kind": args.cost_model})
    out = make_plan(trace, opts, log)  # proves the mix and the best single type alike
    b = out.baseline
    splan, scheck = b.get("plan"), b.get("check")
    proved = scheck is not None and scheck.meets_target
    r = {"workload": wl, "rate": rate, "tpot": tpot,
         "mix": " + ".join(f"{g.count} {g.key}" for g in out.plan.groups),
         "mixed": out.plan.cost_per_hour, "mixed_att": out.check.attainment,
         "verified": out.verified,
         "single_type": (f"{splan.groups[0].count} {b['type']}" if splan is not None and proved
                         else f"{b.get('type', 'none')} (NOT proved)"),
         "single": splan.cost_per_hour if splan is not None and proved else None,
         "single_att": scheck.attainment if scheck is not None else None}
    r["savings"] = savings(r["mixed"], r["single"]) if out.verified else None
    r["prices"] = out.plan.summary.get("prices", {})
    r["per_dollar"] = _per_dollar(out, trace)
    r["cost_models"] = dict(out.capacities.groupby("type")["cost_source"].first())
    print(f"{wl} {rate:g} req/s tpot={tpot * 1e3:g}ms: mixed {r['mix']} ${r['mixed']:.2f}/h "
          f"({r['mixed_att']:.1%}); single {r['single_type']} {_f(r['single'], '${:.2f}/h')} "
          f"({_f(r['single_att'], '{:.1%}')}); saved {_f(r['savings'], '{:.1%}')} "
          f"[{time.perf_counter() - t0:.0f} s]", flush=True)
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--melange", action="store_true",
                    help="Mélange's setting: llama-2-7b, --chat azure-conv, A10G $1.01/h and "
                         "A100-80GB $3.67/h (explicit flags still win)")
    ap.add_argument("--gpus", default="l4,a10g,a100-80gb,h100")
    ap.add_argument("--model", default=None, help="default llama-3.1-8b (--melange: llama-2-7b)")
    ap.add_argument("--chat", choices=sorted(CHATS), default=None,
                    help="length file of the chat workload (default sharegpt; --melange: "
                         "azure-conv)")
    ap.add_argument("--price", action="append", default=[], metavar="GPU=USD",
                    help="USD per GPU-hour (repeatable), as goodput plan --price")
    ap.add_argument("--prices", metavar="FILE", help="price file, as goodput plan --prices")
    ap.add_argument("--rates", default="4,16", help="req/s, comma-separated")
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--ttft-slo", type=float, default=1.0)
    ap.add_argument("--tpot-slos", default="0.04,0.12")
    ap.add_argument("--workloads", default="chat,summ,mix")
    ap.add_argument("--cost-model", default="auto",
                    help="cost_model.kind for every GPU (auto: a measured profile where one is "
                         "shipped, else the calibrated roofline; roofline: the same model for all)")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    from goodput.planner.prices import load_price_file, parse_price_flags
    from goodput.sim.catalog import get_model

    args.model = args.model or ("llama-2-7b" if args.melange else "llama-3.1-8b")
    args.chat = args.chat or ("azure-conv" if args.melange else "sharegpt")
    flags = (list(MELANGE_PRICES) if args.melange else []) + args.price
    args.price_table = {**(load_price_file(args.prices) if args.prices else {}),
                        **parse_price_flags(flags)}
    if not (CHATS[args.chat].exists() and SUMM.exists()):
        print(f"length files not found in {TRACES}", file=sys.stderr)
        return 2
    ctx = get_model(args.model).max_context
    for name, path in ((args.chat, CHATS[args.chat]), ("arxiv", SUMM)):
        kept, dropped = _lengths(path, ctx)
        print(f"{name}: {len(kept)} requests kept, {dropped} dropped (prompt + output > "
              f"{args.model} context {ctx})")
    log = (lambda s: print(f"  [{s}]", flush=True)) if args.verbose else (lambda s: None)
    rows = []
    for wl in args.workloads.split(","):
        for rate in [float(x) for x in args.rates.split(",")]:
            trace = workload(wl, rate, args.requests, 0, args.chat, ctx)
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
              f"{r['mixed']:.2f} | {r['mixed_att']:.1%}{'' if r['verified'] else ' (NOT proved)'}"
              f" | {r['single_type']} | "
              f"{_f(r['single'], '{:.2f}')} | {_f(r['single_att'], '{:.1%}')} | "
              f"{_f(r['savings'], '{:.1%}')} |")
    print("\n| workload | savings here (min-max over rates and TPOT SLOs) | Mélange published |")
    print("|---|---|---|")
    for wl in args.workloads.split(","):
        sv = [r["savings"] for r in rows if r["workload"] == wl and r["savings"] is not None]
        here = f"{min(sv):.0%}-{max(sv):.0%}" if sv else "-"
        print(f"| {wl} | {here} | {MELANGE_SAVINGS.get(wl, '-')} |")
    print("\nreq/s per $/h of one instance, on each workload's most common bucket (measured "
          "capacities / price):")
    for (wl, tpot), line in {(r["workload"], r["tpot"]): r["per_dollar"] for r in rows}.items():
        print(f"  {wl} TPOT {tpot * 1e3:g} ms: {line}")
    sources = {}
    for r in rows:
        sources.update(r["cost_models"])
    print("prices: " + "; ".join(f"{g} ${p['usd_per_gpu_hour']:.2f}/GPU-h ({p['source']})"
                                 for g, p in rows[-1]["prices"].items()) if rows else "")
    print("\ncost models: " + "; ".join(f"{k}: {v}" for k, v in sorted(sources.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
