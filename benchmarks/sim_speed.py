"""Simulator speed and memory: simulated requests per wall-second and peak memory.

Scenarios (each in a fresh subprocess so peak RSS is its own):
  azure-conv   the real Azure LLM conversation trace (19,366 requests), Llama-3.1-8B on 4 x H100,
               vLLM batching, least-outstanding-tokens routing (skipped if ../shared/traces lacks it)
  synth-N      N synthetic requests (Poisson, lognormal lengths like the conv trace) streamed in
               chunks through the same 4-instance cluster, for N = 100k and 1M
  *-step       the same with fast-forward off (one event per iteration), for comparison

Usage: python benchmarks/sim_speed.py [--quick] [--scenarios a,b]
Prints one line per scenario: requests, wall seconds, requests per wall-second, CPU seconds of the
simulating process and requests per CPU-second (less sensitive to other load on the machine), peak
RSS, and the memory per request (peak RSS growth between the two synthetic sizes divided by the extra
requests), and, for the real trace, how long loading and validating it took (kept out of the req/s
figure).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AZURE_CONV = REPO.parent / "shared" / "traces" / "AzureLLMInferenceTrace_conv.csv"


def _config(fast: bool, router: str = "round_robin"):
    from sim.config import InstanceGroupConfig, SimConfig

    cfg = SimConfig(cluster=[InstanceGroupConfig(model="llama-3.1-8b", gpu="h100", tp=1, count=4)])
    cfg.router.name = router
    cfg.cost_model.kind = "roofline"
    cfg.fast_forward = fast
    cfg.output.timeseries_interval_s = 5.0
    return cfg


def run_one(name: str) -> dict:
    """Runs inside the child process."""
    from sim.simulator import simulate
    from sim.workload.generators import synthesize_chunks
    from sim.workload.loaders import load_trace

    fast = not name.endswith("-step")
    base = name.removesuffix("-step")
    cfg = _config(fast)
    load_s = None
    if base == "azure-conv":
        t_load = time.perf_counter()
        trace = load_trace(AZURE_CONV)
        load_s = time.perf_counter() - t_load
        n, requests = len(trace), trace
    else:
        n = int(float(base.split("-")[1].rstrip("k").rstrip("M")) *
                (1_000_000 if base.endswith("M") else 1_000))
        requests = synthesize_chunks(n, rate=20.0,
                                     prompt_dist="lognormal:mean=1155,std=1100,min=4,max=8000",
                                     output_dist="lognormal:mean=211,std=160,min=1,max=2000",
                                     seed=0, chunk=50_000)
    t0, c0 = time.perf_counter(), time.process_time()
    res = simulate(cfg, requests, n)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    done = int((res.requests.outcome == "completed").sum())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"scenario": name, "requests": n, "completed": done, "wall_s": wall,
            "req_per_s": n / wall, "cpu_s": cpu, "req_per_cpu_s": n / cpu, "peak_rss_mb": peak_mb,
            "sim_time_s": res.sim_duration_s, "trace_load_s": load_s}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes only (100k instead of 1M)")
    ap.add_argument("--scenarios", help="comma-separated subset")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child)))
        return 0
    names = ["azure-conv", "azure-conv-step", "synth-100k"] + ([] if args.quick else ["synth-1M"])
    if args.scenarios:
        names = args.scenarios.split(",")
    if not AZURE_CONV.exists():
        names = [n for n in names if not n.startswith("azure")]
        print(f"(skipping azure-conv: {AZURE_CONV} not found)")
    rows = []
    print(f"{'scenario':<18}{'requests':>10}{'completed':>11}{'wall s':>9}{'req/s':>10}"
          f"{'cpu s':>9}{'req/cpu-s':>11}{'peak MB':>9}")
    for name in names:
        out = subprocess.run([sys.executable, __file__, "--child", name], cwd=REPO, check=True,
                             capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        rows.append(row)
        print(f"{row['scenario']:<18}{row['requests']:>10,}{row['completed']:>11,}{row['wall_s']:>9.2f}"
              f"{row['req_per_s']:>10,.0f}{row['cpu_s']:>9.2f}{row['req_per_cpu_s']:>11,.0f}"
              f"{row['peak_rss_mb']:>9.0f}")
    for row in rows:
        if row.get("trace_load_s") is not None:
            print(f"{row['scenario']}: loading and validating the trace took "
                  f"{row['trace_load_s']:.2f} s (not included above)")
    by = {r["scenario"]: r for r in rows}
    if "synth-100k" in by and "synth-1M" in by:
        extra = by["synth-1M"]["requests"] - by["synth-100k"]["requests"]
        per_req = (by["synth-1M"]["peak_rss_mb"] - by["synth-100k"]["peak_rss_mb"]) * 2**20 / extra
        print(f"memory growth per extra request: {per_req:.0f} bytes (the compact per-request "
              f"result row; engine state is bounded by requests in flight)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
