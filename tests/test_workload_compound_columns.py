"""The compound-request and session columns: rag_rounds, plan_tokens, retrieved_tokens,
think_time_s, and the embed rule (output_tokens == 0). Each bad value is a one-line error naming
the column, the row and the fix."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from goodput.sim.workload import OPTIONAL, RAG_COLUMNS, TraceError, load_trace, save_trace, synthesize

HEAD = "arrival_s,prompt_tokens,output_tokens,kind,rag_rounds,plan_tokens,retrieved_tokens,think_time_s\n"


def csv(tmp_path, *rows, name="c.csv"):
    p = tmp_path / name
    p.write_text(HEAD + "".join(f"{i},{r}\n" for i, r in enumerate(rows)))
    return p


def refused(path, match, **opts) -> str:
    with pytest.raises(TraceError, match=match) as e:
        load_trace(path, **opts)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_defaults_when_absent(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("arrival_s,prompt_tokens,output_tokens\n0,10,2\n")
    df = load_trace(p).df
    assert OPTIONAL["rag_rounds"] == 1 and OPTIONAL["plan_tokens"] == 0
    assert df["rag_rounds"].tolist() == [1] and df["rag_rounds"].dtype == np.int64
    assert df["plan_tokens"].tolist() == [0] and df["retrieved_tokens"].tolist() == [0]
    assert df["think_time_s"].dtype == np.float64 and math.isnan(df["think_time_s"][0])


def test_rag_embed_and_generate_rows_load(tmp_path):
    p = csv(tmp_path, "100,20,rag,3,50,2000,1.5", "300,0,embed,,,,", "10,5,generate,,,,0",
            "10,5,,,,,2.25")
    df = load_trace(p).df
    assert df["kind"].tolist() == ["rag", "embed", "generate", "generate"]
    assert df["rag_rounds"].tolist() == [3, 1, 1, 1]  # empty cells = defaults
    assert df["plan_tokens"].tolist() == [50, 0, 0, 0]
    assert df["retrieved_tokens"].tolist() == [2000, 0, 0, 0]
    assert df["output_tokens"].tolist() == [20, 0, 5, 5]
    think = df["think_time_s"].tolist()
    assert think[0] == 1.5 and math.isnan(think[1]) and think[2:] == [0.0, 2.25]


@pytest.mark.parametrize("ext", ["csv", "parquet", "jsonl"])
def test_round_trip_keeps_the_columns(tmp_path, ext):
    t = load_trace(csv(tmp_path, "100,20,rag,3,50,2000,1.5", "300,0,embed,,,,"))
    out = tmp_path / f"out.{ext}"
    save_trace(t, out)
    assert load_trace(out).df.equals(t.df)


def test_embed_rows_must_have_zero_output(tmp_path):
    p = csv(tmp_path, "10,1,generate,,,,", "300,4,embed,,,,")
    msg = refused(p, r"column 'output_tokens'.*row 1 \(file line 3\): is 4 on a kind 'embed' row")
    assert "prefill only" in msg and "Set output_tokens to 0" in msg


def test_zero_output_stays_an_error_for_other_kinds(tmp_path):
    p = csv(tmp_path, "300,0,embed,,,,", "10,0,generate,,,,")
    refused(p, r"'output_tokens'.*row 1 \(file line 3\).*is 0.*at least 1 token")
    t = load_trace(p, zero_tokens="drop")  # drops the generate row only: 0 is right for embed
    assert t.df["kind"].tolist() == ["embed"] and t.meta["dropped"] == {"zero_output_tokens": 1}


@pytest.mark.parametrize("row,column", [
    ("10,5,generate,2,,,", "rag_rounds"),
    ("10,5,,,7,,", "plan_tokens"),
    ("300,0,embed,,,10,", "retrieved_tokens"),
])
def test_rag_columns_on_non_rag_rows(tmp_path, row, column):
    p = csv(tmp_path, "10,5,rag,2,1,1,", row)
    msg = refused(p, rf"column '{column}'.*row 1 \(file line 3\).*on a kind '(generate|embed)' row")
    assert "describe rag requests only" in msg and "Set kind to rag" in msg
    assert set(RAG_COLUMNS) == {"rag_rounds", "plan_tokens", "retrieved_tokens"}


@pytest.mark.parametrize("row,match", [
    ("10,5,rag,0,,,", r"'rag_rounds'.*file line 2.*value 0 is below 1"),
    ("10,5,rag,-2,,,", r"'rag_rounds'.*file line 2.*value -2 is below 1"),
    ("10,5,rag,1.5,,,", r"'rag_rounds'.*file line 2.*not a whole number"),
    ("10,5,rag,,-3,,", r"'plan_tokens'.*file line 2.*negative"),
    ("10,5,rag,,,1.5,", r"'retrieved_tokens'.*file line 2.*not a whole number"),
    ("10,5,rag,,,lots,", r"'retrieved_tokens'.*file line 2.*not a number"),
    ("10,5,rag,,,,-1", r"'think_time_s'.*file line 2.*negative"),
    ("10,5,,,,,inf", r"'think_time_s'.*file line 2.*infinite"),
    ("10,5,,,,,soon", r"'think_time_s'.*file line 2.*'soon' is not a number"),
])
def test_bad_values(tmp_path, row, match):
    refused(csv(tmp_path, row), match)


def test_json_values(tmp_path):
    p = tmp_path / "c.jsonl"
    rows = [{"arrival_s": 0, "prompt_tokens": 5, "output_tokens": 1, "think_time_s": True}]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    refused(p, r"'think_time_s'.*file line 1.*true/false")
    rows[0]["think_time_s"] = "nan"  # a string, not a missing value
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    refused(p, r"'think_time_s'.*not a number")
    rows[0].update(think_time_s=None, kind="rag", rag_rounds=2)
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    df = load_trace(p).df
    assert df["rag_rounds"].tolist() == [2] and math.isnan(df["think_time_s"][0])


def test_synthetic_traces_carry_the_defaults():
    df = synthesize(5, 1.0, "fixed:10", "fixed:2").df
    assert df["rag_rounds"].tolist() == [1] * 5 and df["plan_tokens"].tolist() == [0] * 5
    assert df["think_time_s"].isna().all()


def test_docs_example_table_loads(tmp_path):
    """docs/traces.md's example must stay a valid trace (and show what its text says)."""
    from tests.conftest import REPO

    text = (REPO / "docs" / "traces.md").read_text()
    block = text.split("```csv\n", 1)[1].split("```", 1)[0]
    p = tmp_path / "example.csv"
    p.write_text(block)
    df = load_trace(p).df
    assert df["kind"].tolist() == ["generate", "embed", "rag", "generate"]
    assert df["output_tokens"][1] == 0 and df["rag_rounds"][2] == 2
    assert df["think_time_s"][3] == 4.0 and df["prefix_blocks"][3] == "0 1 5 6"
