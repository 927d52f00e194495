"""Disaggregated prefill/decode (DistServe, Splitwise): moving each prefilled request's KV cache
from a prefill-only instance to a decode instance over the modelled network.

A prefill-only instance runs prompts; when one finishes (its first token sampled) the instance
keeps the request's KV blocks and hands the request to ``KVDispatcher.prefilled``. The
dispatcher picks a decode instance with room (``decode_dispatch``: least KV in use or reserved,
or round robin), *reserves* the blocks the KV needs there before a byte moves, and ships the
per-GPU shards over the ``Fabric`` (max-min fair sharing with every other transfer, latency,
jitter, loss) in the configured mode: ``after_prefill``, ``layer_by_layer`` (started when the
prompt's last prefill iteration starts, overlapping it; see ``goodput.sim.network.modes``) or ``pull``
(the decode side asks once its blocks are reserved). When every shard has landed, the request
joins the decode instance's batch at its next iteration boundary and the prefill instance frees
the KV. Requests that find no decode instance with room wait in FCFS order, holding their KV on
the prefill instance (backpressure: the prefill pool's memory fills, so it admits fewer
prompts); each decode completion retries the head. A transfer that fails (a partitioned link
with a stall timeout) is recomputed on its decode instance and counted as a preemption.

State has one owner each: blocks stay the pools' (reserve / attach / release through the
instances' public operations), the queue of waiting hand-offs is this module's.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable

from goodput.sim.engine.kvpool import Reservation
from goodput.sim.engine.observer import NullObserver
from goodput.sim.engine.sequence import Sequence
from goodput.sim.network import Fabric, GpuId, KVTransferResult, after_prefill, kv_size, layer_by_layer, pull

DISPATCH = ("least_loaded", "round_robin")


class _Shipment:
    """One request's KV on its way: the reservation at the destination and the shards in flight."""

    __slots__ = ("blocks", "bytes", "dst", "landed", "ok", "parts", "reservation", "seq", "src")

    def __init__(self, src, seq: Sequence, dst, reservation: Reservation, blocks: int, parts: int):
        self.src, self.seq, self.dst = src, seq, dst
        self.reservation, self.blocks = reservation, blocks
        self.parts = parts  # shards still in flight
        self.bytes = 0.0
        self.ok = True
        self.landed = False


class DecodeCapacityFreed(NullObserver):
    """Tells the dispatcher when a decode instance may have room again."""

    def __init__(self, dispatcher: KVDispatcher):
        self.dispatcher = dispatcher

    def ended(self, seq, inst, t, outcome, reason):
        self.dispatcher.retry()

    def preempted(self, seq, inst, t, mode):
        self.dispatcher.retry()


