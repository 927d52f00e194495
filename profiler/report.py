"""The accuracy table of every fitted profile (``goodput profile report``), for docs and users."""
from __future__ import annotations

import json
from pathlib import Path


def accuracy_table(root: Path) -> str:
    """Markdown: held-out error per profile, then the full-depth validations found."""
    lines = ["| GPU | model | TP | train / held-out points | median APE | P95 APE | max APE "
             "| infeasible points | profile version |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    reports = sorted(Path(root).glob("*/*/tp*/fit_report.json"))
    for path in reports:
        r = json.loads(path.read_text())
        h = r["heldout"]
        gpu, model, tp = r["profile"].split("/")
        lines.append(f"| {gpu} | {model} | {tp[2:]} | {r['n_train']} / {r['n_test']} "
                     f"| {h.get('median_pct')}% | {h.get('p95_pct')}% | {h.get('max_pct')}% "
                     f"| {r['infeasible_points']} | {r['profile_version']} |")
    if not reports:
        return f"no fit_report.json under {root}; run `goodput profile fit DIR` first"
    vals = sorted(Path(root).glob("*/*/tp*/validation.json"))
    if vals:
        lines += ["", "Full-depth check (layers x per-layer time + embedding + LM head vs one "
                      "timed full-depth forward):", "",
                  "| GPU | model | batch | full depth (ms) | composed (ms) | error |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for path in vals:
            gpu, model = path.parts[-4], path.parts[-3]
            for code, v in json.loads(path.read_text()).items():
                if "full_depth_s" in v:
                    lines.append(f"| {gpu} | {model} | `{code}` | {v['full_depth_s'] * 1e3:.3f} "
                                 f"| {v['composed_s'] * 1e3:.3f} | {v['rel_error'] * 100:+.1f}% |")
    return "\n".join(lines)
