"""Resumable profiling run for one (GPU, model, TP): grid -> measurements.csv + provenance.json.

Rows are appended and flushed one at a time, so a killed run keeps what it measured and a rerun
with the same arguments skips every point already in the table. A point that does not fit
(beyond the KV capacity of the full model on this GPU, or an out-of-memory error while measuring)
is written as ``infeasible`` with the reason, and the run goes on.
"""
from __future__ import annotations

import csv
import json
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from goodput.profiler import provenance
from goodput.profiler.attention_backends import AttentionSelector, contiguous_pages
from goodput.profiler.batches import InfeasiblePoint, build_meta, decode, draw_pages, kv_tokens
from goodput.profiler.collectives import ALLREDUCE_ESTIMATED, measure_copy_bandwidth
from goodput.profiler.grids import CPU_TINY, QUICK, GridConfig, Point, build_grid
from goodput.profiler.layers import Embedding, LayerStack, LMHead
from goodput.profiler.measure import iteration_overhead, time_fn
from goodput.profiler.shapes import PAGE_SIZE, ShardShapes, resolve_model

COLUMNS = ["kind", "subkind", "code", "n_seqs", "new_tokens", "kv_tokens", "status", "median_s",
           "p10_s", "p90_s", "rounds", "calls", "note"]
#: Fraction of GPU memory a serving engine gives to weights + KV + activations (vLLM's default
#: gpu_memory_utilization); it bounds the KV capacity that makes a grid point feasible.
MEMORY_UTILIZATION = 0.9


@dataclass
class RunConfig:
    model: str
    tp: int = 1
    gpu_name: str = "auto"
    device: str = "cuda"
    out_root: Path = Path("profiler/profiles")
    quick: bool = False
    depth: int = 0  # distinct layers in the timed stack; 0 = auto (see auto_depth)
    seed: int = 0
    budget_s: float = 600.0  # stop (resumably) after this long on one model
    #: Memory the CPU mode pretends to have: small enough that the tiny model's largest batches
    #: exceed it, so CI exercises the infeasible-point path.
    cpu_memory_gb: float = 0.01
    validate_full_depth: bool = False
    #: "fastest": each batch row is timed with the faster of the Triton paged kernel and torch
    #: SDPA (goodput.profiler.attention_backends); "triton": the Triton kernel alone (profiles before it)
    attention: str = "fastest"
    #: measure only the missing points of these subkinds (e.g. ("sarathi",) to add a new grid
    #: section to an older profile without re-timing what it never had); () = every point
    only: tuple[str, ...] = ()
    progress: bool = True
    extra: dict = field(default_factory=dict)


#: Bytes of weights the timed stack should stream, several times a Hopper L2 (50-60 MB), so that
#: no layer's weights are still cached when its next replay starts.
STACK_BYTES = 400e6


