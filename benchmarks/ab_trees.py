"""Two source trees side by side on one ``sim_speed.py`` scenario: CPU seconds of the simulation
in alternating runs (A B A B ...), and the ratio A/B of each pair, so that a drift of the machine's
speed during the measurement cancels. Each run is a fresh process importing ``goodput`` from its
own tree (``PYTHONPATH``).

``--mypyc`` makes B a copy of A whose engine hot modules are compiled to C by mypyc (it comes with
mypy; needs a C compiler): the measurement behind docs/simulator.md, "Compiling the engine". The
modules compiled are the ones that run per iteration and that no other code subclasses or
patches (the result records are subclassed, the clock is patched by ``sim_speed.py`` to count
events, and a compiled ``schedule`` cannot carry the ``quiet_decode_only`` mark).

Usage: python benchmarks/ab_trees.py --b /tmp/base [--a .] [--scenario vidur-10k] [--pairs 5]
       (check the other commit out first: git worktree add /tmp/base <commit>)
       python benchmarks/ab_trees.py --mypyc [--pairs 3]
Prints each pair, then the median ratio and its range (below 1: A is faster).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMPILED = ["sim/engine/decode_set.py", "sim/engine/tbt.py", "sim/engine/mixed_run.py",
            "sim/engine/decode_run.py", "sim/engine/instance.py", "sim/engine/kvpool.py",
            "sim/engine/queues.py"]


def cpu_seconds(tree: Path, scenario: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, str(tree / "benchmarks" / "sim_speed.py"), "--child", scenario],
                         cwd=tree, env=env, check=True, capture_output=True, text=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["cpu_s"])


def compiled_copy(src: Path, dest: Path) -> Path:
    """``src``'s tracked files in ``dest`` (beside ``src``, so ``../shared`` resolves the same),
    with ``COMPILED`` built in place by mypyc."""
    files = subprocess.run(["git", "ls-files"], cwd=src, check=True, capture_output=True,
                           text=True).stdout.split()
    for f in files:
        target = dest / f
        target.parent.mkdir(parents=True, exist_ok=True)
        if (src / f).is_symlink():
            target.symlink_to(os.readlink(src / f))
        elif (src / f).is_file():
            shutil.copy2(src / f, target)
    mypyc = Path(sys.executable).with_name("mypyc")
    subprocess.run([str(mypyc), *[f"goodput/{m}" for m in COMPILED]], cwd=dest,
                   check=True, capture_output=True, text=True)
    return dest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", default=str(REPO), help="tree A (default: this one)")
    ap.add_argument("--b", help="tree B")
    ap.add_argument("--mypyc", action="store_true", help="B = A with the hot modules compiled")
    ap.add_argument("--scenario", default="vidur-10k")
    ap.add_argument("--pairs", type=int, default=5)
    args = ap.parse_args()
    a = Path(args.a).resolve()
    if args.mypyc == bool(args.b):
        ap.error("give --b TREE or --mypyc")
    with tempfile.TemporaryDirectory(prefix="ab-mypyc-", dir=a.parent) as tmp:
        b = compiled_copy(a, Path(tmp)) if args.mypyc else Path(args.b).resolve()
        other = f"A compiled ({len(COMPILED)} modules)" if args.mypyc else str(b)
        label = f"A = {a}, B = {other}"
        print(f"{label}; scenario {args.scenario}; CPU seconds of the simulation")
        cpu_seconds(a, args.scenario), cpu_seconds(b, args.scenario)  # warm-up (file caches)
        ratios = []
        for i in range(args.pairs):
            ta, tb = cpu_seconds(a, args.scenario), cpu_seconds(b, args.scenario)
            ratios.append(ta / tb)
            print(f"pair {i + 1}: A {ta:.3f} s, B {tb:.3f} s, A/B {ta / tb:.3f}", flush=True)
    print(f"A/B median {statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f}; "
          f"load {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
