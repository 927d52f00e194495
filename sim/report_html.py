"""report.html: one self-contained page per run that a person opens in a browser.

The page is the run's summary.json as tables (requests, throughput, SLO, latency percentiles in
ms, load, cost, and the blocks a run has only sometimes: prefix cache, compound requests,
disaggregation, speculation), its plots embedded as base64 PNGs, and where it came from
(version, commit, config hash, trace). Self-contained on purpose: it can be mailed, attached to
an issue or opened from a CI artifact with nothing beside it, and nothing is fetched when it
opens. Built from plain string templates with ``html.escape`` on every value, so a trace path or
a group name can never inject markup, and no template engine is needed.

The helpers (``page``, ``table``, ``kv_table``, ``image``, ``write_atomic``) are shared with the
planner's report (goodput.planner.report_html).
"""
from __future__ import annotations

import base64
import html
import json
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

REPORT = "report.html"

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;
 margin:0 auto;max-width:1180px;padding:24px 28px;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde}
.sub{color:#5b6475;margin:0 0 16px;word-break:break-all}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}
.card{border:1px solid #dde;border-radius:6px;padding:8px 14px;min-width:150px}
.card b{display:block;font-size:20px} .card span{color:#5b6475;font-size:12px}
.ok{color:#17803d} .bad{color:#b42318}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid #dde;padding:3px 9px;text-align:right;vertical-align:top}
th{background:#f3f5f9} td:first-child,th:first-child{text-align:left}
td.t{text-align:left;overflow-wrap:anywhere;max-width:460px}
img{max-width:100%;border:1px solid #eef;margin:6px 0}
footer{color:#8a93a5;font-size:12px;margin-top:32px}
.row{display:flex;flex-wrap:wrap;gap:0 36px;align-items:flex-start}
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def fmt(value) -> str:
    """A summary value as text: ints with separators, floats to 4 significant digits, None as a
    dash, bools as yes/no, lists and dicts as compact JSON."""
    if value is None or value == {} or value == []:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:,.0f}" if abs(value) >= 1e5 else f"{value:.4g}"
    if isinstance(value, list | dict):
        return json.dumps(value, default=str)
    return str(value)


def table(header: Sequence[str], rows: Iterable[Sequence], cls: str = "") -> str:
    """An HTML table; cells are formatted with ``fmt`` and escaped; text cells align left."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, v in enumerate(row):
            text = v if isinstance(v, str) else fmt(v)
            left = ' class="t"' if i and isinstance(v, str) else ""
            cells.append(f"<td{left}>{esc(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    attr = f' class="{esc(cls)}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def flatten(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    """Nested dict -> (dotted key, leaf value) rows, for the blocks shown as they are."""
    rows: list[tuple[str, object]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            rows.extend(flatten(v, key + "."))
        else:
            rows.append((key, v))
    return rows


def kv_table(d: dict | None, names: dict[str, str] | None = None) -> str:
    """A two-column table of a (nested) dict: field, value."""
    if not d:
        return "<p>—</p>"
    rows = [((names or {}).get(k, k), v) for k, v in flatten(d)]
    return table(("field", "value"), rows)


def image(path: Path, alt: str) -> str:
    """``path`` (a PNG) as an inline ``<img>``: the page needs no file beside it."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{data}"></figure>'


def card(label: str, value: str, good: bool | None = None) -> str:
    cls = "" if good is None else (' class="ok"' if good else ' class="bad"')
    return f"<div class=\"card\"><b{cls}>{esc(value)}</b><span>{esc(label)}</span></div>"


def page(title: str, subtitle: str, sections: Iterable[str], version: str = "") -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width\"><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{esc(title)}</h1>"
            f"<p class=\"sub\">{esc(subtitle)}</p>{''.join(sections)}"
            f"<footer>goodput {esc(version)}: a self-contained page (plots embedded); the numbers "
            "are the run's summary.json.</footer></body></html>\n")


def section(title: str, *parts: str) -> str:
    return f"<section><h2>{esc(title)}</h2>{''.join(parts)}</section>"


def row(*sections: str) -> str:
    """Sections side by side where the page is wide enough (small tables read better so)."""
    return f"<div class=\"row\">{''.join(sections)}</div>"


def write_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary sibling and a rename: never half a page."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ------------------------------------------------------------------ the run's page
LATENCY_ROWS = (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "end to end"),
                ("queueing_delay_s", "queueing"),
                ("normalized_latency_s_per_token", "e2e per output token"),
                ("max_tbt_s", "max inter-token gap"))
#: summary blocks a run has only sometimes, with their headings
OPTIONAL = (("prefix_cache", "Prefix cache"), ("compound", "Compound requests (sessions, RAG)"),
            ("disaggregation", "Disaggregated prefill/decode"), ("speculation", "Speculative decoding"))
SHOWN = {"sim_duration_s", "counts", "throughput", "latency", "slo", "utilisation", "timeseries",
         "cost", "energy_upper_bound", "tokens", "load", "cost_model", "wall_s", "provenance",
         "preemptions", "migrations", "migrated_bytes", *(k for k, _ in OPTIONAL)}


def latency_table(summary: dict) -> str:
    """Latency percentiles in ms: one row per metric, one column per statistic."""
    lat = summary.get("latency") or {}
    stats: list[str] = []
    for block in lat.values():
        stats += [k for k in (block or {}) if k not in stats]
    rows = [[name, *(_ms((lat.get(key) or {}).get(s)) for s in stats)]
            for key, name in LATENCY_ROWS if key in lat]
    tokens = summary.get("tokens") or {}
    itl = {k[4:-2]: v for k, v in tokens.items() if k.startswith("tbt_") and k.endswith("_s")}
    if itl:
        rows.append(["inter-token latency, every token", *(_ms(itl.get(s)) for s in stats)])
    return table(("latency (ms)", *stats), rows)


def _ms(v):
    return None if v is None else float(v) * 1e3


def _cluster_rows(summary: dict) -> list[list]:
    cluster = ((summary.get("provenance") or {}).get("config") or {}).get("cluster") or []
    return [[g.get("name") or f"group {i}", g.get("model"), g.get("gpu"), g.get("tp"), g.get("pp", 1),
             g.get("count"), g.get("role", "mixed"), g.get("policy") or "(scheduler's)"]
            for i, g in enumerate(cluster)]


def provenance_table(prov: dict) -> str:
    trace = prov.get("trace") or {}
    rows = [("goodput version", prov.get("goodput_version")), ("commit", prov.get("git_commit")),
            ("command", prov.get("command")), ("config sha256", prov.get("config_sha256")),
            ("seed", prov.get("seed")), ("python", prov.get("python"))]
    rows += [(f"trace {k}", v) for k, v in trace.items() if not isinstance(v, dict)]
    for group, cm in (prov.get("cost_models") or {}).items():
        err = (cm or {}).get("error_estimate") or {}
        rows.append((f"cost model {group}", err.get("label") or cm.get("source")))
    return table(("field", "value"), [(k, v if isinstance(v, str) else fmt(v)) for k, v in rows])


def run_report(summary: dict, plots: Iterable[Path] = (), title: str | None = None) -> str:
    """The HTML page of a run's ``summary`` (summary.json) with ``plots`` (PNG paths) embedded."""
    prov = summary.get("provenance") or {}
    slo, cost, thr = summary.get("slo") or {}, summary.get("cost") or {}, summary.get("throughput") or {}
    counts = summary.get("counts") or {}
    met = slo.get("meets_target")
    cards = "".join([
        card(f"SLO attainment (target {fmt(slo.get('attainment_target'))})",
             f"{slo['attainment']:.1%}" if slo.get("attainment") is not None else "—", met),
        card("cluster cost", f"${cost['cluster_usd_per_hour']:.2f}/h"
             if cost.get("cluster_usd_per_hour") is not None else "—"),
        card("completed / total requests", f"{counts.get('completed', 0):,} / {counts.get('total', 0):,}"),
        card("throughput, output tokens/s", fmt(thr.get("output_tok_per_s"))),
        card("simulated time", f"{fmt(summary.get('sim_duration_s'))} s")])
    slo_rows = {k: v for k, v in slo.items() if k != "per_class"}
    parts = [f"<div class=\"cards\">{cards}</div>",
             section("Cluster", table(("group", "model", "GPU", "TP", "PP", "instances", "role",
                                       "policy"), _cluster_rows(summary))),
             row(section("Requests", kv_table(counts)), section("Throughput", kv_table(thr)),
                 section("SLO", kv_table(slo_rows), _per_class(slo.get("per_class")))),
             section("Latency", latency_table(summary)),
             row(section("Load and utilisation", kv_table({"load": summary.get("load"),
                                                           "utilisation": summary.get("utilisation"),
                                                           "timeseries": summary.get("timeseries")})),
                 section("Cost and energy", kv_table({"cost": cost, "energy (upper bound)":
                                                      summary.get("energy_upper_bound")})))]
    parts += [section(name, kv_table(summary[key])) for key, name in OPTIONAL if summary.get(key)]
    other = {k: v for k, v in summary.items() if k not in SHOWN and isinstance(v, dict) and v}
    if other:
        parts.append(section("Other", kv_table(other)))
    parts.append(section("Plots", *(image(p, p.stem) for p in plots)) if plots else "")
    parts.append(section("Provenance", provenance_table(prov)))
    groups = ", ".join(f"{r[5]} x {r[1]} on {r[2]} tp{r[3]}" for r in _cluster_rows(summary))
    subtitle = f"{groups} | trace {(prov.get('trace') or {}).get('path', '?')}"
    return page(title or "goodput run", subtitle, parts, str(prov.get("goodput_version", "")))


def _per_class(per_class: dict | None) -> str:
    if not per_class or len(per_class) < 2:
        return ""
    cols = list(dict.fromkeys(k for v in per_class.values() for k in v))
    return table(("class", *cols), [[name, *(v.get(c) for c in cols)] for name, v in per_class.items()])


def write_run_report(out_dir: Path, summary: dict) -> Path:
    """``out_dir/report.html`` of the run whose files are in ``out_dir`` (its PNGs embedded)."""
    out = Path(out_dir)
    plots = [p for p in (out / "latency_cdfs.png", out / "timeseries.png") if p.exists()]
    return write_atomic(out / REPORT, run_report(summary, plots))
