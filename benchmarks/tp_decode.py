"""Decode and prefill time of 70B-class models on H200 across TP degrees, from the profiled cost
model (measured TP shards; the all-reduce between ranks measured at TP2, estimated above) next to
the roofline. docs/profiling.md quotes its output.

Usage: python benchmarks/tp_decode.py [--models llama-3.1-70b,qwen2.5-72b] [--context 2048]
"""
from __future__ import annotations

import argparse

from goodput.sim.catalog import get_gpu, get_model
from goodput.sim.config import CostModelConfig
from goodput.sim.costmodel.base import Batch
from goodput.sim.costmodel.factory import make_cost_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="llama-3.1-70b,qwen2.5-72b")
    ap.add_argument("--gpu", default="h200")
    ap.add_argument("--context", type=int, default=2048)
    args = ap.parse_args()
    gpu = get_gpu(args.gpu)
    print("| model | tp | cost model | decode B=1 ms | decode B=32 ms | decode B=128 ms | prefill 4k ms "
          "| roofline decode B=32 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        m = get_model(name)
        for tp in (2, 4, 8):
            c = make_cost_model(m, gpu, tp, CostModelConfig())
            r = make_cost_model(m, gpu, tp, CostModelConfig(kind="roofline"))
            dec = [1e3 * c.batch_time(Batch.decode([args.context] * b)) for b in (1, 32, 128)]
            pre = 1e3 * c.batch_time(Batch([4096], [0]))
            roof = 1e3 * r.batch_time(Batch.decode([args.context] * 32))
            print(f"| {m.name} | {tp} | {c.source.split('@')[0]} | {dec[0]:.2f} | {dec[1]:.2f} | "
                  f"{dec[2]:.2f} | {pre:.1f} | {roof:.2f} |")


if __name__ == "__main__":
    main()
