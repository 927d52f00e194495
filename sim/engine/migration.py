"""Llumnix-style live migration of running requests between instances.

A migration copies the request's KV cache over a link in stages while it keeps decoding on the
source: stage 1 copies everything, each later stage copies the tokens generated during the
previous one. When what is left fits in one block (or ``max_stages`` is reached) the request is
removed from the source at its next iteration boundary and the last delta is copied
(stop-and-copy): only that short pause is visible to the user. The destination reserves blocks at
the start so the request is sure to fit when it lands.

All reads of a request's progress are exact at any instant (virtual counters + the closed-form run
state), so migration decisions are identical with and without fast-forwarding.
"""
from __future__ import annotations

from goodput.sim.engine.kvpool import Reservation
from goodput.sim.engine.links import Link
from goodput.sim.engine.sequence import DECODING, Sequence


def kv_tokens_now(inst, seq: Sequence, now: float) -> int:
    return seq.prompt + inst.generated_now(seq, now) - 1


def blocks_at_destination(dst, seq: Sequence, kv: int, slack: int) -> int:
    """Blocks ``seq`` must hold when it lands on ``dst``.

    A request whose KV was reserved for its maximum length up front (Orca, static batching) does
    not grow its allocation while decoding, so it must land with that whole reservation again;
    a paged request needs its ``kv`` tokens plus ``slack`` blocks of growth during the copy.
    """
    if seq.reserved:
        return dst.capacity.blocks_for(dst.policy.landing_tokens(seq, kv))
    return dst.capacity.blocks_for(kv) + slack


class Migration:
    def __init__(self, manager: MigrationManager, seq: Sequence, src, dst, now: float):
        self.m, self.seq, self.src, self.dst = manager, seq, src, dst
        self.clock = src.clock
        self.started = now
        kv = kv_tokens_now(src, seq, now)
        # room for the KV plus what it can grow by during the copy stages
        self.reservation: Reservation = dst.reserve_incoming(
            blocks_at_destination(dst, seq, kv, manager.max_stages + 1))
        self.copied = 0
        self.stages = 0
        self.bytes = 0.0
        self.in_flight = False  # detached from the source, not yet landed
        seq.migration = self
        self._stage(kv, now)

    def _stage(self, kv: int, now: float) -> None:
        nbytes = (kv - self.copied) * self.src.capacity.bytes_per_token
        self.bytes += nbytes
        self.copied = kv
        self.stages += 1
        self.clock.call_later(self.m.link.transfer_time(nbytes), self._on_stage_end)

    def _alive(self) -> bool:
        s = self.seq
        return s.migration is self and s.state == DECODING and s.instance == self.src.index

    def _abort(self) -> None:
        self.dst.cancel_incoming(self.reservation)
        if self.seq.migration is self:
            self.seq.migration = None
        self.m.finished(self, landed=False)

    def _on_stage_end(self, _ev) -> None:
        if not self._alive():
            return self._abort()
        now = self.clock.now
        kv = kv_tokens_now(self.src, self.seq, now)
        if kv - self.copied <= self.src.bs or self.stages >= self.m.max_stages:
            self.src.at_next_boundary(self._stop_and_copy)
        else:
            self._stage(kv, now)

    def _stop_and_copy(self) -> None:
        if not self._alive():
            return self._abort()
        kv = self.src.detach(self.seq)  # materialises its progress at this boundary
        self.in_flight = True
        nbytes = (kv - self.copied) * self.src.capacity.bytes_per_token
        self.bytes += nbytes
        self.clock.call_later(self.m.link.transfer_time(nbytes),
                              lambda _e: self.dst.at_next_boundary(self._land))

    def _land(self) -> None:
        dst, seq = self.dst, self.seq
        seq.migration = None
        seq.migrations += 1
        seq.migrated_bytes += self.bytes
        need = blocks_at_destination(dst, seq, seq.prompt + seq.generated - 1, 0)
        dst.attach(seq, self.reservation, need)
        self.m.finished(self, landed=True)


class MigrationManager:
    """Periodically pairs overloaded with underloaded instances and migrates one request each."""

    def __init__(self, clock, router, cfg, seed: int = 0, observer=None):
        self.clock, self.router, self.cfg = clock, router, cfg
        self.observer = observer  # an EventTrace, told of every landed migration
        self.link = Link(cfg.link, seed)
        self.max_stages = cfg.max_stages
        self.active: dict[int, Migration] = {}  # source instance -> its migration in flight
        self.completed = self.aborted = 0
        self.bytes = 0.0  # router.migration_interval_s > 0 is checked by goodput.sim.config_checks
        self._tick_event()

    def _tick_event(self) -> None:
        self.clock.call_later(self.cfg.migration_interval_s, self._tick)

    def _tick(self, _ev) -> None:
        self.rebalance(self.clock.now)
        # keep ticking while requests are in the system or still to arrive
        if self.active or self.router.feed_active() or any(i.has_work() for i in self.router.instances):
            self._tick_event()

    def finished(self, mig: Migration, landed: bool) -> None:
        self.active.pop(mig.src.index, None)
        if landed:
            self.completed += 1
            self.bytes += mig.bytes
            if self.observer is not None:
                self.observer.migration(mig.seq.rid, mig.src.index, mig.dst.index, mig.started,
                                        self.clock.now, mig.bytes)
        else:
            self.aborted += 1

    def in_flight(self) -> list[Sequence]:
        """Requests detached from their source and not yet landed (counted at a cut-off)."""
        return [m.seq for m in self.active.values() if m.in_flight]

    def rebalance(self, now: float) -> None:
        insts = [i for i in self.router.instances if i.index not in self.active]
        if len(insts) < 2:
            return
        free = {i.index: self.router.freeness(i, now) for i in self.router.instances}
        sources = sorted((i for i in insts if i.running and
                          (i.draining or free[i.index] < self.cfg.migrate_out_freeness)),
                         key=lambda i: (not i.draining, free[i.index]))
        dests = sorted((i for i in insts if not i.draining and free[i.index] > self.cfg.migrate_in_freeness),
                       key=lambda i: -free[i.index])
        for src, dst in zip(sources, dests, strict=False):  # pairs while both last
            if src is dst:
                continue
            self.migrate_one(src, dst, now)

    def migrate_one(self, src, dst, now: float) -> bool:
        """Start migrating src's cheapest low-priority running request to dst, if it fits."""
        if not dst.policy.accepts_migration:
            return False
        cands = [s for s in src.running if s.migration is None]
        if not cands:
            return False
        seq = min(cands, key=lambda s: (s.priority, kv_tokens_now(src, s, now)))
        kv = kv_tokens_now(src, seq, now)
        if blocks_at_destination(dst, seq, kv, self.max_stages + 1) > \
                dst.total_blocks - dst.used_blocks_now(now):
            return False
        self.active[src.index] = Migration(self, seq, src, dst, now)
        return True
