"""Fuzz ``goodput plan`` arguments up to the first capacity search (parsing, option checks,
trace loading, slicing, instance types). Invariant: argparse's usage error, a clean one-line
error of the project's types, or options that every later step accepts."""
from __future__ import annotations

from pathlib import Path

from fuzz_cases import plan_argvs, run_plan_args_case
from fuzz_profiles import examples
from hypothesis import given

REPO = Path(__file__).resolve().parents[1]


@examples(40)
@given(plan_argvs())
def test_plan_arguments_fail_cleanly_or_are_accepted(argv):
    assert run_plan_args_case(argv, REPO) in ("ok", "error")
