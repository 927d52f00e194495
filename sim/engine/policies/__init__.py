"""Batching policies by name (``scheduler.policy`` in config)."""
from __future__ import annotations

from sim.config import ConfigError, SchedulerConfig
from sim.engine.kvcache import KVCapacity
from sim.engine.policies.base import BatchingPolicy
from sim.engine.policies.decode_priority import DecodePriorityPolicy
from sim.engine.policies.reserving import OrcaPolicy, StaticBatchingPolicy
from sim.engine.policies.sarathi import SarathiPolicy
from sim.engine.policies.vllm import VLLMPolicy

POLICIES: dict[str, type[BatchingPolicy]] = {
    cls.name: cls for cls in (VLLMPolicy, SarathiPolicy, OrcaPolicy, StaticBatchingPolicy,
                              DecodePriorityPolicy)}


def make_policy(cfg: SchedulerConfig, capacity: KVCapacity, max_context: int = 0) -> BatchingPolicy:
    cls = POLICIES.get(cfg.policy.lower())
    if cls is None:
        raise ConfigError(f"unknown scheduler.policy '{cfg.policy}'; choose one of {sorted(POLICIES)}")
    return cls(cfg, capacity, max_context)


__all__ = ["BatchingPolicy", "POLICIES", "make_policy"]
