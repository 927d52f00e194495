"""Batching policies by name (``scheduler.policy`` in config).

Importing this package registers the built-in policies; a new policy is one module with a class
decorated by ``register_policy`` (see docs/simulator.md, "Adding a batching policy").
"""
from __future__ import annotations

from goodput.sim.config import ConfigError, SchedulerConfig
from goodput.sim.engine import prefix_cache, speculation  # noqa: F401  (register scheduler.prefix_cache, .speculation)
from goodput.sim.engine.kvcache import KVCapacity
from goodput.sim.engine.policies import decode_priority, reserving, sarathi, vllm  # noqa: F401  (registers)
from goodput.sim.engine.policies.base import POLICIES, BatchingPolicy, register_policy


def make_policy(cfg: SchedulerConfig, capacity: KVCapacity, max_context: int = 0) -> BatchingPolicy:
    cls = POLICIES.get(cfg.policy.lower())
    if cls is None:
        raise ConfigError(f"unknown scheduler.policy '{cfg.policy}'; choose one of {sorted(POLICIES)}")
    return cls(cfg, capacity, max_context)


__all__ = ["POLICIES", "BatchingPolicy", "make_policy", "register_policy"]
