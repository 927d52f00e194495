"""DistServe's simulator sanity point, answered by our placement search.

OPT-13B, ShareGPT-like lengths (prompt + output <= 2048, OPT's context), 4 x A100-80GB,
TTFT <= 200 ms and TPOT <= 100 ms at 90% attainment. DistServe reports the best per-GPU rate
1.56 req/s with tp_prefill = 2, tp_decode = 1. This script runs goodput.planner.placement's per-phase
search (pp = 1: the simulator has no pipeline parallelism), the best design within 4 GPUs,
DistServe's own choice (1 x tp2 prefill + 2 x tp1 decode) for comparison, and the full-simulation
rate of each; then the colocated baseline (vLLM on tp1 / tp2 / tp4 mixed instances, per-GPU
capacity by goodput.planner.capacity's search) for the disaggregated / colocated goodput ratio.

Usage: python benchmarks/distserve_sanity.py [--cost-model roofline] [--max-requests 3000]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from goodput.planner.capacity import CapacityTask, SearchSettings, search_capacity
from goodput.planner.placement import Design, PlacementTask, combine, design_max_rate, search_placement

SHAREGPT = (Path(__file__).resolve().parents[2] / "shared" / "traces"
            / "sharegpt_8k_filtered_stats_llama2_tokenizer.csv")
MODEL, GPU, TTFT, TPOT = "opt-13b", "a100-80gb", 0.2, 0.1


def sharegpt_lengths(path: Path = SHAREGPT, max_total: int = 2048) -> np.ndarray:
    d = pd.read_csv(path)
    d = d[d.num_total_tokens <= max_total]
    return d[["num_prefill_tokens", "num_decode_tokens"]].to_numpy(dtype=np.int64)


def colocated_per_gpu(lengths: np.ndarray, cost_model: str, tps=(1, 2, 4), max_requests=3000):
    out = {}
    for tp in tps:
        r = search_capacity(CapacityTask(MODEL, GPU, tp, TTFT, TPOT, lengths,
                                         {"policy": "vllm"}, {"kind": cost_model},
                                         SearchSettings(min_requests=200, max_requests=max_requests,
                                                        span_e2e=20.0)))
        out[tp] = r.rate / tp
    return out


def main() -> None:
    global TTFT, TPOT
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cost-model", default="roofline", help="auto | roofline | profiled")
    ap.add_argument("--max-requests", type=int, default=3000)
    ap.add_argument("--gpus", type=int, default=4)
    ap.add_argument("--ttft", type=float, default=TTFT, help="TTFT bound, s (0.2)")
    ap.add_argument("--tpot", type=float, default=TPOT, help="TPOT bound, s (0.1)")
    args = ap.parse_args()
    TTFT, TPOT = args.ttft, args.tpot
    if not SHAREGPT.exists():
        raise SystemExit(f"needs {SHAREGPT} (the ShareGPT length file)")
    t0 = time.perf_counter()
    lengths = sharegpt_lengths()
    task = PlacementTask(MODEL, GPU, GPU, lengths, TTFT, TPOT, cost_model=args.cost_model,
                         max_requests=args.max_requests)
    print(f"{MODEL} on {args.gpus} x {GPU}, {len(lengths)} ShareGPT requests with prompt + output "
          f"<= 2048 (mean prompt {lengths[:, 0].mean():.0f}, output {lengths[:, 1].mean():.0f}); "
          f"TTFT <= {TTFT * 1e3:g} ms, TPOT <= {TPOT * 1e3:g} ms, 90% attainment; "
          f"cost model {args.cost_model}; pp = 1")
    res = search_placement(task, max_gpus=args.gpus, verify_rounds=0)
    print("\nper-phase capacity of one instance:")
    print(res.table().drop(columns=["limit"]).to_string(index=False))
    by = {(c.phase, c.tp): c for c in res.prefill + res.decode}
    theirs = Design(by["prefill", 2], by["decode", 1], 1, 2) if ("decode", 1) in by else None
    rows = []
    for name, d in (("ours (search)", res.design), ("DistServe's (tp_p 2, tp_d 1)", theirs)):
        if d is None:
            continue
        full, _ = design_max_rate(task, d)
        rows.append({"design": name, "layout": d.text(), "per-phase req/s per GPU": round(d.per_gpu, 3),
                     "full-sim req/s per GPU": round(full / d.gpus, 3)})
    print("\n" + pd.DataFrame(rows).to_string(index=False))
    print("DistServe (paper, its simulator on measured A100 profiles): 1.56 req/s per GPU, "
          "tp_prefill 2, tp_decode 1")
    colo = colocated_per_gpu(lengths, args.cost_model, max_requests=args.max_requests)
    best_tp = max(colo, key=lambda t: colo[t])
    best_dis = max(r["full-sim req/s per GPU"] for r in rows)
    print("\ncolocated vLLM, per-GPU SLO capacity: " +
          ", ".join(f"tp{t} {v:.3f}" for t, v in colo.items()))
    print(f"disaggregated / colocated per-GPU goodput: {best_dis:.3f} / {colo[best_tp]:.3f} = "
          f"{best_dis / max(colo[best_tp], 1e-9):.2f}x (DistServe reports up to 4.48x)")
    # a sanity anchor of the combine step: budget-free, the fewest GPUs for 10 req/s
    d10 = combine(res.prefill, res.decode, target_rate=10.0)
    print(f"fewest GPUs for 10 req/s by per-phase capacities: {d10.text()}")
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
