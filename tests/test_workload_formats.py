"""One test (or a few) per supported trace format, on small hand-written files."""
from __future__ import annotations

import json

import numpy as np
import pytest

from goodput.sim.workload import (
    OPTIONAL,
    REQUIRED,
    TraceError,
    arrival_times,
    format_stats,
    load_trace,
    save_trace,
    trace_stats,
)


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_azure_2023(tmp_path):
    p = write(tmp_path, "az.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
              "2023-11-16 18:15:46.6805900,374,44\n"
              "2023-11-16 18:15:50.9951690,396,109\n"
              "2023-11-16 18:16:46.6805901,879,55\n")
    t = load_trace(p)
    assert t.format == "azure" and t.meta["variant"] == "2023"
    np.testing.assert_allclose(t.df["arrival_s"], [0.0, 4.314579, 60.0000001], rtol=0, atol=1e-9)
    assert t.df["prompt_tokens"].tolist() == [374, 396, 879]
    assert t.df["output_tokens"].tolist() == [44, 109, 55]
    assert t.df["request_id"].tolist() == [0, 1, 2]
    assert list(t.df.columns) == list(REQUIRED) + list(OPTIONAL)
    assert str(t.df["arrival_s"].dtype) == "float64"
    assert str(t.df["prompt_tokens"].dtype) == "int64"
    assert t.meta["time_origin"].startswith("2023-11-16 18:15:46.68059")


def test_azure_2024_offset_mixed_fraction_widths(tmp_path):
    p = write(tmp_path, "az24.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
              "2024-05-10 00:00:00+00:00,10,1\n"
              "2024-05-10 00:00:00.5+00:00,20,2\n"
              "2024-05-10 00:00:01.000123+00:00,30,3\n"
              "2024-05-10 00:00:02.1234567+00:00,40,4\n")
    t = load_trace(p)
    assert t.meta["variant"] == "2024"
    np.testing.assert_allclose(t.df["arrival_s"], [0, 0.5, 1.000123, 2.1234567], atol=1e-9)


def test_azure_bad_timestamp_names_column_and_line(tmp_path):
    p = write(tmp_path, "az.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
              "2024-05-10 00:00:00+00:00,10,1\nyesterday,20,2\n")
    with pytest.raises(TraceError, match=r"'TIMESTAMP'.*file line 3.*yesterday"):
        load_trace(p)


BURST = ("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
         "5,ChatGPT,100,20,120,Conversation log\n"
         "6.5,GPT-4,200,0,200,Conversation log\n"
         "7,ChatGPT,300,30,330,API log\n"
         "9,GPT-4,400,40,440,Conversation log\n"
         "10,ChatGPT,500,0,500,Conversation log\n")


def test_burstgpt_failed_dropped_by_default_and_counted(tmp_path):
    t = load_trace(write(tmp_path, "b.csv", BURST))
    assert t.format == "burstgpt"
    assert t.meta["dropped"]["burstgpt_failed"] == 2 and t.meta["rows_read"] == 5
    assert t.df["prompt_tokens"].tolist() == [100, 300, 400]
    assert t.df["arrival_s"].tolist() == [0.0, 2.0, 4.0]  # re-based from 5 s
    assert "Model" in t.meta["ignored_columns"]
    assert "2 rows: burstgpt_failed" in format_stats(trace_stats(t))


def test_burstgpt_keep_failed_and_model_filter(tmp_path):
    p = write(tmp_path, "b.csv", BURST)
    t = load_trace(p, burstgpt_failed="keep")
    assert len(t) == 5 and t.meta["failed_kept"] == 2
    assert t.df["output_tokens"].tolist() == [20, 1, 30, 40, 1]
    g = load_trace(p, model="GPT-4")
    assert g.meta["dropped"] == {"model_filter": 3, "burstgpt_failed": 1}
    assert g.df["prompt_tokens"].tolist() == [400]
    with pytest.raises(TraceError, match="Model"):
        load_trace(p, model="Claude")
    with pytest.raises(TraceError, match="burstgpt_failed"):
        load_trace(p, burstgpt_failed="maybe")


def test_burstgpt_session_ids_are_text(tmp_path):
    p = write(tmp_path, "b.csv", "Timestamp,Model,Request tokens,Response tokens,Total tokens,"
              "Log Type,Session ID,Elapsed time\n0,ChatGPT,10,5,15,Conversation log,007,1.5\n"
              "1,ChatGPT,10,5,15,Conversation log,,2.0\n")
    t = load_trace(p)
    assert t.df["session_id"].tolist() == ["007", ""]
    assert t.meta["ignored_columns"] == ["Model", "Total tokens", "Log Type", "Elapsed time"]


