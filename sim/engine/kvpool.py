"""The one owner of an instance's KV memory: GPU blocks, reservations and the host (swap) tier.

Every change to block counts goes through a ``KVPool`` method, so the invariant
``used == sum(held by sequences outside the decode set) + decode-set blocks + reserved`` has one
place to hold. Callers never write counters: the instance allocates for prompt chunks, the decode
set grows in bulk (``grow``) and materialises a member's holding when it leaves (``settle``),
migrations and KV transfers reserve blocks before bytes land (``reserve`` / ``claim`` /
``release``), and swap preemption moves a holding to host memory and back.

Why ``grow`` and ``settle`` instead of per-sequence allocation for decodes: a decode set of B
sequences takes blocks at fixed token phases (``DecodeBlockPhases``), so a run of k iterations
allocates its blocks with one call and no per-sequence work; a member's own count is only needed
when it leaves the set.
"""
from __future__ import annotations

from collections.abc import Iterable

from goodput.sim.engine.kvcache import DecodeBlockPhases, KVCapacity
from goodput.sim.engine.prefix_cache import PrefixCache
from goodput.sim.engine.sequence import Sequence


class Reservation:
    """Blocks held for a request that is on its way here (live migration, KV transfer)."""

    __slots__ = ("active", "blocks")

    def __init__(self, blocks: int):
        self.blocks = blocks
        self.active = True


