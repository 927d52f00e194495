"""The prefix-cache block of a run summary: hit rates, prefill tokens saved, tier traffic.

Hit figures come from the per-request records (``cached_tokens``: prompt tokens the cache served
at a request's last admission, so a preempted request that found its own prefix again counts
once), tier traffic from the instances' cache counters (``goodput.sim.engine.prefix_cache``).
"""
from __future__ import annotations

import pandas as pd

TRAFFIC = ("prefix_gpu_evicted_gb", "prefix_offloaded_host_gb", "prefix_offloaded_remote_gb",
           "prefix_reloaded_host_gb", "prefix_reloaded_remote_gb")


def prefix_summary(requests: pd.DataFrame, instances: pd.DataFrame) -> dict:
    admitted = requests[requests["first_scheduled_s"].notna()]
    cached = admitted["cached_tokens"].astype(float)
    prompt = float(admitted["prompt_tokens"].astype(float).sum())
    hits = int((cached > 0).sum())
    out = {
        "requests_admitted": len(admitted),
        "requests_hit": hits,
        "request_hit_rate": hits / len(admitted) if len(admitted) else None,
        "prompt_tokens": int(prompt),
        "cached_tokens": int(cached.sum()),
        "token_hit_rate": float(cached.sum()) / prompt if prompt else None,
    }
    for col in TRAFFIC:
        out[col.removeprefix("prefix_")] = float(instances[col].sum()) if col in instances else 0.0
    dropped = instances.get("prefix_units_dropped")
    out["units_dropped"] = int(dropped.sum()) if dropped is not None else 0
    return out
