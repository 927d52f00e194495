"""Summary figures of sessions, closed-loop clients and compound requests (``summary.compound``).

The request table's figures (goodput.sim.metrics) stay what they are: one row per trace request, so a rag
request's TTFT is the time to the first token of its answer and its e2e latency covers all its
steps. This adds what only the driver and the steps table know: latency per step type (plan,
retrieve, generate), the SLO on each LLM call of a rag request (``slo.ttft_s`` / ``slo.tpot_s``
per call), the whole-request SLO (``slo.e2e_s``), and the closed loop's Little's law figures.
Conventions as goodput.sim.metrics: latency statistics over completed steps or requests, attainment
over all of them (a rejected or unfinished one is a miss).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from goodput.sim.metrics import PERCENTILES, _clean, _stats


def step_metrics(steps: pd.DataFrame) -> pd.DataFrame:
    """Copy of the steps table with latency_s (end - start: queueing and service), queue_s
    (first service - start), and for LLM calls ttft_s and tpot_s."""
    df = steps.copy()
    start, end = df["start_s"].to_numpy(float), df["end_s"].to_numpy(float)
    first, out = df["first_token_s"].to_numpy(float), df["output_tokens"].to_numpy(float)
    df["latency_s"] = end - start
    df["queue_s"] = df["first_scheduled_s"].to_numpy(float) - start
    df["ttft_s"] = first - start
    with np.errstate(divide="ignore", invalid="ignore"):
        df["tpot_s"] = np.where(out > 1, (end - first) / (out - 1), np.nan)
    return df


def _met(ttft: np.ndarray, tpot: np.ndarray, done: np.ndarray, b_ttft, b_tpot) -> np.ndarray:
    ok = done.copy()
    if b_ttft is not None:
        ok &= ttft <= b_ttft
    if b_tpot is not None:
        ok &= np.isnan(tpot) | (tpot <= b_tpot)
    return ok


def compound_summary(requests: pd.DataFrame, steps: pd.DataFrame | None, clients: dict, slo,
                     sim_duration_s: float, percentiles=PERCENTILES) -> dict | None:
    """The ``compound`` block of a run summary; None for a plain open-loop replay of generate
    requests with no whole-request SLO (its summary stays as it was). ``requests`` carries the
    derived columns (goodput.sim.metrics.request_metrics); ``slo`` is the config's SLO section."""
    kinds = requests["kind"].astype(str) if "kind" in requests else pd.Series("generate", requests.index)
    plain = (kinds == "generate").all() and steps is None and not clients.get("sessions") \
        and clients.get("mode", "open") == "open"
    e2e_bound = getattr(slo, "e2e_s", None)
    if plain and e2e_bound is None:
        return None
    done = (requests["outcome"] == "completed").to_numpy()
    e2e = requests["e2e_s"].to_numpy(float)
    out: dict = {"clients": {k: v for k, v in clients.items() if k != "retrieval"}}
    out["kinds"] = {}
    for kind in sorted(kinds.unique()):
        m = (kinds == kind).to_numpy()
        out["kinds"][kind] = {"requests": int(m.sum()), "completed": int((m & done).sum()),
                              "e2e_s": _stats(e2e[m & done], percentiles),
                              "ttft_s": _stats(requests["ttft_s"].to_numpy(float)[m & done],
                                               percentiles)}
    if e2e_bound is not None:
        met = done & (e2e <= e2e_bound)
        out["e2e_slo"] = {"e2e_s": e2e_bound, "met": int(met.sum()),
                          "attainment": float(met.mean()) if len(met) else None,
                          "per_kind": {k: float(met[(kinds == k).to_numpy()].mean())
                                       for k in sorted(kinds.unique())}}
    if clients.get("mode") == "closed":
        n_done = int(done.sum())
        x = n_done / sim_duration_s if sim_duration_s > 0 else math.nan
        r = float(e2e[done].mean()) if n_done else math.nan
        z = clients.get("mean_think_s", math.nan)
        out["closed_loop"] = {"throughput_req_per_s": x, "mean_latency_s": r, "mean_think_s": z,
                              "littles_law_clients": x * (r + z)}
    if steps is not None and len(steps):
        out.update(_steps_block(step_metrics(steps), slo, sim_duration_s, clients, percentiles))
    return _clean(out)


