"""EventTrace writes valid, deterministic Chrome/Perfetto trace JSON whose counts survive a round trip."""
from __future__ import annotations

import copy
import json
import os

import pytest

from goodput.sim.engine.trace_events import EventTrace, summarize_trace_events, validate_trace_events


def _scenario(max_events: int | None = None) -> EventTrace:
    """Two instances: prefill, a fast-forwarded decode run, a swap and a recompute preemption with
    re-queue, a migration 0 -> 1 with re-queue there, rejections, an end without a queue, and a
    request left open at the cut."""
    tr = EventTrace(max_events=max_events)
    tr.instance(0, "llama-3.1-8b@h100x1")
    tr.instance(1, "llama-3.1-8b@h100x1")
    tr.request_queued(1, 0, 0.0)
    tr.request_queued(2, 0, 0.0)
    tr.request_scheduled(1, 0, 0.001)
    tr.request_scheduled(2, 0, 0.001)
    tr.iteration(0, 0.001, 0.021, 1, 2, 1024, 0, 0)
    tr.first_token(1, 0, 0.021)
    tr.first_token(2, 0, 0.021)
    tr.iteration(0, 0.021, 0.391, 37, 0, 0, 2, 1)
    tr.preemption(2, 0, 0.391, "recompute")
    tr.request_queued(2, 0, 0.391)  # re-queued after recompute: a step, not a second begin
    tr.request_scheduled(2, 0, 0.40)
    tr.iteration(0, 0.40, 0.43, 1, 1, 600, 1, 1)  # mixed batch
    tr.preemption(1, 0, 0.43, "swap")
    tr.migration(1, 0, 1, 0.43, 0.45, 2.5e8)
    tr.request_queued(1, 1, 0.45)  # re-queued on the destination
    tr.request_scheduled(1, 1, 0.45)
    tr.iteration(1, 0.45, 0.55, 10, 0, 0, 1, 1)
    tr.request_end(1, 1, 0.55, "completed")
    tr.request_queued(3, 1, 0.2)
    tr.request_end(3, 1, 0.2, "rejected", "prompt_too_long")  # rejected at arrival
    tr.request_queued(4, 0, 0.3)
    tr.request_end(4, 0, 0.3, "rejected", "queue_full")
    tr.request_end(5, 1, 0.6, "unfinished")  # never arrived before the cut
    tr.request_end(2, 0, 0.6, "unfinished")
    tr.request_queued(6, 1, 0.58)  # still open when written: closed synthetically
    return tr


def test_valid_and_round_trips(tmp_path):
    tr = _scenario()
    obj = tr.to_json()
    validate_trace_events(obj)
    assert obj["displayTimeUnit"] == "ms"
    path = tmp_path / "trace.json"
    tr.write(path)
    assert [p.name for p in tmp_path.iterdir()] == ["trace.json"]  # temp file replaced, not left
    loaded = json.loads(path.read_text())
    validate_trace_events(loaded)
    assert loaded == json.loads(json.dumps(obj))
    want = {"iterations": 49, "iteration_spans": 4, "requests_ended":
            {"completed": 1, "rejected": 2, "unfinished": 2}, "preemptions": 2, "migrations": 1, "dropped": 0}
    assert tr.counts() == want
    assert summarize_trace_events(loaded) == want


