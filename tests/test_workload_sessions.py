"""The Mooncake-format session generator (`mooncake_like`) and `goodput trace sessions`."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from goodput.sim.workload import TraceError, load_trace
from goodput.sim.workload.cli import main
from goodput.sim.workload.generators import mooncake_like, save_mooncake, to_canonical


def test_turns_extend_the_previous_prompt_and_its_full_blocks():
    df = mooncake_like(sessions=30, turns="uniform:1:5", system_prompts=3, system_tokens=1300,
                       seed=7)
    assert list(df.columns[:4]) == ["timestamp", "input_length", "output_length", "hash_ids"]
    assert (np.diff(df["timestamp"]) >= 0).all() and df["timestamp"].iloc[0] == 0
    assert all(len(h) == -(-n // 512) for n, h in zip(df["input_length"], df["hash_ids"],
                                                      strict=True))
    for _, s in df.groupby("session_id", sort=False):
        assert s["turn"].tolist() == list(range(1, len(s) + 1))  # arrival order keeps turn order
        prev = None
        for n, out, h in zip(s["input_length"], s["output_length"], s["hash_ids"], strict=True):
            if prev is not None:
                pn, pout, ph = prev
                assert n > pn + pout  # previous prompt + previous answer + a new message
                assert h[: pn // 512] == ph[: pn // 512]  # its full blocks, not its partial one
                assert ph[-1] not in h or pn % 512 == 0
            prev = (n, out, h)
    flat = [x for h in df["hash_ids"] for x in h]
    assert pd.unique(np.array(flat)).tolist() == list(range(max(flat) + 1))  # first-appearance ids


def test_system_prompts_are_shared_across_sessions():
    # 1300 tokens = 2 full blocks; each of the 2 system prompts has its own 2 ids
    df = mooncake_like(sessions=40, turns=1, system_prompts=2, system_tokens=1300, seed=3)
    heads = {tuple(h[:2]) for h in df["hash_ids"]}
    assert len(heads) == 2
    assert len({h[2] for h in df["hash_ids"]}) == 40  # the 3rd block mixes in the user's text
    none = mooncake_like(sessions=5, turns=1, system_prompts=0, seed=3)
    assert len({x for h in none["hash_ids"] for x in h}) == sum(map(len, none["hash_ids"]))


def test_seeded_and_poisson_starts():
    a = mooncake_like(sessions=2000, turns=1, rate=4.0, seed=11)
    assert a.equals(mooncake_like(sessions=2000, turns=1, rate=4.0, seed=11))
    assert not a.equals(mooncake_like(sessions=2000, turns=1, rate=4.0, seed=12))
    gaps = np.diff(a["timestamp"].to_numpy()) / 1000
    assert gaps.mean() == pytest.approx(0.25, rel=0.08)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.1)  # exponential gaps


def test_written_files_load_and_keep_sessions(tmp_path):
    df = mooncake_like(sessions=10, turns=3, seed=1)
    p = tmp_path / "m.jsonl"
    assert save_mooncake(df, p) == 30
    first = json.loads(p.read_text().splitlines()[0])
    assert sorted(first) == ["hash_ids", "input_length", "output_length", "timestamp"]
    t = load_trace(p)
    assert t.format == "mooncake" and t.meta["ignored_columns"] == []
    assert t.df["prefix_blocks"].tolist() == [" ".join(map(str, h)) for h in df["hash_ids"]]
    c = to_canonical(df)
    q = tmp_path / "c.csv"
    c.to_csv(q, index=False)
    back = load_trace(q)
    assert back.df["session_id"].tolist() == df["session_id"].tolist()
    assert back.df["prefix_blocks"].tolist() == t.df["prefix_blocks"].tolist()
    np.testing.assert_allclose(back.df["arrival_s"], t.df["arrival_s"])


@pytest.mark.parametrize("kw,match", [
    ({"sessions": 0}, "sessions=0"),
    ({"turns": 0}, "turns=0"),
    ({"turns": "uniform:0:2"}, "turns: uniform: low=0"),
    ({"rate": -1}, "rate=-1"),
    ({"think_s": 0}, "think_s=0"),
    ({"system_tokens": -5}, "system_tokens=-5"),
    ({"user_tokens": "bogus"}, "user_tokens: .*bogus"),
    ({"seed": 1.5}, "seed=1.5"),
])
def test_bad_parameters(kw, match):
    with pytest.raises(TraceError, match=match):
        mooncake_like(**kw)


def test_cli_writes_mooncake_and_canonical(tmp_path, capsys):
    m = tmp_path / "s.jsonl"
    assert main(["trace", "sessions", "--sessions", "20", "--turns", "3", "--system-prompts",
                 "2", "--seed", "4", "-o", str(m)]) == 0
    assert "wrote 60 requests (20 sessions, mooncake)" in capsys.readouterr().out
    assert load_trace(m).format == "mooncake"
    c = tmp_path / "s.parquet"
    assert main(["trace", "sessions", "--sessions", "20", "--turns", "3", "--system-prompts",
                 "2", "--seed", "4", "-o", str(c)]) == 0
    t = load_trace(c)
    assert t.format == "canonical" and t.df["session_id"].nunique() == 20
    assert t.df["prefix_blocks"].tolist() == load_trace(m).df["prefix_blocks"].tolist()
    assert main(["trace", "sessions", "--sessions", "2", "--format", "mooncake",
                 "-o", str(tmp_path / "x.csv")]) == 2
    assert "Mooncake format is JSON lines" in capsys.readouterr().err