def _steps_block(st: pd.DataFrame, slo, duration: float, clients: dict, percentiles) -> dict:
    done = (st["outcome"] == "completed").to_numpy()
    block: dict = {"steps": {}}
    types = st["type"].astype(str).to_numpy()
    for name in ("plan", "retrieve", "generate"):
        m = types == name
        if not m.any():
            continue
        block["steps"][name] = {"count": int(m.sum()), "completed": int((m & done).sum()),
                                "latency_s": _stats(st["latency_s"].to_numpy(float)[m & done],
                                                    percentiles),
                                "queue_s": _stats(st["queue_s"].to_numpy(float)[m & done],
                                                  percentiles)}
    calls = st["call_id"].to_numpy() < 0
    ttft, tpot = st["ttft_s"].to_numpy(float), st["tpot_s"].to_numpy(float)
    met = _met(ttft, tpot, done, slo.ttft_s, slo.tpot_s)[calls]
    block["llm_calls"] = {"calls": int(calls.sum()), "ttft_s": slo.ttft_s, "tpot_s": slo.tpot_s,
                          "met": int(met.sum()), "attainment": float(met.mean()) if len(met) else None,
                          "ttft": _stats(ttft[calls & done], percentiles),
                          "tpot": _stats(tpot[calls & done], percentiles)}
    retr = types == "retrieve"
    served = st["end_s"].to_numpy(float)[retr] - st["first_scheduled_s"].to_numpy(float)[retr]
    cap = (clients.get("retrieval") or {}).get("concurrency")
    busy = float(np.nansum(served))
    block["retrieval"] = {**(clients.get("retrieval") or {}), "retrievals": int(retr.sum()),
                          "busy_fraction": busy / (cap * duration) if cap and duration > 0 else None}
    return block


def write_steps(out_dir: Path, steps: pd.DataFrame | None, csv: bool = False) -> None:
    """``steps.parquet`` (and ``steps.csv``) with the derived step latencies, beside the request
    table, when the run had rag requests (into the run's staged folder: goodput.sim.outputs)."""
    if steps is None:
        return
    df = step_metrics(steps)
    df.to_parquet(Path(out_dir) / "steps.parquet", index=False)
    if csv:
        df.to_csv(Path(out_dir) / "steps.csv", index=False)


def compound_text(comp: dict) -> list[str]:
    """The summary's terminal lines for the ``compound`` block (goodput.sim.summary_text)."""
    from goodput.sim.summary_text import _fmt, _ms

    kinds = "  ".join(f"{k} {_fmt(v['completed'])}/{_fmt(v['requests'])}"
                      for k, v in comp["kinds"].items())
    line = f"{'compound':<12}completed {kinds}"
    if "e2e_slo" in comp:
        e = comp["e2e_slo"]
        line += f"  e2e<= {e['e2e_s']:g}s attainment {_fmt(e['attainment'], pct=True)}"
    if "llm_calls" in comp:
        line += f"  llm calls {_fmt(comp['llm_calls']['calls'])} slo " \
                f"{_fmt(comp['llm_calls']['attainment'], pct=True)}"
    lines = [line]
    c = comp["clients"]
    parts = [c["mode"], f"think {_fmt(c['think_time_s'])}s {c['think']}"]
    if c.get("sessions"):
        parts.append(f"sessions {_fmt(c['sessions'])} turns {_fmt(c['session_turns'])}")
    loop = comp.get("closed_loop")
    if loop:
        parts += [f"clients {_fmt(c['concurrency'])}",
                  f"X(R+Z) {_fmt(loop['littles_law_clients'])}"]
    lines.append(f"{'clients':<12}" + "  ".join(parts))
    if comp.get("steps"):
        cols = list(next(iter(comp["steps"].values()))["latency_s"])
        lines.append(f"{'steps (ms)':<32}" + "".join(f"{h:>10}" for h in cols))
        for name, st in comp["steps"].items():
            lines.append(f"  {name + ' x' + _fmt(st['count']):<30}" +
                         "".join(f"{_ms(st['latency_s'][k]):>10}" for k in cols))
    return lines
