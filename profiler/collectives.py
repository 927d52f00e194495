"""Data movement: copy bandwidth (device-device, host-device) and TP collectives.

Copy bandwidth is a property of the GPU, measured once per profiling run into
``profiles/<gpu>/copy_bandwidth.csv`` (KV swapping and migration costs can be derived from it).

Collectives need two or more GPUs of one host. ``measure_collectives`` spawns one process per
GPU (NCCL; gloo on the CPU so the code path is tested in CI) and sweeps all-reduce (the TP
layer's), all-gather and point-to-point send/recv (pipeline parallelism) over message sizes;
``run_collectives`` writes ``profiles/<gpu>/collectives/tp<N>.csv`` + provenance, which
``goodput.sim.costmodel.collectives`` reads (no torch) and the profiled cost model uses for its
all-reduce term at the sizes where the sweep is bandwidth-bound. Where no table exists for a GPU
and TP degree, ``estimate_allreduce_s`` charges the roofline's ring formula over the catalog's
NVLink bandwidth instead, and the model says so (``allreduce_source``).

Method, per op and size, on every rank: warm-up calls, one timed call to size the rounds (the
ranks agree on the slowest estimate, so all issue the same number of calls), then ``rounds``
rounds, each after a barrier, of ``calls`` back-to-back calls between two CUDA events
(``time.perf_counter`` on the CPU). A rank's statistic is the median (p10, p90) of the per-call
time over rounds; the table keeps the maximum over ranks of each, because a collective ends when
its slowest rank ends. The calls are eager (not CUDA-graph captured), so for the smallest
messages the time can include the host's launch cost when that exceeds the GPU time;
``--graph`` (goodput.profiler.collectives_graph) captures them and separates the two.
send_recv: ranks (0,1), (2,3), ... exchange in parallel, the even rank sending; with an odd
world the last rank idles. NVLink multicast (NVLS) is kept off (``NCCL_NVLS_ENABLE=0``).
"""
from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from goodput.sim.catalog import GPUSpec
from goodput.sim.costmodel.collectives import COLUMNS, OPS, CollectivesTable, collectives_path
from goodput.sim.costmodel.profiled import ring_allreduce_s
from goodput.sim.costmodel.roofline import RooflineParams

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


#: Default sweep: 1 KiB .. 256 MiB in powers of 2 (19 sizes; a few seconds per op on NVLink).
DEFAULT_SIZES = tuple(1 << p for p in range(10, 29))


def _quantile(xs, q):
    xs = sorted(xs)
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


class _Timer:
    """Per-call seconds of ``fn`` on one rank (see the module docstring for the method)."""

    def __init__(self, dist, device, rounds, round_s, max_calls, warmup):
        self.dist, self.device, self.cuda = dist, device, device.type == "cuda"
        self.rounds, self.round_s, self.max_calls, self.warmup = rounds, round_s, max_calls, warmup

    def _sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def _span(self, fn, calls) -> float:
        self._sync()
        self.dist.barrier()
        self._sync()
        if self.cuda:
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            for _ in range(calls):
                fn()
            e.record()
            e.synchronize()
            return s.elapsed_time(e) * 1e-3
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        return time.perf_counter() - t0

    def agree_max(self, x: float) -> float:
        t = torch.tensor([x], dtype=torch.float64 if not self.cuda else torch.float32,
                         device=self.device)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MAX)
        return float(t.item())

    def time(self, fn) -> list[float] | None:
        """Per-call seconds of each round; ``fn=None`` is a rank that only keeps in step."""
        work = fn or (lambda: None)
        for _ in range(self.warmup):
            work()
        single = self._span(work, 1)  # every rank: the span's barrier keeps them in step
        single = max(self.agree_max(single if fn else 0.0), 1e-7)
        calls = max(1, min(self.max_calls, round(self.round_s / single)))
        per_call = [self._span(work, calls) / calls for _ in range(self.rounds)]
        return per_call if fn else None


