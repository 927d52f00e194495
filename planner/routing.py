"""The size-aware router that replays a plan: each request goes to the type its slice was given.

A request's bucket comes from its prompt and output lengths and the plan's bucket edges. When the
plan splits a bucket across types, the type is drawn with the plan's shares from a random stream
seeded by ``router.seed`` (drawn in arrival order, only for split buckets), so the same seed gives
the same routing. Within the type the request goes to the instance with the least outstanding
work (ties: lowest index), as a serving frontend would. A bucket the plan never saw (re-simulating
a different trace) goes to the type with the most memory per instance, the one most likely to
hold its context.

The router uses the output length (known to the simulator, not to a real frontend): the plan is
proved under oracle size knowledge, as in Mélange; docs/planner.md says so.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import random
from typing import ClassVar

from goodput.planner.errors import PlannerError
from goodput.sim.catalog import get_gpu
from goodput.sim.engine.routers import ROUTERS, Router, register_router


class SizeAwareRouter(Router):
    """Base class; ``router_for(plan)`` registers a subclass carrying the plan's routing table."""

    name = "size_aware"
    input_edges: tuple = ()
    output_edges: tuple = ()
    table: ClassVar[dict] = {}  # (i, j) -> (type keys, cumulative shares)
    fallback: tuple = ((), ())

    def __init__(self, cfg, instances):
        super().__init__(cfg, instances)
        self.by_type: dict[str, list] = {}
        for inst in instances:
            self.by_type.setdefault(inst.group, []).append(inst)
        wanted = {k for keys, _ in self.table.values() for k in keys} | set(self.fallback[0])
        missing = wanted - set(self.by_type)
        if missing:
            raise PlannerError(f"size-aware router: the plan routes to {sorted(missing)} but the "
                               f"cluster has no group named so (groups: {sorted(self.by_type)})")
        self.rng = random.Random(cfg.seed)

    def choose(self, seq, now):
        key = (bisect.bisect_right(self.input_edges, seq.prompt),
               bisect.bisect_right(self.output_edges, seq.output))
        keys, cum = self.table.get(key, self.fallback)
        k = 0
        if len(keys) > 1:
            k = min(bisect.bisect_right(cum, self.rng.random()), len(keys) - 1)
        best, best_load = None, None
        for inst in self.by_type[keys[k]]:
            load = inst.load_tokens(now)
            if best_load is None or load < best_load:
                best, best_load = inst, load
        return best


def _bucket_index(label: str, input_edges, output_edges) -> tuple[int, int]:
    from goodput.planner.slices import bucket_label

    for i in range(len(input_edges) + 1):
        for j in range(len(output_edges) + 1):
            if bucket_label(i, j, input_edges, output_edges) == label:
                return i, j
    raise PlannerError(f"plan slice bucket {label!r} does not match the plan's edges "
                       f"input={list(input_edges)} output={list(output_edges)}")


def router_for(plan) -> str:
    """Register (once) a router class for ``plan`` and return the ``router.name`` to use."""
    ie, oe = tuple(plan.input_edges), tuple(plan.output_edges)
    table = {}
    for bucket, shares in sorted(plan.bucket_shares().items()):
        keys = sorted(shares)
        cum, acc = [], 0.0
        for k in keys:
            acc += shares[k]
            cum.append(acc)
        table[_bucket_index(bucket, ie, oe)] = (tuple(keys), tuple(cum))
    big = max(plan.groups, key=lambda g: (get_gpu(g.gpu).memory_gb * g.tp, g.key))
    digest = hashlib.sha256(json.dumps([ie, oe, sorted(table.items()), big.key])
                            .encode()).hexdigest()[:12]
    name = f"size_aware_{digest}"
    if name not in ROUTERS:
        register_router(type(f"SizeAwareRouter_{digest}", (SizeAwareRouter,), {
            "name": name, "input_edges": ie, "output_edges": oe, "table": table,
            "fallback": ((big.key,), (1.0,))}))
    return name