class KVDispatcher:
    def __init__(self, clock, fabric: Fabric, placement: dict[int, list[GpuId]], models: dict,
                 decode_instances: list, mode: str = "after_prefill", dispatch: str = "least_loaded"):
        self.clock, self.fabric = clock, fabric
        self.placement = placement  # instance index -> its GPUs on the topology
        self.models = models  # instance index -> (model spec, tp, pp)
        self.decode_instances = decode_instances  # candidates, in index order
        self.mode, self.dispatch = mode, dispatch
        self.early = mode == "layer_by_layer"  # starts when the last prefill iteration starts
        self.waiting: deque[tuple[object, Sequence]] = deque()
        self.shipping: dict[int, _Shipment] = {}  # rid -> shipment started, not yet attached
        self._next = 0
        self.transfers = self.failed = 0
        self.bytes = 0.0

    # ------------------------------------------------------------------ from prefill instances
    def prefill_finishing(self, src, seq: Sequence, t0: float, t1: float) -> None:
        """Layer-by-layer: the iteration ``[t0, t1]`` computes the last of ``seq``'s prompt; ship
        each layer's KV as it is computed if a decode instance has room now (else it waits for
        ``prefilled`` like any other)."""
        if not self.waiting:
            dst = self._choose(seq, self._blocks_needed(seq, 1))
            if dst is not None:
                self._ship(src, seq, dst, prefill=(t0, t1))

    def prefilled(self, src, seq: Sequence) -> None:
        """``seq`` finished its prompt on ``src``, which keeps its KV until it has landed."""
        job = self.shipping.get(seq.rid)
        if job is not None:  # already on its way (layer by layer)
            if job.landed:  # ... and arrived before this prompt's iteration ended
                job.dst.at_next_boundary(lambda: self._attach(job))
            return
        self.waiting.append((src, seq))
        self.retry()

    def retry(self) -> None:
        """Start the waiting hand-offs, FCFS, while a decode instance has room for the head."""
        while self.waiting:
            src, seq = self.waiting[0]
            dst = self._choose(seq, self._blocks_needed(seq))
            if dst is None:
                return
            self.waiting.popleft()
            self._ship(src, seq, dst)

    def reject_reason(self, seq: Sequence) -> str:
        """Why ``seq`` could never decode anywhere ('' if it can): checked once, on arrival."""
        need = self.decode_instances[0].capacity.blocks_for(seq.prompt + seq.output)
        if all(need > i.total_blocks - i.policy.watermark_blocks for i in self.decode_instances):
            return "prompt + output larger than every decode instance's KV cache"
        return ""

    # ------------------------------------------------------------------ choosing and shipping
    def _blocks_needed(self, seq: Sequence, generated: int | None = None) -> int:
        """Blocks the KV of ``seq`` (its prompt and every output token but the last one
        sampled) takes on a decode instance; the block size is the scheduler's, shared."""
        g = seq.generated if generated is None else generated
        return self.decode_instances[0].capacity.blocks_for(seq.prompt + g - 1)

    def _room(self, inst, blocks: int, now: float) -> bool:
        """Room for ``blocks`` beside the watermark and one more block per growing decode (the
        step in flight may take them), read exactly at ``now`` (mid-run too)."""
        free = inst.total_blocks - inst.used_blocks_now(now)
        return not inst.draining and blocks + inst.policy.watermark_blocks + inst.growing_decodes <= free

    def _choose(self, seq: Sequence, blocks: int):
        """A decode instance with room for ``blocks``; mixed instances only when no decode one
        has room (Splitwise's mixed pool takes the overflow); None: wait."""
        now = self.clock.now
        room = [i for i in self.decode_instances if self._room(i, blocks, now)]
        cands = [i for i in room if i.role == "decode"] or room
        if not cands:
            return None
        if self.dispatch == "round_robin":
            n = len(self.decode_instances)
            for _ in range(n):
                inst = self.decode_instances[self._next % n]
                self._next = (self._next + 1) % n
                if inst in cands:
                    return inst
        return min(cands, key=lambda i: (i.used_blocks_now(now) / i.total_blocks, i.index))

    def _ship(self, src, seq: Sequence, dst, prefill: tuple[float, float] | None = None) -> None:
        now = self.clock.now
        blocks = self._blocks_needed(seq, 1 if prefill is not None else None)
        reservation = dst.reserve_incoming(blocks)
        model, tp, pp = self.models[src.index]
        tokens = seq.prompt + max(seq.generated, 1) - 1
        size = kv_size(model, tokens, tp, pp)
        src_gpus, dst_gpus = self.placement[src.index], self.placement[dst.index]
        job = _Shipment(src, seq, dst, reservation, blocks, len(src_gpus))
        self.shipping[seq.rid] = job
        self.transfers += 1
        for i, g in enumerate(src_gpus):  # each TP rank sends its shard (re-sharded round robin)
            d = dst_gpus[i % len(dst_gpus)]
            done = self._part_landed(job)
            if prefill is not None:
                layer_by_layer(self.fabric, g, d, size.per_gpu, model.layers, prefill[0], prefill[1],
                               done, tag=seq.rid)
            elif self.mode == "pull":
                pull(self.fabric, g, d, size.per_gpu, done, ready_s=now, tag=seq.rid)
            else:
                after_prefill(self.fabric, g, d, size.per_gpu, now, done, tag=seq.rid)

    def _part_landed(self, job: _Shipment) -> Callable[[KVTransferResult], None]:
        def landed(result: KVTransferResult) -> None:
            job.bytes += result.bytes
            job.ok = job.ok and result.ok
            job.parts -= 1
            if job.parts == 0:
                job.dst.at_next_boundary(lambda: self._attach(job))
        return landed

    def _attach(self, job: _Shipment) -> None:
        """At the decode instance's boundary: the request joins it, the prefill side lets go."""
        seq, now = job.seq, self.clock.now
        if seq.generated == 0:  # layer by layer, landed before its prompt's iteration ended
            job.landed = True  # ``prefilled`` attaches it then
            return
        del self.shipping[seq.rid]
        job.src.release_outgoing(seq)
        seq.kv_landed = now
        seq.kv_bytes += job.bytes
        self.bytes += job.bytes
        if job.ok:
            job.dst.attach(seq, job.reservation, self._blocks_needed(seq))
        else:
            self.failed += 1
            job.dst.cancel_incoming(job.reservation)
            job.dst.recompute_incoming(seq)
        self.retry()


def build_dispatcher(cfg, clock) -> KVDispatcher:
    """The fabric, placement and dispatcher of a cluster with pools (``cluster[].role``)."""
    from goodput.sim.catalog import get_gpu, get_model
    from goodput.sim.network.placement import default_layout, place
    from goodput.sim.network.topology import Topology

    net = cfg.network
    # a pipeline-parallel instance spans tp x pp GPUs; each of its pp virtual engines ships its
    # requests' KV from all of them (every stage holds its layers' share)
    if net.topology:
        topology = Topology.from_config(net.topology)
        gpus = place(topology, [g.tp * g.pp for g in cfg.cluster for _ in range(g.count)])
    else:
        layout, gpus = default_layout([(get_gpu(g.gpu).name, g.tp * g.pp, g.count) for g in cfg.cluster])
        topology = Topology.from_config(layout)
    engines = [g.pp for g in cfg.cluster for _ in range(g.count)]
    gpus = [ids for ids, pp in zip(gpus, engines, strict=True) for _ in range(pp)]
    per_instance = [(get_model(g.model), g.tp, g.pp) for g in cfg.cluster for _ in range(g.count * g.pp)]
    fabric = Fabric(clock, topology, seed=net.seed, message_bytes=net.message_bytes,
                    stall_timeout_s=net.stall_timeout_s)
    return KVDispatcher(clock, fabric, dict(enumerate(gpus)), dict(enumerate(per_instance)), [],
                        net.kv_transfer, net.decode_dispatch)


def link_table(fabric: Fabric, end: float):
    """Per directed link that carried anything: bytes, busy time, transfers and utilisation."""
    import pandas as pd

    rows = [{"link": s.id, "nominal_gbs": s.nominal_gbs, "bytes": s.bytes, "busy_s": s.busy_s,
             "transfers": s.transfers, "utilisation": s.utilisation(0.0, end) if end > 0 else 0.0}
            for s in fabric.stats.values() if s.transfers]
    return pd.DataFrame(rows, columns=["link", "nominal_gbs", "bytes", "busy_s", "transfers", "utilisation"])
