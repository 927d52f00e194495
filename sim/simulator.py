"""Build a simulated cluster from a SimConfig and replay a trace through it.

The simulator asks the cost model, never the other way round: instances get their cost model from
``make_cost_model``; the planner (later) only calls ``simulate``.
"""
from __future__ import annotations

import dataclasses
import gc
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from goodput.sim.catalog import get_gpu, get_model
from goodput.sim.clients import Clients
from goodput.sim.config import ConfigError, SimConfig
from goodput.sim.config_checks import check_config
from goodput.sim.config_clients import check_clients
from goodput.sim.costmodel.factory import make_cost_model
from goodput.sim.costmodel.pipelined import PipelinedCostModel
from goodput.sim.engine.clock import SimClock
from goodput.sim.engine.disagg import DecodeCapacityFreed, KVDispatcher, build_dispatcher, link_table
from goodput.sim.engine.instance import Instance
from goodput.sim.engine.kvcache import kv_capacity
from goodput.sim.engine.observer import NullObserver
from goodput.sim.engine.policies import make_policy
from goodput.sim.engine.proposers import speculation_memory
from goodput.sim.engine.records import RecordSink
from goodput.sim.engine.routers import make_router
from goodput.sim.engine.sequence import UNFINISHED
from goodput.sim.engine.trace_events import EventTrace
from goodput.sim.feed import ArrivalFeed, as_chunks
from goodput.sim.invariants import check_run

TIMESERIES_COLUMNS = ["time_s", "instance", "batch_size", "prefill_tokens", "running", "waiting",
                      "kv_used_blocks", "kv_total_blocks"]


@dataclass
class SimResult:
    requests: pd.DataFrame  # raw per-request records (see goodput.sim.engine.records)
    timeseries: pd.DataFrame
    instances: pd.DataFrame
    sim_duration_s: float
    wall_s: float
    config: SimConfig
    cost_sources: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    #: histogram over every token's time-between-tokens (bins: goodput.sim.engine.tbt.EDGES)
    tbt_hist: np.ndarray | None = None
    migration: dict = field(default_factory=dict)
    #: disaggregated pools: per-link traffic (goodput.sim.engine.disagg.link_table) and KV hand-off counts
    links: pd.DataFrame | None = None
    kv_transfer: dict = field(default_factory=dict)
    #: injected faults: failures, requests they affected, tokens those recompute
    faults: dict = field(default_factory=dict)
    #: one row per step of every rag request (goodput.sim.compound.STEP_COLUMNS); None: no rag request
    steps: pd.DataFrame | None = None
    #: the request driver: client mode, sessions, closed loop, retrieval (goodput.sim.clients.Clients.info)
    clients: dict = field(default_factory=dict)
    #: events the run scheduled on its clock (arrivals, iteration ends, transfers...): what the
    #: event loop did, independent of the machine (benchmarks/sim_speed.py prints it per request)
    events: int = 0


class TraceObserver(NullObserver):
    """Feeds an instance's lifecycle events into the run's ``EventTrace`` (``--trace-events``)."""

    def __init__(self, trace: EventTrace):
        self.trace = trace

    def queued(self, seq, inst, t):
        self.trace.request_queued(seq.rid, inst, t)

    def scheduled(self, seq, inst, t):
        self.trace.request_scheduled(seq.rid, inst, t)

    def first_token(self, seq, inst, t):
        self.trace.first_token(seq.rid, inst, t)

    def preempted(self, seq, inst, t, mode):
        self.trace.preemption(seq.rid, inst, t, mode)

    def ended(self, seq, inst, t, outcome, reason):
        self.trace.request_end(seq.rid, inst, t, outcome, reason)

    def iteration(self, inst, t0, t1, iterations, prefill_seqs, prefill_tokens, decode_seqs,
                  decode_tokens):
        self.trace.iteration(inst, t0, t1, iterations, prefill_seqs, prefill_tokens, decode_seqs,
                             decode_tokens)


