"""Run the fuzz strategies of tests/test_fuzz_*.py for N cases each and print the figures.

    .venv/bin/python tests/fuzz_report.py [N]     (default N=200 per suite)

Prints, per suite and in all: cases tried, clean errors (one line, the project's error types),
correct runs (checked against what was written), skipped (the writer cannot hold the value) and
failures (anything else: another exception, a hang, a silent change), with the first failures.
Not collected by pytest (its name does not start with ``test_``); quoted in docs/reliability.md.
"""
from __future__ import annotations

import sys
import time
import traceback
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import fuzz_cases as fc  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

PAIRS = st.lists(st.tuples(fc.KEYS, fc.VALUES), min_size=1, max_size=4)
SUITES = {
    "trace files (6 formats x CSV/JSONL/Parquet x 6 compressions)":
        (fc.trace_cases(), fc.run_trace_case),
    "corrupted trace files (byte flips, inserts, cuts)": (fc.mutated_files(), fc.run_mutated_case),
    "--set overrides (+ tiny simulations)":
        (st.tuples(PAIRS, st.booleans()), lambda c: fc.run_config_case(c[0], False, c[1])),
    "YAML config documents": (PAIRS, lambda c: fc.run_config_case(c, True, False)),
    "YAML config text": (st.text(max_size=80), fc.run_yaml_text_case),
    "goodput plan arguments": (fc.plan_argvs(), lambda a: fc.run_plan_args_case(a, HERE.parent)),
}


def run_suite(strategy, runner, n: int) -> tuple[Counter, list[str]]:
    counts: Counter = Counter()
    failures: list[str] = []

    @settings(max_examples=n, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def trial(case):
        try:
            counts[runner(case)] += 1
        except Exception as exc:
            counts["failure"] += 1
            if len(failures) < 3:
                failures.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}\n"
                                f"    case: {str(case)[:300]}\n"
                                + "".join(traceback.format_tb(exc.__traceback__)[-2:]))

    trial()
    return counts, failures


def main(n: int) -> int:
    total: Counter = Counter()
    t0 = time.perf_counter()
    print(f"{'suite':62} {'tried':>6} {'clean err':>9} {'correct':>8} {'skipped':>7} {'failures':>8}")
    for name, (strategy, runner) in SUITES.items():
        counts, failures = run_suite(strategy, runner, n)
        total += counts
        tried = sum(counts.values())
        print(f"{name:62} {tried:6} {counts['error']:9} {counts['ok']:8} {counts['skip']:7} "
              f"{counts['failure']:8}")
        for f in failures:
            print("  FAILURE " + f)
    tried = sum(total.values())
    print(f"{'all':62} {tried:6} {total['error']:9} {total['ok']:8} {total['skip']:7} "
          f"{total['failure']:8}   ({time.perf_counter() - t0:.0f} s)")
    return 1 if total["failure"] else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
