"""Fuzz the trace loaders: every format x container (CSV, JSON lines, Parquet) x compression.

Invariant: a clean one-line TraceError, or a trace holding exactly the rows and values written
(hostile cells: exactly as many rows, kept or counted as dropped). Never another exception, a
hang or a silent change. Profiles: tests/fuzz_profiles.py (GOODPUT_FUZZ=long for local runs).
"""
from __future__ import annotations

from fuzz_cases import mutated_files, run_mutated_case, run_trace_case, trace_cases
from fuzz_profiles import examples
from hypothesis import given


@examples(60)
@given(trace_cases())
def test_written_rows_load_back_exactly_or_fail_cleanly(case):
    assert run_trace_case(case) in ("ok", "error", "skip")


@examples(40)
@given(mutated_files())
def test_corrupted_files_fail_cleanly(drawn):
    assert run_mutated_case(drawn) in ("ok", "error")
