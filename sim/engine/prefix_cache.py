"""An instance's prefix cache: a radix tree of prompt blocks over a GPU / host / remote hierarchy.

Keys are the trace's prefix block ids (Mooncake ``hash_ids``: one id per ``unit`` = 512 prompt
tokens); a node is one unit reached by its whole path of ids, so equal leading ids share nodes and
a unit is cached once however many requests hold it. The engine's own KV block (``block_size``
tokens, 16 in vLLM) need not divide the unit: unit ``d`` covers engine blocks
``floor((d-1) * unit / bs) .. floor(d * unit / bs)``, so only engine blocks wholly inside cached
units are reused, as vLLM reuses only full blocks.

Memory is owned by ``KVPool`` (the one owner of KV memory): the GPU blocks of nodes some request
references count in the pool's ``used``; nodes nobody references ("idle") sit in the free space,
as vLLM keeps cached blocks in its free queue, and are evicted — least recently released first
(``eviction: lru``) or oldest inserted first (``fifo``) — the moment an allocation needs their
space (``fit``), so ``used + idle <= total`` always holds. An evicted GPU node moves to the host
tier (DRAM) if it has room, a host node to the remote tier (Mooncake's store), a remote one is
dropped; a hit in a lower tier reloads the unit into GPU memory over that tier's link, and the
reload time is charged to the iteration that admits the request. Offloads are asynchronous (off the
critical path) and only counted.

Invariants (``check``): the GPU-resident nodes form a tree closed under ancestors (eviction takes
GPU leaves only; a hit or an insert brings its whole path into GPU memory), so a match walks GPU
nodes, then lower-tier ones.
"""
from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Any, ClassVar

from goodput.sim.config import (
    ConfigError,
    SchedulerConfig,
    register_section,
    register_strategy,
    section_options,
)

GPU, HOST, REMOTE = 0, 1, 2
TIER_NAMES = ("gpu", "host", "remote")
#: tokens per trace prefix block when the trace does not say (Mooncake's hash_ids blocks)
DEFAULT_UNIT_TOKENS = 512


