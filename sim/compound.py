"""Compound requests: a ``rag`` request as a chain of steps, the retrieval service they call,
and the steps table that accounts for every step.

A rag row of the trace (docs/compound.md) runs, for round r = 1..R, a planning LLM call (when
``plan_tokens`` > 0) and a retrieval, then one final generate call. Each LLM call is its own
``Sequence`` (a fresh call id, negative so it never meets a trace id) whose ``client`` is the
``RagRequest``: the record sink hands the call's end here instead of writing it to the request
table, the step goes to the ``StepLog``, and the next step starts in a clock event at the same
time (never inside the instance that just finished the call). The trace row gets one record for
the whole request when its last step ends (``goodput.sim.invariants`` checks both tables agree).
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np
import pandas as pd

from goodput.sim.config_clients import RetrievalConfig
from goodput.sim.engine.records import RecordSink
from goodput.sim.engine.sequence import COMPLETED, OUTCOMES, UNFINISHED, Sequence
from goodput.sim.schema import RAG

#: step types of the steps table (index = code)
STEP_TYPES = ("plan", "retrieve", "generate")
PLAN, RETRIEVE, GENERATE = 0, 1, 2
STEP_COLUMNS = ("request_id", "step", "type", "round", "call_id", "instance", "start_s",
                "first_scheduled_s", "first_token_s", "end_s", "prompt_tokens", "output_tokens",
                "generated_tokens", "cached_tokens", "preemptions", "outcome", "reason")


def sample_latencies(cfg: RetrievalConfig, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` retrieval latencies (seconds) from the configured distribution, in draw order."""
    if cfg.latency == "fixed":
        return np.full(n, cfg.latency_s)
    if cfg.latency == "lognormal":  # median = exp(mu)
        return rng.lognormal(math.log(cfg.latency_s), cfg.sigma, n)
    return rng.exponential(cfg.latency_s, n)


class RetrievalService:
    """A FIFO resource of ``concurrency`` servers (SimPy's ``Resource`` semantics, driven by clock
    callbacks as the engine is): a retrieval holds a server for its latency, later ones queue."""

    def __init__(self, clock, cfg: RetrievalConfig):
        self.clock = clock
        self.capacity = cfg.concurrency if cfg.concurrency is not None else math.inf
        self.busy = 0
        self.queue: deque[tuple[RagRequest, float]] = deque()
        self.max_queue = 0

    def request(self, rag: RagRequest, latency: float) -> None:
        if self.busy < self.capacity:
            self._serve(rag, latency)
        else:
            self.queue.append((rag, latency))
            self.max_queue = max(self.max_queue, len(self.queue))

    def _serve(self, rag: RagRequest, latency: float) -> None:
        self.busy += 1
        rag.in_service()
        self.clock.call_later(latency, lambda _ev: self._done(rag))

    def _done(self, rag: RagRequest) -> None:
        self.busy -= 1
        if self.queue:  # the server goes to the next in line before anyone else can ask
            self._serve(*self.queue.popleft())
        rag.retrieved(self.clock.now)


class StepLog:
    """The steps table, one row per step of every rag request (plain lists: only compound
    requests write here)."""

    def __init__(self, records: RecordSink):
        self.records = records  # reasons share the request table's codes
        self.rows: list[tuple] = []
        self.calls_created = 0  # LLM calls handed to the engine (each must end in one row)

    def add(self, rag: RagRequest, kind: int, call_id: int, instance: int, start: float,
            scheduled: float, first_token: float, end: float, prompt: int, output: int,
            generated: int, cached: int, preemptions: int, outcome: int, reason: str) -> None:
        self.rows.append((rag.req.rid, rag.step, kind, rag.round, call_id, instance, start,
                          scheduled, first_token, end, prompt, output, generated, cached,
                          preemptions, outcome, reason))

    def to_frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self.rows, columns=list(STEP_COLUMNS))
        for col in ("request_id", "step", "round", "call_id", "instance", "prompt_tokens",
                    "output_tokens", "generated_tokens", "cached_tokens", "preemptions"):
            df[col] = df[col].astype(np.int64)
        for col in ("start_s", "first_scheduled_s", "first_token_s", "end_s"):
            df[col] = df[col].astype(np.float64)
        df["type"] = pd.Categorical.from_codes(df["type"].astype(np.int64),
                                               categories=pd.Index(STEP_TYPES))
        df["outcome"] = pd.Categorical.from_codes(df["outcome"].astype(np.int64),
                                                  categories=pd.Index(OUTCOMES))
        df["reason"] = df["reason"].astype("category")
        return df.sort_values(["request_id", "step"], kind="stable").reset_index(drop=True)


#: where a rag request is between two events
PENDING, IN_CALL, QUEUED, IN_SERVICE = 0, 1, 2, 3


