"""trace_stats on hand-checkable traces, and the `trace` CLI subcommands end to end."""
from __future__ import annotations

import argparse
import math

import numpy as np
import pandas as pd
import pytest

from goodput.sim.workload import Trace, format_stats, load_trace, trace_stats
from goodput.sim.workload.cli import add_trace_subcommands, main


def test_stats_hand_computed():
    df = pd.DataFrame({"request_id": [0, 1, 2], "arrival_s": [0.0, 1.0, 3.0],
                       "prompt_tokens": [10, 20, 60], "output_tokens": [1, 2, 3]})
    s = trace_stats(Trace(df))
    assert s["count"] == 3 and s["duration_s"] == 3.0
    assert s["rate_rps"] == pytest.approx(2 / 3)
    assert s["interarrival_cv"] == pytest.approx(1 / 3)  # gaps 1, 2: std 0.5 / mean 1.5
    assert s["prompt"]["mean"] == 30 and s["prompt"]["p50"] == 20 and s["prompt"]["max"] == 60
    assert s["prompt"]["p90"] == pytest.approx(52.0)  # linear between 20 and 60 at 0.8
    assert s["prompt_tokens_total"] == 90 and s["output_tokens_total"] == 6
    text = format_stats(s)
    assert "requests   3" in text and "0.667 req/s" in text


def test_stats_single_request_has_nan_rate_and_cv():
    df = pd.DataFrame({"request_id": [0], "arrival_s": [0.0], "prompt_tokens": [1],
                       "output_tokens": [1]})
    s = trace_stats(Trace(df))
    assert math.isnan(s["rate_rps"]) and math.isnan(s["interarrival_cv"])
    assert "nan" in format_stats(s)


def test_mountable_under_parent_parser():
    parser = argparse.ArgumentParser(prog="goodput")
    add_trace_subcommands(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["trace", "stats", "x.csv", "--format", "azure"])
    assert args.func.__name__ == "cmd_stats" and args.format == "azure"


def test_generate_then_stats_then_convert(tmp_path, capsys):
    out = tmp_path / "g.csv"
    rc = main(["trace", "generate", "--n", "3000", "--rate", "5", "--prompt",
               "lognormal:mean=500,std=300,min=4,max=4096", "--output", "uniform:1:100",
               "--arrival", "gamma", "--cv", "2", "--seed", "3", "-o", str(out), "--chunk", "700"])
    assert rc == 0 and "wrote 3,000 requests" in capsys.readouterr().out
    t = load_trace(out)
    assert len(t) == 3000 and t.rate == pytest.approx(5, rel=0.1)
    assert main(["trace", "stats", str(out)]) == 0
    assert "requests   3,000" in capsys.readouterr().out
    pq = tmp_path / "g.parquet"
    assert main(["trace", "convert", str(out), str(pq), "--start", "10", "--end", "100"]) == 0
    s = load_trace(pq)
    assert s.df["arrival_s"].min() >= 0 and s.df["arrival_s"].max() < 90
    inside = t.df[(t.df.arrival_s >= 10) & (t.df.arrival_s < 100)]
    np.testing.assert_array_equal(s.df["request_id"], inside["request_id"])


def test_generate_stats_json_reports_cv(tmp_path, capsys):
    out = tmp_path / "g.jsonl"
    main(["trace", "generate", "--n", "20000", "--rate", "5", "--prompt", "fixed:10",
          "--output", "fixed:2", "--arrival", "gamma", "--cv", "2", "-o", str(out)])
    capsys.readouterr()
    assert main(["trace", "stats", str(out), "--json"]) == 0
    import json

    s = json.loads(capsys.readouterr().out)
    assert s["count"] == 20000 and s["interarrival_cv"] == pytest.approx(2.0, rel=0.08)


def test_convert_burstgpt_reports_dropped(tmp_path, capsys):
    src = tmp_path / "b.csv"
    src.write_text("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                   "0,ChatGPT,10,0,10,Conversation log\n1,ChatGPT,10,5,15,Conversation log\n")
    assert main(["trace", "convert", str(src), str(tmp_path / "o.csv")]) == 0
    assert "burstgpt_failed': 1" in capsys.readouterr().out
    assert main(["trace", "stats", str(src), "--burstgpt-failed", "keep"]) == 0
    assert "kept       1 failed" in capsys.readouterr().out


def test_cli_errors_are_one_line_exit_2(tmp_path, capsys):
    src = tmp_path / "l.csv"
    src.write_text("num_prefill_tokens,num_decode_tokens\n5,5\n")
    assert main(["trace", "stats", str(src)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--rate" in err and "Traceback" not in err
    assert main(["trace", "stats", str(src), "--rate", "2"]) == 0
    assert main(["trace", "generate", "--n", "5", "--rate", "1", "--prompt", "fixed:0",
                 "--output", "fixed:1", "-o", str(tmp_path / "x.csv")]) == 2
    assert "fixed" in capsys.readouterr().err


def test_samples_are_what_the_generator_makes():
    """traces/sample_*.csv must be reproducible from the commands in traces/make_samples.sh."""
    from pathlib import Path

    from goodput.sim.workload import synthesize

    folder = Path(__file__).resolve().parents[1] / "traces"
    cases = {
        "sample_chat.csv": (500, 4.0, "lognormal:mean=1100,std=1000,min=4,max=8192",
                            "lognormal:mean=220,std=150,min=1,max=2048", "poisson", 1.0, 1),
        "sample_bursty.csv": (500, 4.0, "lognormal:mean=2000,std=1800,min=4,max=8192",
                              "lognormal:mean=30,std=50,min=1,max=1024", "gamma", 3.0, 2),
        "sample_tiny.csv": (20, 2.0, "fixed:512", "fixed:128", "poisson", 1.0, 3),
    }
    for name, (n, rate, p, o, arrival, cv, seed) in cases.items():
        path = folder / name
        if not path.exists():
            pytest.skip(f"{path} missing; run traces/make_samples.sh")
        assert path.stat().st_size < 100_000
        got = load_trace(path).df
        want = synthesize(n, rate, p, o, arrival=arrival, cv=cv, seed=seed).df
        np.testing.assert_allclose(got["arrival_s"], want["arrival_s"], atol=1e-6)
        assert got["prompt_tokens"].equals(want["prompt_tokens"])
        assert got["output_tokens"].equals(want["output_tokens"])
