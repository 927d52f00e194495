"""Malformed inputs: each error must name the column (as spelled in the file) and the row."""
from __future__ import annotations

import pandas as pd
import pytest

from goodput.sim.workload import TraceError, load_trace
from tests.conftest import REPO

REPO_TRACES = REPO / "traces"

AZ = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
T = ["2023-11-16 18:15:46.0000000", "2023-11-16 18:15:47.0000000",
     "2023-11-16 18:15:48.0000000"]


def az(tmp_path, rows, name="az.csv"):
    p = tmp_path / name
    p.write_text(AZ + "".join(f"{t},{c},{g}\n" for t, c, g in rows))
    return p


def test_missing_column_named_with_format(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("arrived_at,num_prefill_tokens\n0,1\n")  # detected as nothing: lists formats
    with pytest.raises(TraceError, match="num_decode_tokens"):
        load_trace(p)
    with pytest.raises(TraceError, match=r"missing column.*'num_decode_tokens'.*vidur"):
        load_trace(p, format="vidur")


def test_negative_tokens(tmp_path):
    p = az(tmp_path, [(T[0], 5, 1), (T[1], -3, 1)])
    with pytest.raises(TraceError, match=r"'ContextTokens'.*row 1 \(file line 3\).*negative"):
        load_trace(p)


def test_non_numeric_tokens(tmp_path):
    p = az(tmp_path, [(T[0], 5, 1), (T[1], 5, 1), (T[2], 5, "lots")])
    with pytest.raises(TraceError, match=r"'GeneratedTokens'.*file line 4.*'lots'.*not a number"):
        load_trace(p)


def test_missing_token_value(tmp_path):
    p = az(tmp_path, [(T[0], "", 1), (T[1], 5, 1)])
    with pytest.raises(TraceError, match=r"'ContextTokens'.*file line 2.*missing"):
        load_trace(p)


def test_nan_in_jsonl(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"timestamp": 0, "input_length": 5, "output_length": 1}\n'
                 '{"timestamp": 1, "input_length": NaN, "output_length": 1}\n')
    with pytest.raises(TraceError, match=r"'input_length'.*file line 2"):
        load_trace(p)


def test_fractional_tokens(tmp_path):
    p = az(tmp_path, [(T[0], 5.5, 1)])
    with pytest.raises(TraceError, match=r"'ContextTokens'.*whole number"):
        load_trace(p)


def test_first_bad_row_reported_with_count(tmp_path):
    p = az(tmp_path, [(T[0], 5, 1), (T[1], "x", 1), (T[2], -1, 1)])
    with pytest.raises(TraceError, match=r"file line 3.*2 bad value"):
        load_trace(p)


def test_zero_output_is_error_unless_drop(tmp_path):
    p = az(tmp_path, [(T[0], 5, 1), (T[1], 6, 0), (T[2], 7, 2)])
    with pytest.raises(TraceError, match=r"'GeneratedTokens'.*file line 3.*zero_tokens"):
        load_trace(p)
    t = load_trace(p, zero_tokens="drop")
    assert t.df["prompt_tokens"].tolist() == [5, 7]
    assert t.meta["dropped"] == {"zero_output_tokens": 1}


def test_zero_prompt_is_error(tmp_path):
    p = az(tmp_path, [(T[0], 0, 3)])
    with pytest.raises(TraceError, match=r"'ContextTokens'.*at least 1"):
        load_trace(p)


def test_dropping_everything_is_an_error(tmp_path):
    p = az(tmp_path, [(T[0], 5, 0)])
    with pytest.raises(TraceError, match="no requests left"):
        load_trace(p, zero_tokens="drop")


def test_unsorted_error_then_sort_option(tmp_path):
    p = az(tmp_path, [(T[1], 5, 1), (T[0], 6, 1), (T[2], 7, 1)])
    with pytest.raises(TraceError, match=r"'TIMESTAMP'.*file line 3.*back in time.*sort=True"):
        load_trace(p)
    t = load_trace(p, sort=True)
    assert t.df["prompt_tokens"].tolist() == [6, 5, 7]
    assert t.df["arrival_s"].tolist() == [0.0, 1.0, 2.0]
    assert t.df["request_id"].tolist() == [0, 1, 2]  # generated ids follow arrival order
    assert t.meta["sorted"] is True