def test_mooncake_jsonl(tmp_path):
    rows = [{"timestamp": 1000, "input_length": 1024, "output_length": 10, "hash_ids": [1, 2]},
            {"timestamp": 1500, "input_length": 1100, "output_length": 5, "hash_ids": [1, 2, 3]},
            {"timestamp": 4000, "input_length": 9, "output_length": 1, "hash_ids": []}]
    p = write(tmp_path, "m.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    t = load_trace(p)
    assert t.format == "mooncake" and t.meta["prefix_block_tokens"] == 512
    assert t.df["arrival_s"].tolist() == [0.0, 0.5, 3.0]
    assert t.df["prefix_blocks"].tolist() == ["1 2", "1 2 3", ""]
    assert t.df["prompt_tokens"].tolist() == [1024, 1100, 9]


def test_vidur_with_arrivals_and_total_check(tmp_path):
    p = write(tmp_path, "v.csv", "arrived_at,num_prefill_tokens,num_decode_tokens,"
              "num_total_tokens\n0.25,10,5,15\n1.25,20,6,26\n")
    t = load_trace(p)
    assert t.format == "vidur" and t.df["arrival_s"].tolist() == [0.0, 1.0]
    p = write(tmp_path, "v2.csv", "arrived_at,num_prefill_tokens,num_decode_tokens,"
              "num_total_tokens\n0,10,5,15\n1,20,6,25\n")
    with pytest.raises(TraceError, match=r"'num_total_tokens'.*file line 3"):
        load_trace(p)


LENGTHS = "num_prefill_tokens,num_decode_tokens,num_total_tokens,pd_ratio\n" + "".join(
    f"{10 * i},{i},{11 * i},10.0\n" for i in range(1, 51))


def test_lengths_needs_rate(tmp_path):
    p = write(tmp_path, "l.csv", LENGTHS)
    with pytest.raises(TraceError, match="rate"):
        load_trace(p)


def test_lengths_synthesizes_reproducible_arrivals(tmp_path):
    p = write(tmp_path, "l.csv", LENGTHS)
    t = load_trace(p, rate=4.0, seed=3)
    assert t.format == "lengths" and len(t) == 50
    assert t.df["prompt_tokens"].tolist() == [10 * i for i in range(1, 51)]  # file order kept
    np.testing.assert_array_equal(t.df["arrival_s"], arrival_times(50, 4.0, seed=3))
    g = load_trace(p, rate=4.0, arrival="gamma", cv=3.0, seed=3)
    assert not np.array_equal(g.df["arrival_s"], t.df["arrival_s"])
    assert g.meta["arrivals"]["cv"] == 3.0


def test_rate_rejected_for_timed_formats(tmp_path):
    p = write(tmp_path, "v.csv", "arrived_at,num_prefill_tokens,num_decode_tokens\n0,1,1\n")
    with pytest.raises(TraceError, match="rescale"):
        load_trace(p, rate=3.0)


@pytest.mark.parametrize("ext", ["csv", "parquet", "jsonl", "csv.gz"])
def test_canonical_round_trip(tmp_path, ext):
    src = write(tmp_path, "c.csv", "request_id,arrival_s,prompt_tokens,output_tokens,priority,"
                "slo_class,session_id,kind,note\n7,0.5,10,2,-1,gold,s1,generate,a\n"
                "3,1.25,20,0,,,,embed,b\n")
    t = load_trace(src)
    assert t.df["request_id"].tolist() == [7, 3]  # the file's ids are kept
    assert t.df["arrival_s"].tolist() == [0.5, 1.25]  # canonical times are not re-based
    assert t.df["priority"].tolist() == [-1, 0]
    assert t.df["slo_class"].tolist() == ["gold", "default"]
    assert t.df["note"].tolist() == ["a", "b"]  # unknown columns are carried, not dropped
    out = tmp_path / f"out.{ext}"
    save_trace(t, out)
    back = load_trace(out)
    assert back.format == "canonical"
    assert back.df.equals(t.df), (back.df, t.df)


def test_canonical_without_ids_gets_0_to_n(tmp_path):
    p = write(tmp_path, "c.csv", "arrival_s,prompt_tokens,output_tokens\n0,1,1\n2,3,4\n")
    assert load_trace(p).df["request_id"].tolist() == [0, 1]


def test_canonical_bad_kind_and_duplicate_id(tmp_path):
    p = write(tmp_path, "c.csv", "arrival_s,prompt_tokens,output_tokens,kind\n0,1,1,chat\n")
    with pytest.raises(TraceError, match=r"'kind'.*chat"):
        load_trace(p)
    p = write(tmp_path, "d.csv", "request_id,arrival_s,prompt_tokens,output_tokens\n"
              "1,0,1,1\n1,1,1,1\n")
    with pytest.raises(TraceError, match=r"'request_id'.*twice"):
        load_trace(p)


def test_unknown_columns_list_formats(tmp_path):
    p = write(tmp_path, "x.csv", "time,in,out\n0,1,1\n")
    with pytest.raises(TraceError) as e:
        load_trace(p)
    for fmt in ("azure", "burstgpt", "mooncake", "vidur", "lengths", "canonical"):
        assert fmt in str(e.value)


def test_unknown_format_name_and_extension(tmp_path):
    p = write(tmp_path, "x.csv", "arrival_s,prompt_tokens,output_tokens\n0,1,1\n")
    with pytest.raises(TraceError, match=r"azure.*burstgpt"):
        load_trace(p, format="sharegpt")
    q = write(tmp_path, "x.xlsx", "arrival_s,prompt_tokens,output_tokens\n0,1,1\n")
    with pytest.raises(TraceError, match="extension"):
        load_trace(q)
    # a named non-canonical format implies its container, whatever the extension
    d = write(tmp_path, "x.dat", "arrived_at,num_prefill_tokens,num_decode_tokens\n0,1,1\n")
    assert len(load_trace(d, format="vidur")) == 1


def test_explicit_format_with_wrong_columns_names_missing(tmp_path):
    p = write(tmp_path, "x.csv", "arrival_s,prompt_tokens,output_tokens\n0,1,1\n")
    with pytest.raises(TraceError, match=r"missing column.*'TIMESTAMP'.*azure"):
        load_trace(p, format="azure")


def test_unknown_option_is_an_error(tmp_path):
    p = write(tmp_path, "x.csv", "arrival_s,prompt_tokens,output_tokens\n0,1,1\n")
    with pytest.raises(TraceError, match="burstgpt_failed"):
        load_trace(p, burstgpt_failed="keep")
