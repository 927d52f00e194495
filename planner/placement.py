"""DistServe-style placement search for disaggregated prefill/decode pools, by simulation.

DistServe (Zhong et al., OSDI'24) places each phase on its own instances and picks each phase's
parallelism to maximise *per-GPU goodput*: the highest request rate per GPU at which the SLO
attainment target still holds. This module does the same on the simulator, phase by phase:

* **Prefill capacity of one instance of tp_p**: one prefill instance, the trace's prompts with
  outputs cut to 2 tokens (the KV is still handed off, but decoding costs nothing), two decode
  instances; the largest rate whose *TTFT* attainment reaches the target.
* **Decode capacity of one instance of tp_d**: one decode instance on the real lengths, fed by
  the best prefill candidate replicated to twice the rate's need; the largest rate whose *TPOT*
  attainment reaches the target (TPOT counts from the first token, so the hand-off is in it).
* Each capacity: bracketing and geometric bisection over the Poisson arrival rate on one fixed
  request sample (as planner/capacity.py does for colocated instances).
* **Combine.** For a target rate R: n_p = ceil(R / cap_p), n_d = ceil(R / cap_d) for every pair of
  candidates, keep the pair with the fewest GPUs. For a GPU budget: every (n_p, n_d) that fits,
  keep the highest per-GPU rate min(n_p cap_p, n_d cap_d) / GPUs. Then **verify** the design by
  one full simulation (both SLOs, jointly), adding an instance to the phase that falls short.

TP candidates are the divisors of the model's attention heads up to a node's 8 GPUs (and the
budget). Pipeline parallelism is not modelled by the simulator, so every candidate has pp = 1.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from goodput.planner.errors import PlannerError
from goodput.planner.placement_types import Check, Design, PhaseCapacity

__all__ = ["Check", "Design", "PhaseCapacity", "PlacementTask", "search_placement"]

NODE_GPUS = 8


@dataclass(frozen=True)
class PlacementTask:
    """What a placement search depends on."""

    model: str
    prefill_gpu: str
    decode_gpu: str
    lengths: np.ndarray  # (k, 2) prompt/output pairs the probes resample
    ttft_s: float
    tpot_s: float
    attainment: float = 0.9
    policy: str = "vllm"
    cost_model: str = "auto"
    kv_transfer: str = "layer_by_layer"
    max_tp: int = NODE_GPUS
    max_pp: int = 1  # pipeline stages tried per phase (divisors of the model's layers)
    min_requests: int = 200
    max_requests: int = 3000
    #: a probe's arrivals span this many zero-load lifetimes of the phase (TTFT for prefill,
    #: end-to-end for decode), at least min_span_s; a rate needing > max_requests fails
    span_lifetimes: float = 20.0
    min_span_s: float = 10.0
    verify_span_s: float = 300.0  # a verification replays this much of arrivals (<= max_requests)
    rel_tol: float = 0.05
    max_probes: int = 24
    seed: int = 0

    def __post_init__(self):
        if not (self.ttft_s > 0 and self.tpot_s > 0):
            raise PlannerError(f"placement: TTFT and TPOT bounds must be > 0 s, got "
                               f"{self.ttft_s}, {self.tpot_s}")
        if not 0 < self.attainment <= 1:
            raise PlannerError(f"placement: attainment must be in (0, 1], got {self.attainment}")
        lengths = np.asarray(self.lengths)
        if lengths.ndim != 2 or lengths.shape[1] != 2 or len(lengths) == 0:
            raise PlannerError("placement: lengths must be a non-empty (n, 2) array of "
                               "prompt/output token counts")
        if self.max_tp < 1 or self.max_pp < 1:
            raise PlannerError(f"placement: max_tp and max_pp must be >= 1, got {self.max_tp}, "
                               f"{self.max_pp}")
        if not (20 <= self.min_requests <= self.max_requests):
            raise PlannerError(f"placement: need 20 <= min_requests <= max_requests, got "
                               f"{self.min_requests}, {self.max_requests}")


# ---------------------------------------------------------------- simulation plumbing
def tp_candidates(model: str, max_tp: int = NODE_GPUS) -> list[int]:
    """Divisors of the model's attention heads up to min(max_tp, 8)."""
    from goodput.sim.catalog import get_model

    try:
        heads = get_model(model).heads
    except ValueError as exc:
        raise PlannerError(f"placement: {exc}") from None
    out = [t for t in range(1, min(max_tp, NODE_GPUS) + 1) if heads % t == 0]
    if not out:
        raise PlannerError(f"placement: no TP degree <= {max_tp} divides {model}'s {heads} heads")
    return out