def test_layout():
    ev = _scenario().to_json()["traceEvents"]
    names = {e["args"]["name"] for e in ev if e["ph"] == "M" and e["name"] == "process_name"}
    assert names == {"instance 0: llama-3.1-8b@h100x1", "instance 1: llama-3.1-8b@h100x1"}
    threads = {e["args"]["name"] for e in ev if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {"iterations", "requests"} <= threads
    spans = [e for e in ev if e["ph"] == "X" and e["cat"] == "iteration"]
    assert [s["name"] for s in spans] == ["prefill", "decode x37", "mixed", "decode x10"]
    ff = spans[1]
    assert ff["ts"] == 21000 and ff["dur"] == 370000 and ff["args"]["decode_seqs"] == 2
    r1 = [e for e in ev if e.get("cat") == "request" and e["id"] == "1"]
    assert [e["ph"] for e in r1].count("b") == 1 and [e["ph"] for e in r1].count("e") == 1
    assert {e["pid"] for e in r1} == {0}  # one process per lifecycle ...
    assert r1[-2]["args"]["inst"] == 1  # ... the serving instance goes in args
    r5 = [e["ph"] for e in ev if e.get("cat") == "request" and e["id"] == "5"]
    assert r5 == ["b", "e"]
    r6 = [e for e in ev if e.get("cat") == "request" and e["id"] == "6"]
    assert r6[-1]["ph"] == "e" and r6[-1]["args"]["synthetic"] is True
    inst = [e for e in ev if e["ph"] == "i"]
    assert {e["s"] for e in inst} == {"t"} and {e["args"]["mode"] for e in inst} == {"swap", "recompute"}
    flow = [e for e in ev if e["ph"] in "sf" and e.get("cat") == "migration"]
    assert [(e["ph"], e["pid"]) for e in flow] == [("s", 0), ("f", 1)] and flow[1]["bp"] == "e"
    ts = [e["ts"] for e in ev if e["ph"] != "M"]
    assert ts == sorted(ts)


def test_deterministic_bytes(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    _scenario().write(a)
    _scenario().write(os.fspath(b))
    assert a.read_bytes() == b.read_bytes()
    raw = a.read_bytes()
    assert b'": ' not in raw and b', "' not in raw  # compact separators


def _broken(mutate) -> dict:
    obj = copy.deepcopy(_scenario().to_json())
    mutate(obj["traceEvents"])
    return obj


def _first(ev: list, ph: str, cat: str | None = None) -> dict:
    return next(e for e in ev if e["ph"] == ph and (cat is None or e.get("cat") == cat))


@pytest.mark.parametrize(("mutate", "match"), [
    (lambda ev: _first(ev, "X").pop("ts"), r"ph='X', name='prefill'.*missing 'ts'"),
    (lambda ev: _first(ev, "X").update(dur=-1.0), r"name='prefill'.*'dur' must be a finite non-negative"),
    (lambda ev: _first(ev, "i").update(ts=-5), r"ph='i'.*'ts' must be"),
    (lambda ev: _first(ev, "i").update(ts="7"), r"ph='i'.*'ts' must be"),
    (lambda ev: ev.remove(_first(ev, "e", "request")), r"ph='b', name='req \d+'.*never closed"),
    (lambda ev: ev.remove(_first(ev, "b", "request")), r"name='req \d+'.*without an open 'b'"),
    (lambda ev: ev.append({"ph": "Q", "name": "odd", "pid": 0, "ts": 0}), r"ph='Q', name='odd'.*unknown ph"),
    (lambda ev: _first(ev, "i").update(s="x"), r"instant scope 'x'"),
    (lambda ev: _first(ev, "b").pop("cat"), r"ph='b'.*missing 'cat'"),
    (lambda ev: ev.remove(_first(ev, "s", "migration")), r"ph='f'.*without an earlier 's'"),
])
def test_validate_rejects(mutate, match):
    with pytest.raises(ValueError, match=match):
        validate_trace_events(_broken(mutate))


def test_validate_rejects_non_trace():
    with pytest.raises(ValueError, match="traceEvents"):
        validate_trace_events({"events": []})


def test_bad_arguments_raise():
    tr = EventTrace()
    with pytest.raises(ValueError, match="outcome"):
        tr.request_end(1, 0, 0.0, "done")
    with pytest.raises(ValueError, match="mode"):
        tr.preemption(1, 0, 0.0, "evict")


def test_max_events_drops_are_reported(tmp_path):
    tr = _scenario(max_events=10)
    c = tr.counts()
    assert c["dropped"] == 25 - 10  # 25 recording calls in the scenario; instance() is metadata
    path = tmp_path / "cut.json"
    tr.write(path)
    loaded = json.loads(path.read_text())
    validate_trace_events(loaded)  # lifecycles cut by the budget are still closed
    other = loaded["otherData"]
    assert other["truncated"] is True and other["dropped_events"] == 15 and other["max_events"] == 10
    assert summarize_trace_events(loaded) == c
    assert c["iterations"] == 38 and c["requests_ended"] == {}


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    path = tmp_path / "trace.json"
    path.write_text("old")
    tr = EventTrace()
    tr.migration(1, 0, 1, 0.0, 0.1, float("nan"))  # NaN is not strict JSON: the write must fail whole
    with pytest.raises(ValueError):
        tr.write(path)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["trace.json"]


def test_empty_trace_is_valid():
    obj = EventTrace().to_json()
    validate_trace_events(obj)
    assert obj["traceEvents"] == [] and summarize_trace_events(obj)["dropped"] == 0
