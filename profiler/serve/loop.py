"""The real serving loop: replay a trace against a model in real time, with the simulator's policies.

Why it reuses ``goodput.sim.engine.instance.Instance``: the fidelity question is "does the simulator
predict what an engine does?", so the engine must take the same decisions. The loop drives an
Instance in step mode: at each iteration boundary it submits the requests whose arrival time has
passed, asks ``Instance.next_plan`` (the same policy code: vLLM, Sarathi-Serve, Orca, ...),
executes the plan on the model and reports the measured end time back with
``Instance.finish_iteration``, which does the same bookkeeping (token counts, TTFT, time between
tokens, completions, KV block accounting) as in simulation. Only the clock differs: wall time
here, the cost model there.

Executors run a plan: ``ModelExecutor`` on the real model (goodput.profiler.serve.runner), and
``CostModelExecutor`` which advances a virtual clock by the cost model's iteration time, which
makes the loop a step-by-step simulator (tests check it equals ``sim.simulate`` exactly).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from goodput.profiler.serve.spec_step import finish_spec_step, plan_spec_step
from goodput.sim.config import ConfigError, SimConfig
from goodput.sim.costmodel.base import Batch
from goodput.sim.engine.clock import SteppedClock
from goodput.sim.engine.instance import Instance
from goodput.sim.engine.kvcache import KVCapacity
from goodput.sim.engine.observer import NullObserver
from goodput.sim.engine.policies import make_policy
from goodput.sim.engine.records import RecordSink
from goodput.sim.engine.sequence import Sequence
from goodput.sim.workload.schema import Trace

#: predicted_s: the cost model's iteration time; kernel_s: its GPU part alone (profiled models);
#: speculative steps (kind "spec"): spec_k drafts per sequence, new_tokens the tokens kept,
#: predicted_s the simulator's draft + verify price, draft_s / predicted_draft_s the drafting
#: part measured (GPU events) and predicted (NaN for other kinds); chunks: each prompt chunk as
#: "tokens@context" joined by ";" (empty for a decode), so that a later fit can re-price the
#: iteration with another profile (the decodes are n_seqs minus the chunks, their tokens and
#: contexts what remains of new_tokens and context_tokens)
ITERATION_COLUMNS = ["start_s", "end_s", "kind", "n_seqs", "new_tokens", "context_tokens",
                     "predicted_s", "kernel_s", "gpu_s", "spec_k", "draft_s", "predicted_draft_s",
                     "chunks"]


class WallClock(SteppedClock):
    """Seconds since ``start`` (offset so that the trace's first arrival is "now" at start)."""

    def __init__(self) -> None:
        self._t0 = time.perf_counter()
        self._origin = 0.0

    def start(self, origin: float) -> None:
        self._t0, self._origin = time.perf_counter(), origin

    @property
    def now(self) -> float:
        return self._origin + time.perf_counter() - self._t0

    def sleep_until(self, t: float) -> None:
        """Sleep, then spin the last fraction of a millisecond (sleep overshoots by ~0.1 ms)."""
        left = t - self.now
        if left > 1e-3:
            time.sleep(left - 5e-4)
        while self.now < t:
            pass


class VirtualClock(SteppedClock):
    """A clock that only moves when told: the cost-model executor advances it."""

    def __init__(self) -> None:
        self.now = 0.0

    def start(self, origin: float) -> None:
        self.now = origin

    def sleep_until(self, t: float) -> None:
        self.now = max(self.now, t)


class CostModelExecutor:
    """Executes a plan by advancing a virtual clock by the cost model's time for the batch."""

    def __init__(self, cost_model, clock: VirtualClock):
        self.cost, self.clock = cost_model, clock
        self.store = None

    def execute(self, seqs, q_lens, ctx_lens, n_prefills) -> float:
        dt = self.cost.batch_time(Batch(q_lens, ctx_lens))
        self.clock.now += dt
        return dt

    def execute_spec(self, step) -> tuple[float, float]:
        """A speculative step takes the simulator's own price for it (draft + verify)."""
        self.clock.now += step.predicted_s
        return step.predicted_s, step.predicted_draft_s


class StoreKeeper(NullObserver):
    """Keeps a SequenceStore (real KV pages and token ids) in step with the instance: pages go
    when a request is preempted by recompute, everything goes when it ends."""

    def __init__(self, store):
        self.store = store

    def preempted(self, seq, inst, t, mode) -> None:
        self.store.release_pages(seq.rid)

    def ended(self, seq, inst, t, outcome, reason) -> None:
        self.store.release(seq.rid)


@dataclass
class ServeResult:
    requests: pd.DataFrame  # the simulator's raw per-request records (goodput.sim.engine.records)
    iterations: pd.DataFrame  # one row per executed iteration (ITERATION_COLUMNS)
    wall_s: float
    instance: dict
    #: every token's time between tokens, binned as the simulator bins it (goodput.sim.engine.tbt.EDGES)
    tbt_hist: object = None


def check_servable(cfg: SimConfig) -> None:
    """The real loop serves one instance of one model at TP 1, recomputing on preemption."""
    if len(cfg.cluster) != 1 or cfg.cluster[0].count != 1:
        raise ConfigError("cluster: the real serving loop runs exactly one instance (one group, "
                          "count: 1); simulate larger clusters with `goodput simulate`")
    if cfg.cluster[0].tp != 1:
        raise ConfigError(f"cluster[0].tp={cfg.cluster[0].tp}: the real serving loop runs on one "
                          "GPU; use tp: 1")
    if cfg.scheduler.preemption != "recompute":
        raise ConfigError(f"scheduler.preemption='{cfg.scheduler.preemption}': the real serving "
                          "loop supports 'recompute' only")


def sequences_of(trace) -> list[Sequence]:
    """Arrival-ordered Sequences of a Trace or canonical DataFrame (priorities kept)."""
    df = trace.df if isinstance(trace, Trace) else trace
    if len(df) and not np.all(np.diff(df["arrival_s"].to_numpy(dtype=float)) >= 0):
        raise ValueError("trace.arrival_s is not sorted; sort the trace by arrival time")
    prio = df["priority"].to_numpy() if "priority" in df else np.zeros(len(df), dtype=int)
    return [Sequence(int(r), float(a), int(p), int(o), int(pr)) for r, a, p, o, pr in
            zip(df["request_id"], df["arrival_s"], df["prompt_tokens"], df["output_tokens"], prio,
                strict=True)]


class ServingLoop:
    """One instance serving a trace in (wall or virtual) time; see the module docstring."""

    def __init__(self, cfg: SimConfig, capacity: KVCapacity, max_context: int, executor, clock,
                 cost_model=None, name: str = "instance"):
        check_servable(cfg)
        self.cfg, self.executor, self.clock = cfg, executor, clock
        self.cost = cost_model
        self.records = RecordSink()
        sched = cfg.scheduler
        keepers = (StoreKeeper(executor.store),) if executor.store is not None else ()
        self.inst = Instance(clock, 0, name, cost_model, capacity,
                             make_policy(sched, capacity, max_context), self.records,
                             fast_forward=False, max_context=max_context, observers=keepers)

    def run(self, trace, max_wall_s: float | None = None) -> ServeResult:
        """Serve every request of ``trace``; stops early (requests counted unfinished) after
        ``max_wall_s`` seconds of serving."""
        seqs = sequences_of(trace)
        inst, clock, execute = self.inst, self.clock, self.executor.execute
        log: list[tuple] = []
        n, i = len(seqs), 0
        origin = seqs[0].arrival if n else 0.0
        deadline = origin + max_wall_s if max_wall_s else math.inf
        spec_on = inst.spec.active
        w0 = time.perf_counter()
        clock.start(origin)
        while True:
            now = clock.now
            if now > deadline:
                break
            while i < n and seqs[i].arrival <= now:
                inst.submit(seqs[i])
                i += 1
            plan = inst.next_plan(now)
            if plan is None:
                if i >= n:
                    break
                clock.sleep_until(min(seqs[i].arrival, deadline))
                continue
            if spec_on and not plan.prefills and plan.decode_tokens == 1 and inst.running:
                step = plan_spec_step(inst, now)
                if step is not None:
                    gpu_s, draft_s = self.executor.execute_spec(step)
                    end = clock.now
                    finish_spec_step(inst, step, now, end, draft_s)
                    log.append((now, end, "spec", step, draft_s, gpu_s, 0))
                    continue
            members, q_lens, ctx_lens = inst.plan_members(plan)
            gpu_s = execute(members, q_lens, ctx_lens, len(plan.prefills))
            end = clock.now
            inst.finish_iteration(plan, now, end)
            kind = ("decode" if not plan.prefills else "mixed" if plan.decode and len(members)
                    > len(plan.prefills) else "prefill")
            log.append((now, end, kind, q_lens, ctx_lens, gpu_s, len(plan.prefills)))
        end = clock.now
        inst.drain_unfinished(end)
        if i < n:
            rest = seqs[i:]
            self.records.add_unarrived([s.rid for s in rest], [s.arrival for s in rest],
                                       [s.prompt for s in rest], [s.output for s in rest],
                                       [s.priority for s in rest], [0] * len(rest),
                                       "arrives after the serving deadline")
        wall = time.perf_counter() - w0
        st = inst.stats
        info = {"kv_blocks": inst.total_blocks, "iterations": st.iterations,
                "preemptions": st.preemptions, "busy_s": st.busy_s}
        return ServeResult(self.records.to_frame(), self._iteration_frame(log), wall, info,
                           inst.decode.gaps.hist.copy())

    def _iteration_frame(self, log) -> pd.DataFrame:
        """The iteration log with the cost model's predictions, computed after serving so that
        predicting never adds to the measured iterations."""
        cost = self.cost
        kernel_time = getattr(cost, "kernel_time", None)
        rows = []
        nan = math.nan
        for start, end, kind, q_lens, ctx_lens, gpu_s, n_chunks in log:
            if kind == "spec":
                step, draft_s = q_lens, ctx_lens
                rows.append((start, end, kind, len(step.seqs), int(step.advance.sum()),
                             int(step.contexts.sum()), step.predicted_s, nan, gpu_s, step.k,
                             draft_s, step.predicted_draft_s, ""))
                continue
            batch = Batch(q_lens, ctx_lens)
            chunks = ";".join(f"{q}@{c}" for q, c in zip(q_lens[:n_chunks], ctx_lens[:n_chunks],
                                                         strict=True))
            rows.append((start, end, kind, len(q_lens), sum(q_lens), sum(ctx_lens),
                         cost.batch_time(batch) if cost else nan,
                         kernel_time(batch) if kernel_time else nan, gpu_s, 0, nan, nan, chunks))
        return pd.DataFrame(rows, columns=ITERATION_COLUMNS)
