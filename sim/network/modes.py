"""KV transfer modes for disaggregated prefill/decode, engine-agnostic.

Each function schedules the transfers of one request's KV cache on a ``Fabric`` and calls
``on_landed(result)`` once, when all of it has arrived (``result.ok``) or when a part failed. The
engine supplies times and sizes; the decode side must already hold (or be reserving) the blocks
the KV lands in, which is the engine's business, not this module's.

* ``after_prefill``: the whole KV leaves when the last prompt token's prefill ends (DistServe,
  Splitwise's default).
* ``layer_by_layer``: layer i's KV can leave as soon as prefill has computed layer i, overlapping
  the transfer with prefill (Splitwise's layer-wise transfer). Layers finish at an even pace over
  the prefill, one every ``T / L``. Modelled as two flows: the first L-1 layers as one flow that
  starts when layer 1 is done and is capped at the production rate ``bytes / T`` (it cannot send
  what is not computed yet), and the last layer as a flow that starts at prefill end. Alone on a
  link of bandwidth ``bw`` this lands at exactly::

      max(prefill_end + (bytes / L) / bw,  prefill_start + T / L + bytes / bw) + latency

  - the last layer's own transfer when the link is faster than prefill, the link-limited total
  otherwise (``layer_by_layer_estimate``). Two flows, not L, so the fabric's cost per request does
  not grow with depth; contention with other transfers is still shared max-min fairly.
* ``pull``: the decode side asks for the KV once it has reserved blocks: a zero-byte request
  message travels decode -> prefill (its path latency), then the KV flows prefill -> decode.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from goodput.sim.network.errors import NetworkConfigError
from goodput.sim.network.fabric import Fabric, Transfer
from goodput.sim.network.records import TransferRecord
from goodput.sim.network.topology import GpuId

MODES = ("after_prefill", "layer_by_layer", "pull")


@dataclass
class KVTransferResult:
    mode: str
    ok: bool
    started_s: float  # when the first byte (or pull request) could leave
    landed_s: float  # when the last part landed, or when a part failed
    records: list[TransferRecord] = field(default_factory=list)
    failure: str | None = None
    tag: Any = None

    @property
    def bytes(self) -> float:
        return sum(r.payload_bytes for r in self.records)


OnLanded = Callable[[KVTransferResult], None]


class KVTransfer:
    """One request's KV movement: a few fabric transfers, started at set times, ending together."""

    def __init__(self, fabric: Fabric, mode: str, on_landed: OnLanded | None, tag: Any):
        self.fabric, self.mode, self.on_landed, self.tag = fabric, mode, on_landed, tag
        self.parts: list[Transfer] = []
        self.outstanding = 0
        self.done = False
        self.started_s = float("nan")
        self.records: list[TransferRecord] = []

    def _at(self, t: float, start: Callable[[], None]) -> None:
        """Run ``start`` at absolute time ``t`` (now if ``t`` is past)."""
        self.outstanding += 1
        clock = self.fabric.clock
        clock.call_later(max(0.0, t - clock.now), lambda _ev: None if self.done else start())

    def _send(self, src: GpuId, dst: GpuId, nbytes: float, then: Callable[[], None] | None = None,
              max_rate_gbs: float | None = None) -> None:
        if self.started_s != self.started_s:  # first part to leave
            self.started_s = self.fabric.clock.now
        self.parts.append(self.fabric.submit(src, dst, nbytes, lambda rec: self._part_done(rec, then),
                                             max_rate_gbs=max_rate_gbs, tag=self.tag))

    def _part_done(self, rec: TransferRecord, then: Callable[[], None] | None) -> None:
        if self.done:
            return
        self.records.append(rec)
        if not rec.ok:
            return self._finish(False, rec.failure)
        if then is not None:
            return then()  # a follow-up part replaces this one in the count
        self.outstanding -= 1
        if self.outstanding == 0:
            self._finish(True, None)

    def _finish(self, ok: bool, failure: str | None) -> None:
        self.done = True
        for t in self.parts:
            self.fabric.cancel(t)  # no-op for parts already landed
        if self.on_landed is not None:
            self.on_landed(KVTransferResult(self.mode, ok, self.started_s, self.fabric.clock.now,
                                            self.records, failure, self.tag))

    def cancel(self) -> None:
        """The request went away: stop its transfers, no callback."""
        self.done = True
        for t in self.parts:
            self.fabric.cancel(t)


