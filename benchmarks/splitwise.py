"""Splitwise's iso-cost comparison on the Azure code and conversation traces, on our cost models.

Llama-3.1-70B (Llama-2-70B's shapes; its 4k context would reject the code trace's long
prompts) on 8-GPU machines (tp 8, as Splitwise's DGX-A100 / DGX-H100 machines), lengths from
a time slice of ../shared/traces/AzureLLMInferenceTrace_{code,conv}.csv, Poisson arrivals in the
capacity probes. For each trace: one machine's colocated capacity (goodput.planner.capacity: largest
rate meeting P90 TTFT and TPOT at 90% attainment, vLLM batching), and its prompt-phase and
token-phase capacities (goodput.planner.placement, disaggregated pools, KV over InfiniBand NDR). Then,
at the cost of ``--machines`` colocated H100 machines:

* Baseline-H100 / Baseline-A100: as many colocated machines as the budget buys;
* Splitwise-HH: prompt and token pools of H100 machines (goodput.planner.phase_split ILP);
* Splitwise-HA: H100 prompt machines + A100 token machines;
* Splitwise-AA: A100 prompt and token machines;

each design's throughput is the ILP's (per-phase capacities), then re-simulated once at that
rate (``verified`` = joint attainment there). Usage:
python benchmarks/splitwise.py [--minutes 10] [--max-requests 800] [--machines 4] [--ttft 1.0] [--tpot 0.05]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from goodput.planner.capacity import CapacityTask, SearchSettings, search_capacity
from goodput.planner.ilp import InstanceType
from goodput.planner.phase_split import measure_phase_caps, solve_phase_split, verify_split
from goodput.sim.catalog import get_gpu
from goodput.sim.workload.generators import time_slice
from goodput.sim.workload.loaders import load_trace

TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces"
MODEL, TP = "llama-3.1-70b", 8  # Llama-2-70B shapes, 128k context (code prompts exceed 4k)


def machine(gpu: str) -> InstanceType:
    g = get_gpu(gpu)
    return InstanceType(g.name, TP, g.price_per_hour, g.tdp_w)


def run_trace(name: str, args) -> list[dict]:
    trace = time_slice(load_trace(TRACES / f"AzureLLMInferenceTrace_{name}.csv"), 0,
                       args.minutes * 60)
    lengths = trace.df[["prompt_tokens", "output_tokens"]].to_numpy()
    opts = {"cost_model": "roofline", "min_requests": 200, "max_requests": args.max_requests}
    h, a = machine("h100"), machine("a100-80gb")
    pcap, tcap = measure_phase_caps(lengths, MODEL, args.ttft, args.tpot, [h, a], **opts)
    colo = {t.key: search_capacity(CapacityTask(MODEL, t.gpu, TP, args.ttft, args.tpot, lengths,
                                                {"policy": "vllm"}, {"kind": "roofline"},
                                                SearchSettings(min_requests=200, span_e2e=20.0,
                                                               max_requests=args.max_requests))
                                   ).rate for t in (h, a)}
    budget = args.machines * h.instance_price
    rows = []
    for t in (h, a):
        n = int(budget // t.instance_price + 1e-9)
        rows.append({"trace": name, "design": f"Baseline-{t.gpu}", "machines": f"{n} mixed",
                     "$/h": n * t.instance_price, "req/s": n * colo[t.key], "verified": ""})
    for label, ptype, ttype in (("HH", h, h), ("HA", h, a), ("AA", a, a)):
        types = [ptype] if ptype is ttype else [ptype, ttype]
        pc = {ptype.key: pcap[ptype.key]}
        tc = {ttype.key: tcap[ttype.key]}
        sol = solve_phase_split(types, pc, tc, cost_budget=budget)
        chk = verify_split(sol, types, lengths, MODEL, args.ttft, args.tpot, **opts) \
            if sol.throughput > 0 else None
        rows.append({"trace": name, "design": f"Splitwise-{label}",
                     "machines": f"{sum(sol.prompt.values())}P + {sum(sol.token.values())}T",
                     "$/h": sol.cost_per_hour, "req/s": sol.throughput,
                     "verified": f"{chk.attainment:.0%}" if chk else ""})
    base = rows[0]["req/s"]
    for r in rows:
        r["vs Baseline-H100"] = f"{r['req/s'] / base:.2f}x" if base else "-"
        r["req/s per $/h"] = round(r["req/s"] / r["$/h"], 4) if r["$/h"] else 0.0
        r["req/s"] = round(r["req/s"], 2)
        r["$/h"] = round(r["$/h"], 2)
    print(f"\n{name}: {len(trace)} requests in the first {args.minutes:g} min (mean prompt "
          f"{lengths[:, 0].mean():.0f}, output {lengths[:, 1].mean():.0f}); per machine "
          f"prompt req/s {', '.join(f'{k} {v:.2f}' for k, v in pcap.items())}; token req/s "
          f"{', '.join(f'{k} {v:.2f}' for k, v in tcap.items())}; colocated req/s "
          f"{', '.join(f'{k} {v:.2f}' for k, v in colo.items())}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="time slice of each trace")
    ap.add_argument("--machines", type=int, default=4, help="budget: this many H100 machines")
    ap.add_argument("--ttft", type=float, default=1.0, help="P90 TTFT bound, s")
    ap.add_argument("--tpot", type=float, default=0.05, help="P90 TPOT bound, s")
    ap.add_argument("--max-requests", type=int, default=800)
    ap.add_argument("--traces", default="code,conv")
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows = []
    for name in args.traces.split(","):
        if not (TRACES / f"AzureLLMInferenceTrace_{name}.csv").exists():
            raise SystemExit(f"needs {TRACES}/AzureLLMInferenceTrace_{name}.csv")
        rows += run_trace(name, args)
    print(f"\n{MODEL}, tp {TP} machines, budget {args.machines} H100 machines; TTFT <= "
          f"{args.ttft} s, TPOT <= {args.tpot} s at 90%; roofline cost model")
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
