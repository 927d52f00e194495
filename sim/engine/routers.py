"""Global schedulers (routers): pick the instance an arriving request goes to.

Each is a small strategy class chosen by name (``router.name``). Routers read instance load only
through exact-at-any-instant queries (``load_tokens(now)``, ``used_blocks_now(now)``), so routing is
identical with and without fast-forwarding. Draining instances receive nothing new.
"""
from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

from goodput.sim.config import ConfigError, RouterConfig
from goodput.sim.engine.compiled import mypyc_attr
from goodput.sim.engine.migration import MigrationManager
from goodput.sim.engine.sequence import Sequence


@mypyc_attr(allow_interpreted_subclasses=True)
class Router(ABC):
    """Compiled in the optional build (one ``choose`` per arrival); plugins subclass it from
    ordinary Python (``register_router``)."""

    name: ClassVar[str] = "base"

    def __init__(self, cfg: RouterConfig, instances: list) -> None:
        self.cfg = cfg
        self.instances = instances  # shared with the cluster: scale-out appends to it
        #: set by the simulator: are arrivals still to come?
        self.feed_active: Callable[[], bool] = _no_more_arrivals

    def candidates(self, now: float | None = None) -> list:
        """Instances that take new prompts: not draining, not decode-only (a pool's decode
        instances receive prefilled requests from goodput.sim.engine.disagg instead). With
        ``pool_overflow_tokens`` (and ``now``), only the prefill instances below it while there
        are any: mixed instances take the overflow (Splitwise)."""
        live = [i for i in self.instances if not i.draining and i.role != "decode"]
        if not live:
            raise RuntimeError("every instance that takes prompts is draining: none can take new requests")
        limit = self.cfg.pool_overflow_tokens
        if limit is not None and now is not None:
            below = [i for i in live if i.role == "prefill" and i.load_tokens(now) < limit]
            if below:
                return below
        return live

    @abstractmethod
    def choose(self, seq: Sequence, now: float):
        """Return the instance that receives ``seq``."""

    def start(self, clock, seed: int, observer=None) -> None:  # noqa: B027  (optional hook)
        """Hook for routers with periodic work (Llumnix rebalancing); most have none."""


class RoundRobinRouter(Router):
    name: ClassVar[str] = "round_robin"

    def __init__(self, cfg: RouterConfig, instances: list) -> None:
        super().__init__(cfg, instances)
        self._next = 0

    def choose(self, seq: Sequence, now: float):
        if self.cfg.pool_overflow_tokens is not None:
            cands = self.candidates(now)
            self._next += 1
            return cands[(self._next - 1) % len(cands)]
        n = len(self.instances)
        for _ in range(n):
            inst = self.instances[self._next % n]
            self._next = (self._next + 1) % n
            if not inst.draining and inst.role != "decode":
                return inst
        return self.candidates()[0]


class LeastOutstandingTokensRouter(Router):
    """Fewest tokens of work left (prefill + decode); ties -> lowest index."""

    name: ClassVar[str] = "least_outstanding_tokens"

    def choose(self, seq: Sequence, now: float):
        return min(self.candidates(now), key=lambda i: i.load_tokens(now))


class LeastKVRouter(Router):
    """Lowest KV-cache use, counting the blocks queued requests will need."""

    name: ClassVar[str] = "least_kv"

    def choose(self, seq: Sequence, now: float):
        return min(self.candidates(now),
                   key=lambda i: (i.used_blocks_now(now) + i.queued_demand_blocks) / i.total_blocks)


class PowerOfTwoRouter(Router):
    """Sample two instances at random, send to the less loaded (outstanding tokens)."""

    name: ClassVar[str] = "power_of_two"

    def __init__(self, cfg: RouterConfig, instances: list) -> None:
        super().__init__(cfg, instances)
        self._rng = random.Random(cfg.seed)

    def choose(self, seq: Sequence, now: float):
        live = self.candidates(now)
        if len(live) == 1:
            return live[0]
        a, b = self._rng.sample(live, 2)
        return a if a.load_tokens(now) <= b.load_tokens(now) else b


class PrefixAwareRouter(Router):
    """Cache-aware routing (Mooncake's conductor, SGLang's cache-aware router): send a request
    where it would finish its prefill soonest, estimated in tokens as the work queued there plus
    the prompt tokens that instance's prefix cache does not hold. A long cached prefix draws a
    request to its instance only while that instance is not busier by more than the prefill the
    cache saves, so load stays balanced; with no prefix anywhere it is least-outstanding-tokens.
    Ties -> lowest index."""

    name: ClassVar[str] = "prefix_aware"

    def choose(self, seq: Sequence, now: float):
        prompt = seq.prefill_target
        return min(self.candidates(now),
                   key=lambda i: i.load_tokens(now) + prompt - i.cached_prefix_tokens(seq, now))


class LlumnixRouter(Router):
    """Llumnix: dispatch by freeness, rebalance by live migration, headroom for high priority.

    freeness = (KV blocks - virtual usage) / requests hosted, where virtual usage counts the
    blocks in use, the blocks queued requests need (so a head-of-line request that cannot fit makes
    its instance look overloaded and pushes migrations out: de-fragmentation), and a headroom per
    high-priority request (``priority_headroom`` x the instance's blocks), so instances serving them
    stay lightly loaded.
    """

    name: ClassVar[str] = "llumnix"

    def __init__(self, cfg: RouterConfig, instances: list) -> None:
        super().__init__(cfg, instances)
        self.manager: MigrationManager | None = None

    def freeness(self, inst, now: float) -> float:
        if inst.draining:
            return float("-inf")
        hp = self.cfg.high_priority
        # every high-priority request the instance hosts, including one still in (chunked) prefill
        high = sum(1 for group in (inst.running, inst.prefilling, inst.waiting)
                   for s in group if s.priority >= hp)
        virtual = inst.used_blocks_now(now) + inst.queued_demand_blocks + \
            high * self.cfg.priority_headroom * inst.total_blocks
        # per request hosted, queued ones included (as Llumnix's dispatch load does): dividing by
        # the running batch alone made an instance whose requests were all still queued or in
        # prefill look nearly empty, so a burst piled onto it
        hosted = inst.hosted()
        return (inst.total_blocks - virtual) / max(1, hosted)

    def choose(self, seq: Sequence, now: float):
        return max(self.candidates(), key=lambda i: self.freeness(i, now))

    def start(self, clock, seed: int, observer=None) -> None:
        if self.cfg.migration:
            self.manager = MigrationManager(clock, self, self.cfg, seed, observer)


def _no_more_arrivals() -> bool:
    return False


ROUTERS: dict[str, type[Router]] = {c.name: c for c in (
    RoundRobinRouter, LeastOutstandingTokensRouter, LeastKVRouter, PowerOfTwoRouter, PrefixAwareRouter,
    LlumnixRouter)}


def register_router(cls: type[Router]) -> type[Router]:
    """Class decorator: make a Router subclass available by its ``name`` in config."""
    ROUTERS[cls.name] = cls
    return cls


def make_router(cfg: RouterConfig, instances: list) -> Router:
    cls = ROUTERS.get(cfg.name.lower())
    if cls is None:
        raise ConfigError(f"unknown router.name '{cfg.name}'; choose one of {sorted(ROUTERS)}")
    if not instances:
        raise ConfigError("cluster: at least one instance is required (cluster[].count >= 1)")
    return cls(cfg, instances)