def parallel_candidates(model: str, max_tp: int = NODE_GPUS, max_pp: int = 1) -> list[tuple[int, int]]:
    """(tp, pp) per phase: TP dividing the heads (<= 8, one node), PP dividing the layers."""
    from goodput.sim.catalog import get_model

    layers = get_model(model).layers
    pps = [p for p in range(1, max_pp + 1) if layers % p == 0]
    return [(tp, pp) for pp in pps for tp in tp_candidates(model, max_tp)]


def config(task: PlacementTask, groups: list[tuple]):
    """A SimConfig of (role, gpu, tp, count[, pp]) groups with the task's policy and cost model."""
    from goodput.sim.config import InstanceGroupConfig, SimConfig

    cfg = SimConfig(cluster=[InstanceGroupConfig(model=task.model, gpu=g[1], tp=g[2], count=g[3],
                                                 pp=g[4] if len(g) > 4 else 1, role=g[0],
                                                 name=f"{g[0]}-{g[1]}-tp{g[2]}")
                             for g in groups if g[3] > 0])
    cfg.scheduler.policy = task.policy
    cfg.cost_model.kind = task.cost_model
    cfg.network.kv_transfer = task.kv_transfer
    cfg.router.name = "least_outstanding_tokens"
    cfg.output.timeseries_interval_s = 1e12  # latencies only
    cfg.seed = task.seed
    return cfg


class Sample:
    """One fixed request sample; ``at(rate, n)`` is its first n requests arriving at ``rate``."""

    def __init__(self, task: PlacementTask, out_cap: int | None = None):
        rng = np.random.default_rng([task.seed, 0x5EED])
        lengths = np.asarray(task.lengths, dtype=np.int64)
        idx = rng.integers(0, len(lengths), task.max_requests)
        self.prompt, self.output = lengths[idx, 0], lengths[idx, 1]
        if out_cap is not None:
            self.output = np.minimum(self.output, out_cap)
        self.base = np.cumsum(rng.exponential(1.0, task.max_requests))

    def at(self, rate: float, n: int) -> pd.DataFrame:
        return pd.DataFrame({"request_id": np.arange(n), "arrival_s": self.base[:n] / rate,
                             "prompt_tokens": self.prompt[:n], "output_tokens": self.output[:n]})


def simulate_requests(cfg, df: pd.DataFrame, task: PlacementTask) -> pd.DataFrame:
    """Per-request metrics of ``df`` replayed on ``cfg``."""
    from goodput.sim.config import ConfigError
    from goodput.sim.engine.kvcache import CapacityError
    from goodput.sim.metrics import request_metrics
    from goodput.sim.simulator import simulate

    try:
        return request_metrics(simulate(cfg, df).requests)
    except (ConfigError, CapacityError) as exc:
        groups = ", ".join(f"{g.count} x {g.role} {g.gpu} tp{g.tp}" for g in cfg.cluster)
        raise PlannerError(f"placement: {task.model} on {groups} does not run: {exc}") from None


def attainments(q: pd.DataFrame, task: PlacementTask) -> Check:
    """Both-bound, TTFT-only and TPOT-only attainment over every request (unfinished miss)."""
    from goodput.sim.metrics import SLO, slo_met

    rate = float(len(q) / max(float(q.arrival_s.max()), 1e-9))
    return Check(rate, float(slo_met(q, SLO(task.ttft_s, task.tpot_s)).mean()),
                 float(slo_met(q, SLO(task.ttft_s, None)).mean()),
                 float(slo_met(q, SLO(None, task.tpot_s)).mean()),
                 float(q.ttft_s.quantile(0.9)), float(q.tpot_s.quantile(0.9)))


def run_check(cfg, df: pd.DataFrame, task: PlacementTask) -> Check:
    """Simulate ``df`` on ``cfg``; attainments over every request (unfinished ones miss)."""
    return attainments(simulate_requests(cfg, df, task), task)


def max_rate(passes: Callable[[float], bool], r0: float, rel_tol: float, max_probes: int
             ) -> tuple[float, str]:
    """Largest passing rate: halve from r0 until one passes, double until one fails, bisect."""
    lo, hi, r, n = 0.0, None, r0, 0
    while n < max_probes and lo == 0.0:
        n += 1
        if passes(r):
            lo = r
        else:
            hi, r = r, r / 2
            if r < r0 / 512:
                return 0.0, f"misses the target at every rate down to {hi:.3g} req/s"
    while n < max_probes and hi is None:
        n += 1
        if passes(2 * lo):
            lo *= 2
        else:
            hi = 2 * lo
    while n < max_probes and hi is not None and hi / lo > 1 + rel_tol:
        n += 1
        m = (lo * hi) ** 0.5
        lo, hi = (m, hi) if passes(m) else (lo, m)
    if lo == 0.0:
        return 0.0, f"no passing rate within {max_probes} probes"
    return lo, "" if hi is not None else f"did not saturate within {max_probes} probes"


