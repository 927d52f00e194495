"""Issue 19, hostile inputs to ``goodput simulate`` and the trace loaders: each is one line naming
the field and the fix (exit 2, no traceback, before anything is simulated) or a correct run."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from goodput.cli import main
from goodput.sim.workload import rawio
from goodput.sim.workload.loaders import load_trace
from goodput.sim.workload.schema import TraceError

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "traces" / "sample_tiny.csv")
FAST = ["--no-progress", "--no-plots", "--cost-model", "roofline"]


def one_line_error(capsys, argv: list[str], needle: str) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("goodput: error: ") and needle in err, err
    return err


def simulate_ok(capsys, argv: list[str]) -> str:
    rc = main(["simulate", *argv, *FAST])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return out.out


@pytest.mark.parametrize("flags,needle", [
    (["--tp", "0"], "cluster[0].tp=0: must be a finite number >= 1"),
    (["--instances", "100000"], "more than the 10000 one run simulates"),
    (["--set", "seed.x=1"], "--set seed.x: seed is a value, not a section; write --set seed=VALUE"),
    (["--set", "cluster.x=1"], "cluster is a list; index it with a number"),
    (["--set", "events.0.time_s=1"], "events has no entries"),
    (["--max-requests", "-3"], "trace.max_requests=-3"),
    (["--max-requests", "0"], "trace.max_requests=0"),
    (["--max-sim-time", "nan"], "max_sim_time_s is NaN"),
    (["--ttft-slo", "-1"], "slo.ttft_s=-1.0: must be a finite number > 0"),
    (["--set", "scheduler.activation_reserve_gb=-2"], "scheduler.activation_reserve_gb=-2.0"),
    (["--set", "scheduler.swap_space_gb=-1"], "scheduler.swap_space_gb=-1.0"),
    (["--set", "scheduler.host_link_gbs=0"], "scheduler.host_link_gbs=0.0: must be a finite number > 0"),
    (["--set", "router.migrate_out_freeness=-1"], "router.migrate_out_freeness=-1.0"),
    (["--set", "router.migrate_in_freeness=.nan"], "router.migrate_in_freeness is NaN"),
    (["--set", "events=[{time_s: .nan, action: scale_out}]"], "events[0].time_s is NaN"),
    (["--set", "events=[{time_s: -1, action: scale_out}]"], "events[0].time_s=-1.0"),
    (["--set", "scheduler.gpu_memory_utilization=1.5"], "scheduler.gpu_memory_utilization=1.5"),
    (["--max-batch-size", "0"], "scheduler.max_batch_size=0"),
])
def test_bad_flags_are_one_line_before_the_trace_is_read(capsys, flags, needle):
    # the trace does not exist: the config is refused first, so it is never read
    one_line_error(capsys, ["simulate", "--trace", "/nonexistent.csv", *flags, *FAST], needle)


def test_a_big_cluster_count_is_refused_at_once(capsys, tmp_path):
    cfg = tmp_path / "big.yaml"
    cfg.write_text("cluster:\n  - count: 100000\n")
    t0 = time.perf_counter()
    one_line_error(capsys, ["simulate", "--config", str(cfg), "--trace", TINY, *FAST],
                   "cluster[0].count=100000: 100000 instances in all")
    assert time.perf_counter() - t0 < 5


def test_negative_slo_costs_no_simulation(capsys, monkeypatch):
    import goodput.sim.run

    monkeypatch.setattr(goodput.sim.run, "simulate", lambda *a, **k: pytest.fail("simulated"))
    one_line_error(capsys, ["simulate", "--trace", TINY, "--tpot-slo", "-0.1", *FAST], "slo.tpot_s")


def test_timeseries_every_boundary_works(capsys, tmp_path):
    out = tmp_path / "res"
    simulate_ok(capsys, ["--trace", TINY, "--max-requests", "20", "--out", str(out),
                         "--set", "output.timeseries_interval_s=0"])
    import pandas as pd

    ts = pd.read_parquet(out / "timeseries.parquet")
    reqs = pd.read_parquet(out / "requests.parquet")
    assert len(reqs) == 20 and len(ts) > 20 and (ts["time_s"].diff().dropna() > 0).all()


def test_a_fifo_as_trace_is_refused_not_read(capsys, tmp_path):
    fifo = tmp_path / "t.csv"
    os.mkfifo(fifo)
    one_line_error(capsys, ["simulate", "--trace", str(fifo), *FAST],
                   "is a FIFO (named pipe), not a regular file")


def test_a_fifo_as_config_is_refused(capsys, tmp_path):
    fifo = tmp_path / "c.yaml"
    os.mkfifo(fifo)
    one_line_error(capsys, ["simulate", "--config", str(fifo), *FAST], "is not a regular file")


@pytest.mark.parametrize("name", ["long.csv", "long.jsonl", "long.csv.gz"])
def test_an_overlong_line_is_refused_without_reading_it_all(tmp_path, monkeypatch, name):
    monkeypatch.setattr(rawio, "MAX_LINE_BYTES", 1000)
    p = tmp_path / name
    body = "arrival_s,prompt_tokens,output_tokens\n0,1," + "1" * 5000 + "\n"
    if name.endswith(".jsonl"):
        body = '{"arrival_s": 0, "prompt_tokens": 1, "output_tokens": ' + "1" * 5000 + "}\n"
    if name.endswith(".gz"):
        import gzip

        p.write_bytes(gzip.compress(body.encode()))
    else:
        p.write_text(body)
    with pytest.raises(TraceError, match="line 2 is longer than" if ".csv" in name else "line 1"):
        load_trace(p)


def test_a_huge_single_line_is_refused_quickly(tmp_path):
    """A 64 MiB single line (the issue's was 2 GiB): refused after reading the limit, not all."""
    p = tmp_path / "huge.jsonl"
    with open(p, "wb") as fh:
        fh.write(b'{"arrival_s": 0, "x": "')
        fh.truncate(64 << 20)  # a sparse file of zero bytes: no newline anywhere
    t0 = time.perf_counter()
    with pytest.raises(TraceError, match="longer than 16 MiB"):
        load_trace(p)
    assert time.perf_counter() - t0 < 10


@pytest.mark.parametrize("text,needle", [
    ("[" * 100_000 + "]" * 100_000 + "\n", "line 1: JSON nested too deeply"),
    ('{"arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1}\n[1, 2]\n', "line 2: is a JSON list"),
    ("5\n", "line 1: is a JSON int, not an object"),
    ('{"arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1}\n{"a": 1}, {"b": 2}\n',
     "line 2: not valid JSON"),
    ('{"arrival_s": 0, "arrival_s": 5, "prompt_tokens": 1, "output_tokens": 1}\n',
     "key 'arrival_s' appears twice"),
    ('{"timestamp": 0, "input_length": 9, "output_length": 2, "hash_ids": [[1, 2], [3]]}\n',
     "element [1, 2] is not a whole number"),
    ('{"timestamp": 0, "input_length": 9, "output_length": 2, "hash_ids": [1.5]}\n',
     "element 1.5 is not a whole number"),
    ('{"timestamp": 0, "input_length": 9, "output_length": 2, "hash_ids": [true]}\n',
     "element True is not a whole number"),
    ('{" arrival_s": 0, "arrival_s": 1, "prompt_tokens": 1, "output_tokens": 1}\n',
     "two columns are named 'arrival_s'"),
    ("\n\n", "holds no JSON objects"),
])
def test_malformed_json_lines_are_one_line(tmp_path, text, needle):
    p = tmp_path / "t.jsonl"
    p.write_text(text)
    with pytest.raises(TraceError, match=None) as exc:
        load_trace(p)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_json_lines_keep_values_and_skip_blank_lines(tmp_path):
    p = tmp_path / "t.jsonl"
    rows = [{"arrival_s": 0.25, "prompt_tokens": 7, "output_tokens": 3},
            {"arrival_s": 1.5, "prompt_tokens": 2**40, "output_tokens": 1}]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    df = load_trace(p).df
    assert df["arrival_s"].tolist() == [0.25, 1.5]
    assert df["prompt_tokens"].tolist() == [7, 2**40]


@pytest.mark.parametrize("header", ["arrival_s,prompt_tokens,output_tokens, arrival_s",
                                    "arrival_s,prompt_tokens,output_tokens,arrival_s ",
                                    "arrival_s,prompt_tokens,output_tokens,arrival_s"])
def test_header_names_colliding_after_trimming(tmp_path, header):
    p = tmp_path / "t.csv"
    p.write_text(header + "\n0,1,1,2\n")
    with pytest.raises(TraceError, match=r"columns 1 and 4 of the header are both named 'arrival_s'"):
        load_trace(p)


def test_a_folder_as_trace_is_one_line(tmp_path):
    with pytest.raises(TraceError, match="is a folder, not a regular file"):
        load_trace(tmp_path)
