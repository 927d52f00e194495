"""How long `goodput [CMD] --help` takes for each subcommand (best of N fresh processes).

    .venv/bin/python benchmarks/cli_help.py [N]

Printed, not asserted: timing depends on the machine and its load (issue 18 wants well under
0.5 s; it was 1.3 s when the parser imported pandas, and `plan --help` 0.75 s until
goodput.planner.cli imported pandas only where it uses it).
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def best(argv: list[str], n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "goodput", *argv], cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    base = best(["--version"], n)
    for argv in (["--help"], ["simulate", "--help"], ["trace", "--help"], ["plan", "--help"],
                 ["profile", "--help"], ["fidelity", "--help"], ["completion", "--help"]):
        print(f"goodput {' '.join(argv):<18} {best(argv, n):6.3f} s   (python start + --version: "
              f"{base:.3f} s)")


if __name__ == "__main__":
    main()
