"""Two source trees side by side on one ``sim_speed.py`` scenario: CPU seconds of the simulation
in alternating runs (A B A B ...), and the ratio A/B of each pair, so that a drift of the machine's
speed during the measurement cancels. Each run is a fresh process importing ``goodput`` from its
own tree (``PYTHONPATH``).

``--compiled PYTHON`` makes B the compiled install of ``make compiled`` (its interpreter, which
imports its own snapshot of this tree with the modules ``[tool.goodput] compiled`` lists built to
C by mypyc): the measurement behind docs/simulator.md, "Compiling the engine". Check that the
install is current first (``benchmarks/compiled_check.py``; ``make compiled`` runs it).
``--compiled-a PYTHON`` makes A a compiled install too (say, one built from an older commit),
so two compiled builds can be compared; ``--b`` then names the tree whose benchmark script B runs.

Usage: python benchmarks/ab_trees.py --b /tmp/base [--a .] [--scenario vidur-10k] [--pairs 5]
       (check the other commit out first: git worktree add /tmp/base <commit>)
       python benchmarks/ab_trees.py --compiled .venv-compiled/bin/python [--pairs 3]
       python benchmarks/ab_trees.py --compiled-a .venv-compiled/bin/python \
           --compiled /tmp/old-venv/bin/python --b /tmp/base
Prints each pair, then the median ratio and its range (below 1: A is faster).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cpu_seconds(tree: Path, scenario: str, python: str | None = None) -> float:
    """One run in a fresh process: the tree's source on ``PYTHONPATH`` under this interpreter,
    or ``python`` (an install of its own, so nothing may shadow it) on ``tree``'s script."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if python is None:
        env["PYTHONPATH"] = str(tree)
    out = subprocess.run([python or sys.executable, str(tree / "benchmarks" / "sim_speed.py"), "--child",
                          scenario], cwd=tree, env=env, check=True, capture_output=True, text=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["cpu_s"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", default=str(REPO), help="tree A (default: this one)")
    ap.add_argument("--b", help="tree B")
    ap.add_argument("--compiled", metavar="PYTHON", help="B = the compiled install (its interpreter)")
    ap.add_argument("--compiled-a", metavar="PYTHON", help="A = a compiled install (its interpreter)")
    ap.add_argument("--scenario", default="vidur-10k")
    ap.add_argument("--pairs", type=int, default=5)
    args = ap.parse_args()
    a = Path(args.a).resolve()
    if not (args.compiled or args.b):
        ap.error("give --b TREE or --compiled PYTHON (or both: the install, with its tree's script)")
    b = Path(args.b).resolve() if args.b else a
    pa = args.compiled_a
    print(f"A = {pa or a}, B = {args.compiled or b}; scenario {args.scenario}; CPU seconds of the simulation")
    cpu_seconds(a, args.scenario, pa), cpu_seconds(b, args.scenario, args.compiled)  # warm-up (file caches)
    ratios = []
    for i in range(args.pairs):
        ta, tb = cpu_seconds(a, args.scenario, pa), cpu_seconds(b, args.scenario, args.compiled)
        ratios.append(ta / tb)
        print(f"pair {i + 1}: A {ta:.3f} s, B {tb:.3f} s, A/B {ta / tb:.3f}", flush=True)
    print(f"A/B median {statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f}; "
          f"load {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