@dataclass
class Cluster:
    clock: SimClock
    instances: list
    rows: list  # one dict per instance for the instance table
    cfg: SimConfig
    records: RecordSink
    trace: EventTrace | None = None
    dispatcher: KVDispatcher | None = None  # prefill -> decode KV hand-off (pools only)
    #: tokens per prefix block of the trace (its format's; None: the prefix cache's default)
    prefix_unit_tokens: int | None = None

    def add_instance(self, g: int) -> Instance:
        """Start one more instance of cluster group ``g`` (used at build time and by scale-out);
        a pipeline-parallel one is ``pp`` virtual engines (returns the first)."""
        cfg = self.cfg
        if not 0 <= g < len(cfg.cluster):
            raise ConfigError(f"events: group {g} does not exist (cluster has {len(cfg.cluster)} groups)")
        group = cfg.cluster[g]
        model, gpu, sched = get_model(group.model), get_gpu(group.gpu), cfg.scheduler
        if group.policy:
            sched = dataclasses.replace(sched, policy=group.policy)
        tp, pp = group.tp, group.pp
        if pp > model.layers:
            raise ConfigError(f"cluster[{g}].pp={pp}: {model.name} has {model.layers} layers; a "
                              "pipeline stage needs at least one")
        spec_w, spec_kv = speculation_memory(sched.section("speculation"), model.name, tp)
        cap = kv_capacity(model, gpu, tp, sched.block_size, sched.gpu_memory_utilization,
                          sched.activation_reserve_gb, sched.num_gpu_blocks, spec_w, spec_kv, pp)
        cost = make_cost_model(model, gpu, tp, cfg.cost_model)
        if pp > 1:
            cost = PipelinedCostModel(cost, model, gpu, tp, pp)
        base = group.name or f"{model.name}@{gpu.name}x{tp}" + (f"pp{pp}" if pp > 1 else "")
        first = None
        for engine in range(pp):
            name = f"{base}/ve{engine}" if pp > 1 else base
            inst = self._start(group, name, model, gpu, sched, cap, cost)
            first = first or inst
        assert first is not None
        return first

    def _start(self, group, name, model, gpu, sched, cap, cost) -> Instance:
        """One engine: an instance, or one virtual engine of a pipeline-parallel instance (billed
        for ``tp`` of its ``tp x pp`` GPUs, so the pipeline's engines add up to all of them)."""
        cfg = self.cfg
        idx = len(self.instances)
        observers: tuple = (TraceObserver(self.trace),) if self.trace is not None else ()
        if self.dispatcher is not None and group.role != "prefill":
            observers += (DecodeCapacityFreed(self.dispatcher),)
        if self.trace is not None:
            self.trace.instance(idx, name)
        inst = Instance(self.clock, idx, name, cost, cap, make_policy(sched, cap, model.max_context),
                        self.records, cfg.fast_forward, cfg.output.timeseries_interval_s,
                        model.max_context, host_link_gbs=sched.host_link_gbs or gpu.pcie_gbs,
                        swap_space_gb=sched.swap_space_gb, observers=observers, role=group.role,
                        prefix_unit_tokens=self.prefix_unit_tokens)
        if self.dispatcher is not None:
            if group.role == "prefill":
                inst.handoff = self.dispatcher
            else:
                self.dispatcher.decode_instances.append(inst)
        self.instances.append(inst)
        self.rows.append({"instance": idx, "group": name, "gpu": gpu.name, "model": model.name,
                          "tp": group.tp, "pp": group.pp, "num_gpus": group.tp, "role": group.role,
                          "price_per_hour": gpu.price_per_hour * group.tp, "tdp_w": gpu.tdp_w,
                          "kv_blocks": cap.total_blocks, "kv_tokens": cap.total_tokens,
                          "cost_source": cost.source, "started_s": self.clock.now})
        return inst


def build_cluster(cfg: SimConfig, records: RecordSink, prefix_unit_tokens: int | None = None) -> Cluster:
    if not cfg.cluster:
        raise ConfigError("cluster: at least one instance group is required")
    trace = EventTrace() if cfg.output.trace_events else None
    cluster = Cluster(SimClock(), [], [], cfg, records, trace, prefix_unit_tokens=prefix_unit_tokens)
    if any(g.role == "prefill" for g in cfg.cluster):
        cluster.dispatcher = build_dispatcher(cfg, cluster.clock)
    for g, group in enumerate(cfg.cluster):  # counts >= 1: checked by check_config
        for _ in range(group.count):
            cluster.add_instance(g)
    return cluster


