"""Tables of fidelity results: one row per case, signed percentile errors (sim vs real).

``markdown_report(root)`` reads every ``<gpu>/<model>/fidelity*.json`` under ``root`` (the plain
file: the cost model as shipped; ``-lomo``: engine term fitted on the other models only;
``-profile-only``: no engine term) and prints a summary against the targets (|error| at the
median <= 5%, at P99 <= 10%) followed by the per-case tables.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HEAD = ("| case | rate req/s | TTFT P50 | TTFT P90 | TTFT P99 | TPOT P50 | TPOT P90 | TPOT P99 "
        "| E2E P50 | E2E P90 | E2E P99 | TBT P50 | TBT P99 | per-req median APE TTFT / TPOT / E2E |")
RULE = "|" + "---|" * 14
METRICS = ("ttft_s", "tpot_s", "e2e_s")
VARIANTS = {"": "shipped cost model (profile + engine term)",
            "held-out": "shipped cost model; its engine term never saw this model",
            "lomo": "engine term fitted on the other models only",
            "profile-only": "profile alone (no engine term): before the fix"}
TARGET_P50, TARGET_P99 = 5.0, 10.0


def _e(case: dict, metric: str, q: int) -> str:
    v = case[metric][f"p{q}"]["err_pct"]
    return "n/a" if v != v else f"{v:+.1f}%"


def _row(case: dict) -> str:
    cells = [case["case"], f"{case.get('rate_req_s', float('nan')):.2f}"]
    for m in METRICS:
        cells += [_e(case, m, q) for q in (50, 90, 99)]
    cells += [_e(case, "tbt_s", 50), _e(case, "tbt_s", 99)]
    cells.append(" / ".join(f"{case[m]['per_request_median_ape_pct']:.1f}%" for m in METRICS))
    return "| " + " | ".join(cells) + " |"


def _values(case: dict) -> str:
    """Real and simulated P50 / P99 in milliseconds (what the errors are relative to)."""
    parts = []
    for m, name in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "E2E")):
        p50, p99 = case[m]["p50"], case[m]["p99"]
        parts.append(f"{name} P50 {1e3 * p50['real']:.1f}/{1e3 * p50['sim']:.1f}, "
                     f"P99 {1e3 * p99['real']:.1f}/{1e3 * p99['sim']:.1f}")
    return f"| {case['case']} | " + "; ".join(parts) + " |"


def _iterations(case: dict) -> str:
    parts = []
    for kind, s in sorted(case["iterations"].items()):
        parts.append(f"{kind}: n={s['n']}, wall {s['median_wall_ms']:.2f} ms, GPU "
                     f"{s['median_gpu_ms']:.2f} ms, host after GPU {s['median_host_ms']:.2f} ms")
    return f"| {case['case']} | " + "; ".join(parts) + " |"


def case_table(report: dict, details: bool = True) -> str:
    cases = report["cases"]
    lines = [f"cost model: {cases[0]['cost_model'] if cases else '-'}", ""]
    stale = [c["case"] for c in cases if not c.get("spec_decisions", {}).get("same", True)]
    if stale:
        lines += [f"**Warning:** the simulator's speculation code changed since {', '.join(stale)} "
                  "ran (`spec_decisions` in fidelity.json): re-run them on the GPU.", ""]
    lines += [HEAD, RULE]
    lines += [_row(c) for c in cases]
    if details:
        lines += ["", "| case | real / simulated, ms |", "|---|---|"] + [_values(c) for c in cases]
        lines += ["", "| case | per-iteration medians of the real run |", "|---|---|"]
        lines += [_iterations(c) for c in cases]
    return "\n".join(lines)


def summary_row(label: str, variant: str, report: dict) -> str:
    """Absolute percentile errors of TTFT, TPOT and E2E over every case of one report."""
    p50 = np.array([abs(c[m]["p50"]["err_pct"]) for c in report["cases"] for m in METRICS])
    p99 = np.array([abs(c[m]["p99"]["err_pct"]) for c in report["cases"] for m in METRICS])
    return (f"| {label} | {VARIANTS.get(variant, variant)} | {len(report['cases'])} | "
            f"{np.median(p50):.1f}% / {p50.max():.1f}% | {np.median(p99):.1f}% / {p99.max():.1f}% | "
            f"{int((p50 <= TARGET_P50).sum())}/{p50.size} | {int((p99 <= TARGET_P99).sum())}/"
            f"{p99.size} |")


def _reports(root: Path):
    for f in sorted(Path(root).glob("*/*/fidelity*.json")):
        variant = f.stem[len("fidelity-"):] if f.stem != "fidelity" else ""
        yield f.parent.parent.name, f.parent.name, variant, json.loads(f.read_text())


def _model_of(folder: Path) -> str:
    """The model a folder of cases serves (derived folders such as ``spec-llama-3.1-8b`` are
    named after their feature, not their model): the first case's config says."""
    import yaml

    for cfg in sorted(folder.glob("*/config.yaml")):
        return str(yaml.safe_load(cfg.read_text())["cluster"][0]["model"])
    return folder.name


def _held_out(gpu: str, model: str) -> bool:
    """Was the shipped engine term of ``gpu`` fitted without any run of ``model``?"""
    from goodput.sim.costmodel.engine import ENGINE_FILE
    from goodput.sim.costmodel.profiled import PROFILES_ROOT

    gpu = gpu.split("-")[0]  # h200-fastattn: the H200's runs with another attention kernel
    path = PROFILES_ROOT / gpu / ENGINE_FILE
    if not path.exists():
        return False
    fitted = json.loads(path.read_text()).get("fitted_on", [])
    return not any(f.split("/")[0] == model for f in fitted)


def markdown_report(root: Path) -> str:
    reports = list(_reports(root))
    if not reports:
        raise FileNotFoundError(f"no */*/fidelity*.json under '{root}'; run `goodput fidelity "
                                "compare DIR` first")
    order = {v: i for i, v in enumerate(VARIANTS)}
    reports.sort(key=lambda r: (r[0], order.get(r[2], 9), r[1]))
    reports = [(g, m, "held-out" if not v and _held_out(g, _model_of(Path(root) / g / m)) else v,
                rep) for g, m, v, rep in reports]
    out = ["| GPU / model | cost model | cases | abs. P50 error: median / max | abs. P99 error: "
           "median / max | P50 within 5% | P99 within 10% |", "|---|---|---|---|---|---|---|"]
    out += [summary_row(f"{g} / {m}", v, rep) for g, m, v, rep in reports]
    out.append("")
    out.append("(TTFT, TPOT and E2E at every case: 3 cells per case and percentile.)")
    out.append("")
    for g, m, v, rep in reports:
        prov = rep.get("measured_on") or {}
        out += [f"### {g} / {m}: {VARIANTS.get(v, v)}", "",
                f"Real runs on {prov.get('device_name', '?')}, driver {prov.get('driver', '?')}, "
                f"torch {prov.get('torch', '?')}, CUDA {prov.get('cuda', '?')}, "
                f"{prov.get('date_utc', '?')}. Errors are simulated / real - 1.", "",
                case_table(rep, details=not v), ""]
    return "\n".join(out)
