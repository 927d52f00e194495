"""Sarathi-Serve's mixed batches: how an earlier fit priced them, against the measured rows.

The profiles' ``sarathi`` rows (profiler/grids.py: one chunk filling the 512-token budget beside
4-56 decodes, or a 200-token tail, over 0-3k of cached prefix) were measured after the fits that
priced the committed fidelity runs. So the earlier fit's error on them is out of sample: it is
the per-profile mixed-batch bias the serving-loop residuals showed (docs/fidelity.md, "Mixed
iterations"). The current fit's error is printed beside it, on all Sarathi rows and on its own
held-out ones (fit_report.json).

Usage: python benchmarks/sarathi_mixes.py [--rev d976f79] [PROFILE ...]
(PROFILE like h200/llama-3.1-8b; ``--rev``: the git revision holding the earlier fit.json)
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
from pathlib import Path

from goodput.profiler.batches import expand
from goodput.sim.costmodel.profiled import ProfiledCostModel

REPO = Path(__file__).resolve().parents[1]
PROFILES = ("h200/llama-3.1-8b", "h200/qwen2.5-7b", "h200/llama-2-7b", "h200-fastattn/llama-3.1-8b")


def errors(fit: dict, d: Path, rows: list[dict]) -> list[float]:
    model = ProfiledCostModel(fit, d)
    return [100 * (model.layer_time(*expand(r["code"])) / float(r["median_s"]) - 1) for r in rows]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", default="d976f79", help="git revision of the earlier fits")
    ap.add_argument("profiles", nargs="*", default=list(PROFILES))
    args = ap.parse_args()
    print(f"| profile | Sarathi rows | earlier fit ({args.rev}): signed median / abs median / max "
          "| current fit: signed / abs median | current fit, its held-out Sarathi rows: median / max |")
    print("|---|---|---|---|---|")
    for name in args.profiles:
        d = REPO / "profiler" / "profiles" / name / "tp1"
        rel = d.relative_to(REPO)
        old = json.loads(subprocess.check_output(["git", "show", f"{args.rev}:{rel}/fit.json"], cwd=REPO))
        new = json.loads((d / "fit.json").read_text())
        with (d / "measurements.csv").open() as f:
            rows = [r for r in csv.DictReader(f) if r["subkind"] == "sarathi" and r["status"] == "ok"]
        eo, en = errors(old, d, rows), errors(new, d, rows)
        held = json.loads((d / "fit_report.json").read_text())["by_kind"].get("sarathi", {})
        print(f"| {name} | {len(rows)} | {statistics.median(eo):+.1f}% / "
              f"{statistics.median(map(abs, eo)):.1f}% / {max(map(abs, eo)):.1f}% | "
              f"{statistics.median(en):+.1f}% / {statistics.median(map(abs, en)):.1f}% | "
              f"{held.get('median_pct', float('nan')):.1f}% / {held.get('max_pct', float('nan')):.1f}% "
              f"(n={held.get('n', 0)}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
