"""Data movement: copy bandwidth (device-device, host-device) and TP all-reduce cost.

Copy bandwidth is a property of the GPU, measured once per profiling run into
``profiles/<gpu>/copy_bandwidth.csv`` (KV swapping and migration costs can be derived from it).

All-reduce needs two or more GPUs. ``measure_allreduce`` times it through torch.distributed (one
process per GPU, NCCL; gloo on the CPU so the code path is tested in CI). When a profile is made
on one GPU for a TP > 1 shard, the all-reduce is not measured: ``estimate_allreduce_s`` charges the
roofline's ring formula over the catalog's NVLink bandwidth instead, and the profile says so
(``allreduce_source``).
"""
from __future__ import annotations

import os
import time

import torch

from sim.catalog import GPUSpec
from sim.costmodel.profiled import ring_allreduce_s
from sim.costmodel.roofline import RooflineParams

ALLREDUCE_ESTIMATED = "estimated (roofline over NVLink), not measured"


def estimate_allreduce_s(nbytes: float, tp: int, gpu: GPUSpec,
                         params: RooflineParams = RooflineParams()) -> float:
    """Ring all-reduce of ``nbytes`` over ``tp`` GPUs: latency + 2(n-1)/n * bytes / link."""
    link = (gpu.nvlink_gbs if gpu.nvlink_gbs > 0 else gpu.pcie_gbs) * 1e9 * params.nvlink_efficiency
    return ring_allreduce_s(nbytes, tp, link, params.allreduce_latency_s)


def _time_copy(dst, src, device, reps=10) -> float:
    dst.copy_(src, non_blocking=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(reps):
            s.record()
            dst.copy_(src, non_blocking=True)
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e) * 1e-3)
    else:
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            dst.copy_(src)
            times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def measure_copy_bandwidth(device: torch.device, sizes=None) -> list[dict]:
    """Median time and GB/s (bytes copied / time) per direction and size."""
    sizes = sizes or [1 << p for p in range(16, 31, 2)]
    rows = []
    for n in sizes:
        src_d = torch.randint(0, 255, (n,), dtype=torch.uint8, device=device)
        dst_d = torch.empty_like(src_d)
        cases = [("d2d", dst_d, src_d)]
        if device.type == "cuda":
            pinned = torch.empty(n, dtype=torch.uint8, pin_memory=True)
            pageable = torch.empty(n, dtype=torch.uint8)
            cases += [("h2d_pinned", dst_d, pinned), ("d2h_pinned", pinned, src_d),
                      ("h2d_pageable", dst_d, pageable)]
        for name, dst, src in cases:
            t = _time_copy(dst, src, device)
            rows.append({"direction": name, "bytes": n, "median_s": t, "gb_per_s": n / t / 1e9})
        del src_d, dst_d
    return rows


def _allreduce_worker(rank, world, backend, sizes, port, out):
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # never NVLink multicast (shared hosts)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    import torch.distributed as dist

    dist.init_process_group(backend, rank=rank, world_size=world)
    device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    res = []
    for n in sizes:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # gloo: no bf16 sum
        x = torch.randn(max(1, n * 8 // torch.finfo(dtype).bits), dtype=dtype, device=device)
        for _ in range(3):
            dist.all_reduce(x)
        times = []
        for _ in range(10):
            if device.type == "cuda":
                torch.cuda.synchronize()
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        times.sort()
        res.append({"bytes": x.numel() * x.element_size(), "median_s": times[len(times) // 2]})
    if rank == 0:
        out.put(res)
    dist.destroy_process_group()


def measure_allreduce(world: int, backend: str = "nccl", sizes=None, port: int = 29511):
    """Rank-0 median all-reduce time per message size, ``world`` processes on this host."""
    import torch.multiprocessing as mp

    if backend == "nccl" and torch.cuda.device_count() < world:
        raise RuntimeError(f"measure_allreduce: needs {world} GPUs, found "
                           f"{torch.cuda.device_count()}; the estimate is used instead")
    sizes = sizes or [1 << p for p in range(10, 29, 2)]
    ctx = mp.get_context("spawn")
    q = ctx.SimpleQueue()
    mp.start_processes(_allreduce_worker, args=(world, backend, sizes, port, q), nprocs=world,
                       join=True, start_method="spawn")
    return q.get()
