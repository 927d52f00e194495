"""Chrome / Perfetto trace-event recorder for one simulation run.

The engine calls ``EventTrace`` methods as things happen; ``write`` emits the Trace Event Format's
JSON Object Format, which chrome://tracing and ui.perfetto.dev open directly. One process per serving
instance, with threads "iterations" (one complete span per batch or fast-forwarded decode run),
"requests" (async request lifecycles, preemption instants) and "migrations" (KV transfers joined by
flow arrows). Calls only append a tuple (O(1), a few dozen bytes); dicts are built at write time, so
tracing a million-request run costs little until it is written.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections import Counter
from typing import Any

OUTCOMES = ("completed", "rejected", "unfinished")
PREEMPT_MODES = ("swap", "recompute")
_TID = {"iterations": 1, "requests": 2, "migrations": 3}
_KNOWN_PH = set("XBEiIMbnestfCPONDSTFpRc") | {"(", ")"}
_EXTRA = {"X": ("tid", "dur"), **dict.fromkeys("BEiI", ("tid",)), **dict.fromkeys("bne", ("cat", "id")),
          **dict.fromkeys("stf", ("cat", "id", "tid"))}  # fields required beyond name/pid/ts, per ph
_META_NAMES = {"process_name", "process_labels", "process_sort_index", "thread_name", "thread_sort_index"}


def _us(t: float) -> float:
    """Seconds -> microseconds, rounded to the nanosecond: exact enough, and keeps the file small."""
    return round(t * 1e6, 3)


class EventTrace:
    """Recorder of engine events; see the module docstring for the layout of the written trace."""

    def __init__(self, max_events: int | None = None) -> None:
        self.max_events = max_events
        self._names: dict[int, str] = {}
        self._ev: list[tuple] = []
        # rid -> pid where its lifecycle began; all its async events stay there, since viewers pair
        # async ids within one process (the instance actually serving it goes in args).
        self._open: dict[int, int] = {}
        self._t_max = 0.0
        self._ended: Counter[str] = Counter()
        self._iters = self._spans = self._preempt = self._migr = self._dropped = 0

    def _room(self, t: float) -> bool:
        """False (and counts a drop) once the event budget is spent; recording stops, never silently."""
        if self.max_events is not None and len(self._ev) >= self.max_events:
            self._dropped += 1
            return False
        self._t_max = max(self._t_max, t)
        return True

    def instance(self, inst: int, name: str) -> None:
        """Names instance ``inst``'s process; metadata is not counted against ``max_events``."""
        self._names[inst] = name

    def iteration(self, inst: int, t0: float, t1: float, iterations: int, prefill_seqs: int,
                  prefill_tokens: int, decode_seqs: int, decode_tokens_per_seq: int) -> None:
        """One span for a batch, or for ``iterations`` identical fast-forwarded decode iterations."""
        if self._room(t1):
            self._ev.append(("it", inst, t0, t1, iterations, prefill_seqs, prefill_tokens, decode_seqs,
                             decode_tokens_per_seq))
            self._iters += iterations
            self._spans += 1

    def _step(self, rid: int, inst: int, t: float, phase: str) -> None:
        """Opens the request's lifecycle ("b") or, if already open, adds a step ("n") to it; re-queues
        (recompute preemption, migration) thus keep one b/e pair per lifecycle and one async id."""
        if self._room(t):
            home = self._open.get(rid)
            if home is None:
                self._open[rid] = inst
            self._ev.append(("rq", rid, inst, t, inst if home is None else home, home is None, phase))

    def request_queued(self, rid: int, inst: int, t: float) -> None:
        self._step(rid, inst, t, "queued")  # a later call (re-queue) is a step, not a second begin

    def request_scheduled(self, rid: int, inst: int, t: float) -> None:
        self._step(rid, inst, t, "scheduled")

    def first_token(self, rid: int, inst: int, t: float) -> None:
        self._step(rid, inst, t, "first_token")

    def request_end(self, rid: int, inst: int, t: float, outcome: str, reason: str = "") -> None:
        """Closes the lifecycle; a request never queued (or already ended) gets a zero-length pair."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome {outcome!r} not in {OUTCOMES}")
        if self._room(t):
            home = self._open.pop(rid, None)
            self._ev.append(("end", rid, inst, t, inst if home is None else home, home is None, outcome,
                             reason))
            self._ended[outcome] += 1

    def preemption(self, rid: int, inst: int, t: float, mode: str) -> None:
        if mode not in PREEMPT_MODES:
            raise ValueError(f"preemption mode {mode!r} not in {PREEMPT_MODES}")
        if self._room(t):
            self._ev.append(("pre", rid, inst, t, mode))
            self._preempt += 1

    def migration(self, rid: int, src: int, dst: int, t_start: float, t_end: float, nbytes: float) -> None:
        """A span on both instances' "migrations" threads, joined by a flow arrow src -> dst."""
        if self._room(t_end):
            self._ev.append(("mig", rid, src, dst, t_start, t_end, nbytes, self._migr))
            self._migr += 1

    def counts(self) -> dict:
        return {"iterations": self._iters, "iteration_spans": self._spans,
                "requests_ended": dict(self._ended), "preemptions": self._preempt,
                "migrations": self._migr, "dropped": self._dropped}

    def _expand(self, e: tuple) -> list[dict]:
        """One recorded tuple -> its trace events (built only at write time)."""
        kind = e[0]
        if kind == "it":
            _, inst, t0, t1, n, ps, pt, ds, dt = e
            name = f"decode x{n}" if n > 1 else ("mixed" if ps and ds else "prefill" if ps else
                                                  "decode" if ds else "idle")
            return [{"ph": "X", "cat": "iteration", "name": name, "pid": inst, "tid": 1, "ts": _us(t0),
                     "dur": round((t1 - t0) * 1e6, 3), "args": {"iterations": n, "prefill_seqs": ps,
                     "prefill_tokens": pt, "decode_seqs": ds, "decode_tokens_per_seq": dt}}]
        if kind in ("rq", "end"):
            rid, inst, t, home, begins = e[1:6]
            base = {"cat": "request", "id": str(rid), "name": f"req {rid}", "pid": home, "tid": 2,
                    "ts": _us(t)}
            if kind == "rq":
                return [{**base, "ph": "b" if begins else "n", "args": {"phase": e[6], "inst": inst}}]
            args = {"phase": "end", "inst": inst, "outcome": e[6], "reason": e[7]}
            head = [{**base, "ph": "b", "args": {"phase": "end_only", "inst": inst}}] if begins else []
            return [*head, {**base, "ph": "e", "args": args}]
        if kind == "pre":
            _, rid, inst, t, mode = e
            return [{"ph": "i", "s": "t", "cat": "preemption", "name": f"preempt {mode}", "pid": inst,
                     "tid": 2, "ts": _us(t), "args": {"rid": rid, "mode": mode}}]
        _, rid, src, dst, t0, t1, nbytes, k = e
        span = {"ph": "X", "cat": "migration", "tid": 3, "ts": _us(t0), "dur": round((t1 - t0) * 1e6, 3)}
        args = {"rid": rid, "src": src, "dst": dst, "bytes": nbytes}
        # Flow ends sit mid-span, strictly inside both slices, so "bind to enclosing slice" is unambiguous.
        flow = {"cat": "migration", "id": f"m{k}", "name": f"kv r{rid}", "tid": 3, "ts": _us((t0 + t1) / 2)}
        return [{**span, "name": f"send r{rid} -> {dst}", "pid": src, "args": {**args, "side": "out"}},
                {**span, "name": f"recv r{rid} <- {src}", "pid": dst, "args": {**args, "side": "in"}},
                {**flow, "ph": "s", "pid": src}, {**flow, "ph": "f", "bp": "e", "pid": dst}]

    def to_json(self) -> dict:
        """The trace as a JSON-ready dict; lifecycles still open (or cut by max_events) are closed at
        the last recorded time with ``synthetic: true`` so every "b" has its "e"."""
        timed: list[dict] = [d for e in self._ev for d in self._expand(e)]
        t_end = _us(self._t_max)
        for rid, home in sorted(self._open.items()):
            timed.append({"ph": "e", "cat": "request", "id": str(rid), "name": f"req {rid}", "pid": home,
                          "tid": 2, "ts": t_end, "args": {"phase": "end", "synthetic": True}})
        timed.sort(key=lambda d: d["ts"])  # stable: ties keep call order, so "b" precedes its "e"
        meta: list[dict] = []
        for pid in sorted(set(self._names) | {d["pid"] for d in timed}):
            label = f"instance {pid}" + (f": {self._names[pid]}" if pid in self._names else "")
            meta += [{"ph": "M", "name": "process_name", "pid": pid, "args": {"name": label}},
                     {"ph": "M", "name": "process_sort_index", "pid": pid, "args": {"sort_index": pid}}]
            meta += [{"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": th}}
                     for th, tid in _TID.items()]
        other = {"generator": "goodput.sim.engine.trace_events", "time_unit": "us",
                 "max_events": self.max_events, "recorded_calls": len(self._ev),
                 "dropped_events": self._dropped, "truncated": self._dropped > 0,
                 "open_lifecycles_closed": len(self._open), "counts": self.counts()}
        return {"traceEvents": meta + timed, "displayTimeUnit": "ms", "otherData": other}

    def write(self, path: str | os.PathLike[str]) -> None:
        """Atomic (same-folder temp file, then os.replace): readers never see half a file."""
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".trace-", suffix=".tmp")
        try:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # a normal file, not mkstemp's owner-only one
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                # dumps (C encoder, one write) is ~3x faster than json.dump's chunked writes.
                f.write(json.dumps(self.to_json(), separators=(",", ":"), allow_nan=False))  # strict JSON
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def validate_trace_events(obj: dict) -> None:
    """Raises ValueError naming the first bad event: unknown ph, missing fields for its ph, bad ts/dur,
    bad instant scope, unmatched async b/e per (cat, id) or flow s/f, E without B."""
    if not isinstance(obj, dict) or not isinstance(obj.get("traceEvents"), list):
        raise ValueError("trace must be a dict with a 'traceEvents' list")
    if obj.get("displayTimeUnit", "ms") not in ("ms", "ns"):
        raise ValueError(f"displayTimeUnit {obj['displayTimeUnit']!r} not 'ms' or 'ns'")
    events = obj["traceEvents"]

    def bad(i: int, msg: str) -> ValueError:
        ev = events[i] if isinstance(events[i], dict) else {}
        return ValueError(f"traceEvents[{i}] (ph={ev.get('ph')!r}, name={ev.get('name')!r}): {msg}")

    timed: list[int] = []
    for i, ev in enumerate(events):
        if not isinstance(ev, dict):
            raise bad(i, "not an object")
        ph = ev.get("ph")
        if ph not in _KNOWN_PH:
            raise bad(i, "unknown ph")
        need = ("name", "pid", "args") if ph == "M" else ("name", "pid", "ts", *_EXTRA.get(ph, ()))
        if ph == "M" and str(ev.get("name", "")).startswith("thread"):
            need += ("tid",)
        for k in need:
            if k not in ev:
                raise bad(i, f"missing {k!r}")
        if ph == "M":
            if ev["name"] not in _META_NAMES or not isinstance(ev["args"], dict):
                raise bad(i, "metadata needs a known name and an args object")
            continue
        for k in ("ts", "dur"):
            v = ev.get(k, 0)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise bad(i, f"{k!r} must be a finite non-negative number, got {v!r}")
        if ph in "iI" and ev.get("s", "t") not in ("t", "p", "g"):
            raise bad(i, f"instant scope {ev['s']!r} not t/p/g")
        if ph in "bnestf" and not isinstance(ev["id"], str | int):
            raise bad(i, "id must be a string or integer")
        if ph == "f" and ev.get("bp", "e") != "e":
            raise bad(i, f"flow bp {ev['bp']!r} is not 'e'")
        timed.append(i)
    timed.sort(key=lambda i: events[i]["ts"])
    depth: dict[tuple, list[int]] = {}
    flows: set[tuple] = set()
    for i in timed:
        ev, ph = events[i], events[i]["ph"]
        key = (ev.get("cat"), ev.get("id")) if ph in "bnestf" else (ev["pid"], ev.get("tid"))
        if ph in "bB":
            depth.setdefault(("a" if ph == "b" else "s", *key), []).append(i)
        elif ph in "neE":
            stack = depth.get(("a" if ph != "E" else "s", *key))
            if not stack:
                raise bad(i, f"'{ph}' without an open '{'b' if ph != 'E' else 'B'}' for {key}")
            if ph != "n":
                stack.pop()
        elif ph == "s":
            flows.add(key)
        elif ph in "tf" and key not in flows:
            raise bad(i, f"flow '{ph}' without an earlier 's' for {key}")
    unclosed = [stack[0] for stack in depth.values() if stack]
    if unclosed:
        raise bad(min(unclosed), "never closed")


def summarize_trace_events(obj: dict) -> dict:
    """Recomputes ``EventTrace.counts()`` from a written trace, so a round trip can be checked."""
    c: dict[str, Any] = {"iterations": 0, "iteration_spans": 0, "requests_ended": Counter(),
                         "preemptions": 0, "migrations": 0,
                         "dropped": obj.get("otherData", {}).get("dropped_events", 0)}
    for ev in obj["traceEvents"]:
        ph, cat, args = ev.get("ph"), ev.get("cat"), ev.get("args", {})
        if ph == "X" and cat == "iteration":
            c["iterations"] += args["iterations"]
            c["iteration_spans"] += 1
        elif ph == "e" and cat == "request" and not args.get("synthetic"):
            c["requests_ended"][args["outcome"]] += 1
        elif ph == "i" and cat == "preemption":
            c["preemptions"] += 1
        elif ph == "X" and cat == "migration" and args.get("side") == "out":
            c["migrations"] += 1
    c["requests_ended"] = dict(c["requests_ended"])
    return c