@dataclass
class PrefixCacheConfig:
    """``scheduler.prefix_cache``: reuse of prompt prefixes named by the trace's ``prefix_blocks``."""

    enabled: bool = False
    eviction: str = "lru"  # lru | fifo (or a registered plugin)
    #: tokens per trace prefix block; None = what the trace format says (Mooncake: 512)
    unit_tokens: int | None = None
    host_gb: float = 0.0  # host DRAM tier per instance (0: none)
    #: host -> GPU bandwidth for reloads; None = scheduler.host_link_gbs (the GPU's PCIe)
    host_gbs: float | None = None
    remote_gb: float = 0.0  # remote / SSD tier per instance (Mooncake's store; 0: none)
    remote_gbs: float = 12.5  # remote -> GPU bandwidth (100 Gb/s RDMA)
    remote_latency_s: float = 100e-6  # per reload from the remote tier
    sections: dict[str, Any] = field(default_factory=dict, metadata={"internal": True})

    def section(self, name: str) -> Any:
        return section_options(self, name, "scheduler.prefix_cache", "eviction")

    def validate(self) -> None:
        for name in ("host_gb", "remote_gb"):
            if getattr(self, name) < 0:
                raise ConfigError(f"scheduler.prefix_cache.{name} must be >= 0 (0 = no such tier)")
        for name in ("host_gbs", "remote_gbs"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ConfigError(f"scheduler.prefix_cache.{name} must be > 0 GB/s")
        if self.remote_latency_s < 0:
            raise ConfigError("scheduler.prefix_cache.remote_latency_s must be >= 0")
        if self.unit_tokens is not None and self.unit_tokens < 1:
            raise ConfigError("scheduler.prefix_cache.unit_tokens must be >= 1 (Mooncake: 512)")
        if self.eviction not in EVICTIONS:
            raise ConfigError(f"unknown scheduler.prefix_cache.eviction '{self.eviction}'; "
                              f"choose one of {sorted(EVICTIONS)}")


register_section(SchedulerConfig, "prefix_cache", PrefixCacheConfig)


class Node:
    __slots__ = ("blocks", "children", "depth", "key", "kids", "parent", "refs", "stamp", "tier")

    def __init__(self, key: int, parent: Node | None, depth: int, blocks: int, tier: int):
        self.key = key
        self.parent = parent
        self.children: dict[int, Node] = {}
        self.depth = depth  # units from the root (the root is 0)
        self.blocks = blocks  # engine blocks of this unit
        self.refs = 0  # requests whose cached path runs through it
        self.tier = tier
        self.stamp = 0  # eviction priority: smaller goes first
        self.kids = [0, 0, 0]  # children per tier


#: eviction strategies by ``scheduler.prefix_cache.eviction``
EVICTIONS: dict[str, type[Eviction]] = {}


class Eviction:
    """Which idle unit leaves a tier first: the one with the smallest stamp (ties: deepest)."""

    name: ClassVar[str] = "base"
    Options: ClassVar[object] = None

    def released(self, node: Node, tick: int) -> int:
        """The stamp of a unit nobody references any more."""
        return tick


def register_eviction(cls: type[Eviction]) -> type[Eviction]:
    return register_strategy(EVICTIONS, PrefixCacheConfig, cls, "eviction policy")


@register_eviction
class LRU(Eviction):
    """Least recently used: a unit's stamp is when its last user released it."""

    name = "lru"


@register_eviction
class FIFO(Eviction):
    """First in, first out: a unit's stamp is when it was inserted; use does not renew it."""

    name = "fifo"

    def released(self, node: Node, tick: int) -> int:
        return node.stamp


class PrefixCache:
    """The tree, its tiers' capacities and traffic counters (KVPool calls every method)."""

    def __init__(self, unit: int, block_size: int, block_bytes: float, eviction: Eviction,
                 host_blocks: int = 0, remote_blocks: int = 0, host_bps: float = 25e9,
                 remote_bps: float = 12.5e9, remote_latency_s: float = 0.0):
        self.unit, self.bs = unit, block_size
        self.block_bytes = block_bytes
        self.eviction = eviction
        self.root = Node(-1, None, 0, 0, GPU)
        self.capacity = [0, host_blocks, remote_blocks]  # GPU capacity is the pool's
        self.held = [0, 0, 0]  # blocks resident per tier
        self.idle = 0  # GPU blocks of nodes nobody references (evictable, in the pool's free space)
        self.bps = [0.0, host_bps, remote_bps]
        self.remote_latency_s = remote_latency_s
        self._heaps: list[list[tuple[int, int, int, Node]]] = [[], [], []]
        self._tick = 0
        self._serial = itertools.count()  # heap tie-break (stamps are unique per live unit)
        # counters (read by the instance's stats)
        self.offloaded = [0, 0, 0]  # blocks written into each tier by eviction from the one above
        self.reloaded = [0, 0, 0]  # blocks read back into GPU memory from each tier
        self.evicted = 0  # units dropped from the hierarchy altogether
        self.gpu_evicted = 0  # GPU blocks evicted (offloaded to a lower tier or dropped)

    # ------------------------------------------------------------------ geometry
    def blocks_upto(self, units: int) -> int:
        """Engine blocks wholly inside the first ``units`` units."""
        return units * self.unit // self.bs

    def usable_units(self, prefix: tuple[int, ...], prompt: int, reuse: bool) -> int:
        """Units of ``prefix`` that may be cached: full units of the prompt; for reuse, leaving
        at least one prompt token to compute (the engine must run the last token to sample)."""
        n = min(len(prefix), prompt // self.unit)
        if reuse:
            while n and self.blocks_upto(n) * self.bs > prompt - 1:
                n -= 1
        return n

    # ------------------------------------------------------------------ reads
    def peek(self, prefix: tuple[int, ...], prompt: int) -> int:
        """Prompt tokens a request would find cached here in any tier (routers; no side effect)."""
        node, d = self.root, 0
        for key in prefix[: self.usable_units(prefix, prompt, True)]:
            child = node.children.get(key)
            if child is None:
                break
            node, d = child, d + 1
        return self.blocks_upto(d) * self.bs

    def walk(self, prefix: tuple[int, ...], limit: int) -> tuple[int, int, float]:
        """Read-only ``ref_path`` from the root: (units matched, blocks a reference would take
        from the free pool, reload seconds)."""
        node, taken, seconds = self.root, 0, 0.0
        while node.depth < limit:
            child = node.children.get(prefix[node.depth])
            if child is None:
                break
            if child.tier != GPU:
                taken += child.blocks
                seconds += child.blocks * self.block_bytes / self.bps[child.tier]
                if child.tier == REMOTE:
                    seconds += self.remote_latency_s
            elif child.refs == 0:
                taken += child.blocks
            node = child
        return node.depth, taken, seconds

    # ------------------------------------------------------------------ references
    def ref_path(self, node: Node, prefix: tuple[int, ...], limit: int, room: int) -> tuple[Node, int, float]:
        """Extend a reference from ``node`` along ``prefix`` up to ``limit`` units, reloading
        lower-tier units while ``room`` free GPU blocks last. Returns (deepest node, GPU blocks
        newly taken from the free space, reload seconds)."""
        taken, seconds = 0, 0.0
        while node.depth < limit:
            child = node.children.get(prefix[node.depth])
            if child is None:
                break
            b = child.blocks
            if child.tier == GPU:
                if child.refs == 0:
                    self.idle -= b
                    taken += b
            else:
                if b > room - taken:
                    break
                tier = child.tier
                seconds += b * self.block_bytes / self.bps[tier]
                if tier == REMOTE:
                    seconds += self.remote_latency_s
                self.reloaded[tier] += b
                self._move(child, GPU)
                taken += b
            child.refs += 1
            node = child
        return node, taken, seconds

    def release_path(self, node: Node | None) -> int:
        """Drop one reference along the path ending at ``node``; returns the GPU blocks that
        became idle (they leave the pool's ``used``)."""
        freed = 0
        while node is not None and node.depth:
            node.refs -= 1
            if node.refs == 0:
                freed += node.blocks
                self._tick += 1
                node.stamp = self.eviction.released(node, self._tick)
                self._candidate(node)
            node = node.parent
        self.idle += freed
        return freed

    def insert(self, node: Node, prefix: tuple[int, ...], limit: int) -> tuple[Node, int]:
        """Cache a computed prompt's units below ``node`` (which the caller references) up to
        ``limit``: the caller's private blocks become the new units' blocks and its reference
        extends to them (a unit cached meanwhile by another request is shared instead, the
        caller's copy freed). Returns (deepest node, blocks that leave the pool's ``used``)."""
        given_up = 0
        while node.depth < limit:
            d = node.depth + 1
            b = self.blocks_upto(d) - self.blocks_upto(d - 1)
            child = node.children.get(prefix[node.depth])
            if child is None:
                child = Node(prefix[node.depth], node, d, b, GPU)
                node.children[child.key] = child
                node.kids[GPU] += 1
                self.held[GPU] += b
                self._tick += 1
                child.stamp = self._tick
            elif child.tier == GPU:
                if child.refs == 0:
                    self.idle -= b  # idle -> referenced, the caller's copy dropped: used is net 0
                else:
                    given_up += b  # already referenced: the caller's copy leaves used
            else:
                self._move(child, GPU)  # the caller's blocks become the unit's GPU copy
            child.refs += 1
            node = child
        return node, given_up

    # ------------------------------------------------------------------ eviction
    def fit(self, free: int) -> None:
        """Evict idle GPU units until they fit in ``free`` (the pool's free blocks)."""
        heap = self._heaps[GPU]
        while self.idle > free:
            node = self._pop(heap, GPU)
            self.idle -= node.blocks
            self.gpu_evicted += node.blocks
            self._demote(node)

    def _demote(self, node: Node) -> None:
        """Move an idle leaf of its tier one tier down (making room there), or drop it."""
        tier = node.tier + 1
        while tier <= REMOTE and self.capacity[tier] < node.blocks:
            tier += 1
        if tier > REMOTE:
            self._drop(node)
            return
        heap = self._heaps[tier]
        while self.held[tier] + node.blocks > self.capacity[tier]:
            self._demote(self._pop(heap, tier))
        self.offloaded[tier] += node.blocks
        self._move(node, tier)
        self._candidate(node)

    def _drop(self, node: Node) -> None:
        """Remove ``node`` and what lies below it (lower tiers) from the tree."""
        for child in list(node.children.values()):
            self._drop(child)
        self.held[node.tier] -= node.blocks
        parent = node.parent
        assert parent is not None
        parent.kids[node.tier] -= 1
        del parent.children[node.key]
        node.tier = -1  # stale heap entries see it gone
        self.evicted += 1
        if parent.depth and parent.refs == 0 and not parent.kids[parent.tier]:
            self._candidate(parent)

    def _move(self, node: Node, tier: int) -> None:
        old = node.tier
        self.held[old] -= node.blocks
        self.held[tier] += node.blocks
        parent = node.parent
        assert parent is not None
        parent.kids[old] -= 1
        parent.kids[tier] += 1
        node.tier = tier
        if parent.depth and parent.refs == 0 and not parent.kids[parent.tier]:
            self._candidate(parent)

    def _candidate(self, node: Node) -> None:
        if node.refs == 0 and not node.kids[node.tier]:
            heapq.heappush(self._heaps[node.tier], (node.stamp, -node.depth, next(self._serial), node))

    def _pop(self, heap: list, tier: int) -> Node:
        while heap:
            stamp, _, _, node = heapq.heappop(heap)
            if node.tier == tier and node.refs == 0 and not node.kids[tier] and node.stamp == stamp:
                return node
        raise AssertionError(f"prefix cache: no idle {TIER_NAMES[tier]} unit to evict")

    def clear(self) -> None:
        """Forget everything (the instance failed: its GPU and host memory are lost)."""
        for child in list(self.root.children.values()):
            self._drop(child)
        self.idle = 0
        self._heaps = [[], [], []]

    def counters(self) -> dict[str, float]:
        """What the cache holds and moved, for the instance table (bytes of KV per instance)."""
        bb = self.block_bytes
        return {"prefix_cached_gb": self.held[GPU] * bb / 1e9,
                "prefix_host_gb": self.held[HOST] * bb / 1e9,
                "prefix_remote_gb": self.held[REMOTE] * bb / 1e9,
                "prefix_gpu_evicted_gb": self.gpu_evicted * bb / 1e9,
                "prefix_offloaded_host_gb": self.offloaded[HOST] * bb / 1e9,
                "prefix_offloaded_remote_gb": self.offloaded[REMOTE] * bb / 1e9,
                "prefix_reloaded_host_gb": self.reloaded[HOST] * bb / 1e9,
                "prefix_reloaded_remote_gb": self.reloaded[REMOTE] * bb / 1e9,
                "prefix_units_dropped": self.evicted}

    # ------------------------------------------------------------------ checks (tests)
    def check(self, refs: dict[int, int]) -> int:
        """Verify the tree against ``refs`` (node id -> references expected from the requests);
        returns the GPU blocks referenced."""
        held, idle, referenced = [0, 0, 0], 0, 0
        stack = [self.root]
        while stack:
            node = stack.pop()
            kids = [0, 0, 0]
            for c in node.children.values():
                kids[c.tier] += 1
                stack.append(c)
                if c.tier == GPU and node.depth:
                    assert node.tier == GPU, "a GPU unit below a lower-tier one"
            assert kids == node.kids, f"prefix cache: tier counts {node.kids} != {kids}"
            if not node.depth:
                continue
            expect = refs.get(id(node), 0)
            assert node.refs == expect, \
                f"prefix cache: unit at depth {node.depth} has {node.refs} refs, requests hold {expect}"
            assert node.refs == 0 or node.tier == GPU, "a referenced unit outside GPU memory"
            held[node.tier] += node.blocks
            if node.tier == GPU:
                if node.refs:
                    referenced += node.blocks
                else:
                    idle += node.blocks
        assert held == self.held, f"prefix cache: tiers hold {held}, counted {self.held}"
        assert idle == self.idle, f"prefix cache: idle {idle} != {self.idle}"
        for t in (HOST, REMOTE):
            assert held[t] <= self.capacity[t], f"{TIER_NAMES[t]} tier over capacity"
        return referenced


def make_prefix_cache(cfg: PrefixCacheConfig, block_size: int, block_bytes: float,
                      host_link_gbs: float, trace_unit: int | None) -> PrefixCache | None:
    """The prefix cache an instance's ``KVPool`` owns, or None when caching is off. Tier
    capacities are per instance, in GB of KV (as the engine's KV of this model and TP)."""
    if not cfg.enabled:
        return None
    cfg.validate()
    unit = cfg.unit_tokens or trace_unit or DEFAULT_UNIT_TOKENS
    if unit < block_size:
        raise ConfigError(f"scheduler.prefix_cache.unit_tokens={unit} is smaller than "
                          f"scheduler.block_size={block_size}: a trace block must cover at least "
                          "one engine block (set unit_tokens to the trace's block size)")
    per_gb = 1e9 / block_bytes if block_bytes else 0.0
    return PrefixCache(unit, block_size, block_bytes, EVICTIONS[cfg.eviction](),
                       host_blocks=int(cfg.host_gb * per_gb), remote_blocks=int(cfg.remote_gb * per_gb),
                       host_bps=(cfg.host_gbs or host_link_gbs) * 1e9, remote_bps=cfg.remote_gbs * 1e9,
                       remote_latency_s=cfg.remote_latency_s)
