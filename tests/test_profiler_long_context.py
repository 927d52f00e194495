"""Long-context profile data: the table script, the kernel choices in provenance, the grid."""
from __future__ import annotations

import csv
import json

from goodput.profiler.batches import expand
from goodput.profiler.grids import GridConfig, build_grid
from goodput.profiler.long_prompt_table import NEW, OLD, PROMPTS, main, tables
from goodput.sim.costmodel.base import Batch
from goodput.sim.costmodel.profiled import ProfiledCostModel


def test_table_prints_every_prompt_from_committed_data(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for t in PROMPTS:
        assert f"| {t:,} |" in out
    assert "sdpa:" in out and "| 131,072 | 11." in out  # measured, not a placeholder
    assert tables(NEW, OLD) == out.rstrip("\n")


def test_new_profile_keeps_choices_and_predicts_long_prompts():
    prov = json.loads((NEW / "provenance.json").read_text())
    per = prov["attention"]["per_shape"]
    with (NEW / "measurements.csv").open() as f:
        ok = [r for r in csv.DictReader(f) if r["kind"] == "batch" and r["status"] == "ok"]
    for r in ok:
        assert r["note"] == "attn=" + per[r["code"]]["choice"], r["code"]
    cm = ProfiledCostModel.from_dir(NEW, engine="none")
    rows = {r["code"]: float(r["median_s"]) for r in ok}
    for t in (32768, 65536, 131072):  # measured per layer vs the fit, within 10%
        assert abs(cm.layer_time([t], [0]) / rows[f"1x{t}@0"] - 1) < 0.10, t
    # decode stays exactly linear in the total context (the fast-forward contract)
    a, b = cm.decode_coefficients(8)
    batch = Batch(new_tokens=[1] * 8, context_tokens=[40000] * 8)
    assert abs(cm.batch_time(batch) - (a + b * 320000)) <= 1e-12 * cm.batch_time(batch)


def test_grid_reaches_the_context_limit_sparsely():
    g = build_grid(131072, GridConfig(), seed=0, token_budget=900_000)
    prompts = {expand(p.code)[0][0] for p in g if p.subkind == "prefill"
               and len(expand(p.code)[0]) == 1}
    assert {1024, 16384, 32768, 65536, 131072} <= prompts
    lin = {int(p.code[2:]) for p in g if p.kind == "linear"}
    assert {24576, 131072} <= lin
    chunks = [p.code for p in g if p.subkind == "mixed" and "@122880" in p.code]
    assert "1x8192@122880" in chunks and "1x8192@122880+16x1@1024" in chunks
    dec = {p.code for p in g if p.subkind == "decode"}
    assert {"1x1@32768", "32x1@32768", "4x1@131071", "32x1@28124"} <= dec
    for p in g:  # nothing beyond the context limit
        q, c = expand(p.code) if p.kind == "batch" else ([1], [0])
        assert all(x + y <= 131072 for x, y in zip(q, c, strict=True)), p.code
