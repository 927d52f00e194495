"""Planner speed: ILP solve time at 8 GPU types x 64 slices, and end-to-end plan time.

ILP: the 8 GPU types of the catalog x 64 slices (8 input x 8 output buckets). Rates and
capacities are SYNTHETIC timing inputs, not measurements: seeded random draws shaped like real
ones (capacity falls with request size and rises with the GPU's price; the cheaper half of the
GPUs cannot serve the largest slices), because measuring 512 capacities would time the simulator,
not the solver. Solved --repeats times with CBC; prints the median and the maximum.

End to end: ``make_plan`` on the Azure conversation trace (../shared/traces), llama-3.1-8b,
TTFT 0.5 s / TPOT 50 ms, --gpus, with an empty capacity cache (cold) and again with the cache
it filled (warm, which leaves the ILP and the re-simulation).

Usage: python benchmarks/plan_speed.py [--ilp-only] [--gpus l4,a10g,a100-80gb,h100,h200]
       [--workers N] [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
AZURE_CONV = REPO.parent / "shared" / "traces" / "AzureLLMInferenceTrace_conv.csv"


def ilp_instance(n_types: int = 8, n_in: int = 8, n_out: int = 8, seed: int = 0):
    """(types, rates, cap) of the synthetic benchmark instance described in the docstring."""
    from goodput.planner.ilp import InstanceType
    from goodput.sim.catalog import gpus

    rng = np.random.default_rng(seed)
    specs = sorted(gpus().values(), key=lambda g: g.price_per_hour)[:n_types]
    types = [InstanceType(g.name, 1, g.price_per_hour, g.tdp_w) for g in specs]
    rates, cap = {}, {}
    for i in range(n_in):
        for j in range(n_out):
            s = f"in{i}out{j}"
            rates[s] = float(rng.uniform(0.05, 2.0))
            size = 2.0 ** (i / 2 + j / 2)
            cap[s] = {}
            for k, t in enumerate(types):
                if k < n_types // 2 and i + j >= n_in + n_out - 4:
                    cap[s][t.key] = 0.0  # small GPUs cannot serve the largest slices
                else:
                    cap[s][t.key] = float(40 * t.price_per_hour ** 0.8 / size
                                          * rng.uniform(0.6, 1.4))
    return types, rates, cap


def bench_ilp(repeats: int) -> None:
    from goodput.planner.ilp import solve

    types, rates, cap = ilp_instance()
    times, wall = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sol = solve(types, rates, cap)
        wall.append(time.perf_counter() - t0)
        times.append(sol.solve_s)
    print(f"ilp {len(types)} types x {len(rates)} slices ({sol.solver}): solve median "
          f"{statistics.median(times):.3f} s, max {max(times):.3f} s; with model building "
          f"median {statistics.median(wall):.3f} s; cost ${sol.cost_per_hour:.2f}/h, "
          f"{sum(sol.counts.values())} instances")


def bench_plan(gpus: str, workers: int | None) -> None:
    from goodput.planner.pipeline import PlanOptions, make_plan
    from goodput.sim.workload import load_trace

    if not AZURE_CONV.exists():
        print(f"end-to-end: skipped ({AZURE_CONV} not found)")
        return
    trace = load_trace(AZURE_CONV)
    with tempfile.TemporaryDirectory() as cache:
        for label in ("cold cache", "warm cache"):
            opts = PlanOptions(model="llama-3.1-8b", ttft_s=0.5, tpot_s=0.05,
                               gpus=gpus.split(","), workers=workers, cache_dir=cache)
            t0 = time.perf_counter()
            out = make_plan(trace, opts)
            dt = time.perf_counter() - t0
            print(f"end-to-end plan ({label}): {dt:.1f} s for {len(trace)} requests, "
                  f"{len(out.slicing.buckets)} buckets x {len(out.types)} types; plan "
                  f"${out.plan.cost_per_hour:.2f}/h, simulated attainment "
                  f"{out.check.attainment:.1%}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ilp-only", action="store_true")
    ap.add_argument("--gpus", default="l4,a10g,a100-80gb,h100,h200")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    bench_ilp(args.repeats)
    if not args.ilp_only:
        bench_plan(args.gpus, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
