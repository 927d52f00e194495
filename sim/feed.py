"""The trace as arrivals: chunks of an arrival-ordered table replayed as clock events.

Kept apart from the cluster (``goodput.sim.simulator``) because it is the one place requests enter a
run: each becomes a ``Sequence`` routed at its arrival time, and the ones a cut never reaches
are recorded as unfinished, so every row read has exactly one record (``goodput.sim.invariants``).
Rows that need more than that (a session's turns, closed-loop clients, embed and rag requests)
go to the request driver (``goodput.sim.clients``); a chunk with none of them takes the plain path. In
a closed loop the driver pulls rows (``pull``) instead of the clock releasing them.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from goodput.sim.engine.clock import SimClock
from goodput.sim.engine.records import RecordSink
from goodput.sim.engine.sequence import UNFINISHED, Sequence
from goodput.sim.workload.schema import Trace

if TYPE_CHECKING:
    from goodput.sim.clients import ChunkExtras, Clients
    from goodput.sim.engine.instance import Instance
    from goodput.sim.engine.routers import Router


def as_chunks(trace) -> Iterable[pd.DataFrame]:
    if isinstance(trace, Trace):
        return trace.chunks()
    if isinstance(trace, pd.DataFrame):
        return [trace]
    return trace


def _prefixes(chunk: pd.DataFrame) -> list[tuple[int, ...] | None] | None:
    """The chunk's ``prefix_blocks`` (space-separated block ids) as tuples; None if it has none."""
    if "prefix_blocks" not in chunk:
        return None
    col = chunk["prefix_blocks"].astype(str).tolist()
    if not any(col):
        return None
    return [tuple(int(b) for b in c.split()) if c else None for c in col]