def test_unsorted_canonical_keeps_file_ids_when_sorted(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("request_id,arrival_s,prompt_tokens,output_tokens\n10,2,1,1\n11,1,1,1\n")
    with pytest.raises(TraceError, match="'arrival_s'"):
        load_trace(p)
    assert load_trace(p, sort=True).df["request_id"].tolist() == [11, 10]


def test_negative_canonical_arrival(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("arrival_s,prompt_tokens,output_tokens\n-1,1,1\n")
    with pytest.raises(TraceError, match=r"'arrival_s'.*negative"):
        load_trace(p)


def test_non_numeric_burstgpt_timestamp(tmp_path):
    p = tmp_path / "b.csv"
    p.write_text("Timestamp,Request tokens,Response tokens\n0,1,1\nsoon,1,1\n")
    with pytest.raises(TraceError, match=r"'Timestamp'.*file line 3"):
        load_trace(p)


@pytest.mark.parametrize("name,text", [("e.csv", ""), ("e.jsonl", ""), ("h.csv", AZ)])
def test_empty_files(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(TraceError, match=r"empty|no requests"):
        load_trace(p)


def test_missing_file(tmp_path):
    with pytest.raises(TraceError, match="no such trace file"):
        load_trace(tmp_path / "nope.csv")


def test_parquet_rows_have_no_line_numbers(tmp_path):
    import pandas as pd

    p = tmp_path / "c.parquet"
    pd.DataFrame({"arrival_s": [0.0, 1.0], "prompt_tokens": [1, -2],
                  "output_tokens": [1, 1]}).to_parquet(p)
    with pytest.raises(TraceError, match=r"'prompt_tokens' \(canonical format\), row 1: value -2 "):
        load_trace(p)


# ------------------------------------------------------------------ values that used to slip through
def _jsonl(tmp_path, rows):
    import json as _json
    p = tmp_path / "t.jsonl"
    p.write_text("".join(_json.dumps(r) + "\n" for r in rows))
    return p


@pytest.mark.parametrize("value,needle", [(1e30, "is too large"), (2**63, "is too large"),
                                          (True, "is true/false")])
def test_absurd_or_boolean_token_counts_are_refused(tmp_path, value, needle):
    from goodput.sim.workload.loaders import load_trace
    p = _jsonl(tmp_path, [{"request_id": 0, "arrival_s": 0.0, "prompt_tokens": 5, "output_tokens": 2},
                          {"request_id": 1, "arrival_s": 1.0, "prompt_tokens": value, "output_tokens": 2}])
    with pytest.raises(TraceError, match="prompt_tokens") as exc:
        load_trace(p)
    assert needle in str(exc.value) and "line 2" in str(exc.value)


def test_large_request_ids_stay_exact(tmp_path):
    from goodput.sim.workload.loaders import load_trace
    p = _jsonl(tmp_path, [{"request_id": 2**53 + i, "arrival_s": float(i), "prompt_tokens": 3,
                           "output_tokens": 2} for i in range(3)])
    assert load_trace(p).df.request_id.tolist() == [2**53, 2**53 + 1, 2**53 + 2]


def test_parquet_datetime_arrivals_are_seconds_from_the_first(tmp_path):
    from goodput.sim.workload.loaders import load_trace
    p = tmp_path / "t.parquet"
    pd.DataFrame({"request_id": [0, 1, 2], "prompt_tokens": [10, 20, 30], "output_tokens": [5, 5, 5],
                  "arrival_s": pd.to_datetime(["2024-01-01T00:00:00", "2024-01-01T00:00:02.5",
                                               "2024-01-01T00:01:00"], format="ISO8601")}).to_parquet(p)
    assert load_trace(p).df.arrival_s.tolist() == [0.0, 2.5, 60.0]


@pytest.mark.parametrize("name,content", [
    ("g.csv.xz", b"garbage\n"), ("g.csv.zip", b"garbage\n"), ("g.csv.bz2", b"garbage\n"),
    ("g.csv.gz", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"),  # a gzip header, then nothing
])
def test_corrupt_compressed_traces_are_one_line(tmp_path, name, content):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(TraceError) as exc:
        load_trace(p)
    msg = str(exc.value)
    assert str(p) in msg and "cannot read" in msg and "\n" not in msg


def test_zstd_traces_are_read(tmp_path):
    src = pd.read_csv(REPO_TRACES / "sample_tiny.csv")
    p = tmp_path / "t.csv.zst"
    src.to_csv(p, index=False)
    assert len(load_trace(p)) == len(src)
