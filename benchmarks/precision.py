"""What FP8 weights and an FP8 KV cache change, per GPU (goodput.sim.catalog.precision).

Prints, for each precision variant of a model on each GPU: weights per GPU, KV blocks that fit
(vLLM's sizing, gpu_memory_utilization 0.9, 2 GB activation reserve), a decode iteration of 32
sequences at 2k context, a 4k-token prefill, and the cost model that priced it (a 16-bit profile
is never used for an FP8 variant: without an FP8 profile the calibrated roofline prices it)::

    .venv/bin/python benchmarks/precision.py [--model llama-3.1-70b --tp 2] [--gpus h200,a100-80gb]
                                             [--kind auto]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from goodput.sim.catalog import get_gpu, get_model
from goodput.sim.catalog.precision import VARIANTS
from goodput.sim.config import CostModelConfig
from goodput.sim.costmodel.base import Batch
from goodput.sim.costmodel.factory import make_cost_model
from goodput.sim.engine.kvcache import kv_capacity


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="llama-3.1-8b")
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--gpus", default="h200,h100-sxm,l40s,a100-80gb")
    ap.add_argument("--kind", default="roofline", choices=("auto", "roofline"),
                    help="roofline (default): every row priced alike, so the rows differ only by "
                         "precision; auto: 16-bit rows use a measured profile where one exists")
    args = ap.parse_args(argv)
    print("| model | GPU | weights GiB/GPU | KV blocks | decode 32 x 2k, ms | prefill 4k, ms | priced by |")
    print("|---|---|---|---|---|---|---|")
    for suffix in ["", *sorted(VARIANTS, key=len)]:
        model = get_model(args.model + suffix)
        for name in args.gpus.split(","):
            gpu = get_gpu(name)
            cm = make_cost_model(model, gpu, args.tp, CostModelConfig(kind=args.kind))
            cap = kv_capacity(model, gpu, args.tp, 16, 0.9, 2.0)
            dec = cm.batch_time(Batch.decode([2048] * 32)) * 1e3
            pre = cm.batch_time(Batch([4096], [0])) * 1e3
            kind = cm.source.split("(")[0].split("@")[0].split("+")[0]
            print(f"| {model.name} | {gpu.name} | {model.weight_bytes(args.tp) / 2**30:.1f} | "
                  f"{cap.total_blocks:,} | {dec:.2f} | {pre:.1f} | {kind} |")


if __name__ == "__main__":
    main()
