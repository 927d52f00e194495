"""The trace as arrivals: chunks of an arrival-ordered table replayed as clock events.

Kept apart from the cluster (``sim.simulator``) because it is the one place requests enter a
run: each becomes a ``Sequence`` routed at its arrival time, and the ones a cut never reaches
are recorded as unfinished, so every row read has exactly one record (``sim.invariants``).
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from sim.engine.clock import SimClock
from sim.engine.records import RecordSink
from sim.engine.sequence import Sequence
from sim.workload.schema import Trace


def as_chunks(trace) -> Iterable[pd.DataFrame]:
    if isinstance(trace, Trace):
        return trace.chunks()
    if isinstance(trace, pd.DataFrame):
        return [trace]
    return trace


class ArrivalFeed:
    """Replays the trace chunk by chunk as SimPy timeouts, one event per distinct arrival time.

    Requests arriving at the same instant are all queued before any instance is woken, so they
    can share one prefill batch, as in a real engine.
    """

    def __init__(self, clock: SimClock, chunks, router, records: RecordSink, cutoff: float,
                 progress=None):
        self.clock, self.router, self.records = clock, router, records
        self.chunks = iter(chunks)
        self.cutoff = cutoff
        self.progress = progress
        self.slo_codes = {name: i for i, name in enumerate(records.slo_classes)}
        self.last_arrival = -math.inf
        #: the current chunk as lists: ids, arrivals, prompts, outputs, priorities, SLO classes
        self.cols: tuple[list, list, list, list, list, list] | None = None
        self.i = self.n = 0
        self.rows = 0  # requests read from the trace (each must end up with exactly one record)
        if self._next_chunk():
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
        self.clock.call_later(max(0.0, t - self.clock.now), self._on_arrival)

    def _on_arrival(self, _ev) -> None:
        now = self.clock.now
        rids, arr, prompts, outputs, prios, classes = self._current()
        woken = []
        choose = self.router.choose
        while True:
            i = self.i
            t = arr[i]
            if t > now:
                break
            seq = Sequence(rids[i], t, prompts[i], outputs[i], prios[i], classes[i])
            inst = choose(seq, now)
            inst.submit(seq)
            if inst.idle:
                woken.append(inst)
            self.i = i + 1
            if self.i == self.n:
                if self.progress is not None:
                    self.progress.update(self.n)
                if not self._next_chunk():
                    self.cols = None
                    break
                rids, arr, prompts, outputs, prios, classes = self._current()
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
        """Requests after ``max_sim_time_s`` never arrive; they are counted as unfinished."""
        reason = "arrives after max_sim_time_s"
        rids, arr, prompts, outputs, prios, classes = self._current()
        i = self.i
        self.records.add_unarrived(rids[i:], arr[i:], prompts[i:], outputs[i:], prios[i:], classes[i:],
                                   reason)
        while self._next_chunk():
            rids, arr, prompts, outputs, prios, classes = self._current()
            self.records.add_unarrived(rids, arr, prompts, outputs, prios, classes, reason)
        self.cols = None
