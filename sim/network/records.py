"""What the fabric records: one row per transfer, and accounting per link.

A transfer's time from submission to landing splits exactly into
``queueing_s + transmission_s + latency_s + retransmit_s``:

* ``transmission_s``: its wire bytes at the path's nominal bottleneck (or its own rate cap) - what
  it would take alone on a healthy fabric;
* ``queueing_s``: everything bandwidth-related beyond that: waiting on a partitioned / fully lossy
  link (``stalled_s``) plus the slowdown from sharing links with other transfers or from degraded
  links (contention shows here);
* ``latency_s``: the path's one-way latency plus the jitter sampled for this transfer;
* ``retransmit_s``: one timeout per lost message (the resent bytes are in ``wire_bytes`` and so in
  the transmission and queueing terms).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class TransferRecord:
    id: int
    src: str
    dst: str
    payload_bytes: float
    submitted_s: float
    wire_bytes: float = 0.0  # payload plus resent messages
    messages: int = 0
    lost_messages: int = 0
    transmit_end_s: float = math.nan  # last byte left the bottleneck
    end_s: float = math.nan  # landed (or failed)
    stalled_s: float = 0.0  # rate 0: a link on the path partitioned or losing everything
    active_s: float = 0.0  # rate > 0
    transmission_s: float = 0.0
    latency_s: float = 0.0
    retransmit_s: float = 0.0
    ok: bool | None = None  # None while in flight
    failure: str | None = None
    tag: Any = None

    @property
    def queueing_s(self) -> float:
        return self.stalled_s + self.active_s - self.transmission_s

    @property
    def duration_s(self) -> float:
        return self.end_s - self.submitted_s


@dataclass
class LinkStats:
    """Bytes a directed link carried, time it was busy, and its load over time (for utilisation)."""

    id: str
    nominal_gbs: float
    bytes: float = 0.0
    busy_s: float = 0.0  # time with at least one transfer moving bytes over it
    transfers: int = 0  # transfers whose path crosses it
    # piecewise-constant load: from times[i] on, the link carried rates[i] bytes/s
    times: list[float] = field(default_factory=lambda: [0.0])
    rates: list[float] = field(default_factory=lambda: [0.0])

    def set_rate(self, now: float, rate: float) -> None:
        if rate == self.rates[-1]:
            return
        if self.times[-1] == now:
            self.rates[-1] = rate
        else:
            self.times.append(now)
            self.rates.append(rate)

    def utilisation(self, start: float, end: float) -> float:
        """Mean load over [start, end] as a fraction of the NOMINAL bandwidth (a degraded link at
        full load shows below 1). The load after the last change is taken to hold until ``end``,
        so pass an ``end`` no later than the clock's now."""
        if not end > start:
            raise ValueError(f"utilisation window [{start}, {end}] is empty; give end > start")
        t = np.asarray([*self.times, math.inf])
        overlap = np.clip(np.minimum(t[1:], end) - np.maximum(t[:-1], start), 0.0, None)
        carried = float(np.dot(np.asarray(self.rates), overlap))
        return carried / (self.nominal_gbs * 1e9 * (end - start))