class RagRequest:
    """One rag request walking its steps; the ``client`` of each of its LLM calls."""

    __slots__ = ("cached", "call", "driver", "final", "first_service", "kv_bytes",
                 "migrated_bytes", "migrations", "preemptions", "req", "round", "service_start",
                 "start", "state", "step", "steps")

    def __init__(self, req, driver):
        self.req, self.driver = req, driver
        self.steps = req.rounds * (2 if req.plan > 0 else 1) + 1
        self.step = 0  # index of the current step
        self.round = 1  # its retrieval round (the final call counts in round R)
        self.state = PENDING
        self.call: Sequence | None = None  # the last LLM call started
        self.final: Sequence | None = None  # the final generate call, once started
        self.start = math.nan  # when the current step started
        self.service_start = math.nan  # when the current retrieval got a server
        self.first_service = math.nan  # the request's first service (its first_scheduled_s)
        self.preemptions = self.migrations = self.cached = 0
        self.migrated_bytes = self.kv_bytes = 0.0

    def step_type(self, s: int) -> int:
        if s == self.steps - 1:
            return GENERATE
        return (PLAN if s % 2 == 0 else RETRIEVE) if self.req.plan > 0 else RETRIEVE

    def begin(self):
        """Start the first step at the request's start; returns the instance to wake, if any."""
        self.driver.live[self.req.rid] = self
        return self._run_step()

    def _run_step(self):
        req, now = self.req, self.driver.clock.now
        self.start = now
        kind = self.step_type(self.step)
        self.round = min(self.step // (2 if req.plan > 0 else 1) + 1, req.rounds)
        if kind == RETRIEVE:
            self.state = QUEUED
            self.driver.retrieval.request(self, req.latencies[self.round - 1])
            return None
        done = self.round - (kind == PLAN)  # rounds whose plan and retrieval are in the context
        seq = Sequence(self.driver.new_call_id(), now, req.prompt + done * (req.retrieved + req.plan),
                       req.plan if kind == PLAN else req.output, req.priority, req.slo_class, RAG)
        seq.prefix = req.prefix
        seq.client = self
        self.call = seq
        if kind == GENERATE:
            self.final = seq
        self.state = IN_CALL
        self.driver.steps.calls_created += 1
        return self.driver.submit(seq, now)

    # ----------------------------------------------------------------- step ends
    def ended(self, seq: Sequence, outcome: int, completion: float, reason: str) -> None:
        """One of its LLM calls ended (from the record sink, inside the instance)."""
        now = completion if outcome == COMPLETED else self.driver.clock.now
        kind = self.step_type(self.step)
        self.driver.steps.add(self, kind, seq.rid, seq.instance, self.start, seq.first_scheduled,
                              seq.first_token, completion, seq.prompt, seq.output, seq.generated,
                              seq.cached, seq.preemptions, outcome, reason)
        self.preemptions += seq.preemptions
        self.migrations += seq.migrations
        self.migrated_bytes += seq.migrated_bytes
        self.kv_bytes += seq.kv_bytes
        self.cached += seq.cached
        self._served(seq.first_scheduled)
        if outcome != COMPLETED:
            self._finish(outcome, now, f"{STEP_TYPES[kind]} call: {reason}")
        else:
            self._next(now)

    def in_service(self) -> None:
        self.state = IN_SERVICE
        self.service_start = self.driver.clock.now

    def retrieved(self, now: float) -> None:
        """Its retrieval of this round is done (a clock event of the retrieval service)."""
        self.driver.steps.add(self, RETRIEVE, 0, -1, self.start, self.service_start, math.nan,
                              now, 0, 0, 0, 0, 0, COMPLETED, "")
        self._served(self.service_start)
        self._next(now)

    def _served(self, t: float) -> None:
        if self.first_service != self.first_service and t == t:  # the first service so far
            self.first_service = t

    def _next(self, now: float) -> None:
        self.step += 1
        self.state = PENDING
        if self.step == self.steps:
            self._finish(COMPLETED, now, "")
        else:  # in its own event: never inside the instance (or service) that just ended a step
            self.driver.after(now, self._run_step)

    # ----------------------------------------------------------------- the whole request
    def _finish(self, outcome: int, now: float, reason: str) -> None:
        """Write the trace row's one record (the whole request) and tell the driver."""
        req = self.req
        rec = Sequence(req.rid, req.start, req.prompt, req.output, req.priority, req.slo_class, RAG)
        rec.first_scheduled = self.first_service
        if self.call is not None:
            rec.instance = self.call.instance
        final = self.final
        if final is not None:  # the answer's tokens: the final call's first token, gaps, output
            rec.first_token, rec.max_tbt = final.first_token, final.max_tbt
            rec.generated, rec.prefill_instance = final.generated, final.prefill_instance
            rec.kv_handoff, rec.kv_landed = final.kv_handoff, final.kv_landed
        rec.preemptions, rec.migrations = self.preemptions, self.migrations
        rec.migrated_bytes, rec.kv_bytes, rec.cached = self.migrated_bytes, self.kv_bytes, self.cached
        self.driver.records.write(rec, outcome,
                       completion=now if outcome == COMPLETED else math.nan, reason=reason)
        del self.driver.live[req.rid]
        self.driver.request_ended(req, now)

    def abandon(self, now: float) -> None:
        """The run ended while this request was between steps or at the retrieval service."""
        why = {QUEUED: "queued for retrieval", IN_SERVICE: "in retrieval"}.get(
            self.state, "between steps") + " at end of simulation"
        if self.state in (QUEUED, IN_SERVICE):
            self.driver.steps.add(self, RETRIEVE, 0, -1, self.start,
                                  self.service_start if self.state == IN_SERVICE else math.nan,
                                  math.nan, math.nan, 0, 0, 0, 0, 0, UNFINISHED, why)
        self._finish(UNFINISHED, now, f"retrieve: {why}" if self.state in (QUEUED, IN_SERVICE)
                     else why)