class KVPool:
    def __init__(self, capacity: KVCapacity, host_blocks: int = 0, host_link_gbs: float = 25.0,
                 cache: PrefixCache | None = None):
        self.capacity = capacity
        self.block_size = capacity.block_size
        self.total = capacity.total_blocks
        #: blocks in use (held by requests, the decode set and reservations). A plain attribute so
        #: the hot path reads it without a property call; only this class writes it.
        self.used = 0
        self._reserved = 0
        self.host_total = host_blocks
        self._host_used = 0
        self.block_bytes = capacity.bytes_per_token * capacity.block_size
        self._host_bps = host_link_gbs * 1e9
        #: token phases at which decode-set members need a new block (members with paged KV only)
        self.phases = DecodeBlockPhases(capacity.block_size)
        #: the prefix cache, if on: its referenced GPU blocks count in ``used``, its idle ones sit
        #: in the free space and are evicted when an allocation needs it (``_fit``)
        self.cache = cache

    # ------------------------------------------------------------------ reads
    @property
    def free(self) -> int:
        return self.total - self.used

    @property
    def reserved(self) -> int:
        return self._reserved

    @property
    def host_used(self) -> int:
        return self._host_used

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    # ------------------------------------------------------------------ sequences' holdings
    def allocate_to(self, seq: Sequence, tokens: int) -> int:
        """Grow ``seq``'s holding to cover ``tokens`` KV tokens; returns the blocks added."""
        need = -(-tokens // self.block_size) - seq.blocks
        if need > 0:
            self.used += need
            seq.blocks += need
            if self.cache is not None:
                self._fit()
            return need
        return 0

    def free_from(self, seq: Sequence) -> int:
        """Return all of ``seq``'s GPU blocks to the pool (its cached prefix stays cached)."""
        n = seq.blocks
        self.used -= n - seq.shared
        if seq.cache_node is not None:
            self._unshare(seq)
        seq.blocks = 0
        return n

    def grow(self, blocks: int) -> None:
        """Blocks taken in bulk by decode-set steps (see ``DecodeBlockPhases``)."""
        self.used += blocks
        if self.cache is not None:
            self._fit()

    # ------------------------------------------------------------------ the prefix cache
    def _fit(self) -> None:
        cache = self.cache
        if cache is not None and cache.idle > self.total - self.used:
            cache.fit(self.total - self.used)

    def _unshare(self, seq: Sequence) -> None:
        """``seq`` stops referencing its cached prefix (the units stay cached, maybe idle)."""
        assert self.cache is not None
        self.used -= self.cache.release_path(seq.cache_node)
        seq.cache_node = None
        seq.shared = 0

    def peek_prefix(self, seq: Sequence) -> tuple[int, int, int, float]:
        """What ``match_prefix`` would give ``seq`` now, without doing it: (cached prompt tokens,
        cached blocks it would share, of those the blocks taken from the free pool, reload
        seconds)."""
        cache = self.cache
        assert cache is not None and seq.prefix is not None
        depth, taken, seconds = cache.walk(seq.prefix, cache.usable_units(seq.prefix, seq.prompt, True))
        shared = cache.blocks_upto(depth)
        return shared * self.block_size, shared, taken, seconds

    def match_prefix(self, seq: Sequence) -> tuple[int, float]:
        """Reference the longest cached prefix of ``seq``'s prompt (a request being admitted,
        holding no blocks yet), reloading lower-tier units while free blocks last; returns
        (cached prompt tokens, reload seconds)."""
        cache = self.cache
        assert cache is not None and seq.prefix is not None and not seq.blocks
        limit = cache.usable_units(seq.prefix, seq.prompt, True)
        node, taken, seconds = cache.ref_path(cache.root, seq.prefix, limit, self.total - self.used)
        self.used += taken
        self._fit()
        seq.cache_node = node if node.depth else None
        seq.shared = seq.blocks = cache.blocks_upto(node.depth)
        return seq.shared * self.block_size, seconds

    def insert_prefix(self, seq: Sequence) -> None:
        """``seq`` computed its prompt: cache its full prefix units (its blocks become shared)."""
        cache = self.cache
        assert cache is not None and seq.prefix is not None
        limit = cache.usable_units(seq.prefix, seq.prompt, False)
        node = seq.cache_node if seq.cache_node is not None else cache.root
        if node.depth >= limit:
            return
        node, freed = cache.insert(node, seq.prefix, limit)
        self.used -= freed
        seq.cache_node = node
        seq.shared = cache.blocks_upto(node.depth)

    def evict_for(self, used: int) -> None:
        """Evict idle cached units as if ``used`` blocks were in use (a run in flight has taken
        blocks its end will allocate: see ``Admission.cached_prefix_tokens``)."""
        cache = self.cache
        if cache is not None and cache.idle > self.total - used:
            cache.fit(self.total - used)

    def drop_cache(self) -> None:
        """The instance failed: its cached prefixes are lost with its memory."""
        if self.cache is not None:
            self.cache.clear()

    def settle(self, seq: Sequence, kv_tokens: int) -> None:
        """A paged member leaves the decode set: its holding is what its ``kv_tokens`` occupy
        (already counted in ``used`` by ``grow`` and its earlier allocations)."""
        seq.blocks = -(-kv_tokens // self.block_size)

    # ------------------------------------------------------------------ reservations
    def reserve(self, blocks: int) -> Reservation:
        self.used += blocks
        self._reserved += blocks
        if self.cache is not None:
            self._fit()
        return Reservation(blocks)

    def release(self, r: Reservation) -> None:
        """Give a reservation back (the transfer was aborted, or it is being claimed)."""
        if r.active:
            r.active = False
            self.used -= r.blocks
            self._reserved -= r.blocks

    def claim(self, r: Reservation, seq: Sequence, blocks: int) -> bool:
        """Turn reservation ``r`` into ``blocks`` held by ``seq`` if the pool allows it.

        The reservation is released either way; False means the request grew beyond it and the
        pool cannot hold it now (the caller then recomputes it).
        """
        self.release(r)
        if blocks > self.free:
            return False
        self.used += blocks
        seq.blocks = blocks
        if self.cache is not None:
            self._fit()
        return True

    # ------------------------------------------------------------------ host tier (swap)
    def swap_out(self, seq: Sequence) -> float | None:
        """Move ``seq``'s blocks to host memory (its ``blocks`` now count host blocks); returns
        the transfer seconds, or None if the host tier is full (the caller then recomputes)."""
        if self._host_used + seq.blocks > self.host_total:
            return None
        self._host_used += seq.blocks  # a shared prefix is copied out too: it comes back private
        self.used -= seq.blocks - seq.shared
        if seq.cache_node is not None:
            self._unshare(seq)
        return seq.blocks * self.block_bytes / self._host_bps

    def drop_swapped(self, seq: Sequence) -> None:
        """Forget ``seq``'s host copy (its instance failed: host memory is lost with it)."""
        self._host_used -= seq.blocks
        seq.blocks = 0

    def swap_in(self, seq: Sequence) -> float:
        """Bring ``seq``'s swapped blocks back to the GPU; returns the transfer seconds."""
        self._host_used -= seq.blocks
        self.used += seq.blocks
        if self.cache is not None:
            self._fit()
        return seq.blocks * self.block_bytes / self._host_bps

    def check(self, held_outside: int, decode_set_blocks: int, holders: Iterable[Sequence] = ()) -> None:
        """Conservation (tests call this): used = blocks held privately by sequences (outside
        and inside the decode set) + reservations + cached units some request references, and
        the cache's references equal the paths the ``holders`` (every sequence here) hold."""
        cached = 0
        if self.cache is not None:
            refs: dict[int, int] = {}
            for seq in holders:
                node = seq.cache_node
                while node is not None and node.depth:
                    refs[id(node)] = refs.get(id(node), 0) + 1
                    node = node.parent
            cached = self.cache.check(refs)
            if self.used + self.cache.idle > self.total:
                raise AssertionError(f"KV pool: used {self.used} + idle cached {self.cache.idle} "
                                     f"> {self.total} blocks")
        expected = held_outside + decode_set_blocks + self._reserved + cached
        if expected != self.used:
            raise AssertionError(f"KV pool: used={self.used} but sequences hold "
                                 f"{held_outside + decode_set_blocks} privately, the cache {cached} "
                                 f"and reservations {self._reserved}")
