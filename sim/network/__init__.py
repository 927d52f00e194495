"""Network model for disaggregated prefill/decode: KV sizing, links, topology, a flow-level fabric
with max-min fair sharing, and KV transfer modes. See docs/network.md.

The engine integration (prefill/decode pools sending KV over a ``Fabric``) is to come; this package
is self-contained and depends only on the Clock seam (goodput.sim.engine.clock) and the catalogs.
"""
from goodput.sim.network.errors import NetworkConfigError
from goodput.sim.network.fabric import Fabric, Transfer
from goodput.sim.network.kv import KVSize, kv_bytes, kv_heads_per_gpu, kv_size
from goodput.sim.network.linkspec import LINK_KINDS, Jitter, LinkSpec, get_link, link_spec
from goodput.sim.network.maxmin import max_min_rates
from goodput.sim.network.modes import (
    MODES,
    KVTransfer,
    KVTransferResult,
    after_prefill,
    layer_by_layer,
    layer_by_layer_estimate,
    pull,
)
from goodput.sim.network.records import LinkStats, TransferRecord
from goodput.sim.network.topology import GpuId, NodeSpec, Path, Topology

__all__ = [
    "LINK_KINDS", "MODES", "Fabric", "GpuId", "Jitter", "KVSize", "KVTransfer", "KVTransferResult",
    "LinkSpec", "LinkStats", "NetworkConfigError", "NodeSpec", "Path", "Topology", "Transfer",
    "TransferRecord", "after_prefill", "get_link", "kv_bytes", "kv_heads_per_gpu", "kv_size",
    "layer_by_layer", "layer_by_layer_estimate", "link_spec", "max_min_rates", "pull",
]