def _check(nbytes: float, *times: float) -> None:
    if not nbytes >= 0:
        raise NetworkConfigError(f"KV transfer bytes = {nbytes!r}: must be >= 0")
    if any(t != t for t in times):
        raise NetworkConfigError("KV transfer time is NaN: give the prefill start/end in seconds")


def after_prefill(fabric: Fabric, src: GpuId, dst: GpuId, nbytes: float, prefill_end_s: float,
                  on_landed: OnLanded | None = None, *, tag: Any = None) -> KVTransfer:
    """Ship all ``nbytes`` at ``prefill_end_s``."""
    _check(nbytes, prefill_end_s)
    kv = KVTransfer(fabric, "after_prefill", on_landed, tag)
    kv._at(prefill_end_s, lambda: kv._send(src, dst, nbytes))
    return kv


def layer_by_layer(fabric: Fabric, src: GpuId, dst: GpuId, nbytes: float, layers: int,
                   prefill_start_s: float, prefill_end_s: float, on_landed: OnLanded | None = None, *,
                   tag: Any = None) -> KVTransfer:
    """Ship layer i's KV as prefill computes it (see the module docstring for the model)."""
    _check(nbytes, prefill_start_s, prefill_end_s)
    if layers < 1:
        raise NetworkConfigError(f"layer_by_layer: layers = {layers}: must be >= 1")
    if prefill_end_s < prefill_start_s:
        raise NetworkConfigError(f"layer_by_layer: prefill ends ({prefill_end_s}) before it starts "
                                 f"({prefill_start_s})")
    kv = KVTransfer(fabric, "layer_by_layer", on_landed, tag)
    duration = prefill_end_s - prefill_start_s
    body = nbytes * (layers - 1) / layers
    if body > 0:
        cap = nbytes / duration / 1e9 if duration > 0 else None  # GB/s prefill produces KV at
        kv._at(prefill_start_s + duration / layers, lambda: kv._send(src, dst, body, max_rate_gbs=cap))
    kv._at(prefill_end_s, lambda: kv._send(src, dst, nbytes - body))
    return kv


def pull(fabric: Fabric, src: GpuId, dst: GpuId, nbytes: float, on_landed: OnLanded | None = None, *,
         ready_s: float | None = None, tag: Any = None) -> KVTransfer:
    """The decode side (``dst``) requests the KV from ``src``; call it when blocks are reserved.

    ``ready_s``: when the KV exists on ``src`` (prefill end); the request leaves at
    ``max(now, ready_s)``.
    """
    now = fabric.clock.now
    ready = now if ready_s is None else ready_s
    _check(nbytes, ready)
    kv = KVTransfer(fabric, "pull", on_landed, tag)
    kv._at(ready, lambda: kv._send(dst, src, 0.0, then=lambda: kv._send(src, dst, nbytes)))
    return kv


def layer_by_layer_estimate(nbytes: float, layers: int, prefill_start_s: float, prefill_end_s: float,
                            bandwidth_gbs: float, latency_s: float = 0.0) -> float:
    """Landing time of a lone layer-by-layer transfer on a link of ``bandwidth_gbs`` (closed form)."""
    bw = bandwidth_gbs * 1e9
    first = prefill_start_s + (prefill_end_s - prefill_start_s) / layers
    return max(prefill_end_s + nbytes / layers / bw, first + nbytes / bw) + latency_s
