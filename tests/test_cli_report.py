"""The printed summary: --json on stdout, latencies in ms at chosen percentiles, offered load."""
from __future__ import annotations

import json

from goodput.cli import main
from tests.conftest import REPO

RUN = ["simulate", "--trace", str(REPO / "traces" / "sample_tiny.csv"), "--max-requests", "12",
       "--no-progress", "--no-plots", "--cost-model", "roofline"]


def test_json_puts_the_summary_alone_on_stdout(capsys):
    assert main([*RUN, "--json"]) == 0
    io = capsys.readouterr()
    summary = json.loads(io.out)  # nothing else on stdout
    assert summary["counts"]["total"] == 12 and "provenance" in summary
    assert io.err.startswith("goodput") and "results not saved" in io.err


def test_percentiles_choose_the_columns_and_ms_are_printed(capsys):
    assert main([*RUN, "--percentiles", "50,95,99.9"]) == 0
    text = capsys.readouterr().out
    header = next(line for line in text.splitlines() if line.startswith("latency (ms)"))
    assert header.split()[2:] == ["mean", "p50", "p95", "p99.9"]
    assert main([*RUN, "--percentiles", "50,95,99.9", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert set(s["latency"]["ttft_s"]) == {"mean", "p50", "p95", "p99.9"}
    assert set(s["tokens"]) >= {"tbt_p50_s", "tbt_p95_s", "tbt_p99.9_s"}
    ttft = s["latency"]["ttft_s"]["p50"]
    row = next(line for line in text.splitlines() if line.split()[:1] == ["ttft"])
    assert abs(float(row.split()[2]) - 1000 * ttft) <= 0.01 * 1000 * ttft  # seconds -> ms


def test_bad_percentiles_are_one_line(capsys):
    assert main([*RUN, "--percentiles", "50,abc"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--percentiles" in err


def test_offered_load_and_headroom_sit_beside_busy_time(capsys):
    assert main([*RUN, "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    load = s["load"]
    assert load["offered_tok_per_s"] > 0 and load["processed_tok_per_s"] > 0
    assert 0 < load["processed_fraction"] <= 1.0 + 1e-9  # every request completes here
    assert load["busy_fraction"] == s["utilisation"]["mean_busy_fraction"]
    assert 0 <= load["headroom"] <= 1 and load["batch_fill_when_busy"] < 0.1  # tiny batches
    assert main(RUN) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("load"))
    assert "offered tok/s" in line and "busy" in line and "headroom" in line