def _alphas(chunk: pd.DataFrame) -> list[float] | None:
    """The chunk's per-request acceptance rates (trace column ``alpha``; NaN: the config's), or
    None without the column. Traces loaded from files were checked already; a DataFrame handed
    to ``simulate`` is checked here, before its rows arrive."""
    if "alpha" not in chunk:
        return None
    v = pd.to_numeric(chunk["alpha"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ((v < 0) | (v > 1) | (np.isnan(v) & chunk["alpha"].notna().to_numpy()))
    if bad.any():
        i = int(bad.argmax())
        value = chunk["alpha"].iloc[i]
        value = value.item() if hasattr(value, "item") else value  # np.float64(2.0) -> 2.0
        raise ValueError(f"trace column 'alpha', row {chunk.index[i]}: value {value!r} "
                         "is not an acceptance rate in [0, 1]; fix the row or leave it empty "
                         "(= scheduler.speculation.alpha)")
    return v.tolist()


class ArrivalFeed:
    """Replays the trace chunk by chunk as SimPy timeouts, one event per distinct arrival time.

    Requests arriving at the same instant are all queued before any instance is woken, so they
    can share one prefill batch, as in a real engine.
    """

    def __init__(self, clock: SimClock, chunks, router: Router, records: RecordSink, cutoff: float,
                 progress=None, clients: Clients | None = None):
        self.clock, self.router, self.records = clock, router, records
        #: the bound method scheduled at every arrival time, made once
        self._arrival_callback = self._on_arrival
        #: the request driver (goodput.sim.clients.Clients), or None: every row is a plain arrival
        self.clients = clients
        self.closed = clients is not None and clients.closed
        #: the current chunk's driver columns (None: no row of it needs the driver)
        self.extras: ChunkExtras | None = None
        self.chunks = iter(chunks)
        self.cutoff = cutoff
        self.progress = progress
        self.slo_codes = {name: i for i, name in enumerate(records.slo_classes)}
        self.last_arrival = -math.inf
        #: the current chunk as lists: ids, arrivals, prompts, outputs, priorities, SLO classes
        self.cols: tuple[list, list, list, list, list, list] | None = None
        self.i = self.n = 0
        #: the current chunk's prefix block ids per request (None: the trace has none)
        self.prefixes: list[tuple[int, ...] | None] | None = None
        self.alphas: list[float] | None = None
        self.rows = 0  # requests read from the trace (each must end up with exactly one record)
        if clients is not None:
            clients.feed = self
        if self._next_chunk() and not self.closed:
            self._schedule()

    def _next_chunk(self) -> bool:
        for chunk in self.chunks:
            n = len(chunk)
            if n == 0:
                continue
            arr = chunk["arrival_s"].to_numpy(dtype=np.float64).tolist()
            if arr[0] < self.last_arrival:
                raise ValueError("trace chunks are not in arrival order (arrival_s decreases between "
                                 "chunks); sort the trace by arrival time")
            self.last_arrival = arr[-1]
            self.cols = (chunk["request_id"].to_numpy().tolist(), arr,
                         chunk["prompt_tokens"].to_numpy().tolist(),
                         chunk["output_tokens"].to_numpy().tolist(),
                         chunk["priority"].to_numpy().tolist() if "priority" in chunk else [0] * n,
                         self._class_codes(chunk, n))
            self.prefixes = _prefixes(chunk)
            #: per-request speculative acceptance (the optional trace column; NaN: the config's)
            self.alphas = _alphas(chunk)
            self.extras = self.clients.chunk(chunk, self.cols[0]) if self.clients is not None else None
            self.i, self.n = 0, n
            self.rows += n
            return True
        return False

    def _class_codes(self, chunk: pd.DataFrame, n: int) -> list[int]:
        if "slo_class" not in chunk:
            return [0] * n
        codes = []
        for c in chunk["slo_class"].astype(str).tolist():
            code = self.slo_codes.get(c)
            if code is None:
                code = self.slo_codes[c] = len(self.records.slo_classes)
                self.records.slo_classes.append(c)
            codes.append(code)
        return codes

    def _current(self) -> tuple[list, list, list, list, list, list]:
        cols = self.cols
        assert cols is not None, "the feed has no chunk left"
        return cols

    def _schedule(self) -> None:
        t = self._current()[1][self.i]
        if t > self.cutoff:
            self._count_unarrived()
            return
        self.clock.call_later(max(0.0, t - self.clock.now), self._arrival_callback)

    def _request(self, i: int):
        """Row ``i`` of the current chunk as the driver's ``Request``."""
        rids, arr, prompts, outputs, prios, classes = self._current()
        assert self.clients is not None and self.extras is not None
        return self.clients.request(self.extras, i, rids[i], arr[i], prompts[i], outputs[i],
                                    prios[i], classes[i],
                                    self.prefixes[i] if self.prefixes is not None else None)

    def pull(self):
        """Closed loop: the next row as a ``Request`` (None when the trace is exhausted)."""
        if self.cols is None:
            return None
        req = self._request(self.i)
        self.i += 1
        if self.i == self.n:
            if self.progress is not None:
                self.progress.update(self.n)
            if not self._next_chunk():
                self.cols = None
        return req

    def _on_arrival(self, _ev) -> None:
        now = self.clock.now
        rids, arr, prompts, outputs, prios, classes = self._current()
        woken: list[Instance] = []
        choose = self.router.choose
        special = self.extras.special if self.extras is not None else None
        while True:
            i = self.i
            t = arr[i]
            if t > now:
                break
            if special is not None and special[i]:
                assert self.clients is not None
                inst = self.clients.arrive(self._request(i))
                if inst is not None and inst.idle:
                    woken.append(inst)
            else:
                seq = Sequence(rids[i], t, prompts[i], outputs[i], prios[i], classes[i])
                if self.prefixes is not None:
                    seq.prefix = self.prefixes[i]
                if self.alphas is not None:
                    seq.alpha = self.alphas[i]
                chosen: Instance = choose(seq, now)  # typed: the calls below are native compiled
                chosen.submit(seq)
                if chosen.idle:
                    woken.append(chosen)
            self.i = i + 1
            if self.i == self.n:
                if self.progress is not None:
                    self.progress.update(self.n)
                if not self._next_chunk():
                    self.cols = None
                    break
                rids, arr, prompts, outputs, prios, classes = self._current()
                special = self.extras.special if self.extras is not None else None
        for inst in woken:
            inst.wake()
        if self.cols is not None:
            self._schedule()

    def finish(self) -> None:
        """At the end of the run: requests still to arrive (an arrival due exactly at the cut,
        which the clock stops before) are counted unfinished like those after it."""
        if self.cols is not None:
            self._count_unarrived()

    def _count_unarrived(self) -> None:
        """Requests after ``max_sim_time_s`` never arrive (in a closed loop: no client took
        them by then); they are counted as unfinished."""
        reason = "not sent by max_sim_time_s (closed loop)" if self.closed else \
            "arrives after max_sim_time_s"
        self._add_unarrived(self.i, reason)
        while self._next_chunk():
            self._add_unarrived(0, reason)
        self.cols = None

    def _add_unarrived(self, lo: int, reason: str) -> None:
        """Rows ``lo:`` of the current chunk, unfinished; embed and rag rows one by one, so
        their records keep their kind."""
        rids, arr, prompts, outputs, prios, classes = self._current()
        kinds = self.extras.kind if self.extras is not None else None
        if kinds is None or not any(kinds[lo:]):
            self.records.add_unarrived(rids[lo:], arr[lo:], prompts[lo:], outputs[lo:], prios[lo:],
                                       classes[lo:], reason)
            return
        plain = [i for i in range(lo, self.n) if not kinds[i]]
        pick = lambda col: [col[i] for i in plain]  # noqa: E731
        self.records.add_unarrived(pick(rids), pick(arr), pick(prompts), pick(outputs),
                                   pick(prios), pick(classes), reason)
        for i in range(lo, self.n):
            if kinds[i]:
                self.records.write(Sequence(rids[i], arr[i], prompts[i], outputs[i],
                                                      prios[i], classes[i], kinds[i]),
                               UNFINISHED, reason=reason)
