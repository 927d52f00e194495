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

from sim.engine.links import Link
from sim.engine.sequence import DECODING, WAITING, Sequence


def tokens_generated_now(inst, seq: Sequence, now: float) -> int:
    """Output tokens ``seq`` (in ``inst``'s decode set) has produced by ``now``."""
    return seq.gen_base + inst.decode_steps + inst.steps_done_by(now) - seq.step_base


def kv_tokens_now(inst, seq: Sequence, now: float) -> int:
    return seq.prompt + tokens_generated_now(inst, seq, now) - 1


def blocks_at_destination(dst, seq: Sequence, kv: int, slack: int) -> int:
    """Blocks ``seq`` must hold when it lands on ``dst``.

    A request whose KV was reserved for its maximum length up front (Orca, static batching) does
    not grow its allocation while decoding, so it must land with that whole reservation again;
    a paged request needs its ``kv`` tokens plus ``slack`` blocks of growth during the copy.
    """
    if seq.reserved:
        return dst.capacity.blocks_for(dst.policy.reserve_tokens(seq))
    return dst.capacity.blocks_for(kv) + slack


def used_blocks_now(inst, now: float) -> int:
    """KV blocks in use at ``now``, counting blocks taken by the decode steps done in a run."""
    return inst.used_blocks + inst.phases.blocks_needed(inst.decode_steps, inst.steps_done_by(now))


class Migration:
    def __init__(self, manager: "MigrationManager", seq: Sequence, src, dst, now: float):
        self.m, self.seq, self.src, self.dst = manager, seq, src, dst
        self.env = src.env
        kv = kv_tokens_now(src, seq, now)
        # room for the KV plus what it can grow by during the copy stages
        self.reserved = blocks_at_destination(dst, seq, kv, manager.max_stages + 1)
        dst.used_blocks += self.reserved
        dst.reserved_blocks += self.reserved
        self.copied = 0
        self.stages = 0
        self.bytes = 0.0
        seq.migration = self
        self._stage(kv, now)

    def _stage(self, kv: int, now: float) -> None:
        nbytes = (kv - self.copied) * self.src.capacity.bytes_per_token
        self.bytes += nbytes
        self.copied = kv
        self.stages += 1
        ev = self.env.timeout(self.m.link.transfer_time(nbytes))
        ev.callbacks.append(self._on_stage_end)

    def _alive(self) -> bool:
        s = self.seq
        return s.migration is self and s.state == DECODING and s.instance == self.src.index

    def _abort(self) -> None:
        self.dst.used_blocks -= self.reserved
        self.dst.reserved_blocks -= self.reserved
        if self.seq.migration is self:
            self.seq.migration = None
        self.m.active.pop(self.src.index, None)
        self.m.aborted += 1

    def _on_stage_end(self, _ev) -> None:
        if not self._alive():
            return self._abort()
        now = self.env.now
        kv = kv_tokens_now(self.src, self.seq, now)
        if kv - self.copied <= self.src.bs or self.stages >= self.m.max_stages:
            self.src.at_next_boundary(self._stop_and_copy)
        else:
            self._stage(kv, now)

    def _stop_and_copy(self) -> None:
        if not self._alive():
            return self._abort()
        src, seq = self.src, self.seq
        src._leave_decode(seq)  # materialises generated / kv / blocks at this boundary
        src.used_blocks -= seq.blocks
        remaining = seq.output - seq.generated
        src.outstanding_tokens -= remaining
        kv = seq.prompt + seq.generated - 1
        nbytes = (kv - self.copied) * src.capacity.bytes_per_token
        self.bytes += nbytes
        ev = self.env.timeout(self.m.link.transfer_time(nbytes))
        ev.callbacks.append(lambda _e: self.dst.at_next_boundary(self._land))

    def _land(self) -> None:
        dst, seq = self.dst, self.seq
        now = self.env.now
        dst.used_blocks -= self.reserved
        dst.reserved_blocks -= self.reserved
        seq.instance = dst.index
        seq.migration = None
        seq.migrations += 1
        seq.migrated_bytes += self.bytes
        dst.outstanding_tokens += seq.output - seq.generated
        self.m.active.pop(self.src.index, None)
        self.m.completed += 1
        self.m.bytes += self.bytes
        need = blocks_at_destination(dst, seq, seq.prompt + seq.generated - 1, 0)
        if need <= dst.free_blocks:
            seq.blocks = need
            dst.used_blocks += need
            dst._join_decode(seq, now)
        else:  # grew beyond the reservation and the destination is full: recompute there
            seq.blocks = 0
            seq.state = WAITING
            seq.prefill_target = seq.prompt + seq.generated
            seq.prefilled = 0
            seq.preemptions += 1
            dst.outstanding_tokens += seq.prefill_target
            dst.waiting.appendleft(seq)


class MigrationManager:
    """Periodically pairs overloaded with underloaded instances and migrates one request each."""

    def __init__(self, env, router, cfg, seed: int = 0):
        self.env, self.router, self.cfg = env, router, cfg
        self.link = Link(cfg.link, seed)
        self.max_stages = cfg.max_stages
        self.active: dict[int, Migration] = {}  # source instance -> its migration in flight
        self.completed = self.aborted = 0
        self.bytes = 0.0
        if cfg.migration_interval_s <= 0:
            from sim.config import ConfigError
            raise ConfigError("router.migration_interval_s must be > 0")
        self._tick_event()

    def _tick_event(self) -> None:
        ev = self.env.timeout(self.cfg.migration_interval_s)
        ev.callbacks.append(self._tick)

    def _tick(self, _ev) -> None:
        self.rebalance(self.env.now)
        # keep ticking while requests are in the system or still to arrive
        if self.active or self.router.feed_active() or any(
                i.running or i.waiting or i.prefilling or i.swapped for i in self.router.instances):
            self._tick_event()

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
        for src, dst in zip(sources, dests):
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
                dst.total_blocks - used_blocks_now(dst, now):
            return False
        self.active[src.index] = Migration(self, seq, src, dst, now)
        return True
