"""Collectives captured in CUDA graphs: the GPU time of a call, apart from the host's launch cost.

Why: the eager sweep (goodput.profiler.collectives) times back-to-back eager calls between CUDA events;
on two H200s every size below ~8 MiB then takes 27-85 us, the rate at which the host launches
NCCL calls, not what the GPUs spend. Inside a serving engine's forward pass collectives are
replayed from CUDA graphs (decode) or overlap GPU work, so a cost model needs the GPU time;
the launch cost is a separate, host-side number. ``goodput profile collectives --graph`` writes
both, per op and size, to ``<gpu>/collectives/tp<N>.graph.csv`` (columns:
``goodput.sim.costmodel.collectives.GRAPH_COLUMNS``) + ``tp<N>.graph.provenance.json``.

Method, per op and size, on every rank (every rank issues the same collectives in one order):

1. warm-up eager calls (communicators, the point-to-point communicator, the allocator);
2. one eager call between events sizes the rounds: ``calls`` = round_s / the slowest rank's
   time, clamped to [min_calls, max_calls], the same on every rank;
3. eager: ``rounds`` rounds, each after a barrier, of ``calls`` back-to-back calls; per call the
   span between two CUDA events (``eager_s``: what ``tp<N>.csv`` measures) and the host's time
   to submit them (``launch_s``: perf_counter around the submitting loop, no sync inside);
4. graph: the same ``calls`` calls captured in one ``torch.cuda.CUDAGraph`` on a side stream
   (after a warm-up call there, as torch requires; ``capture_error_mode="thread_local"`` so the
   NCCL watchdog thread cannot invalidate the capture), one warm replay, then ``rounds``
   replays, each after a barrier, between CUDA events: ``median_s``/``p10_s``/``p90_s`` of
   span / calls over the rounds.

The table keeps the maximum over ranks of each statistic (a collective ends when its slowest
rank does). Ops: ``all_reduce``; ``all_gather`` (bytes = the gathered output);
``reduce_scatter`` (bytes = the full input); ``send_recv``: pairs (0,1), (2,3), ... exchange at
once, the even rank sending (at world 2 one pipeline-stage boundary; at world 2k the k
concurrent hand-offs of a TP-k stage to the next, which on an NVSwitch node load the links as
pairs (i, i+k) would; with an odd world the last rank idles).

CPU (gloo): CUDA graphs do not exist, so steps 1-3 run with perf_counter (a gloo call is
synchronous: its submit time is the whole call), the graph columns repeat the eager ones, and
every row and the provenance say ``timing: eager-cpu``. That is how tests check the sweep's
structure, schema and provenance without a GPU; its numbers are not GPU evidence.

Each op runs in its own spawned world and the table is rewritten atomically after each op: one
op that fails (a capture a future torch refuses, say) leaves the other ops' rows and names the
failure in the provenance (``ops_failed``); a deadline kill leaves the ops finished so far.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from goodput.profiler.collectives import (
    DEFAULT_SIZES,
    _op_fn,
    _quantile,
    check_sweep,
    init_group,
    nccl_version,
)
from goodput.sim.costmodel.collectives import GRAPH_COLUMNS, GRAPH_OPS, CollectivesTable, collectives_path


def timing_settings(cuda: bool, rounds: int | None) -> dict:
    """Rounds, round length, calls per round and warm-up of the sweep (recorded in provenance)."""
    if cuda:
        return {"rounds": rounds or 10, "round_s": 5e-3, "min_calls": 10, "max_calls": 100,
                "warmup": 5, "timeout_s": 180}
    return {"rounds": rounds or 5, "round_s": 2e-3, "min_calls": 2, "max_calls": 20,
            "warmup": 2, "timeout_s": 120}


def _op(dist, op, nbytes, rank, world, device):
    """(message bytes, callable or None) as goodput.profiler.collectives._op_fn, plus reduce_scatter."""
    if op != "reduce_scatter":
        return _op_fn(dist, op, nbytes, rank, world, device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # gloo: no bf16 sum
    esize = torch.finfo(dtype).bits // 8
    per = max(1, nbytes // (esize * world))  # bytes = the full input; each rank keeps 1/world
    inp = torch.zeros(per * world, dtype=dtype, device=device)
    out = torch.zeros(per, dtype=dtype, device=device)
    return inp.numel() * esize, lambda: dist.reduce_scatter_tensor(out, inp)


class _GraphTimer:
    """Eager and graph-replay per-call times of one op and size on one rank (module docstring)."""

    def __init__(self, dist, device, timing: dict):
        self.dist, self.device, self.cuda, self.t = dist, device, device.type == "cuda", timing

    def _barrier(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)
        self.dist.barrier()
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def _eager(self, work, calls) -> tuple[float, float]:
        """(per-call span, per-call host submit time) of ``calls`` back-to-back eager calls."""
        self._barrier()
        if not self.cuda:
            h0 = time.perf_counter()
            for _ in range(calls):
                work()
            per = (time.perf_counter() - h0) / calls
            return per, per
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        h0 = time.perf_counter()
        for _ in range(calls):
            work()
        h1 = time.perf_counter()
        e.record()
        e.synchronize()
        return s.elapsed_time(e) * 1e-3 / calls, (h1 - h0) / calls

    def _agree_max(self, x: float) -> float:
        t = torch.tensor([x], dtype=torch.float32 if self.cuda else torch.float64,
                         device=self.device)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MAX)
        return float(t.item())

    def _capture(self, fn, calls):
        """The graph of ``calls`` calls, and whether it came out empty (torch warns then)."""
        import warnings

        g = torch.cuda.CUDAGraph()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()  # warm-up on the capture stream (a collective: the peers do the same)
            g.capture_begin(capture_error_mode="thread_local")
            try:
                for _ in range(calls):
                    fn()
            finally:
                g.capture_end()
        torch.cuda.current_stream(self.device).wait_stream(side)
        empty = any("graph is empty" in str(w.message).lower() for w in caught)
        if empty and self.dist.get_world_size() > 1:
            # a replay of nothing would time ~0.1 us per "call": never write that as GPU time
            raise RuntimeError("the CUDA graph captured no kernels for this collective; its "
                               "replays would time nothing (see profiler/collectives_graph.py)")
        return g, empty

    def _replay(self, g, calls) -> float:
        self._barrier()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        g.replay()
        e.record()
        e.synchronize()
        return s.elapsed_time(e) * 1e-3 / calls

    def point(self, fn) -> dict | None:
        """Statistics of ``fn``; ``fn=None`` is a rank that only keeps in step (returns None)."""
        t = self.t
        work = fn or (lambda: None)
        for _ in range(t["warmup"]):
            work()
        single = self._eager(work, 1)[0]
        single = max(self._agree_max(single if fn else 0.0), 1e-7)
        calls = max(t["min_calls"], min(t["max_calls"], round(t["round_s"] / single)))
        eager = [self._eager(work, calls) for _ in range(t["rounds"])]
        if self.cuda:
            g, empty = self._capture(fn, calls) if fn else (None, False)
            if g is not None:
                g.replay()
            gpu = []
            for _ in range(t["rounds"]):
                if g is not None:
                    gpu.append(self._replay(g, calls))
                else:
                    self._barrier()
            del g
        else:
            gpu, empty = [span for span, _ in eager], False
        if fn is None:
            return None
        return {"median_s": statistics.median(gpu), "p10_s": _quantile(gpu, 0.1),
                "p90_s": _quantile(gpu, 0.9), "eager_s": statistics.median(s for s, _ in eager),
                "launch_s": statistics.median(h for _, h in eager), "calls": calls,
                "empty_graph": empty}


def _worker(rank, world, backend, sizes, op, init_file, out_dir, timing):
    dist, device = init_group(rank, world, backend, init_file, timing["timeout_s"])
    timer = _GraphTimer(dist, device, timing)
    res = []
    try:
        for i, n in enumerate(sizes):
            nbytes, fn = _op(dist, op, int(n), rank, world, device)
            got = timer.point(fn)
            if got:
                res.append({"op": op, "i": i, "bytes": nbytes, **got})
            del fn
            if device.type == "cuda":
                torch.cuda.empty_cache()  # the graph's private pool
    finally:
        dist.destroy_process_group()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(res))


def measure_graph_op(world: int, backend: str, sizes, op: str, rounds: int | None = None,
                     min_world: int = 2) -> list[dict]:
    """Rows of ``GRAPH_COLUMNS`` for one op, one spawned world (``min_world=1``: self-check)."""
    import torch.multiprocessing as mp

    sizes = check_sweep(world, backend, [op], sizes, GRAPH_OPS, min_world)
    timing = timing_settings(backend == "nccl", rounds)
    label = "cuda-graph" if backend == "nccl" else "eager-cpu"
    with tempfile.TemporaryDirectory(prefix="goodput-collg-") as tmp:
        mp.start_processes(_worker, args=(world, backend, sizes, op, os.path.join(tmp, "store"),
                                          tmp, timing), nprocs=world, join=True,
                           start_method="spawn")
        per_rank = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(world)]
    rows, seen = [], set()
    for i in range(len(sizes)):
        got = [g for r in per_rank for g in r if g["i"] == i]
        if not got or got[0]["bytes"] in seen:  # two sizes rounded to one message
            continue
        seen.add(got[0]["bytes"])
        rows.append({"op": op, "world": world, "bytes": got[0]["bytes"],
                     **{k: max(g[k] for g in got) for k in
                        ("median_s", "p10_s", "p90_s", "eager_s", "launch_s", "calls")},
                     "timing": label, "empty_graph": any(g["empty_graph"] for g in got)})
    return rows


def topology() -> tuple[str | None, str]:
    """(``nvidia-smi topo -m`` without terminal colour codes, note) or (None, why absent)."""
    from goodput.profiler.provenance import _run

    if shutil.which("nvidia-smi") is None:
        return None, "absent: nvidia-smi is not on PATH"
    text = re.sub(r"\x1b\[[0-9;]*m", "", _run(["nvidia-smi", "topo", "-m"]))
    return (text, "nvidia-smi topo -m") if text else (None, "absent: nvidia-smi topo -m printed "
                                                            "nothing")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _csv_text(rows: list[dict]) -> str:
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(GRAPH_COLUMNS), lineterminator="\n",
                       extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({**r, **{k: f"{r[k]:.6e}" for k in
                            ("median_s", "p10_s", "p90_s", "eager_s", "launch_s")}})
    return buf.getvalue()


METHOD = ("per rank and size: eager rounds of back-to-back calls between {clock} (eager_s; "
          "launch_s = host submit time per call), then {graph}; table = max over ranks. "
          "all_gather bytes = gathered output, reduce_scatter bytes = full input; send_recv = "
          "pairs (0,1),(2,3).. in parallel, even rank sends")


def run_graph_collectives(world: int, device: str = "cuda", gpu_name: str = "auto",
                          out_root=Path("profiler/profiles"), sizes=None, ops=GRAPH_OPS,
                          rounds: int | None = None, command: str | None = None) -> Path:
    """Measure and write ``<out_root>/<gpu>/collectives/tp<world>.graph.csv`` + provenance;
    ``command``: the command line as parsed (the CLI's), else the process's argv."""
    import torch.multiprocessing as mp

    from goodput.profiler import provenance

    dev = torch.device(device if device == "cpu" else "cuda:0")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--graph --device cuda but torch sees no GPU; use --device cpu (gloo, "
                         "timed eagerly and labelled timing: eager-cpu)")
    backend = "nccl" if dev.type == "cuda" else "gloo"
    sizes = check_sweep(world, backend, ops, sizes, GRAPH_OPS)
    gpu = provenance.detect_gpu_name(dev) if gpu_name == "auto" else gpu_name
    cuda = backend == "nccl"
    path = collectives_path(out_root, gpu, world, graph=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    topo, topo_note = topology()
    timing = timing_settings(cuda, rounds)
    info = provenance.collect(dev)
    info["argv"] = info["command"]
    info["command"] = command or info["command"]
    info.update({
        "gpu": gpu, "world": world, "backend": backend,
        "gpus_visible": torch.cuda.device_count() if cuda else 0,
        "gpu_names": [torch.cuda.get_device_name(i) for i in range(world)] if cuda else [],
        "dtype": "bfloat16" if cuda else "float32",
        "nccl": nccl_version() if cuda else None, "nccl_nvls_enable": "0",
        "topology": topo, "topology_source": topo_note,
        "timing_method": "cuda-graph" if cuda else "eager-cpu",
        "timing": {k: v for k, v in timing.items() if k != "timeout_s"},
        "method": METHOD.format(
            clock="CUDA events" if cuda else "perf_counter readings",
            graph="the same calls captured in one CUDA graph, replays between CUDA events "
                  "(median_s/p10_s/p90_s = GPU time per call)" if cuda else
                  "no CUDA graph on the CPU: median_s/p10_s/p90_s repeat the eager rounds"),
        "ops_requested": list(ops), "sizes": sizes,
    })
    t0, rows, failed = time.time(), [], {}
    for k, op in enumerate(ops):
        try:
            rows += measure_graph_op(world, backend, sizes, op, rounds)
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as exc:
            failed[op] = " ".join(str(exc).split())[-400:]
        done = k + 1 == len(ops)
        if rows:
            text = _csv_text(rows)
            _atomic_write(path, text)
            info.update({
                "status": "complete" if done and not failed else
                          f"partial: {len({r['op'] for r in rows})} of {len(ops)} ops",
                "ops_failed": failed, "run_seconds": round(time.time() - t0, 1),
                "table_sha256": hashlib.sha256(text.encode()).hexdigest()[:12],
                "fit": CollectivesTable(rows, world).fits(),
            })
            _atomic_write(path.with_suffix(".provenance.json"),
                          json.dumps(info, indent=1, sort_keys=True) + "\n")
    if not rows:
        raise ValueError(f"profile collectives --graph --world {world}: every op failed "
                         f"({failed}); nothing written")
    return path


def selfcheck(sizes=(4096, 1 << 20, 64 << 20)) -> list[dict]:
    """One GPU, world 1 (NCCL): capture and replay all_reduce, all_gather and reduce_scatter
    through the sweep's own code, so a multi-GPU session finds a broken capture in seconds. It
    checks the mechanics (capture, replay, events), not link numbers: one rank moves nothing
    over a link. At world 1 NCCL's in-place all-reduce has nothing to do, so its graph is
    empty (allowed here, an error at world >= 2); all_gather and reduce_scatter copy locally
    and must capture kernels."""
    if not torch.cuda.is_available():
        raise ValueError("collectives_graph selfcheck needs a CUDA GPU (it captures NCCL calls)")
    rows = []
    for op in ("all_reduce", "all_gather", "reduce_scatter"):
        rows += measure_graph_op(1, "nccl", list(sizes), op, rounds=3, min_world=1)
    for r in rows:
        print(f"{r['op']:<15} {int(r['bytes']):>10} B  graph {r['median_s'] * 1e6:8.2f} us  "
              f"eager {r['eager_s'] * 1e6:8.2f} us  launch {r['launch_s'] * 1e6:7.2f} us  "
              f"x{r['calls']}" + ("  (empty graph: a world-1 no-op)" if r["empty_graph"] else ""))
    bad = [r for r in rows if not (r["median_s"] > 0 and r["launch_s"] > 0)
           or (r["empty_graph"] and r["op"] != "all_reduce")]
    if bad or len(rows) != 3 * len(sizes):
        raise ValueError(f"collectives_graph selfcheck: missing or non-positive rows {bad}")
    return rows


__all__ = ["DEFAULT_SIZES", "measure_graph_op", "run_graph_collectives", "selfcheck",
           "timing_settings", "topology"]

if __name__ == "__main__":
    selfcheck()
    sys.exit(0)