def auto_depth(s: ShardShapes) -> int:
    """2 to 4 distinct layers: enough that the stack's weights exceed STACK_BYTES, and never one
    (back-to-back graph replays then amortise the gap between replays over several layers)."""
    return int(max(2, min(4, -(-STACK_BYTES // (s.layer_params() * s.weight_bytes_per_param)))))


def profile_dir(out_root: Path, gpu: str, model: str, tp: int) -> Path:
    return Path(out_root) / gpu / model / f"tp{tp}"


def _read_done(path: Path) -> set:
    if not path.exists():
        return set()
    with path.open() as f:
        return {(r["kind"], r["code"]) for r in csv.DictReader(f)}


class Profiler:
    """Holds the model shard on the device and measures one grid point at a time."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("--device cuda but torch sees no GPU; use --device cpu")
        self.spec = resolve_model(cfg.model)
        self.s = ShardShapes.from_spec(self.spec, cfg.tp)
        cfg.depth = max(1, min(cfg.depth or auto_depth(self.s), self.spec.layers))
        self.gpu = provenance.detect_gpu_name(self.device) if cfg.gpu_name == "auto" \
            else cfg.gpu_name
        self.cuda = self.device.type == "cuda"
        self.grid_cfg = CPU_TINY if not self.cuda else QUICK if cfg.quick else GridConfig()
        if not self.cuda:
            # One thread: multi-threaded OpenMP spinning under a CPU quota stalls in 16 ms steps,
            # which would make the CPU mode's timings (and its CI test) erratic.
            torch.set_num_threads(1)
        #: time_fn's per-point budget: the CPU mode must finish in seconds.
        self.point_budget_s = 0.3 if self.cuda else 0.03
        self.sm_count = (torch.cuda.get_device_properties(self.device).multi_processor_count
                         if self.cuda else 8)
        total = (torch.cuda.mem_get_info(self.device)[1] if self.cuda
                 else cfg.cpu_memory_gb * 1e9)
        self.total_mem = total
        kv_tok_bytes = self.spec.layers * self.s.kv_bytes_per_token_layer()
        weights = self.spec.weight_bytes(cfg.tp)
        free_for_kv = MEMORY_UTILIZATION * total - weights
        self.kv_capacity = max(0, int(free_for_kv // kv_tok_bytes))
        # The grid always reaches one full-length sequence, even where the full model leaves no
        # room for it (a 70B shard on an 80 GB GPU): the cost of such a batch is still defined.
        self.token_budget = max(self.kv_capacity, self.spec.max_context)
        self.grid = build_grid(self.spec.max_context, self.grid_cfg, cfg.seed, self.token_budget)
        need = max([kv_tokens(p.code) for p in self.grid if p.kind == "batch"
                    and kv_tokens(p.code) <= self.token_budget] + [self.grid_cfg.max_tokens])
        max_seqs = max(sum(c for c, _, _ in decode(p.code)) for p in self.grid
                       if p.kind in ("batch", "overhead"))
        need_blocks = -(-need // PAGE_SIZE) + max_seqs  # + one partial page per sequence
        per_block = PAGE_SIZE * self.s.kv_bytes_per_token_layer()
        free = torch.cuda.mem_get_info(self.device)[0] if self.cuda else total
        room = 0.6 * free - cfg.depth * self.s.layer_params() * self.s.weight_bytes_per_param \
            - 2 * self.s.vocab * self.s.hidden * 2
        self.pool_blocks = int(max(64, min(need_blocks, room // (cfg.depth * per_block))))
        max_pos = max(self.spec.max_context, self.grid_cfg.max_tokens) + 1
        self.stack = LayerStack(self.s, cfg.depth, self.pool_blocks, max_pos, self.device,
                                cfg.seed)
        gen = torch.Generator(device=self.device)
        gen.manual_seed(cfg.seed + 1)
        self.embed = Embedding(self.s, self.device, gen)
        self.lmhead = LMHead(self.s, self.device, gen)
        max_rows = max([self.grid_cfg.max_tokens, max(self.grid_cfg.lmhead_rows)]
                       + [sum(c * q for c, q, _ in decode(p.code)) for p in self.grid
                          if p.kind in ("batch", "overhead")])
        self.h_in = torch.randn(max_rows, self.s.hidden, generator=gen, device=self.device
                                ).to(torch.bfloat16)
        self.res_in = torch.randn(max_rows, self.s.hidden, generator=gen, device=self.device
                                  ).to(torch.bfloat16)
        self.tokens = torch.randint(0, self.s.vocab, (max_rows,), generator=gen,
                                    device=self.device)
        self.selector: AttentionSelector | None = None
        if self.s.kv_fp8 and cfg.attention == "fastest":
            # torch's SDPA backends read no FP8 cache (an engine would dequantise or run FA3's
            # FP8 path, neither here): the Triton kernel, which upcasts pages as it loads them
            cfg.attention = "triton"
        if cfg.attention == "fastest":
            self.q_in = torch.randn(max_rows, self.s.q_heads, self.s.head_dim, generator=gen,
                                    device=self.device).to(torch.bfloat16)
            budget = self.point_budget_s / 3
            self.selector = AttentionSelector(self.device, lambda fn: time_fn(
                fn, self.device, graph=self.stack.capturable, budget_s=budget).median_s)
        elif cfg.attention != "triton":
            raise ValueError(f"attention='{cfg.attention}': use 'fastest' or 'triton'")

    # ---------------------------------------------------------------- one point
    def _meta(self, code: str, seed: int):
        return build_meta(code, self.s.group, self.s.kv_heads, self.s.head_dim,
                          self.pool_blocks, self.device, self.sm_count, seed)

    def measure(self, p: Point) -> dict:
        depth = self.cfg.depth
        graph = self.stack.capturable
        if p.kind in ("linear", "embed", "lmhead"):
            n = int(p.code.split("=")[1])
            if p.kind == "linear":
                meta = self._meta(f"1x{n}@0", 0)
                t = time_fn(lambda: self.stack.forward(self.h_in[:n], self.res_in[:n], meta,
                                                       attention=False),
                            self.device, graph=graph, budget_s=self.point_budget_s).scaled(1 / depth)
            elif p.kind == "embed":
                t = time_fn(lambda: self.embed.forward(self.tokens[:n]), self.device,
                            budget_s=self.point_budget_s)
            else:
                t = time_fn(lambda: self.lmhead.forward(self.h_in[:n], self.res_in[:n]),
                            self.device, budget_s=self.point_budget_s)
            return {"n_seqs": 1, "new_tokens": n, "kv_tokens": 0, "timing": t}
        groups = decode(p.code)
        n_seqs = sum(c for c, _, _ in groups)
        new = sum(c * q for c, q, _ in groups)
        kvt = kv_tokens(p.code)
        base = {"n_seqs": n_seqs, "new_tokens": new, "kv_tokens": kvt}
        if kvt > self.token_budget:
            raise InfeasiblePoint(
                f"{kvt} KV tokens exceed the full model's capacity on this GPU "
                f"({self.kv_capacity} tokens at {MEMORY_UTILIZATION:.0%} of memory)")
        meta = self._meta(p.code, zlib.crc32(p.code.encode()))
        if p.kind == "overhead":  # host time around the Triton-kernel forward
            return {**base, "timing": self._overhead(p.code, meta, new)}
        attn_fn, note = None, ""
        if self.selector is not None:
            ch = self.selector.choose(p.code, self.stack.layers[0], self.q_in[:new], meta)
            if ch.kind == "sdpa":
                pages = contiguous_pages(p.code)
                if pages.size > self.pool_blocks:
                    raise InfeasiblePoint(f"needs {pages.size} KV pages, pool holds "
                                          f"{self.pool_blocks}")
                meta = build_meta(p.code, self.s.group, self.s.kv_heads, self.s.head_dim,
                                  self.pool_blocks, self.device, self.sm_count, 0, pages=pages)
                attn_fn = AttentionSelector.attn_fn(ch, p.code)
            note = "attn=" + ch.label
        t = time_fn(lambda: self.stack.forward(self.h_in[:new], self.res_in[:new], meta,
                                               attn_fn=attn_fn),
                    self.device, graph=graph, budget_s=self.point_budget_s)
        return {**base, "timing": t.scaled(1 / depth), "note": note}

    def _overhead(self, code, meta, new):
        """Host time per iteration around a captured forward (see measure.iteration_overhead)."""
        n = meta.q_lens.shape[0]
        out = {}

        def fwd():
            self.stack.forward(self.h_in[:new], self.res_in[:new], meta)
            out["tok"] = self.lmhead.forward(self.h_in[:n], self.res_in[:n])

        launch = fwd
        if self.cuda and self.stack.capturable:
            fwd()
            torch.cuda.synchronize()
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                fwd()
            launch = g.replay
        pages = draw_pages(code, self.pool_blocks, 1)  # kept between iterations, as an engine does
        return iteration_overhead(
            prepare=lambda: meta.copy_from(build_meta(
                code, self.s.group, self.s.kv_heads, self.s.head_dim, self.pool_blocks,
                self.device, self.sm_count, 0, pages=pages)),
            launch=launch, fetch=lambda: out["tok"].cpu(), device=self.device)


def _allreduce_estimate(gpu: str, tp: int) -> dict | None:
    """Parameters of the all-reduce term for TP > 1 shards profiled on one GPU (not measured)."""
    if tp == 1:
        return None
    from goodput.sim.catalog import get_gpu
    from goodput.sim.costmodel.roofline import RooflineParams

    spec, p = get_gpu(gpu), RooflineParams()
    link = spec.nvlink_gbs if spec.nvlink_gbs > 0 else spec.pcie_gbs
    return {"source": ALLREDUCE_ESTIMATED, "tp": tp, "latency_s": p.allreduce_latency_s,
            "link_bytes_per_s": link * 1e9 * p.nvlink_efficiency,
            "formula": "latency + 2 (tp-1)/tp * bytes / link, 2 per layer + 1 (embedding); "
                       "link = catalog NVLink GB/s x RooflineParams.nvlink_efficiency"}


def _measure_retry(prof: Profiler, p: Point) -> dict:
    """``prof.measure(p)``, retried once after freeing the allocator's cache on out-of-memory
    (graph pools of a 128k-token point can leave the cache too fragmented for the next one)."""
    try:
        return prof.measure(p)
    except torch.OutOfMemoryError:
        if not prof.cuda:
            raise
    torch.cuda.empty_cache()
    return prof.measure(p)


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


def run_profile(cfg: RunConfig) -> Path:
    """Measure every grid point not yet in the table; returns the profile directory."""
    t_start = time.time()
    torch.manual_seed(cfg.seed)
    prof = Profiler(cfg)
    out = profile_dir(cfg.out_root, prof.gpu, prof.spec.name, cfg.tp)
    out.mkdir(parents=True, exist_ok=True)
    table = out / "measurements.csv"
    done = _read_done(table)
    info = provenance.collect(prof.device)
    meta = {
        "gpu": prof.gpu, "model": prof.spec.name, "tp": cfg.tp, "status": "running",
        "model_spec": {k: v for k, v in asdict(prof.spec).items() if k not in ("aliases",)},
        "shard": asdict(prof.s), "stack_depth": cfg.depth, "page_size": PAGE_SIZE,
        "kv_capacity_tokens": prof.kv_capacity, "token_budget": prof.token_budget,
        "memory_utilization": MEMORY_UTILIZATION, "pool_blocks": prof.pool_blocks,
        "sm_count": prof.sm_count,
        "grid": asdict(prof.grid_cfg), "quick": cfg.quick, "seed": cfg.seed,
        "allreduce": _allreduce_estimate(prof.gpu, cfg.tp),
        "attention_mode": cfg.attention,
        "timing": "CUDA graph replays between CUDA events, median of rounds" if prof.cuda
        else "time.perf_counter on the CPU, median of rounds",
        "provenance": info,
    }
    prev = out / "provenance.json"
    if prev.exists():  # a resumed run: keep where the earlier rows came from
        before = json.loads(prev.read_text())
        meta["previous_runs"] = [
            *before.pop("previous_runs", []),
            {k: before.get(k) for k in ("status", "run_seconds", "provenance")}]
        if prof.selector is not None:  # keep the earlier rows' kernel choices
            prof.selector.log.update((before.get("attention") or {}).get("per_shape", {}))
    if prof.selector is not None:
        meta["attention"] = prof.selector.provenance()
    _write_json(out / "provenance.json", meta)
    todo = [p for p in prof.grid if p.key not in done]
    skipped = [p for p in todo if cfg.only and p.subkind not in cfg.only]
    todo = [p for p in todo if p not in skipped]
    new_file = not table.exists()
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=len(prof.grid), initial=len(prof.grid) - len(todo),
                   desc=f"{prof.gpu}/{prof.spec.name}/tp{cfg.tp}", unit="pt")
    stopped = False
    last_save = time.time()
    with table.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        if new_file:
            w.writeheader()
        for p in todo:
            if time.time() - t_start > cfg.budget_s:
                stopped = True
                break
            row = {"kind": p.kind, "subkind": p.subkind, "code": p.code}
            try:
                r = _measure_retry(prof, p)
                t = r.pop("timing")
                note = r.pop("note", "")
                row.update(r, status="ok", median_s=f"{t.median_s:.6e}", p10_s=f"{t.p10_s:.6e}",
                           p90_s=f"{t.p90_s:.6e}", rounds=t.rounds, calls=t.calls, note=note)
            except InfeasiblePoint as exc:
                row.update(status="infeasible", note=str(exc))
            except torch.OutOfMemoryError as exc:
                row.update(status="infeasible", note="out of memory: " + str(exc)[:80])
                if prof.cuda:
                    torch.cuda.empty_cache()
            for col in ("n_seqs", "new_tokens", "kv_tokens"):
                row.setdefault(col, "")
            w.writerow(row)
            f.flush()
            if prof.selector is not None and time.time() - last_save > 20:
                _write_json(out / "provenance.json", meta)  # the choices so far (a kill keeps them)
                last_save = time.time()
            if bar:
                bar.update(1)
    if bar:
        bar.close()
    if cfg.validate_full_depth and not stopped:
        from goodput.profiler.validate import validate_full_depth

        _write_json(out / "validation.json", validate_full_depth(prof, out))
    meta["status"] = ("stopped (budget); rerun to resume" if stopped else
                      f"partial: only {','.join(cfg.only)} measured in this run; {len(skipped)} "
                      "grid points of other kinds not measured" if skipped else "complete")
    if cfg.only:
        meta["only"] = list(cfg.only)
    meta["run_seconds"] = round(time.time() - t_start, 1)
    _write_json(out / "provenance.json", meta)
    return out


def run_copy_bandwidth(device: str, gpu_name: str, out_root: Path) -> Path:
    dev = torch.device(device)
    gpu = provenance.detect_gpu_name(dev) if gpu_name == "auto" else gpu_name
    path = Path(out_root) / gpu / "copy_bandwidth.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = measure_copy_bandwidth(dev)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    _write_json(path.with_suffix(".provenance.json"), provenance.collect(dev))
    return path


__all__ = ["COLUMNS", "RunConfig", "profile_dir", "run_copy_bandwidth", "run_profile"]
