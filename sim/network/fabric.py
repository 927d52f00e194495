"""Flow-level simulation of concurrent transfers over a topology, on the engine's Clock seam.

Each transfer is a fluid flow along its path. Rates are max-min fair over every link the flows
cross (goodput.sim.network.maxmin) and are recomputed only when something changes: a flow starts, finishes,
or a link is degraded / partitioned / restored. Each moving flow has one scheduled completion event;
when its rate changes the event is superseded (the callback checks ``ev is flow.pending``, like
goodput.sim.engine.instance's ``_pending``) rather than cancelled, since SimPy events cannot be withdrawn.
Nothing loops per byte or per tick.

Costs a transfer pays besides bandwidth (docs/network.md):

* **latency**: the path's one-way latency plus one jitter sample per hop, added once, after the
  last byte leaves (so a transfer occupies bandwidth from submission, and a lone transfer takes
  exactly ``latency + bytes / bandwidth``);
* **loss**: the payload is split into ``ceil(bytes / message_bytes)`` messages; a message crossing
  hops with loss rates p_i is lost with p = 1 - prod(1 - p_i) and resent until it arrives, so the
  number of losses is negative-binomial(n, 1 - p) (a binomial first round, then the same for each
  resend). Each loss resends its message (more wire bytes, sharing bandwidth like any other) and
  waits one ``retransmit_timeout_s`` (the largest of the lossy hops'), added to the tail delay.
  Losses are sampled once, when the flow first can move, from the loss rates at that moment;
* **stalls**: a flow whose path has a partitioned link (bandwidth 0) or a link with loss rate 1
  gets rate 0 and waits; it resumes on ``restore``, or fails after ``stall_timeout_s`` of
  continuous stall (its callback gets a record with ``ok=False`` and the reason). No transfer
  silently vanishes: each ends landed, failed or cancelled, and appears in ``records``.

Deterministic for a seed: jitter is drawn at submission and losses when a flow is first runnable,
both from one numpy Generator, in event order.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import numpy as np

from goodput.sim.engine.clock import Clock
from goodput.sim.network.errors import NetworkConfigError
from goodput.sim.network.maxmin import max_min_rates
from goodput.sim.network.records import LinkStats, TransferRecord
from goodput.sim.network.topology import GpuId, Path, Topology

OnDone = Callable[[TransferRecord], None]
_UNSET: Any = object()
_EPS = 1e-9  # relative: a flow with less than this fraction of its bytes left has finished


class Transfer:
    """A live transfer (handle returned by ``Fabric.submit``); ``record`` is filled as it goes."""

    __slots__ = ("blocked", "cap", "ids", "on_done", "path", "pending", "rate", "record",
                 "remaining", "sampled", "stall_ev", "stall_timeout", "tail_s")

    def __init__(self, record: TransferRecord, path: Path, cap: float | None, on_done: OnDone | None,
                 stall_timeout: float | None):
        self.record, self.path, self.cap, self.on_done = record, path, cap, on_done
        self.ids = path.ids
        self.remaining = record.payload_bytes if self.ids else 0.0
        self.rate = 0.0
        self.pending: object = None  # completion event; a rate change supersedes it
        self.stall_ev: object = None  # stall-timeout event; unblocking supersedes it
        self.stall_timeout = stall_timeout
        self.blocked = False
        self.sampled = False  # losses drawn yet
        self.tail_s = 0.0  # latency + jitter (+ retransmit timeouts once sampled)


class Fabric:
    def __init__(self, clock: Clock, topology: Topology, *, seed: int = 0, message_bytes: float = 1 << 20,
                 stall_timeout_s: float | None = None):
        if not message_bytes > 0 or not math.isfinite(message_bytes):
            raise NetworkConfigError(f"network.message_bytes = {message_bytes!r}: "
                                     "must be a positive size in bytes")
        _check_timeout(stall_timeout_s)
        self.clock, self.topology = clock, topology
        self.message_bytes = float(message_bytes)
        self.stall_timeout_s = stall_timeout_s
        self.rng = np.random.default_rng(seed)
        self._refs = topology.links()
        self._nominal = {i: r.spec.bytes_per_s for i, r in self._refs.items()}
        self._cap = dict(self._nominal)  # current bytes/s (0 = partitioned)
        self._nominal_loss = {i: (r.spec.loss_rate if r.charges_hop else 0.0) for i, r in self._refs.items()}
        self._loss = dict(self._nominal_loss)
        self.stats = {i: LinkStats(i, r.spec.bandwidth_gbs) for i, r in self._refs.items()}
        self._impaired: set[str] = set()  # links at bandwidth 0 or loss 1
        self._load: dict[str, float] = {}  # bytes/s now, links with load > 0 only
        self._active: dict[int, Transfer] = {}
        self._t = clock.now
        self._next_id = 0
        self.records: list[TransferRecord] = []  # finished transfers, in the order they ended

    # ---- public API ----
    def submit(self, src: GpuId, dst: GpuId, nbytes: float, on_done: OnDone | None = None, *,
               max_rate_gbs: float | None = None, stall_timeout_s: float | None = _UNSET,
               tag: Any = None) -> Transfer:
        """Start moving ``nbytes`` from ``src`` to ``dst`` now; ``on_done(record)`` when it lands
        (``record.ok``) or fails. ``max_rate_gbs`` caps this flow's rate (e.g. a producer's pace)."""
        if not (nbytes >= 0 and math.isfinite(nbytes)):
            raise NetworkConfigError(f"transfer bytes = {nbytes!r}: must be a finite number >= 0")
        if max_rate_gbs is not None and not max_rate_gbs > 0:
            raise NetworkConfigError(f"max_rate_gbs = {max_rate_gbs!r}: must be > 0 or None")
        timeout = self.stall_timeout_s if stall_timeout_s is _UNSET else stall_timeout_s
        _check_timeout(timeout)
        path = self.topology.path(src, dst)
        now = self.clock.now
        rec = TransferRecord(self._next_id, str(src), str(dst), float(nbytes), now, tag=tag)
        self._next_id += 1
        t = Transfer(rec, path, None if max_rate_gbs is None else max_rate_gbs * 1e9, on_done, timeout)
        rec.wire_bytes = t.remaining
        rec.latency_s = path.latency_s + sum(h.jitter.sample(self.rng) for h in path.hops)
        t.tail_s = rec.latency_s
        for i in t.ids:
            self.stats[i].transfers += 1
        self._advance(now)
        self._active[rec.id] = t
        self._update()
        return t

    def cancel(self, t: Transfer) -> None:
        """Withdraw an in-flight transfer (its requester went away); recorded, no callback."""
        if t.record.id not in self._active:
            return
        self._advance(self.clock.now)
        self._drop(t, "cancelled")
        self._update()

    def degrade(self, links: str | Iterable[str], factor: float, loss_rate: float | None = None) -> None:
        """Scale links' bandwidth to ``factor`` x nominal (0 = partition) and optionally set their
        loss rate (1 = nothing gets through: flows wait)."""
        if not (0 <= factor <= 1):
            raise NetworkConfigError(f"degrade factor = {factor!r}: must be in [0, 1] (0 partitions)")
        if loss_rate is not None and not (0 <= loss_rate <= 1):
            raise NetworkConfigError(f"degrade loss_rate = {loss_rate!r}: must be in [0, 1]")
        ids = self._ids(links)
        self._advance(self.clock.now)
        for i in ids:
            self._cap[i] = self._nominal[i] * factor
            if loss_rate is not None:
                self._loss[i] = loss_rate
        self._mark(ids)
        self._update()

    def partition(self, links: str | Iterable[str]) -> None:
        self.degrade(links, 0.0)

    def restore(self, links: str | Iterable[str]) -> None:
        """Back to the nominal bandwidth and loss rate."""
        ids = self._ids(links)
        self._advance(self.clock.now)
        for i in ids:
            self._cap[i], self._loss[i] = self._nominal[i], self._nominal_loss[i]
        self._mark(ids)
        self._update()

    def _mark(self, ids: list[str]) -> None:
        """Track the links nothing gets through (bandwidth 0 or loss 1): a flow crossing one waits."""
        for i in ids:
            if self._cap[i] == 0 or self._loss[i] >= 1:
                self._impaired.add(i)
            else:
                self._impaired.discard(i)

    def utilisation(self, link: str, start: float, end: float) -> float:
        self._advance(self.clock.now)
        return self.stats[self._ids(link)[0]].utilisation(start, end)

    def estimate(self, src: GpuId, dst: GpuId, nbytes: float) -> float:
        """Expected time of a lone transfer on the healthy fabric: latency + mean jitter +
        bytes / bottleneck, with the expected retransmissions (no contention)."""
        path = self.topology.path(src, dst)
        if not path.links:
            return 0.0
        n = math.ceil(nbytes / self.message_bytes) if nbytes > 0 else 0
        p, timeout = self._path_loss(path, self._nominal_loss)
        lost = n * p / (1 - p) if n else 0.0
        wire = nbytes + (lost * nbytes / n if n else 0.0)
        jitter = sum(h.jitter.mean() for h in path.hops)
        return path.latency_s + jitter + wire / (path.bottleneck_gbs * 1e9) + lost * timeout

    @property
    def in_flight(self) -> int:
        return len(self._active)

    # ---- internals ----
    def _ids(self, links: str | Iterable[str]) -> list[str]:
        ids = [links] if isinstance(links, str) else list(links)
        for i in ids:
            if i not in self._refs:
                sample = ", ".join(list(self._refs)[:4])
                raise NetworkConfigError(f"unknown link id {i!r}; ids look like {sample}, ... "
                                         "(Topology.links(), Topology.node_links(node))")
        return ids

    def _path_loss(self, path: Path, loss: dict[str, float]) -> tuple[float, float]:
        keep, timeout = 1.0, 0.0
        for link in path.links:
            p = loss[link.id]
            if p > 0:
                keep *= 1 - p
                timeout = max(timeout, link.spec.retransmit_timeout_s)
        return 1 - keep, timeout

    def _advance(self, now: float) -> None:
        """Move every flow's bytes forward at its current rate up to ``now``."""
        dt = now - self._t
        if dt <= 0:
            return
        self._t = now
        stats = self.stats
        for t in self._active.values():
            if t.rate > 0:
                sent = min(t.rate * dt, t.remaining)
                t.remaining -= sent
                t.record.active_s += dt
                for i in t.ids:
                    stats[i].bytes += sent
            elif t.blocked:
                t.record.stalled_s += dt
        for i in self._load:
            stats[i].busy_s += dt

    def _update(self) -> None:
        """After a change: mark blocked flows, finish flows that are done, share the bandwidth."""
        now = self.clock.now
        for t in self._active.values():
            blocked = bool(self._impaired) and any(i in self._impaired for i in t.ids)
            if blocked and not t.blocked:
                t.stall_ev = None if t.stall_timeout is None else self.clock.call_later(
                    t.stall_timeout, partial(self._on_stall_timeout, t))
            elif not blocked:
                t.stall_ev = None
                if not t.sampled:
                    self._sample_losses(t)
            t.blocked = blocked
        # done = every byte sent (a flow blocked at the very instant its last byte left still lands;
        # a zero-byte message that never could move has not been sampled and keeps waiting)
        # also done: a flow whose rest would take less time than the clock can resolve at ``now``
        # (its end event would fire at this same instant again and again, moving nothing)
        for t in [t for t in self._active.values()
                  if t.sampled and (t.remaining <= _EPS * max(1.0, t.record.wire_bytes)
                                    or (t.rate > 0 and now + t.remaining / t.rate <= now))]:
            self._finish_transmission(t, now)
        self._share(now)

    def _sample_losses(self, t: Transfer) -> None:
        t.sampled = True
        rec = t.record
        n = math.ceil(rec.payload_bytes / self.message_bytes) if t.ids and rec.payload_bytes > 0 else 0
        rec.messages = n
        p, timeout = self._path_loss(t.path, self._loss)
        if n == 0 or p == 0:
            return
        lost = int(self.rng.negative_binomial(n, 1 - p))
        rec.lost_messages = lost
        extra = lost * rec.payload_bytes / n
        rec.wire_bytes += extra
        t.remaining += extra
        rec.retransmit_s = lost * timeout
        t.tail_s += rec.retransmit_s

    def _share(self, now: float) -> None:
        moving = {tid: t for tid, t in self._active.items() if not t.blocked}
        caps = {tid: t.cap for tid, t in moving.items() if t.cap is not None}
        rates = max_min_rates({tid: t.ids for tid, t in moving.items()}, self._cap, caps)
        load: dict[str, float] = {}
        for t in self._active.values():
            r = rates.get(t.record.id, 0.0)
            if r != t.rate or (r > 0 and t.pending is None):
                t.rate = r
                t.pending = None if r == 0 else self.clock.call_later(
                    t.remaining / r, partial(self._on_flow_event, t))
            for i in t.ids:
                if r > 0:
                    load[i] = load.get(i, 0.0) + r
        for i in self._load.keys() | load.keys():
            self.stats[i].set_rate(now, load.get(i, 0.0))
        self._load = load

    def _on_flow_event(self, t: Transfer, ev: object) -> None:
        if ev is not t.pending or t.record.id not in self._active:
            return  # superseded by a rate change
        t.pending = None
        self._advance(self.clock.now)
        self._update()

    def _finish_transmission(self, t: Transfer, now: float) -> None:
        for i in t.ids:  # the float residue, so link bytes add up to the flows' wire bytes
            self.stats[i].bytes += t.remaining
        t.remaining, t.rate, t.pending, t.stall_ev = 0.0, 0.0, None, None
        del self._active[t.record.id]
        rec = t.record
        rec.transmit_end_s = now
        bottleneck = min([t.path.bottleneck_gbs * 1e9] + ([t.cap] if t.cap else []))
        rec.transmission_s = rec.wire_bytes / bottleneck if t.ids else 0.0
        self.clock.call_later(t.tail_s, partial(self._land, t))

    def _land(self, t: Transfer, _ev: object) -> None:
        rec = t.record
        rec.end_s, rec.ok = self.clock.now, True
        self.records.append(rec)
        if t.on_done is not None:
            t.on_done(rec)

    def _on_stall_timeout(self, t: Transfer, ev: object) -> None:
        if ev is not t.stall_ev or t.record.id not in self._active:
            return  # unblocked in the meantime
        self._advance(self.clock.now)
        cut = [i for i in t.ids if i in self._impaired]
        self._drop(t, f"stalled {t.stall_timeout:g} s on unusable link(s) {', '.join(cut)}")
        self._update()
        if t.on_done is not None:
            t.on_done(t.record)

    def _drop(self, t: Transfer, reason: str) -> None:
        del self._active[t.record.id]
        t.pending = t.stall_ev = None
        rec = t.record
        rec.end_s, rec.ok, rec.failure = self.clock.now, False, reason
        self.records.append(rec)


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and not (timeout > 0 and math.isfinite(timeout)):
        raise NetworkConfigError(f"stall_timeout_s = {timeout!r}: must be a positive number of seconds "
                                 "or None (wait for restore)")
