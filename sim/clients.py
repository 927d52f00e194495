"""Request drivers: sessions, closed-loop clients, and requests that are not one LLM call.

The arrival feed (``goodput.sim.feed``) hands this driver every trace row that needs more than "route it
at its arrival time": a turn of a session (``session_id``), every row in closed-loop mode, an
``embed`` or a ``rag`` row. What comes next depends on when a request ends, so the driver learns
ends through the one place every request ends, the record sink: a ``Sequence`` whose ``client``
is set is handed to that client instead of being written (``RecordSink.add``), and the client
writes the trace row's record (``RecordSink.write``) and schedules what follows with clock
callbacks. Nothing is
started inside the instance that just ended a request: the next turn, client request or rag step
runs in its own event (several due at one instant share one, as the feed's arrivals do), so fast
forward and stepping see the same arrivals at the same boundaries.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from goodput.sim.compound import RagRequest, RetrievalService, StepLog, sample_latencies
from goodput.sim.engine.records import RecordSink
from goodput.sim.engine.sequence import COMPLETED, UNFINISHED, Sequence
from goodput.sim.schema import EMBED, RAG, REQUEST_KINDS
from goodput.sim.workload.schema import TraceError

if TYPE_CHECKING:
    from goodput.sim.feed import ArrivalFeed


class Request:
    """A trace row the driver sends: its columns, and when it was started (``start``)."""

    __slots__ = ("arrival", "driver", "held", "kind", "latencies", "output", "plan", "prefix",
                 "priority", "prompt", "retrieved", "rid", "rounds", "session", "slo_class",
                 "start", "think")

    def __init__(self, driver: Clients, rid: int, arrival: float, prompt: int, output: int,
                 priority: int, slo_class: int, prefix, kind: int, session: str, think: float,
                 rounds: int, plan: int, retrieved: int, latencies):
        self.driver, self.rid, self.arrival = driver, rid, arrival
        self.prompt, self.output, self.priority, self.slo_class = prompt, output, priority, slo_class
        self.prefix, self.kind, self.session, self.think = prefix, kind, session, think
        self.rounds, self.plan, self.retrieved, self.latencies = rounds, plan, retrieved, latencies
        self.start = math.nan
        self.held = False  # waiting in its session's queue for the previous turn to end

    def ended(self, seq: Sequence, outcome: int, completion: float, reason: str) -> None:
        """Its one LLM call ended (a generate turn or an embedding): record it, tell the driver.
        An embedding produces no output token: the engine ran it as a 1-token request whose
        prefill ends it, the record says 0 output and 0 generated tokens."""
        if self.kind == EMBED:
            seq.output = seq.generated = 0
        self.driver.records.write(seq, outcome, completion, reason)
        self.driver.request_ended(self, completion if outcome == COMPLETED else self.driver.clock.now)


class _Session:
    __slots__ = ("busy", "last_end", "queue")

    def __init__(self) -> None:
        self.busy = False  # a turn is thinking, queued or running
        self.last_end = -math.inf
        self.queue: deque[Request] = deque()


@dataclass
class ChunkExtras:
    """The driver's columns of one trace chunk, as lists (read once per chunk)."""

    special: list[bool]
    kind: list[int]
    session: list[str]
    think: list[float]
    rounds: list[int]
    plan: list[int]
    retrieved: list[int]
    latencies: list[tuple[float, ...] | None]


def _ints(chunk: pd.DataFrame, name: str, default: int, rids, mask: np.ndarray, low: int,
          rule: str) -> np.ndarray:
    if name not in chunk:
        return np.full(len(chunk), default, dtype=np.int64)
    v = pd.to_numeric(chunk[name], errors="coerce").fillna(default).to_numpy(dtype=np.float64)
    bad = mask & ((v < low) | (v != np.floor(v)))
    if bad.any():
        i = int(bad.argmax())
        raise TraceError(f"trace column '{name}', request {rids[i]}: value {v[i]:g} {rule}; fix "
                         "those rows (see docs/compound.md)")
    return v.astype(np.int64)


