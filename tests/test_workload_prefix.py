"""Prefix blocks (`prefix_blocks`, Mooncake `hash_ids`): the validation rules and the sharing stats.

Every error must be one line naming the column as the file spells it, the row and the fix; the
stats are checked against values worked out by hand in the comments.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from goodput.sim.workload import TraceError, load_trace, trace_stats
from goodput.sim.workload.prefix import parse_blocks
from goodput.sim.workload.validate import Ctx, finalize

MOONCAKE = Path(__file__).resolve().parents[1] / ".." / "shared" / "traces" / \
    "mooncake_synthetic_trace.jsonl"


def mooncake(tmp_path, rows, name="m.jsonl") -> Path:
    p = tmp_path / name
    p.write_text("".join(json.dumps({"timestamp": i, "input_length": n, "output_length": 1,
                                     "hash_ids": h}) + "\n" for i, (n, h) in enumerate(rows)))
    return p


def canonical(tmp_path, rows, name="c.csv") -> Path:
    """rows: (prompt_tokens, prefix_blocks cell)."""
    p = tmp_path / name
    p.write_text("arrival_s,prompt_tokens,output_tokens,prefix_blocks\n"
                 + "".join(f"{i},{n},1,{b}\n" for i, (n, b) in enumerate(rows)))
    return p


def one_line_error(path, match, **opts) -> str:
    with pytest.raises(TraceError, match=match) as e:
        load_trace(path, **opts)
    assert "\n" not in str(e.value)
    return str(e.value)


# ------------------------------------------------------------------ parsing

def test_valid_cells_parse_with_spacing_and_leading_zeros(tmp_path):
    p = canonical(tmp_path, [(2000, '" 1  2\t3 "'), (600, ""), (1024, "007 8")])
    t = load_trace(p)
    assert t.meta["prefix_block_tokens"] == 512
    b = parse_blocks(t.df["prefix_blocks"], lambda *a: AssertionError(a))
    assert b.rows.tolist() == [0, 2] and b.counts.tolist() == [3, 2]
    assert b.ids.tolist() == [1, 2, 3, 7, 8]


@pytest.mark.parametrize("cell", ['"1,2"', "a b", "-1 2", "1.5", "0x10", "1 +2", "[1 2]"])
def test_not_a_list_of_ids(tmp_path, cell):
    p = canonical(tmp_path, [(2000, "1 2"), (2000, cell)])
    msg = one_line_error(p, r"column 'prefix_blocks'.*row 1 \(file line 3\).*not a space-separated")
    assert "12 13 14" in msg  # the fix shows the expected form


def test_id_of_2_63_or_more(tmp_path):
    ok = canonical(tmp_path, [(600, str(2**63 - 1))], "ok.csv")
    assert load_trace(ok).df["prefix_blocks"].tolist() == [str(2**63 - 1)]
    p = canonical(tmp_path, [(600, "5"), (600, f"4 {2**63}")])
    one_line_error(p, r"'prefix_blocks'.*row 1 \(file line 3\).*2\^63 or more")


# ------------------------------------------------------------------ rules

def test_more_blocks_than_the_prompt_spans(tmp_path):
    # 600 tokens span ceil(600/512) = 2 blocks; 3 ids is one too many
    p = mooncake(tmp_path, [(1024, [1, 2]), (600, [3, 4, 5])])
    one_line_error(p, r"column 'hash_ids' \(mooncake format\), row 1 \(file line 2\): lists 3 "
                      r"block ids but input_length 600 spans only 2 block\(s\) of 512 tokens")
    # exactly ceil blocks, and fewer (only the shared prefix listed), are both fine
    assert len(load_trace(mooncake(tmp_path, [(600, [3, 4]), (5000, [9])], "ok.jsonl"))) == 2


def test_id_repeated_inside_a_row(tmp_path):
    p = canonical(tmp_path, [(4000, "1 2 3"), (4000, "5 6 5")])
    one_line_error(p, r"'prefix_blocks'.*row 1 \(file line 3\).*block id 5 appears twice")


@pytest.mark.parametrize("order", ["partial_first", "full_first"])
def test_partial_block_id_reused_as_full(tmp_path, order):
    short, long = (300, [7]), (1024, [7, 8])  # 300 tokens end inside block 7; 1024 fill it
    rows = [short, long] if order == "partial_first" else [long, short]
    p = mooncake(tmp_path, rows)
    bad, other = (0, 1) if order == "partial_first" else (1, 0)
    one_line_error(p, rf"'hash_ids'.*row {bad} \(file line {bad + 1}\): block id 7 is this row's "
                      rf"partial last block \(input_length 300 ends inside it\) but row {other} "
                      rf"\(file line {other + 1}\) uses it as a full 512-token block")


def test_partial_blocks_shared_only_as_partial_are_fine(tmp_path):
    # a prompt of exactly 512 fills its block, so 1024 / 512 prompts may share id 1 as full
    p = mooncake(tmp_path, [(512, [1]), (1024, [1, 2]), (100, [9]), (100, [9])])
    assert len(load_trace(p)) == 4


def test_rules_ignore_rows_without_blocks_and_other_formats(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("arrival_s,prompt_tokens,output_tokens\n0,5,1\n1,6,1\n")
    t = load_trace(p)
    assert t.df["prefix_blocks"].tolist() == ["", ""] and trace_stats(t)["prefix"] is None


def test_block_size_comes_from_trace_meta():
    df = pd.DataFrame({"arrival_s": [0.0, 1.0], "prompt_tokens": [40, 40],
                       "output_tokens": [1, 1], "prefix_blocks": ["1 2 3", "1 2 3 4"]})
    t = finalize(df.iloc[[0]].copy(), Ctx("t", "canonical"), {"prefix_block_tokens": 16},
                 rebase=False)
    assert t.meta["prefix_block_tokens"] == 16  # 40 tokens span 3 blocks of 16
    with pytest.raises(TraceError, match="lists 4 block ids but prompt_tokens 40 spans only 3"):
        finalize(df.iloc[[1]].copy(), Ctx("t", "canonical"), {"prefix_block_tokens": 16},
                 rebase=False)
    with pytest.raises(TraceError, match="spans only 1 block"):  # canonical default: 512
        finalize(df.copy(), Ctx("t", "canonical"), {}, rebase=False)


def test_two_predecessors_are_allowed_and_counted(tmp_path):
    """Id 2 follows 1 in one row and 3 in another: content ids, not prefix hashes. Not an error
    (a cache keyed by the whole chain keeps them apart), and nothing is reusable."""
    p = mooncake(tmp_path, [(1024, [1, 2]), (1024, [3, 2])])
    s = trace_stats(load_trace(p))["prefix"]
    assert s["ids_with_several_predecessors"] == 1
    assert s["repeated_block_fraction"] == 0.25  # 4 refs, id 2 repeats once
    assert s["reusable_tokens"] == 0 and s["cacheable_blocks"] == 4  # chains 1, 1-2, 3, 3-2
    q = mooncake(tmp_path, [(1024, [1, 2]), (1536, [1, 2, 4]), (1024, [3, 2])], "q.jsonl")
    s = trace_stats(load_trace(q))["prefix"]
    assert s["reusable_tokens"] == 2 * 512  # only row 1 reuses 1-2; row 2's 2 is another chain


def test_validates_a_million_rows_in_seconds():
    n, k = 1_000_000, 200_000  # 200k rows list 16 blocks each (3.2M ids); the rest none
    prompt = np.full(n, 100, dtype=np.int64)
    prompt[:k] = 16 * 512 - 7
    ids = np.arange(16, dtype=np.int64)
    cells = [" ".join(map(str, ids + 16 * (i % 1000))) for i in range(k)] + [""] * (n - k)
    df = pd.DataFrame({"arrival_s": np.arange(n, dtype=np.float64), "prompt_tokens": prompt,
                       "output_tokens": np.ones(n, dtype=np.int64), "prefix_blocks": cells})
    t0 = time.perf_counter()
    finalize(df.copy(), Ctx("big", "canonical"), {}, rebase=False)
    with_blocks = time.perf_counter() - t0
    t0 = time.perf_counter()
    finalize(df.drop(columns="prefix_blocks"), Ctx("big", "canonical"), {}, rebase=False)
    without = time.perf_counter() - t0
    assert with_blocks < 30 and without < 10, (with_blocks, without)


# ------------------------------------------------------------------ stats

def test_stats_on_generated_full_blocks(tmp_path):
    """4 sessions x 2 turns, one 1024-token system prompt, 512-token messages and answers.
    Turn 1: 1024 + 512 = 1536 tokens = 3 full blocks (2 system + 1 own); turn 2: 1536 + 512 +
    512 = 2560 = 5 full blocks (turn 1's 3 + 2 new). Refs 4 * 8 = 32, distinct 2 + 4 * 3 = 14,
    reusable 32 - 14 = 18 blocks = 9216 of 4 * 4096 = 16384 prompt tokens = 0.5625."""
    from goodput.sim.workload.generators import mooncake_like, save_mooncake

    df = mooncake_like(sessions=4, turns=2, system_prompts=1, system_tokens=1024,
                       user_tokens="fixed:512", output_tokens="fixed:512", seed=5)
    p = tmp_path / "g.jsonl"
    save_mooncake(df, p)
    s = trace_stats(load_trace(p))
    pre = s["prefix"]
    assert s["prompt_tokens_total"] == 16384
    assert pre["block_refs"] == 32 and pre["distinct_blocks"] == 14
    assert pre["reusable_tokens"] == 9216 and pre["reusable_fraction"] == 0.5625
    assert pre["repeated_block_fraction"] == 0.5625
    assert pre["distinct_block_tokens"] == pre["cacheable_tokens"] == 14 * 512
    assert pre["ids_with_several_predecessors"] == 0


def test_stats_on_generated_partial_blocks(tmp_path, capsys):
    """2 sessions x 2 turns, system prompt 1024, 100-token messages and answers. Turn 1: 1124
    tokens = [sys0, sys1, a] with a partial (100 tokens); turn 2: 1124 + 200 = 1324 = [sys0,
    sys1, b], b partial (300). Refs 12, full refs 8 over 2 distinct chains: 6 reused blocks =
    3072 of 2 * (1124 + 1324) = 4896 tokens. Distinct ids 6: 2 * 512 + 2 * (100 + 300) = 1824."""
    from goodput.sim.workload.cli import main
    from goodput.sim.workload.generators import mooncake_like, save_mooncake

    df = mooncake_like(sessions=2, turns=2, system_prompts=1, system_tokens=1024,
                       user_tokens="fixed:100", output_tokens="fixed:100", seed=2)
    p = tmp_path / "g.jsonl"
    save_mooncake(df, p)
    assert main(["trace", "stats", str(p), "--json"]) == 0
    pre = json.loads(capsys.readouterr().out)["prefix"]
    assert pre["block_refs"] == 12 and pre["distinct_blocks"] == 6
    assert pre["reusable_tokens"] == 3072
    assert pre["reusable_fraction"] == pytest.approx(3072 / 4896)
    assert pre["repeated_block_fraction"] == 0.5
    assert pre["distinct_block_tokens"] == 1824 and pre["cacheable_tokens"] == 1024
    assert main(["trace", "stats", str(p)]) == 0
    text = capsys.readouterr().out
    assert "could reuse 62.7% of prompt tokens (3,072)" in text and "50.0% repeat" in text


def test_real_mooncake_prefix_facts():
    """Measured independently (a plain Python loop over the file): full-block unbounded reuse
    0.6504 of 61,194,628 prompt tokens; 63.96% of 121,877 block refs repeat; 43,924 ids."""
    if not MOONCAKE.exists():
        pytest.skip(f"real trace {MOONCAKE} not present")
    t = load_trace(MOONCAKE)  # passes every prefix-block rule
    pre = trace_stats(t)["prefix"]
    assert pre["reusable_fraction"] == pytest.approx(0.6504, abs=1e-4)
    assert pre["reusable_tokens"] == 39_802_880
    assert pre["repeated_block_fraction"] == pytest.approx(0.6396, abs=1e-4)
    assert pre["block_refs"] == 121_877 and pre["distinct_blocks"] == 43_924
    assert pre["ids_with_several_predecessors"] == 0
