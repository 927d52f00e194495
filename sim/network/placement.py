"""Where each serving instance's GPUs sit on the topology, and the default topology.

An instance of tensor-parallel degree ``tp`` occupies ``tp`` GPUs of one node (a TP group never
straddles nodes: its all-reduces need NVLink). Instances are placed in cluster order, first fit.
Without a configured topology every cluster group gets nodes of its own GPU type, ``gpus_per_node``
(8) GPUs each, joined by the default fabric (InfiniBand NDR), which is how DistServe and Splitwise
deploy pools: prompt and token machines are separate nodes.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from goodput.sim.network.errors import NetworkConfigError
from goodput.sim.network.topology import GpuId, Topology

GPUS_PER_NODE = 8


def default_layout(groups: Sequence[tuple[str, int, int]],
                   fabric: str = "ib-ndr") -> tuple[dict[str, Any], list[list[GpuId]]]:
    """A topology config for ``groups`` of (GPU name, tp, count), each group on nodes of its own,
    and the GPUs of every instance in cluster order."""
    nodes: list[dict[str, Any]] = []
    gpus: list[list[GpuId]] = []
    for gpu, tp, count in groups:
        per_node = max(GPUS_PER_NODE, tp)
        fit = per_node // tp  # instances per node
        first = len(nodes)
        for _ in range(-(-count // fit)):
            nodes.append({"gpu": gpu, "gpus": per_node})
        for i in range(count):
            node, slot = first + i // fit, (i % fit) * tp
            gpus.append([GpuId(node, slot + g) for g in range(tp)])
    return {"nodes": nodes, "fabric": fabric}, gpus


def place(topology: Topology, tps: Sequence[int]) -> list[list[GpuId]]:
    """GPUs of each instance (``tps[i]`` of them, on one node), first fit in order."""
    free = [list(range(node.gpus)) for node in topology.nodes]
    out: list[list[GpuId]] = []
    for i, tp in enumerate(tps):
        for n, left in enumerate(free):
            if len(left) >= tp:
                out.append([GpuId(n, g) for g in left[:tp]])
                del left[:tp]
                break
        else:
            raise NetworkConfigError(
                f"network.topology: instance {i} needs {tp} GPUs on one node and no node has them "
                f"left ({sum(map(len, free))} GPUs free in all); add nodes or GPUs per node")
    return out
