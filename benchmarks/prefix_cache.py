"""Prefix caching on the Mooncake trace: hit rate vs cache size, TTFT with and without caching
and with cache-aware routing.

Llama-3.1-8B on H200s (the H200 profile measured with the fastest attention kernel per shape up
to 128k tokens, ``profiler/profiles/h200-fastattn``, since Mooncake prompts average 15k tokens;
roofline where it is absent), vLLM batching, the trace's own timestamps. Two tables:

1. *hit rate vs cache size*: the cluster with cache-aware routing, each instance's GPU KV cache
   pinned to N blocks of 16 tokens (``scheduler.num_gpu_blocks``; "full" = what fits next to
   the weights), with and without a host DRAM tier; the hit rate of an unbounded cache (every
   full 512-token block ever computed kept) is the ceiling.
2. *serving*: a cluster of ``--instances`` H200s, no caching vs caching with round robin vs
   caching with cache-aware routing (``router.name: prefix_aware``) vs that plus a host tier:
   token and request hit rate, TTFT p50/p90, mean queueing and the prefill tokens saved.

Usage: python benchmarks/prefix_cache.py [--trace PATH] [--instances 4] [--requests N]
(the Mooncake file is read from ../shared/traces when present; a generated Mooncake-format
trace otherwise). Prints markdown tables; docs/prefix_caching.md quotes its output.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from goodput.sim.config import InstanceGroupConfig, SimConfig
from goodput.sim.metrics import request_metrics
from goodput.sim.simulator import simulate
from goodput.sim.workload.loaders import load_trace

REPO = Path(__file__).resolve().parents[1]
MOONCAKE = REPO.parent / "shared" / "traces" / "mooncake_synthetic_trace.jsonl"
FAST_PROFILE = REPO / "profiler" / "profiles" / "h200-fastattn" / "llama-3.1-8b" / "tp1"


def unbounded_reuse(df) -> float:
    """Share of prompt tokens an unbounded cache of full 512-token blocks serves (first come)."""
    seen: set = set()
    reused = total = 0
    for prompt, ids in zip(df.prompt_tokens, df.prefix_blocks, strict=True):
        blocks = ids.split() if ids else []
        k = 0
        for b in blocks[: (prompt - 1) // 512]:
            if b not in seen:
                break
            k += 1
        reused += k * 512
        total += prompt
        seen.update(blocks[: prompt // 512])
    return reused / total


def config(instances: int, *, cache: bool, router: str = "round_robin", blocks: int | None = None,
           host_gb: float = 0.0) -> SimConfig:
    cfg = SimConfig(cluster=[InstanceGroupConfig(model="llama-3.1-8b", gpu="h200", count=instances)])
    if FAST_PROFILE.exists():
        cfg.cost_model.kind, cfg.cost_model.profile_dir = "profiled", str(FAST_PROFILE)
    else:
        cfg.cost_model.kind = "roofline"
    cfg.scheduler.num_gpu_blocks = blocks
    cfg.router.name = router
    pc = cfg.scheduler.section("prefix_cache")
    pc.enabled, pc.host_gb = cache, host_gb
    return cfg


def row(res) -> dict:
    q = request_metrics(res.requests)
    admitted = q[q.first_scheduled_s.notna()]
    done = q[q.outcome == "completed"]
    return {"token_hit": admitted.cached_tokens.sum() / admitted.prompt_tokens.sum(),
            "request_hit": float((admitted.cached_tokens > 0).mean()),
            "ttft_p50": float(np.nanpercentile(done.ttft_s, 50)),
            "ttft_p90": float(np.nanpercentile(done.ttft_s, 90)),
            "queue_mean": float(np.nanmean(done.queueing_delay_s)),
            "saved_mtok": admitted.cached_tokens.sum() / 1e6,
            "completed": len(done), "rejected": int((q.outcome == "rejected").sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", default=str(MOONCAKE))
    ap.add_argument("--instances", type=int, default=4)
    ap.add_argument("--requests", type=int, default=None, help="first N requests only")
    ap.add_argument("--sizes", default="4096,16384,full",
                    help="GPU KV blocks (16 tokens) per instance; full = what the memory holds")
    ap.add_argument("--host-gb", type=float, default=512.0)
    args = ap.parse_args()
    if not Path(args.trace).exists():
        raise SystemExit(f"{args.trace} not found: pass --trace (a Mooncake-format JSON lines file)")
    trace = load_trace(args.trace)
    df = trace.df if args.requests is None else trace.df.iloc[: args.requests]
    distinct = len({b for ids in df.prefix_blocks for b in ids.split()})
    print(f"trace {Path(args.trace).name}: {len(df):,} requests over {df.arrival_s.iloc[-1]:.0f} s, "
          f"prompt mean {df.prompt_tokens.mean():,.0f} tokens; {distinct:,} distinct prefix blocks "
          f"({distinct * 512 / 1e6:.1f}M tokens); unbounded-cache reuse {unbounded_reuse(df):.1%} "
          "of prompt tokens")
    print(f"cost model: {'H200 fast-attention profile' if FAST_PROFILE.exists() else 'roofline'}\n")
    n = args.instances
    print(f"{n} x H200, cache-aware routing:\n")
    print("| GPU KV cache per instance (tokens) | host tier | token hit | request hit | TTFT p50 s "
          "| TTFT p90 s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes.split(","):
        blocks = None if size == "full" else int(size)
        for host in (0.0, args.host_gb):
            res = simulate(config(n, cache=True, router="prefix_aware", blocks=blocks, host_gb=host), df)
            r = row(res)
            tokens = int(res.instances.kv_tokens.iloc[0])
            print(f"| {tokens:,}{' (full)' if blocks is None else ''} | {host:g} GB | {r['token_hit']:.1%} "
                  f"| {r['request_hit']:.1%} | {r['ttft_p50']:.2f} | {r['ttft_p90']:.2f} |")
    print(f"\n{n} x H200, full GPU KV cache each:\n")
    print("| design | token hit | request hit | TTFT p50 s | TTFT p90 s | queueing mean s "
          "| prefill Mtok saved |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, kw in (("no prefix caching", {"cache": False}),
                     ("caching, round robin", {"cache": True}),
                     ("caching, least outstanding tokens",
                      {"cache": True, "router": "least_outstanding_tokens"}),
                     ("caching, cache-aware routing", {"cache": True, "router": "prefix_aware"}),
                     (f"cache-aware + {args.host_gb:g} GB host tier",
                      {"cache": True, "router": "prefix_aware", "host_gb": args.host_gb})):
        r = row(simulate(config(n, **kw), df))
        print(f"| {name} | {r['token_hit']:.1%} | {r['request_hit']:.1%} | {r['ttft_p50']:.2f} "
              f"| {r['ttft_p90']:.2f} | {r['queue_mean']:.2f} | {r['saved_mtok']:.1f} |")


if __name__ == "__main__":
    main()
