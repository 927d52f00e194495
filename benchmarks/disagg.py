"""Colocated vs disaggregated prefill/decode on the same GPUs, across load.

Llama-3.1-8B on 4 x H100 (roofline cost model, so it runs anywhere): colocated = 4 mixed vLLM
instances; disaggregated = 2 prefill + 2 decode instances (vLLM batching on each, KV over
InfiniBand NDR between the pools' nodes, layer-by-layer). ShareGPT-like lengths when
../shared/traces has the ShareGPT length file, else lognormal ones; Poisson arrivals at each rate.
Prints per design and rate: TTFT and TPOT p90, SLO attainment (TTFT 0.2 s, TPOT 0.03 s, as tight
as DistServe's chatbot SLOs relative to this model's speed), KV hand-off p50 and the busiest
link's utilisation. Usage: python benchmarks/disagg.py [--requests N] [--rates 4,8,...]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from goodput.sim.config import InstanceGroupConfig, SimConfig
from goodput.sim.metrics import SLO, request_metrics, slo_met
from goodput.sim.simulator import simulate
from goodput.sim.workload.generators import synthesize
from goodput.sim.workload.lengths import Empirical

TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces"
SHAREGPT = TRACES / "sharegpt_8k_filtered_stats_llama2_tokenizer.csv"
TTFT, TPOT = 0.2, 0.03


def config(design: str) -> SimConfig:
    def group(count: int, role: str = "mixed") -> InstanceGroupConfig:
        return InstanceGroupConfig(model="llama-3.1-8b", gpu="h100", tp=1, count=count, role=role)

    cluster = [group(4)] if design == "colocated" else [group(2, "prefill"), group(2, "decode")]
    cfg = SimConfig(cluster=cluster)
    cfg.cost_model.kind = "roofline"
    cfg.router.name = "least_outstanding_tokens"
    cfg.network.kv_transfer = "layer_by_layer"
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--rates", default="8,16,24,32,40")
    args = ap.parse_args()
    if SHAREGPT.exists():
        lengths, source = Empirical.from_path(str(SHAREGPT)), "ShareGPT lengths"
    else:
        lengths, source = "lognormal:mean=700,std=600,min=4,max=4000", "lognormal lengths"
    out = None if SHAREGPT.exists() else "lognormal:mean=250,std=200,min=1,max=2000"
    print(f"{source}, {args.requests} requests per point; SLO TTFT <= {TTFT} s, TPOT <= {TPOT} s")
    print(f"{'design':<15}{'req/s':>7}{'ttft p90':>10}{'tpot p90':>10}{'attain':>8}{'kv p50 ms':>11}"
          f"{'link util':>10}")
    slo = SLO(TTFT, TPOT)
    for rate in (float(r) for r in args.rates.split(",")):
        trace = synthesize(args.requests, rate, lengths, out, seed=0)
        for design in ("colocated", "disaggregated"):
            res = simulate(config(design), trace)
            q = request_metrics(res.requests)
            att = float(slo_met(q, slo).mean())
            kv = (q.kv_landed_s - q.kv_handoff_s).median() * 1e3 if design != "colocated" else np.nan
            util = res.links.utilisation.max() if res.links is not None and len(res.links) else np.nan
            print(f"{design:<15}{rate:>7g}{q.ttft_s.quantile(0.9):>10.3f}{q.tpot_s.quantile(0.9):>10.4f}"
                  f"{att:>8.1%}{kv:>11.2f}{util:>10.1%}")


if __name__ == "__main__":
    main()
