"""When does speculative decoding help under load? Llama-3.1-8B on one H100, drafted by
Llama-3.2-1B, alpha = 0.8: no speculation, fixed k = 2 and 4, and SmartSpec's adaptive k, at
10% to 90% of the instance's capacity and in overload (docs/speculation.md quotes the output).

The capacity is measured first: completed requests per second of the same trace without
speculation at an overload of 96 req/s; the loads are fractions of it (``--rates`` gives
req/s instead).

The cost model is the measured H100 profile when shipped (``cost_model.kind = auto``; the draft
then uses its own H100 profile), else the roofline; ``--kind roofline`` forces the roofline.
Requests: Poisson arrivals, lognormal prompts (mean 512) and outputs (mean 256).
Columns: mean TPOT, output throughput, mean tokens per speculative step (per sequence), draft
acceptance (accepted / proposed), the share of speculative time spent drafting, mean k.

``--proposers`` compares who drafts instead, all under SmartSpec at the same alpha (so only
the drafting cost and the tree differ): the 1B draft model, prompt lookup (n-gram), one MTP layer
per draft token, Medusa-like heads (one pass) and a draft-model tree of width 2.

Usage: python benchmarks/speculation.py [--kind auto|roofline] [--alpha 0.8] [--quick] [--proposers]
                                     [--rates 1,48]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import goodput.sim.simulator as simulator  # noqa: E402
from goodput.sim.config import load_config  # noqa: E402
from goodput.sim.metrics import request_metrics  # noqa: E402
from goodput.sim.workload.generators import synthesize  # noqa: E402

METHODS = {"none": {"method": "none"}, "fixed k=2": {"method": "fixed", "fixed.k": 2},
           "fixed k=4": {"method": "fixed", "fixed.k": 4}, "smartspec": {"method": "smartspec"}}
PROPOSERS = {"none": {"method": "none"},
             "draft 1B": {"method": "smartspec"},
             "n-gram": {"method": "smartspec", "proposer": "ngram"},
             "MTP layer": {"method": "smartspec", "proposer": "heads"},
             "Medusa heads": {"method": "smartspec", "proposer": "heads", "heads.layers_per_pass": 0.1,
                              "heads.sequential": False},
             "draft tree w=2": {"method": "smartspec", "tree_width": 2, "smartspec.max_k": 4}}


def run(rate: float, method: dict, kind: str, alpha: float, n: int, seed: int = 0):
    over = {"cluster": [{"model": "llama-3.1-8b", "gpu": "h100"}], "cost_model.kind": kind,
            "scheduler.speculation.alpha": alpha, "scheduler.speculation.draft_model": "llama-3.2-1b",
            **{f"scheduler.speculation.{k}": v for k, v in method.items()}}
    cfg = load_config(overrides=over)
    trace = synthesize(n, rate, "lognormal:mean=512,std=400,min=16,max=4096",
                       "lognormal:mean=256,std=200,min=2,max=2048", seed=seed)
    seen = []
    build = simulator.build_cluster

    def capture(c, records, *args):  # keep the instances for their speculation counters
        seen.append(build(c, records, *args))
        return seen[-1]

    simulator.build_cluster = capture
    try:
        res = simulator.simulate(cfg, trace)
    finally:
        simulator.build_cluster = build
    m = request_metrics(res.requests)
    done = m[m.outcome == "completed"]
    spec = seen[0].instances[0].spec
    s = spec.summary()
    mean_k = spec.drafted / spec.seq_steps if spec.seq_steps else 0.0
    return {"rps": len(done) / res.sim_duration_s,
            "tpot_ms": 1e3 * done.tpot_s.mean(), "p99_tpot_ms": 1e3 * done.tpot_s.quantile(0.99),
            "tok_s": done.generated_tokens.sum() / res.sim_duration_s, "per_step": s["spec_tokens_per_step"],
            "accept": s["spec_acceptance"], "draft": s["spec_draft_share"], "k": mean_k,
            "source": res.cost_sources, "wall": res.wall_s}


OVERLOAD_RPS = 96.0
LOADS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", default="auto", choices=["auto", "roofline"])
    ap.add_argument("--alpha", type=float, default=0.8)
    ap.add_argument("--quick", action="store_true", help="fewer requests and loads")
    ap.add_argument("--proposers", action="store_true", help="compare proposers under SmartSpec")
    ap.add_argument("--rates", default="", help="comma-separated req/s instead of capacity fractions")
    args = ap.parse_args()
    methods = PROPOSERS if args.proposers else METHODS
    n = 200 if args.quick else 1000
    t0 = time.perf_counter()
    if args.rates:
        rows = [(f"{float(r):g}", float(r)) for r in args.rates.split(",")]
    else:
        cap = run(OVERLOAD_RPS, METHODS["none"], args.kind, args.alpha, n)["rps"]
        print(f"capacity without speculation: {cap:.2f} req/s (completed / s at {OVERLOAD_RPS:g} req/s)\n")
        loads = (0.1, 0.5, 0.9) if args.quick else LOADS
        rows = [(f"{round(f * 100)}% ({f * cap:.1f})", f * cap) for f in loads]
        rows.append((f"overload ({OVERLOAD_RPS:g})", OVERLOAD_RPS))
    first = True
    print("| load (req/s) | method | TPOT mean (ms) | TPOT P99 (ms) | throughput (tok/s) | tokens/step | "
          "acceptance | draft share | mean k |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, rate in rows:
        for name, method in methods.items():
            r = run(rate, method, args.kind, args.alpha, n)
            if first:
                print(f"<!-- cost model: {r['source']} -->")
                first = False
            fmt = (lambda x: "-" if x != x else f"{x:.2f}")  # noqa: E731
            print(f"| {label} | {name} | {r['tpot_ms']:.2f} | {r['p99_tpot_ms']:.2f} | {r['tok_s']:.0f} | "
                  f"{fmt(r['per_step'])} | {fmt(r['accept'])} | {fmt(r['draft'])} | {r['k']:.2f} |")
    print(f"\n{len(rows) * len(methods)} runs of {n} requests in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
