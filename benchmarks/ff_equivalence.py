"""Fast-forward vs step mode on the overloaded Llumnix example (swap preemption, live migration,
a drain and a scale-out): prints where the two modes disagree, which should be nowhere.

Usage: python benchmarks/ff_equivalence.py [--rate 6] [--requests 3000]
"""
from __future__ import annotations

import argparse

import numpy as np

from goodput.sim.config import load_config
from goodput.sim.inputs import build_trace
from goodput.sim.simulator import simulate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=6.0)
    ap.add_argument("--requests", type=int, default=3000)
    args = ap.parse_args()
    res = {}
    for fast in (True, False):
        cfg = load_config("examples/llumnix_priorities.yaml",
                          {"trace.rate": args.rate, "trace.num_requests": args.requests,
                           "fast_forward": fast})
        trace, n = build_trace(cfg.trace, cfg.seed)
        r = simulate(cfg, trace, n)
        res[fast] = r.requests
        print(f"{'fast-forward' if fast else 'step mode':<13} requests {len(r.requests)}  "
              f"{r.requests.outcome.value_counts().to_dict()}  migrations {r.migration['completed']}  "
              f"swaps {int(r.instances.swaps.sum())}  preemptions {int(r.instances.preemptions.sum())}")
    a, b = res[True], res[False]
    print(f"requests on another instance: {int((a.instance != b.instance).sum())}   "
          f"max |completion difference|: {float(np.nanmax(np.abs(a.completion_s - b.completion_s))):.3g} s")


if __name__ == "__main__":
    main()