def _schedule_events(cluster: Cluster, router, faults: dict) -> None:
    """Cluster events and injected faults from ``cfg.events`` (checked up front by check_config;
    link ids are checked here, before the run starts)."""
    clock = cluster.clock
    fabric = cluster.dispatcher.fabric if cluster.dispatcher is not None else None
    for n, ev in enumerate(cluster.cfg.events):
        links = _event_links(fabric, ev, n) if ev.action.endswith("_link") else []

        def fire(_e, ev=ev, links=links):
            now = clock.now
            if ev.action == "scale_out":
                cluster.add_instance(ev.group)
            elif ev.action in ("drain", "fail"):
                inst = cluster.instances[ev.instance]
                # queued requests go elsewhere at once; running ones migrate (Llumnix) or finish
                # here on a drain, and lose their KV and recompute elsewhere on a failure
                moved = inst.drain() if ev.action == "drain" else inst.fail(now)
                if ev.action == "fail":
                    faults["failures"] += 1
                    faults["requests_affected"] += len(moved)
                    faults["recompute_tokens"] += sum(s.prefill_target for s in moved)
                for seq in moved:
                    dst = router.choose(seq, now)
                    dst.submit(seq)
                    dst.wake()
            elif ev.action == "recover":
                cluster.instances[ev.instance].recover(now)
            elif ev.action == "slow":
                cluster.instances[ev.instance].slow_down(ev.factor)
            elif fabric is not None:
                if ev.action == "degrade_link":
                    fabric.degrade(links, ev.factor)
                elif ev.action == "partition_link":
                    fabric.partition(links)
                else:
                    fabric.restore(links)
            else:  # the live-migration link
                manager = getattr(router, "manager", None)
                if manager is not None:
                    manager.link.scale(ev.factor if ev.action == "degrade_link" else 1.0)

        clock.call_later(max(0.0, ev.time_s), fire)


def _event_links(fabric, ev, n: int) -> list[str]:
    """The fabric link ids a link event names (``node:N`` = node N's NIC links)."""
    if fabric is None:
        return []
    known = fabric.topology.links()
    out: list[str] = []
    for name in ev.links:
        if name.startswith("node:"):
            node = name.split(":", 1)[1]
            if not node.isdigit() or int(node) >= len(fabric.topology.nodes):
                raise ConfigError(f"events[{n}].links: {name!r} names no node (nodes 0.."
                                  f"{len(fabric.topology.nodes) - 1})")
            out += fabric.topology.node_links(int(node))
        elif name in known:
            out.append(name)
        else:
            raise ConfigError(f"events[{n}].links: no link {name!r}; ids look like "
                              f"{', '.join(sorted(known)[:3])} ... (see links.csv of a run) or node:N")
    if not out:
        raise ConfigError(f"events[{n}].links: name the fabric links (ids or node:N) to "
                          f"{ev.action.split('_')[0]}")
    return out


