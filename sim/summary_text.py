"""The terminal text of a run summary (``format_summary``): aligned rows, latencies in ms.

The JSON summary (goodput.sim.metrics.summarize, goodput.sim.run) stays the source of truth: this
only prints it.
"""
from __future__ import annotations


def _fmt(v, pct: bool = False) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if pct:
        return f"{100 * v:.1f}%"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"


#: latency column -> its row label in the printed summary (values in ms)
_MS_LABELS = {"ttft_s": "ttft", "tpot_s": "tpot", "e2e_s": "e2e", "queueing_delay_s": "queueing",
              "normalized_latency_s_per_token": "e2e per output token", "max_tbt_s": "max itl"}


def _ms(v) -> str:
    return "-" if v is None else _fmt(1000.0 * v)


def format_summary(s: dict) -> str:
    """Compact aligned text for the terminal; the JSON summary stays the source of truth."""
    c, t, slo, cost = s["counts"], s["throughput"], s["slo"], s["cost"]
    ts, en = s["timeseries"], s["energy_upper_bound"]
    kv = lambda pairs: "  ".join(f"{k} {v}" for k, v in pairs)  # noqa: E731
    rej = ", ".join(f"{k}={v}" for k, v in c["rejected_by_reason"].items())
    bound = lambda b: "-" if b is None else f"{b:g}s"  # noqa: E731
    lines = [
        f"{'requests':<12}" + kv([("total", _fmt(c["total"])), ("completed", _fmt(c["completed"])),
                                  ("rejected", _fmt(c["rejected"]) + (f" ({rej})" if rej else "")),
                                  ("unfinished", _fmt(c["unfinished"]))]),
        f"{'throughput':<12}" + kv([("req/s", _fmt(t["completed_req_per_s"])),
                                    ("out tok/s", _fmt(t["output_tok_per_s"])),
                                    ("total tok/s", _fmt(t["total_tok_per_s"]))]),
        f"{'slo':<12}" + kv([("ttft<=", bound(slo["ttft_s"])), ("tpot<=", bound(slo["tpot_s"])),
                             ("attainment", _fmt(slo["attainment"], pct=True)),
                             ("target", _fmt(slo["attainment_target"], pct=True)),
                             ("met", _fmt(slo["meets_target"])),
                             ("goodput req/s", _fmt(slo["goodput_req_per_s"]))]),
    ]
    if len(slo["per_class"]) > 1:
        lines += [f"{'':<12}class {k}: {_fmt(v['attainment'], pct=True)} of {v['requests']:,}"
                  for k, v in slo["per_class"].items()]
    lines.append(f"{'cluster':<12}" + kv([
        ("busy", _fmt(s["utilisation"]["mean_busy_fraction"], pct=True)),
        ("kv mean", _fmt(ts["kv_mean_used_fraction"], pct=True)),
        ("kv max", _fmt(ts["kv_max_used_fraction"], pct=True)),
        ("batch", _fmt(ts["mean_batch_size"])), ("preempt", _fmt(s["preemptions"])),
        ("migrations", _fmt(s["migrations"]))]))
    lines.append(f"{'cost':<12}" + kv([("$/h", _fmt(cost["cluster_usd_per_hour"])),
                                       ("run $", _fmt(cost["run_usd"])),
                                       ("$/M out tok", _fmt(cost["usd_per_million_output_tokens"])),
                                       ("$/M tok", _fmt(cost["usd_per_million_total_tokens"])),
                                       ("kWh busy@TDP", _fmt(en["busy_at_tdp_kwh"]))]))
    d = s.get("disaggregation")
    if d:
        link = d.get("busiest_link") or {}
        lines.append(f"{'kv hand-off':<12}" + kv([
            ("mode", d["mode"]), ("requests", _fmt(d["handed_off"])), ("GB", _fmt(d["bytes"] / 1e9)),
            ("p50 s", _fmt(d["kv_handoff_s"]["p50"])), ("p99 s", _fmt(d["kv_handoff_s"]["p99"])),
            ("failed", _fmt(d["failed"])),
            ("busiest link", f"{link.get('link', '-')} {_fmt(link.get('utilisation'), pct=True)}")]))
    pc = s.get("prefix_cache")
    if pc:
        lines.append(f"{'prefixes':<12}" + kv([
            ("requests hit", _fmt(pc["request_hit_rate"], pct=True)),
            ("prompt tokens cached", _fmt(pc["token_hit_rate"], pct=True)),
            ("tokens saved", _fmt(pc["cached_tokens"])),
            ("evicted GB", _fmt(pc["gpu_evicted_gb"])),
            ("reloaded GB", _fmt(pc["reloaded_host_gb"] + pc["reloaded_remote_gb"]))]))
    load = s.get("load")
    if load:
        lines.append(f"{'load':<12}" + kv([
            ("offered tok/s", _fmt(load["offered_tok_per_s"])),
            ("processed tok/s", _fmt(load["processed_tok_per_s"])),
            ("processed", _fmt(load["processed_fraction"], pct=True)),
            ("busy", _fmt(load["busy_fraction"], pct=True)),
            ("batch fill", _fmt(load["batch_fill_when_busy"], pct=True)),
            ("headroom", _fmt(load["headroom"], pct=True))]))
    if s.get("compound"):  # sessions, closed loop, embed / rag (docs/compound.md)
        from goodput.sim.compound_metrics import compound_text
        lines += compound_text(s["compound"])
    cols = list(next(iter(s["latency"].values()), {"mean": None}))
    lines.append(f"{'latency (ms)':<32}" + "".join(f"{h:>10}" for h in cols))
    for name, st in s["latency"].items():
        label = _MS_LABELS.get(name, name)
        lines.append(f"  {label:<30}" + "".join(f"{_ms(st[k]):>10}" for k in cols))
    tok = s.get("tokens") or {}
    tbt = {k[len("tbt_"):-len("_s")]: v for k, v in tok.items() if k.startswith("tbt_p")}
    if tbt and any(v is not None for v in tbt.values()):
        lines.append(f"  {'itl, every token':<30}" + "".join(
            f"{_ms(tbt.get(k)) if k in tbt else '':>10}" for k in cols))
    return "\n".join(lines)
