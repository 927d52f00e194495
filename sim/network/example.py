"""Worked example for docs/network.md: ``python -m goodput.sim.network.example`` prints every number the
doc quotes, so the doc cannot drift from the code.

Scenario: Llama-2-70B, a 2048-token prompt prefilled on node 0 (8 x H100, TP 8) and decoded on
node 1 (8 x H100, TP 8). GPU i's KV shard goes to GPU i of the other node.
"""
from __future__ import annotations

from typing import Any

from goodput.sim.catalog import get_model
from goodput.sim.engine.clock import SimClock
from goodput.sim.network.fabric import Fabric
from goodput.sim.network.kv import kv_bytes, kv_size
from goodput.sim.network.modes import KVTransferResult, after_prefill, layer_by_layer
from goodput.sim.network.topology import GpuId, Topology

TOKENS, TP = 2048, 8
PREFILL_S = 0.300  # assumed prefill time of the prompt (illustrative, not from the cost model)


def _shards(cfg: dict[str, Any], mode: str = "after_prefill", fault: bool = False) -> float:
    """Ship the 8 shards node 0 -> node 1 with prefill over [0, PREFILL_S]; return landing time
    of the last shard (seconds)."""
    clock = SimClock()
    fabric = Fabric(clock, Topology.from_config(cfg), seed=0)
    shard = kv_bytes(get_model("llama-2-70b"), TOKENS, tp=TP)
    landed: list[KVTransferResult] = []
    for g in range(TP):
        src, dst = GpuId(0, g), GpuId(1, g)
        if mode == "after_prefill":
            after_prefill(fabric, src, dst, shard, PREFILL_S, landed.append)
        else:
            layer_by_layer(fabric, src, dst, shard, 80, 0.0, PREFILL_S, landed.append)
    if fault:  # node 1 loses its network 0.1 ms after prefill ends, back 5 ms later
        clock.call_later(PREFILL_S + 1e-4, lambda _ev: fabric.partition(fabric.topology.node_links(1)))
        clock.call_later(PREFILL_S + 5.1e-3, lambda _ev: fabric.restore(fabric.topology.node_links(1)))
    clock.run()
    assert len(landed) == TP and all(r.ok for r in landed)
    return max(r.landed_s for r in landed)


def main() -> None:
    model = get_model("llama-2-70b")
    size = kv_size(model, TOKENS, tp=TP)
    per_token = kv_bytes(model, 1)
    print(f"KV per token (llama-2-70b, bf16, GQA 8 KV heads): {per_token:,.0f} B "
          f"(MHA sizing with 64 heads would say {per_token * model.heads // model.kv_heads:,.0f} B)")
    print(f"KV of {TOKENS} tokens: {size.total / 1e6:,.1f} MB total, {size.per_gpu / 1e6:,.1f} MB per GPU "
          f"at TP {TP}")
    base = {"nodes": 2, "gpus_per_node": 8, "gpu": "h100-sxm", "fabric": "ib-ndr"}
    rails = _shards({**base, "nics_per_node": 8}) - PREFILL_S
    one_nic = _shards({**base, "nics_per_node": 1}) - PREFILL_S
    print(f"after_prefill, 8 NDR NICs per node (one per GPU): KV lands {rails * 1e3:.3f} ms after prefill")
    print(f"after_prefill, 1 NDR NIC per node (8 shards share it): {one_nic * 1e3:.3f} ms after prefill")
    lbl = _shards({**base, "nics_per_node": 8}, mode="layer_by_layer") - PREFILL_S
    lbl1 = _shards({**base, "nics_per_node": 1}, mode="layer_by_layer") - PREFILL_S
    print(f"layer_by_layer, 8 NICs: {lbl * 1e3:.3f} ms after prefill; 1 NIC: {lbl1 * 1e3:.3f} ms")
    eth = _shards({**base, "nics_per_node": 1, "fabric": "eth-25g"}, mode="layer_by_layer") - PREFILL_S
    produced = TP * size.per_gpu / PREFILL_S / 1e9  # GB/s of KV the 8 GPUs produce during prefill
    print(f"layer_by_layer, 1 x 25 GbE per node (3.125 GB/s, above the {produced:.2f} GB/s prefill "
          f"produces KV at): {eth * 1e3:.3f} ms after prefill")
    slow = {**base, "nics_per_node": 1, "fabric": {"base": "eth-25g", "bandwidth_gbs": 1.25}}
    ten = _shards(slow, mode="layer_by_layer") - PREFILL_S
    ten_after = _shards(slow) - PREFILL_S
    print(f"1 x 10 GbE per node (1.25 GB/s, link-limited): layer_by_layer {ten * 1e3:.1f} ms, "
          f"after_prefill {ten_after * 1e3:.1f} ms after prefill")
    fault = _shards({**base, "nics_per_node": 8}, fault=True) - PREFILL_S
    print(f"after_prefill, 8 NICs, node 1 partitioned for 5 ms mid-transfer: {fault * 1e3:.3f} ms")
    clock = SimClock()
    lossy = Fabric(clock, Topology.from_config({**base, "links": {"infiniband": {"loss_rate": 1e-3}}}))
    est = lossy.estimate(GpuId(0, 0), GpuId(1, 0), size.per_gpu)
    print(f"expected time of one shard on NDR with loss 1e-3 per 1 MiB message "
          f"(67.1 ms timeout): {est * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