def _op_fn(dist, op, nbytes, rank, world, device):
    """(bytes of the message, callable) for one op and size on this rank; the callable is None
    for a rank with nothing to do (the unpaired rank of send_recv in an odd world)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # gloo: no bf16 sum
    esize = torch.finfo(dtype).bits // 8
    if op == "all_reduce":
        x = torch.zeros(max(1, nbytes // esize), dtype=dtype, device=device)
        return x.numel() * esize, lambda: dist.all_reduce(x)
    if op == "all_gather":  # bytes = the gathered output; each rank contributes 1/world
        per = max(1, nbytes // (esize * world))
        out = torch.zeros(per * world, dtype=dtype, device=device)
        inp = torch.zeros(per, dtype=dtype, device=device)
        return out.numel() * esize, lambda: dist.all_gather_into_tensor(out, inp)
    if op == "send_recv":
        x = torch.zeros(max(1, nbytes // esize), dtype=dtype, device=device)
        peer = rank + 1 if rank % 2 == 0 else rank - 1
        if peer >= world:
            return x.numel() * esize, None  # odd world: the last rank has no partner
        if rank % 2 == 0:
            return x.numel() * esize, lambda: dist.send(x, peer)
        return x.numel() * esize, lambda: dist.recv(x, peer)
    raise ValueError(f"unknown collective '{op}'; choose from {list(OPS)}")


def init_group(rank, world, backend, init_file, timeout_s):
    """(torch.distributed, device) of one spawned rank, its process group joined through a file
    store; shared with goodput.profiler.collectives_graph so both sweeps start ranks the same way."""
    os.environ["NCCL_NVLS_ENABLE"] = "0"  # never NVLink multicast (shared hosts)
    if backend == "gloo" and os.path.exists("/sys/class/net/lo"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    import warnings

    import torch.distributed as dist

    # newer torch renames all_gather_into_tensor / reduce_scatter_tensor; the device's torch
    # 2.11 has only these names
    warnings.filterwarnings("ignore", message=".*_tensor.*", category=FutureWarning)
    cuda = backend == "nccl"
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    kw: dict[str, Any] = {}  # device_id only for NCCL
    if cuda:
        torch.cuda.set_device(device)
        kw["device_id"] = device
    else:
        torch.set_num_threads(1)
    dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank,
                            world_size=world, timeout=_dt.timedelta(seconds=timeout_s), **kw)
    return dist, device


def _worker(rank, world, backend, sizes, ops, init_file, out_dir, timing):
    dist, device = init_group(rank, world, backend, init_file, timing["timeout_s"])
    cuda = device.type == "cuda"
    timer = _Timer(dist, device, timing["rounds"], timing["round_s"], timing["max_calls"],
                   timing["warmup"])
    res = []
    try:
        for op in ops:
            for i, n in enumerate(sizes):
                nbytes, fn = _op_fn(dist, op, int(n), rank, world, device)
                per_call = timer.time(fn)
                if per_call:
                    res.append({"op": op, "i": i, "bytes": nbytes,
                                "median_s": statistics.median(per_call),
                                "p10_s": _quantile(per_call, 0.1),
                                "p90_s": _quantile(per_call, 0.9)})
                del fn
            if cuda:
                torch.cuda.empty_cache()
    finally:
        dist.destroy_process_group()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(res))


def _timing(cuda: bool, rounds: int | None) -> dict:
    if cuda:
        return {"rounds": rounds or 10, "round_s": 5e-3, "max_calls": 100, "warmup": 5,
                "timeout_s": 300}
    return {"rounds": rounds or 5, "round_s": 2e-3, "max_calls": 20, "warmup": 2,
            "timeout_s": 120}


def check_sweep(world: int, backend: str, ops, sizes, known=OPS, min_world: int = 2) -> list[int]:
    """The sorted message sizes, after one-line errors for a bad world, op list or size."""
    if world < min_world:
        raise ValueError(f"--world {world}: collectives need at least 2 processes")
    bad = [op for op in ops if op not in known]
    if bad:
        raise ValueError(f"unknown collective(s) {bad}; choose from {list(known)}")
    if backend == "nccl":
        have = torch.cuda.device_count()
        if have < world:
            raise ValueError(
                f"--world {world} needs {world} GPUs on this host, found {have}; run on a machine "
                f"with at least {world} GPUs (e.g. nvidia-h200-x{world}) or lower --world (the "
                "cost model keeps the roofline estimate for TP degrees without a table)")
    sizes = sorted({int(s) for s in (sizes or DEFAULT_SIZES)})
    if not sizes or sizes[0] < 1:
        raise ValueError(f"message sizes must be positive byte counts, got {sizes}")
    return sizes


def measure_collectives(world: int, backend: str = "nccl", sizes=None, ops=OPS,
                        rounds: int | None = None) -> list[dict]:
    """Rows ``op, world, bytes, median_s, p10_s, p90_s`` per op and size; see the docstring."""
    import torch.multiprocessing as mp

    sizes = check_sweep(world, backend, ops, sizes)
    timing = _timing(backend == "nccl", rounds)
    with tempfile.TemporaryDirectory(prefix="goodput-coll-") as tmp:
        mp.start_processes(_worker, args=(world, backend, sizes, list(ops),
                                          os.path.join(tmp, "store"), tmp, timing),
                           nprocs=world, join=True, start_method="spawn")
        per_rank = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(world)]
    rows, seen = [], set()
    for op in ops:
        for i in range(len(sizes)):
            got = [g for r in per_rank for g in r if g["op"] == op and g["i"] == i]
            if not got or (op, got[0]["bytes"]) in seen:  # two sizes rounded to one message
                continue
            seen.add((op, got[0]["bytes"]))
            rows.append({"op": op, "world": world, "bytes": got[0]["bytes"],
                         **{k: max(g[k] for g in got) for k in ("median_s", "p10_s", "p90_s")}})
    return rows


def measure_allreduce(world: int, backend: str = "nccl", sizes=None, port: int | None = None):
    """All-reduce only, ``[{"bytes", "median_s"}]`` (older callers; ``port`` is unused: the
    ranks meet through a temporary file store)."""
    rows = measure_collectives(world, backend, sizes or [1 << p for p in range(10, 29, 2)],
                               ops=("all_reduce",))
    return [{"bytes": r["bytes"], "median_s": r["median_s"]} for r in rows]


def nccl_version() -> str | None:
    try:
        v = torch.cuda.nccl.version()
        return ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
    except Exception:
        return None


def run_collectives(world: int, device: str = "cuda", gpu_name: str = "auto",
                    out_root=Path("profiler/profiles"), sizes=None, ops=OPS,
                    rounds: int | None = None) -> Path:
    """Measure and write ``<out_root>/<gpu>/collectives/tp<world>.csv`` + ``.provenance.json``."""
    from goodput.profiler import provenance

    dev = torch.device(device if device == "cpu" else "cuda:0")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda but torch sees no GPU; use --device cpu (gloo)")
    gpu = provenance.detect_gpu_name(dev) if gpu_name == "auto" else gpu_name
    backend = "nccl" if dev.type == "cuda" else "gloo"
    t0 = time.time()
    rows = measure_collectives(world, backend, sizes, ops, rounds)
    path = collectives_path(out_root, gpu, world)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS))
        w.writeheader()
        for r in rows:
            w.writerow({**r, **{k: f"{r[k]:.6e}" for k in ("median_s", "p10_s", "p90_s")}})
    tmp.replace(path)
    info = provenance.collect(dev)
    timing = _timing(dev.type == "cuda", rounds)
    info.update({
        "gpu": gpu, "world": world, "backend": backend, "gpus_visible":
            torch.cuda.device_count() if dev.type == "cuda" else 0,
        "dtype": "bfloat16" if backend == "nccl" else "float32",
        "nccl": nccl_version() if backend == "nccl" else None,
        "nccl_nvls_enable": "0",  # forced in every worker: NVLink multicast stays off
        "timing": {k: v for k, v in timing.items() if k != "timeout_s"},
        "method": "per rank: median/p10/p90 over rounds of back-to-back eager calls between "
                  + ("CUDA events" if backend == "nccl" else "perf_counter readings")
                  + "; table = max over ranks. all_gather bytes = gathered output; send_recv = "
                    "pairs (0,1),(2,3).. in parallel, even rank sends",
        "fit": CollectivesTable(rows, world).fits(),
        "run_seconds": round(time.time() - t0, 1),
    })
    path.with_suffix(".provenance.json").write_text(json.dumps(info, indent=1, sort_keys=True)
                                                    + "\n")
    return path
