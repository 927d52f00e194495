"""Maximum SLO-sustainable request rate of one instance on one slice, by simulation.

For an instance configuration (GPU type, TP degree, batching policy) and a slice's request
lengths, the capacity is the largest Poisson arrival rate at which at least ``attainment_target``
of the requests meet both the TTFT and the TPOT bound. Every probe replays a prefix of the *same*
request stream (lengths drawn once from the slice, arrivals drawn once at 1 req/s and divided by
the probe rate), so attainment changes with the rate alone and the bracketing search sees a
(nearly) monotone function: start from a rate derived from the zero-load latency, halve until a
probe passes, double until one fails, then bisect geometrically until the bracket is within
``rel_tol``. The lower end is returned, so a capacity is always a rate that was observed to pass.

A probe is sized to last ``span_e2e`` request lifetimes (see SearchSettings): a fixed, small
number of requests would let a big instance "sustain" any rate by swallowing the whole probe as
one burst. A configuration that misses the SLO even with one request in flight (zero load) has
capacity 0; ``limit`` then says which bound binds (e.g. "TPOT p90 at zero load 53 ms > SLO
40 ms"), which is what the infeasibility errors quote.

Results are cached as JSON files named by a SHA-256 of every input (model, GPU, TP, scheduler and
cost-model settings, SLO, search settings, the exact lengths, and a fingerprint of the simulator's
source and catalogs), so a change to any of them re-measures and nothing stale is reused.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from goodput.planner.errors import PlannerError

CACHE_VERSION = 1
_REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class SearchSettings:
    """How hard the search looks. A probe at rate r replays n(r) requests, where
    n(r) = clamp(span_e2e x r x zero-load mean e2e, min_requests, max_requests): long enough for
    the instance to reach steady state (span_e2e request lifetimes), so a probe cannot "pass" by
    absorbing a short burst into one batch. A rate that would need more than max_requests is
    not simulated and counts as failing: the capacity is then probe-limited, and says so.
    """

    attainment_target: float = 0.9
    min_requests: int = 300
    max_requests: int = 6000
    span_e2e: float = 30.0
    rel_tol: float = 0.05  # stop when hi / lo <= 1 + rel_tol
    max_probes: int = 30
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.attainment_target <= 1:
            raise PlannerError(f"attainment_target must be in (0, 1], got {self.attainment_target}")
        if self.min_requests < 20:
            raise PlannerError(f"min_requests must be >= 20 (got {self.min_requests}): fewer "
                               f"requests cannot resolve a {self.attainment_target:.0%} attainment")
        if self.max_requests < self.min_requests:
            raise PlannerError(f"max_requests ({self.max_requests}) must be >= min_requests "
                               f"({self.min_requests})")
        if not self.rel_tol > 0 or not self.span_e2e > 0:
            raise PlannerError(f"rel_tol and span_e2e must be > 0, got {self.rel_tol}, "
                               f"{self.span_e2e}")


@dataclass
class CapacityTask:
    """Everything one capacity search depends on (all of it, except ``label``, is in the key)."""

    model: str
    gpu: str
    tp: int
    ttft_s: float | None
    tpot_s: float | None
    lengths: np.ndarray  # (k, 2) prompt/output pairs the probes resample
    scheduler: dict = field(default_factory=dict)  # SchedulerConfig fields (policy, ...)
    cost_model: dict = field(default_factory=dict)  # CostModelConfig fields
    settings: SearchSettings = field(default_factory=SearchSettings)
    label: str = ""  # slice name, for messages only


@dataclass
class CapacityResult:
    rate: float  # req/s; 0 = misses the SLO even at zero load
    limit: str  # why the capacity is what it is (binding bound), '' if saturated normally
    zero_load_attainment: float
    probes: list = field(default_factory=list)  # [rate, attainment] in probe order
    cost_source: str = ""
    wall_s: float = 0.0
    cached: bool = False

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("cached")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CapacityResult:
        return cls(**d, cached=True)

    def upper(self, target: float) -> float:
        """The smallest probed rate above ``rate`` that failed (a rate too long to simulate
        counts as failing, as in the search): 0 when the capacity is 0 with no probe (it misses
        at zero load or does not fit), inf when no probe failed. With attainment monotone in
        the rate on the search's fixed request stream, a search of the same task at any
        ``rel_tol`` returns less than this (goodput.planner.design_search bounds designs with it)."""
        if self.rate <= 0 and not self.probes:
            return 0.0
        failed = [float(p[0]) for p in self.probes
                  if p[0] > self.rate and (p[1] is None or p[1] < target)]
        return min(failed) if failed else math.inf


# ---------------------------------------------------------------- cache key and store
@cache
def sim_fingerprint() -> str:
    """Hash of the simulator's source and catalogs, this search's source and any shipped profiles."""
    h = hashlib.sha256()
    files = (sorted((_REPO / "sim").rglob("*.py")) + sorted((_REPO / "sim").rglob("*.yaml"))
             + [Path(__file__).resolve()])  # the search itself decides which rate is returned
    for p in files:
        h.update(str(p.relative_to(_REPO)).encode())
        h.update(p.read_bytes())
    prof = _REPO / "profiler" / "profiles"
    if prof.is_dir():
        for p in sorted(prof.rglob("*")):
            if p.is_file():
                st = p.stat()
                h.update(f"{p.relative_to(_REPO)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def cost_source(task: CapacityTask) -> str:
    from goodput.sim.catalog import get_gpu, get_model
    from goodput.sim.config import CostModelConfig, from_dict
    from goodput.sim.costmodel.factory import make_cost_model

    cm = make_cost_model(get_model(task.model), get_gpu(task.gpu), task.tp,
                         from_dict(CostModelConfig, task.cost_model, "cost_model"))
    return cm.source


def task_key(task: CapacityTask) -> str:
    meta = {"v": CACHE_VERSION, "sim": sim_fingerprint(), "model": task.model, "gpu": task.gpu,
            "tp": task.tp, "ttft": task.ttft_s, "tpot": task.tpot_s,
            "scheduler": task.scheduler, "cost_model": task.cost_model,
            "cost_source": cost_source(task), "settings": dataclasses.asdict(task.settings)}
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    h.update(np.ascontiguousarray(task.lengths, dtype=np.int64).tobytes())
    return h.hexdigest()


def default_cache_dir() -> Path:
    env = os.environ.get("GOODPUT_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "goodput"


def _valid_entry(d: object) -> str:
    """'' if ``d`` is a well-formed cache entry, else what is wrong with it (a negative, NaN or
    non-numeric capacity is corrupt: it is re-measured, never trusted)."""
    if not isinstance(d, dict):
        return f"holds a {type(d).__name__}, not an object"
    want = {f.name for f in dataclasses.fields(CapacityResult)} - {"cached"}
    if set(d) != want:
        return f"has fields {sorted(d)}, expected {sorted(want)}"
    for name in ("rate", "zero_load_attainment", "wall_s"):
        v = d[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            return f"{name}={v!r} is not a finite number >= 0"
    if d["zero_load_attainment"] > 1:
        return f"zero_load_attainment={d['zero_load_attainment']!r} is above 1"
    if not isinstance(d["limit"], str) or not isinstance(d["cost_source"], str):
        return "limit and cost_source must be strings"
    if not isinstance(d["probes"], list) or not all(
            isinstance(p, list) and len(p) >= 2 for p in d["probes"]):
        return "probes must be a list of [rate, attainment, ...] lists"
    return ""


class CapacityCache:
    """One JSON file per search under ``<dir>/capacity``; writes are atomic (temp file + rename).

    Entries are validated when read: a corrupt one (unreadable, wrong fields, a negative or NaN
    capacity) is listed in ``corrupt`` (path and reason, for the log) and re-measured.
    ``lock(key)`` is a per-entry OS file lock: two plans that need the same capacity measure it
    once, the second reading what the first wrote."""

    def __init__(self, directory: str | Path | None = None, enabled: bool = True):
        self.dir = Path(directory or default_cache_dir()) / "capacity"
        self.enabled = enabled
        self.corrupt: list[str] = []

    def get(self, key: str) -> CapacityResult | None:
        path = self.dir / f"{key}.json"
        if not self.enabled or not path.is_file():
            return None
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError) as exc:  # ValueError: bad JSON or bad UTF-8
            why = f"unreadable ({type(exc).__name__})"
        else:
            why = _valid_entry(d)
            if not why:
                return CapacityResult.from_dict(d)
        self.corrupt.append(f"{path}: {why}")
        return None

    def lock(self, key: str):
        """The file lock of entry ``key`` (a context manager; a no-op when the cache is off)."""
        if not self.enabled:
            return contextlib.nullcontext()
        from filelock import FileLock

        (self.dir / "locks").mkdir(parents=True, exist_ok=True)
        return FileLock(self.dir / "locks" / f"{key}.lock", thread_local=False)

    def put(self, key: str, result: CapacityResult) -> None:
        if not self.enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.dir, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(result.to_dict(), fh)
        os.replace(tmp, self.dir / f"{key}.json")


# ---------------------------------------------------------------- the search
class _Prober:
    """Replays one fixed request sample at any rate on one instance and returns its attainment."""

    def __init__(self, task: CapacityTask):
        from goodput.sim.config import (
            CostModelConfig,
            InstanceGroupConfig,
            SchedulerConfig,
            SimConfig,
            from_dict,
        )
        from goodput.sim.metrics import SLO

        s = task.settings
        self.cfg = SimConfig(cluster=[InstanceGroupConfig(model=task.model, gpu=task.gpu,
                                                          tp=task.tp, count=1)],
                             scheduler=from_dict(SchedulerConfig, task.scheduler, "scheduler"),
                             cost_model=from_dict(CostModelConfig, task.cost_model, "cost_model"),
                             seed=s.seed)
        self.cfg.output.timeseries_interval_s = 1e12  # no time series: only latencies matter
        self.slo = SLO(task.ttft_s, task.tpot_s, s.attainment_target)
        rng = np.random.default_rng([s.seed, 0x9E3779B9])
        lengths = np.asarray(task.lengths, dtype=np.int64)
        idx = rng.integers(0, len(lengths), s.max_requests)
        self.prompt, self.output = lengths[idx, 0], lengths[idx, 1]
        self.base = np.cumsum(rng.exponential(1.0, s.max_requests))  # arrivals at 1 req/s
        self.settings = s
        self.probes: list = []  # [rate, attainment or None if not simulated, requests]
        self.source = ""
        self.e2e0 = math.nan

    def run(self, arrivals: np.ndarray, cutoff: bool = False) -> pd.DataFrame:
        """Simulate the first len(arrivals) requests of the sample at ``arrivals``.

        With ``cutoff`` the run stops at last arrival + TTFT bound + (longest output - 1) x TPOT
        bound: a request that meets both bounds has finished by then, so whatever is still
        running would miss anyway and attainment is exactly the same, while overloaded probes
        (the slowest to simulate) end early.
        """
        from goodput.sim.metrics import request_metrics
        from goodput.sim.simulator import simulate

        n = len(arrivals)
        df = pd.DataFrame({"request_id": np.arange(n), "arrival_s": arrivals,
                           "prompt_tokens": self.prompt[:n], "output_tokens": self.output[:n]})
        self.cfg.max_sim_time_s = None
        if cutoff and self.slo.ttft_s is not None and self.slo.tpot_s is not None:
            self.cfg.max_sim_time_s = (float(arrivals[-1]) + self.slo.ttft_s
                                       + (int(self.output[:n].max()) - 1) * self.slo.tpot_s
                                       ) * (1 + 1e-9)
        res = simulate(self.cfg, df)
        self.source = next(iter(res.cost_sources.values()), "")
        return request_metrics(res.requests)

    def zero_load(self) -> pd.DataFrame:
        """min_requests requests one at a time, far enough apart never to overlap."""
        df = self.run(np.arange(self.settings.min_requests, dtype=float) * 1e6)
        self.e2e0 = float(df["e2e_s"].mean())
        return df

    def requests_at(self, rate: float) -> int:
        s = self.settings
        return max(s.min_requests, math.ceil(s.span_e2e * rate * self.e2e0))

    def attainment(self, rate: float) -> float | None:
        """Attainment at ``rate``, or None when the probe would exceed max_requests."""
        from goodput.sim.metrics import slo_met

        n = self.requests_at(rate)
        if n > self.settings.max_requests:
            self.probes.append([float(rate), None, n])
            return None
        met = float(slo_met(self.run(self.base[:n] / rate, cutoff=True), self.slo).mean())
        self.probes.append([float(rate), met, n])
        return met


def _zero_load_limit(df: pd.DataFrame, task: CapacityTask) -> str:
    """Name the bound a lone request already misses, with the quantile the target implies."""
    q = task.settings.attainment_target
    pct = f"p{100 * q:g}"
    done = df["outcome"] == "completed"
    if (1 - done.mean()) > 1 - q:
        reasons = df.loc[~done, "reject_reason"].astype(str).value_counts()
        why = reasons.index[0] if len(reasons) else "not completed"
        return (f"{1 - done.mean():.0%} of requests fail even alone on one instance ({why}); "
                f"longest prompt {int(df['prompt_tokens'].max())} tokens")
    parts = []
    for col, bound, name in (("ttft_s", task.ttft_s, "TTFT"), ("tpot_s", task.tpot_s, "TPOT")):
        v = df.loc[done, col].dropna()
        if bound is not None and len(v) and (v > bound).mean() > 1 - q:
            parts.append(f"{name} {pct} at zero load {v.quantile(q) * 1e3:.1f} ms > SLO "
                         f"{bound * 1e3:g} ms")
    return "; ".join(parts) or "TTFT and TPOT misses together exceed the allowed fraction at zero load"


def search_capacity(task: CapacityTask) -> CapacityResult:
    """Bracketing search for the largest passing rate (see the module docstring)."""
    from goodput.sim.engine.kvcache import CapacityError
    from goodput.sim.metrics import slo_met

    if task.ttft_s is None:
        raise PlannerError("ttft_s is required for a capacity search: without a TTFT bound "
                           "queueing delay is unpunished and every rate would 'pass'")
    t0 = time.perf_counter()
    s = task.settings
    try:
        prober = _Prober(task)
        alone = prober.zero_load()
    except CapacityError as exc:
        return CapacityResult(0.0, f"does not fit: {exc}", 0.0, wall_s=time.perf_counter() - t0)
    zero = float(slo_met(alone, prober.slo).mean())
    if zero < s.attainment_target:
        return CapacityResult(0.0, _zero_load_limit(alone, task), zero, [], prober.source,
                              time.perf_counter() - t0)
    capped = False  # some probe was not simulated because it needed > max_requests

    def passes(r: float) -> bool:
        nonlocal capped
        a = prober.attainment(r)
        capped |= a is None
        return a is not None and a >= s.attainment_target

    budget = lambda: len(prober.probes) < s.max_probes  # noqa: E731
    # one request at a time saturates at 1 / e2e; batching does several times better, so the
    # search starts at 4x that and walks down by halving if it was too bold
    r0 = 1.0 / max(prober.e2e0, 1e-9)
    lo, hi, r = 0.0, None, 4 * r0
    while budget():  # find a passing rate (almost always the first probe)
        if passes(r):
            lo = r
            break
        hi, r = r, r / 2
        if r < r0 / 256:
            break
    while lo > 0 and hi is None and budget():  # double until a probe fails
        if passes(2 * lo):
            lo *= 2
        else:
            hi = 2 * lo
    while lo > 0 and hi is not None and hi / lo > 1 + s.rel_tol and budget():
        m = (lo * hi) ** 0.5
        if passes(m):
            lo = m
        else:
            hi = m
    limit = ""
    if hi is None:
        limit = f"did not saturate within {s.max_probes} probes (capacity is at least this)"
    elif lo == 0.0:
        limit = (f"misses the SLO at every probed rate down to {hi:.3g} req/s although it meets "
                 f"it at zero load")
    elif capped and min((p for p in prober.probes if p[0] > lo and (p[1] is None or
                                                                  p[1] < s.attainment_target)),
                        key=lambda p: p[0])[1] is None:  # the bracket's failing end was capped
        limit = (f"probe-limited: rates above {lo:.4g} req/s need more than max_requests="
                 f"{s.max_requests} requests per probe to reach steady state; raise it "
                 f"(--max-probe-requests) for a higher, still honest, capacity")
    return CapacityResult(lo, limit, zero, prober.probes, prober.source, time.perf_counter() - t0)


def _run_and_store(item) -> dict:
    """Worker entry point (module level so process pools and Ray can ship it)."""
    task, key, cache_dir, enabled = item
    cache = CapacityCache(cache_dir, enabled)
    with cache.lock(key):  # another plan measuring this entry: wait, then reuse its result
        done = cache.get(key)
        if done is not None:
            return {**done.to_dict(), "cached": True}
        result = search_capacity(task)
        cache.put(key, result)
    return result.to_dict()


def measure(tasks: list[CapacityTask], cache: CapacityCache | None = None,
            backend: str = "local", workers: int | None = None) -> list[CapacityResult]:
    """Capacities for ``tasks`` in order: cache hits first, the misses searched in parallel."""
    from goodput.planner.parallel import run_parallel

    cache = cache or CapacityCache()
    keys = [task_key(t) for t in tasks]
    out: list[CapacityResult | None] = [cache.get(k) for k in keys]
    todo = [i for i, r in enumerate(out) if r is None]
    if todo:
        root = cache.dir.parent
        items = [(tasks[i], keys[i], str(root), cache.enabled) for i in todo]
        for i, d in zip(todo, run_parallel(_run_and_store, items, backend, workers), strict=True):
            out[i] = CapacityResult(**d)
    return [r for r in out if r is not None]  # every miss was filled above