@contextmanager
def _young_collections_spaced() -> Iterator[None]:
    """Space out the cyclic collector's young-generation passes while the event loop runs.

    Every iteration allocates short-lived objects (plans, events, tuples) that reference counting
    frees at once; with the default threshold (700 allocations) the collector walks the young
    survivors that often and finds nothing to collect, about a sixth of a run's time. What exists
    at the start (the cluster, the trace chunks, imported modules) is frozen out of the collector's
    view, young passes run 100x less often, and both are restored afterwards, even on error.
    Cycles are still collected (nothing is disabled), only later.
    """
    old = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(old[0] * 100, *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


def simulate(cfg: SimConfig, trace, total: int | None = None) -> SimResult:
    """Replay ``trace`` (a Trace, a DataFrame, or an iterable of arrival-ordered DataFrame chunks)."""
    wall0 = time.perf_counter()
    check_config(cfg)  # every value, before anything is built
    check_clients(cfg)
    records = RecordSink()  # hands the ends of session, closed-loop and compound requests on
    cluster = build_cluster(cfg, records, getattr(trace, "meta", {}).get("prefix_block_tokens"))
    router = make_router(cfg.router, cluster.instances)
    clock = cluster.clock
    cutoff = cfg.max_sim_time_s if cfg.max_sim_time_s is not None else math.inf
    progress = None
    if cfg.progress:
        from tqdm import tqdm
        progress = tqdm(total=total or (len(trace) if hasattr(trace, "__len__") else None),
                        unit="req", desc="simulating", mininterval=0.5)
    clients = Clients(clock, router, records, cfg)
    feed = ArrivalFeed(clock, as_chunks(trace), router, records, cutoff, progress, clients)
    router.feed_active = lambda: feed.cols is not None or clients.active()
    router.start(clock, cfg.seed, cluster.trace)
    clients.start()
    faults = {"failures": 0, "requests_affected": 0, "recompute_tokens": 0}
    _schedule_events(cluster, router, faults)
    with _young_collections_spaced():
        clock.run(None if math.isinf(cutoff) else cutoff)
    if progress is not None:
        progress.close()
    end = clock.now
    events = clock.events_scheduled()
    feed.finish()
    # nothing left to happen (a cut can leave transfers and migrations in flight, holding blocks)
    complete_run = clock.peek() == math.inf and all(not i.has_work() for i in cluster.instances)
    for inst in cluster.instances:
        inst.drain_unfinished(end)
    manager = getattr(router, "manager", None)
    if manager is not None:  # requests mid stop-and-copy belong to no instance: count them too
        for seq in manager.in_flight():
            records.add(seq, UNFINISHED, reason="in live migration at end of simulation")
            if cluster.trace is not None:
                cluster.trace.request_end(seq.rid, seq.instance, end, "unfinished",
                                          "in live migration at end of simulation")
    clients.finish(end)  # rows still to be sent, rag requests between steps
    requests = records.to_frame()
    steps = clients.steps.to_frame() if clients.steps.rows else None
    check_run(requests, feed.rows, cluster.instances if complete_run else [], steps,
              clients.steps.calls_created)
    first = float(requests["arrival_s"].min()) if len(requests) else 0.0
    if math.isinf(cutoff) and len(requests):
        # the run ends when its last request does: a cluster event scheduled after that (a late
        # scale-out or drain) must not stretch the measured duration and dilute every rate
        last = np.nanmax(np.concatenate([requests["completion_s"].to_numpy(),
                                         requests["arrival_s"].to_numpy()]))
        end = min(end, float(last))
    ts = [row for inst in cluster.instances for row in inst.stats.ts]
    timeseries = pd.DataFrame(ts, columns=TIMESERIES_COLUMNS).sort_values(["time_s", "instance"],
                                                                           kind="stable")
    inst_rows = []
    for row, inst in zip(cluster.rows, cluster.instances, strict=True):
        st = inst.stats
        ended = inst.retired_at if inst.retired_at == inst.retired_at else end
        # billed while it exists within the run: from its start (scale-out) to the run's end or
        # to when it was drained and empty
        billed = max(0.0, min(ended, end) - max(row["started_s"], first) - inst.downtime_until(end))
        inst_rows.append({**row, "ended_s": min(ended, end), "billed_s": billed,
                          "busy_s": st.busy_s, "iterations": st.iterations,
                          "preemptions": st.preemptions, "swaps": st.swaps, "failures": st.failures,
                          "decode_stall_s": st.stall_s, "stall_iterations": st.stall_iterations,
                          **(inst.spec.summary() if inst.spec.active else {}),
                          **(inst.kv.cache.counters() if inst.kv.cache is not None else {})})
    tbt_hist = sum(inst.decode.gaps.hist for inst in cluster.instances)
    links, kv_transfer = None, {}
    if cluster.dispatcher is not None:
        d = cluster.dispatcher
        links = link_table(d.fabric, clock.now)
        kv_transfer = {"transfers": d.transfers, "failed": d.failed, "bytes": d.bytes,
                       "mode": d.mode, "waiting_at_end": len(d.waiting)}
    if cluster.trace is not None:
        cluster.trace.write(cfg.output.trace_events)
    return SimResult(requests=requests, timeseries=timeseries.reset_index(drop=True),
                     instances=pd.DataFrame(inst_rows), sim_duration_s=max(0.0, end - first),
                     wall_s=time.perf_counter() - wall0, config=cfg,
                     cost_sources={r["group"]: r["cost_source"] for r in cluster.rows},
                     tbt_hist=tbt_hist,
                     migration={"completed": manager.completed, "aborted": manager.aborted,
                                "bytes": manager.bytes} if manager else {},
                     links=links, kv_transfer=kv_transfer, steps=steps, clients=clients.info(),
                     events=events,
                     faults=faults if any(e.action not in ("drain", "scale_out") for e in cfg.events) else {})
