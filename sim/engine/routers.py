"""Global schedulers (routers): pick the instance an arriving request goes to.

Each is a small strategy class chosen by name (``router.name``). Routers only read instance load
through ``Instance.load_tokens(now)``, which is exact mid-run, so routing decisions are identical
with and without fast-forwarding.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

from sim.config import ConfigError, RouterConfig
from sim.engine.sequence import Sequence


class Router(ABC):
    name = "base"

    def __init__(self, cfg: RouterConfig, instances: list):
        self.cfg = cfg
        self.instances = instances

    @abstractmethod
    def choose(self, seq: Sequence, now: float):
        """Return the instance that receives ``seq``."""


class RoundRobinRouter(Router):
    name = "round_robin"

    def __init__(self, cfg, instances):
        super().__init__(cfg, instances)
        self._next = 0

    def choose(self, seq, now):
        inst = self.instances[self._next]
        self._next = (self._next + 1) % len(self.instances)
        return inst


class LeastOutstandingTokensRouter(Router):
    """Send to the instance with the fewest tokens of work left (prefill + decode); ties -> lowest index."""

    name = "least_outstanding_tokens"

    def choose(self, seq, now):
        best, best_load = None, None
        for inst in self.instances:
            load = inst.load_tokens(now)
            if best_load is None or load < best_load:
                best, best_load = inst, load
        return best


ROUTERS: dict[str, type[Router]] = {c.name: c for c in (RoundRobinRouter, LeastOutstandingTokensRouter)}


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