class _Probes:
    """Probe sizing and bookkeeping of one search: a probe at rate r replays
    n(r) = max(min_requests, span x r) requests, span = span_lifetimes zero-load lifetimes; a
    rate that needs more than max_requests is not simulated and counts as failing."""

    def __init__(self, task: PlacementTask, cfg_at, sample: Sample, metric: str):
        self.task, self.cfg_at, self.sample, self.metric = task, cfg_at, sample, metric
        self.probes: list = []
        self.capped = False
        zero = np.arange(task.min_requests, dtype=float) * 1e5  # one request at a time
        df = sample.at(1.0, task.min_requests)
        df["arrival_s"] = zero
        q = simulate_requests(cfg_at(1e-9), df, task)
        life = q.ttft_s.mean() if metric == "ttft_attainment" else q.e2e_s.mean()
        self.span = max(task.min_span_s, task.span_lifetimes * float(life))
        self.zero = getattr(attainments(q, task), metric)

    def passes(self, r: float) -> bool:
        n = max(self.task.min_requests, math.ceil(self.span * r))
        if n > self.task.max_requests:
            self.capped = True
            self.probes.append([r, None])
            return False
        a = getattr(run_check(self.cfg_at(r), self.sample.at(r, n), self.task), self.metric)
        self.probes.append([r, a])
        return a >= self.task.attainment

    def search(self, cap: PhaseCapacity, r0: float) -> PhaseCapacity:
        if self.zero < self.task.attainment:
            cap.limit = f"misses at zero load ({self.metric.split('_')[0].upper()} attainment " \
                        f"{self.zero:.1%})"
            return cap
        cap.rate, cap.limit = max_rate(self.passes, r0, self.task.rel_tol, self.task.max_probes)
        fail = [p for p in self.probes if p[0] > cap.rate and (p[1] is None
                                                              or p[1] < self.task.attainment)]
        if cap.rate > 0 and fail and min(fail, key=lambda p: p[0])[1] is None:
            cap.limit = (f"probe-limited: rates above {cap.rate:.4g} req/s need more than "
                         f"max_requests={self.task.max_requests} requests per probe")
        cap.probes = self.probes
        return cap


# ---------------------------------------------------------------- per-phase capacities
def prefill_capacity(task: PlacementTask, tp: int, pp: int = 1) -> PhaseCapacity:
    """Max rate one prefill instance of ``tp`` x ``pp`` sustains with TTFT attainment >= target."""
    sample = Sample(task, out_cap=2)
    cfg = config(task, [("prefill", task.prefill_gpu, tp, 1, pp),
                        ("decode", task.decode_gpu, tp * pp, 2)])
    probes = _Probes(task, lambda r: cfg, sample, "ttft_attainment")
    r0 = max(0.25, 4000.0 * tp * pp / float(np.mean(sample.prompt)))
    return probes.search(PhaseCapacity("prefill", task.prefill_gpu, tp, 0.0, pp=pp), r0)


def decode_capacity(task: PlacementTask, tp: int, feed: PhaseCapacity, pp: int = 1) -> PhaseCapacity:
    """Max rate one decode instance of ``tp`` x ``pp`` sustains with TPOT attainment >= target,
    fed by replicas of the prefill candidate ``feed`` (twice as many as the rate needs)."""
    if feed.rate <= 0:
        raise PlannerError(f"placement: prefill {feed.name} has no capacity, so no "
                           f"decode probe can be fed ({feed.limit})")

    def cfg_at(r: float):
        n_p = max(1, math.ceil(2 * r / feed.rate))
        return config(task, [("prefill", feed.gpu, feed.tp, n_p, feed.pp),
                             ("decode", task.decode_gpu, tp, 1, pp)])

    probes = _Probes(task, cfg_at, Sample(task), "tpot_attainment")
    return probes.search(PhaseCapacity("decode", task.decode_gpu, tp, 0.0, pp=pp), 2.0 * tp * pp)