class Clients:
    """Sends the rows the feed hands over; keeps sessions, the closed loop and rag requests."""

    def __init__(self, clock, router, records: RecordSink, cfg):
        self.clock, self.router, self.records = clock, router, records
        c = cfg.clients
        self.closed = c.mode == "closed"
        self.concurrency = c.concurrency
        self.think_s, self.think_exp = c.think_time_s, c.think == "exponential"
        self._think_rng = np.random.default_rng(c.seed)
        self.retrieval_cfg = cfg.retrieval
        self._latency_rng = np.random.default_rng(cfg.retrieval.seed)
        self.retrieval = RetrievalService(clock, cfg.retrieval)
        self.steps = StepLog(records)
        self.feed: ArrivalFeed | None = None  # the feed (closed loop: pulls rows from it)
        self.sessions: dict[str, _Session] = {}
        self.waiting: dict[int, Request] = {}  # read but not started yet
        self.live: dict[int, RagRequest] = {}  # rag requests started and not ended
        self.outstanding = self.max_outstanding = 0  # closed loop: rows pulled, not ended
        self.turns = 0  # session turns sent
        self.think_sum, self.think_n = 0.0, 0  # closed loop: think times the clients took
        self._due: dict[float, list] = {}
        self._call_id = 0

    # ----------------------------------------------------------------- trace chunks
    def chunk(self, chunk: pd.DataFrame, rids: list) -> ChunkExtras | None:
        """This chunk's driver columns, checked (one TraceError naming the column and request);
        None when no row needs the driver (plain open-loop replay)."""
        n = len(chunk)
        think = np.full(n, self.think_s)
        if self.think_exp:  # drawn for every row, so the stream does not depend on chunking
            think = self._think_rng.exponential(self.think_s, n)
        kinds = np.zeros(n, dtype=np.int64)
        if "kind" in chunk:
            names = chunk["kind"].astype(str).to_numpy()
            known = np.isin(names, REQUEST_KINDS)
            if not known.all():
                i = int((~known).argmax())
                raise TraceError(f"trace column 'kind', request {rids[i]}: {names[i]!r} is not a "
                                 f"request kind; use one of {', '.join(REQUEST_KINDS)}")
            for code, name in enumerate(REQUEST_KINDS):
                kinds[names == name] = code
        sessions = chunk["session_id"].astype(str).to_numpy() if "session_id" in chunk \
            else np.full(n, "", dtype=object)
        in_session = sessions != ""
        special = np.full(n, True) if self.closed else (kinds != 0) | in_session
        if not special.any():
            return None
        if "think_time_s" in chunk:
            given = pd.to_numeric(chunk["think_time_s"], errors="coerce").to_numpy(dtype=np.float64)
            bad = given < 0
            if bad.any():
                i = int(bad.argmax())
                raise TraceError(f"trace column 'think_time_s', request {rids[i]}: {given[i]:g} is "
                                 "negative; a think time is >= 0 seconds (empty = the config's "
                                 "clients.think_time_s)")
            think = np.where(np.isfinite(given), given, think)
        rag = kinds == RAG
        rounds = _ints(chunk, "rag_rounds", 1, rids, rag, 1,
                       "is not a whole number >= 1; a rag request runs at least one retrieval round")
        plan = _ints(chunk, "plan_tokens", 0, rids, rag, 0, "is not a whole number of tokens >= 0")
        retrieved = _ints(chunk, "retrieved_tokens", 0, rids, rag, 0,
                          "is not a whole number of tokens >= 0")
        embed_out = (kinds == EMBED) & (chunk["output_tokens"].to_numpy() != 0)
        if embed_out.any():
            i = int(embed_out.argmax())
            raise TraceError(f"trace column 'output_tokens', request {rids[i]}: an embed request "
                             "is prefill only; set output_tokens to 0 (or kind generate)")
        latencies: list[tuple[float, ...] | None] = [None] * n
        if rag.any():
            lat = sample_latencies(self.retrieval_cfg, self._latency_rng, int(rounds[rag].sum()))
            at = 0
            for i in np.flatnonzero(rag).tolist():
                r = int(rounds[i])
                latencies[i] = tuple(lat[at:at + r].tolist())
                at += r
        return ChunkExtras(special.tolist(), kinds.tolist(), sessions.tolist(), think.tolist(),
                           rounds.tolist(), plan.tolist(), retrieved.tolist(), latencies)

    def request(self, ex: ChunkExtras, i: int, rid: int, arrival: float, prompt: int, output: int,
                priority: int, slo_class: int, prefix) -> Request:
        return Request(self, rid, arrival, prompt, output, priority, slo_class, prefix, ex.kind[i],
                       ex.session[i], ex.think[i], ex.rounds[i], ex.plan[i], ex.retrieved[i],
                       ex.latencies[i])

    # ----------------------------------------------------------------- sending
    def start(self) -> None:
        """Closed loop: every client takes a row and sends it at t = 0."""
        if self.closed:
            for _ in range(self.concurrency):
                if not self._pull(0.0, first=True):
                    break

    def arrive(self, req: Request):
        """Open loop: ``req`` reached its arrival time (in the feed's event); returns the
        instance to wake if it was sent at once."""
        return self._release(req, req.arrival, direct=True)

    def _release(self, req: Request, t: float, direct: bool):
        """Send ``req`` at ``t``, or later if an earlier turn of its session has not ended plus
        the turn's think time."""
        if req.session:
            st = self.sessions.get(req.session)
            if st is None:
                st = self.sessions[req.session] = _Session()
            elif st.busy:
                req.held = True
                st.queue.append(req)
                self.waiting[req.rid] = req
                return None
            t = max(t, st.last_end + req.think)
            st.busy = True
        now = self.clock.now
        if direct and t <= now:
            return self._start(req)
        self.waiting[req.rid] = req
        self.after(max(t, now), lambda: self._start(req))
        return None

    def _start(self, req: Request):
        self.waiting.pop(req.rid, None)
        now = self.clock.now
        req.start = now
        self.turns += bool(req.session)
        if req.kind == RAG:
            return RagRequest(req, self).begin()
        seq = Sequence(req.rid, now, req.prompt, 1 if req.kind == EMBED else req.output,
                       req.priority, req.slo_class, req.kind)
        seq.prefix = req.prefix
        seq.client = req
        return self.submit(seq, now)

    def submit(self, seq: Sequence, now: float):
        inst = self.router.choose(seq, now)
        inst.submit(seq)
        return inst

    def after(self, t: float, action) -> None:
        """Run ``action()`` at ``t``; actions due at one instant share one event, and the
        instances they queued requests on are woken after all of them ran."""
        due = self._due.get(t)
        if due is None:
            due = self._due[t] = []
            self.clock.call_later(max(0.0, t - self.clock.now), lambda _ev: self._fire(t))
        due.append(action)

    def _fire(self, t: float) -> None:
        woken = []
        for action in self._due.pop(t):
            inst = action()
            if inst is not None and inst.idle:
                woken.append(inst)
        for inst in woken:
            inst.wake()

    def new_call_id(self) -> int:
        """Ids of the LLM calls of compound requests: negative, so never a trace row's id."""
        self._call_id -= 1
        return self._call_id

    # ----------------------------------------------------------------- ends
    def request_ended(self, req: Request, now: float) -> None:
        """The whole of ``req`` ended at ``now`` (called inside an instance: only schedules).
        The session's next turn, if read already, follows after its think time; in a closed
        loop it is the same client's next request, else the client takes the next row."""
        nxt = None
        if req.session:
            st = self.sessions[req.session]
            st.busy, st.last_end = False, now
            if st.queue:
                nxt = st.queue.popleft()
                nxt.held = False
                self._release(nxt, now, direct=False)
        if self.closed:
            if nxt is not None:
                self._thought(nxt.think)
            else:
                self.outstanding -= 1
                self._pull(now)

    def _thought(self, think: float) -> None:
        self.think_sum += think
        self.think_n += 1

    def _pull(self, now: float, first: bool = False) -> bool:
        """A closed-loop client is free at ``now``: it takes the next row and sends it after its
        think time (none for a client's first request). A turn of a session another client is
        holding goes to that session (its client sends it next) and this client reads on."""
        while True:
            req = self.feed.pull() if self.feed is not None else None
            if req is None:
                return False
            req.arrival = now  # in a closed loop a row arrives when a client takes it
            st = self.sessions.get(req.session) if req.session else None
            if st is None or not st.busy:
                break
            self._release(req, now, direct=False)  # queued behind its session's turn in flight
        self.outstanding += 1
        self.max_outstanding = max(self.max_outstanding, self.outstanding)
        assert self.outstanding <= self.concurrency, "closed loop: more requests than clients"
        if not first:
            self._thought(req.think)
        self._release(req, now if first else now + req.think, direct=False)
        return True

    def active(self) -> bool:
        """Requests still to be sent or in a compound request's steps (routers' feed_active)."""
        return bool(self.waiting or self.live)

    def finish(self, now: float) -> None:
        """End of the run, after the instances recorded what they held: rag requests between
        steps or at the retrieval service, and rows waiting to be sent, are unfinished."""
        for rag in list(self.live.values()):
            rag.abandon(now)
        for req in list(self.waiting.values()):
            rec = Sequence(req.rid, req.arrival, req.prompt, req.output, req.priority,
                           req.slo_class, req.kind)
            why = "an earlier turn of its session" if req.held else "its send time (think time)"
            self.records.write(rec, UNFINISHED,
                           reason=f"waiting for {why} at end of simulation")
        self.waiting.clear()

    def info(self) -> dict:
        """What the run's summary says about the clients (``SimResult.clients``)."""
        out: dict = {"mode": "closed" if self.closed else "open",
                     "think_time_s": self.think_s, "think": "exponential" if self.think_exp else "fixed",
                     "sessions": len(self.sessions), "session_turns": self.turns}
        if self.closed:
            out.update(concurrency=self.concurrency, max_outstanding=self.max_outstanding,
                       mean_think_s=self.think_sum / self.think_n if self.think_n else 0.0)
        if self.steps.rows:
            cap = self.retrieval.capacity
            out["retrieval"] = {"concurrency": None if math.isinf(cap) else int(cap),
                                "max_queue": self.retrieval.max_queue,
                                "latency": self.retrieval_cfg.latency,
                                "latency_s": self.retrieval_cfg.latency_s}
        return out