# ---------------------------------------------------------------- combining and verifying
def combine(prefill: list[PhaseCapacity], decode: list[PhaseCapacity],
            target_rate: float | None = None, max_gpus: int | None = None) -> Design:
    """Fewest GPUs for ``target_rate``, or the best per-GPU rate within ``max_gpus``."""
    if (target_rate is None) == (max_gpus is None):
        raise PlannerError("placement: give exactly one of a target rate (req/s) or a GPU budget")
    if target_rate is not None and not (math.isfinite(target_rate) and target_rate > 0):
        raise PlannerError(f"placement: target rate must be a finite number > 0, got {target_rate}")
    if max_gpus is not None and max_gpus < 2:
        raise PlannerError(f"placement: a GPU budget of {max_gpus} cannot hold a prefill and a "
                           f"decode instance (need >= 2)")
    ps, ds = [c for c in prefill if c.rate > 0], [c for c in decode if c.rate > 0]
    if not ps or not ds:
        bad = prefill if not ps else decode
        raise PlannerError(f"placement: no {bad[0].phase if bad else 'phase'} candidate meets "
                           f"the SLO at any rate ({'; '.join(f'tp{c.tp}: {c.limit}' for c in bad)})")
    best: Design | None
    if target_rate is not None:
        cands = [Design(p, d, math.ceil(target_rate / p.rate * (1 - 1e-9)),
                        math.ceil(target_rate / d.rate * (1 - 1e-9))) for p in ps for d in ds]
        best = min(cands, key=lambda c: (c.gpus, -c.rate))
    else:
        B = max_gpus or 0
        cands = [Design(p, d, a, b) for p in ps for d in ds for a in range(1, B // p.gpus + 1)
                 for b in range(1, (B - a * p.gpus) // d.gpus + 1)]
        best = min(cands, key=lambda c: (-c.per_gpu, -c.rate)) if cands else None
    if best is None:
        raise PlannerError(f"placement: no prefill + decode design fits in {max_gpus} GPUs "
                           f"(smallest instance: prefill {min(c.gpus for c in ps)} GPUs, decode "
                           f"{min(c.gpus for c in ds)})")
    return best


def verify(task: PlacementTask, d: Design, rate: float, requests: int | None = None) -> Check:
    """One full simulation of design ``d`` at ``rate`` on the real lengths, both SLOs."""
    n = requests or min(task.max_requests, max(task.min_requests, math.ceil(
        task.verify_span_s * rate)))
    groups = [("prefill", d.prefill.gpu, d.prefill.tp, d.n_prefill, d.prefill.pp),
              ("decode", d.decode.gpu, d.decode.tp, d.n_decode, d.decode.pp)]
    return run_check(config(task, groups), Sample(task).at(rate, n), task)


def design_max_rate(task: PlacementTask, d: Design) -> tuple[float, str]:
    """The design's largest rate meeting both bounds jointly, by full-simulation bisection."""
    return max_rate(lambda r: verify(task, d, r).meets(task.attainment), max(d.rate, 1e-3),
                    task.rel_tol, task.max_probes)


@dataclass
class PlacementResult:
    prefill: list[PhaseCapacity]
    decode: list[PhaseCapacity]
    design: Design
    check: Check | None
    wall_s: float
    notes: list[str] = field(default_factory=list)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([{"phase": c.phase, "gpu": c.gpu, "tp": c.tp, "pp": c.pp,
                              "req/s per instance": round(c.rate, 3),
                              "req/s per GPU": round(c.per_gpu, 3), "limit": c.limit}
                             for c in self.prefill + self.decode])


def search_placement(task: PlacementTask, target_rate: float | None = None,
                     max_gpus: int | None = None, verify_rounds: int = 8,
                     log: Callable[[str], None] = lambda s: None) -> PlacementResult:
    """Per-phase capacities for every (tp, pp) candidate, the combined design, its verification."""
    t0 = time.perf_counter()
    cap = min(task.max_tp, max_gpus - 1 if max_gpus else NODE_GPUS)
    cands = [(tp, pp) for tp, pp in parallel_candidates(task.model, cap, task.max_pp)
             if max_gpus is None or tp * pp < max_gpus]
    prefill = []
    for tp, pp in cands:
        prefill.append(prefill_capacity(task, tp, pp))
        log(f"prefill {prefill[-1].name}: {prefill[-1].rate:.3f} req/s per instance")
    feed = max(prefill, key=lambda c: c.rate)
    decode = []
    for tp, pp in cands:
        decode.append(decode_capacity(task, tp, feed, pp))
        log(f"decode {decode[-1].name}: {decode[-1].rate:.3f} req/s per instance")
    design = combine(prefill, decode, target_rate, max_gpus)
    rate = target_rate if target_rate is not None else design.rate
    notes: list[str] = []
    check = None
    for _ in range(verify_rounds + 1):
        check = verify(task, design, rate)
        log(f"verify {design.text()} at {rate:.3f} req/s: attainment {check.attainment:.1%}")
        if check.meets(task.attainment) or max_gpus is not None:
            break
        phase = "prefill" if check.ttft_attainment < check.tpot_attainment else "decode"
        if phase == "prefill":
            design.n_prefill += 1
        else:
            design.n_decode += 1
        notes.append(f"verification at {rate:.3g} req/s short ({check.attainment:.1%}): added "
                     f"one {phase} instance")
    return PlacementResult(prefill, decode, design, check, time.perf_counter() - t0, notes)
