"""Simulator speed and memory: simulated requests per wall-second and peak memory.

Scenarios (each in a fresh subprocess so peak RSS is its own):
  azure-conv   the real Azure LLM conversation trace (19,366 requests), Llama-3.1-8B on 4 x H100,
               vLLM batching, least-outstanding-tokens routing (skipped if ../shared/traces lacks it)
  synth-N      N synthetic requests (Poisson, lognormal lengths like the conv trace) streamed in
               chunks through the same 4-instance cluster, for N = 100k and 1M
  vidur-N      Vidur's own reference configuration, near saturation: Llama-3.1-70B (the Llama-3-70B
               architecture) on A100-80GB, 4 instances x TP2, Sarathi-Serve chunk = token budget
               512, max batch 128, block 16, 3,328 KV blocks per instance (what Vidur computes for
               it), round robin, Poisson 4 req/s, Azure conversation lengths with each request's
               total capped at 4,096 tokens by Vidur's rule (the excess taken from prompt and output
               in proportion), for N = 10k, 100k, 1M (skipped without ../shared/traces)
  spec-conv    the azure-conv scenario with SmartSpec speculative decoding (Llama-3.2-1B draft,
               acceptance 0.8, k = 0..8 chosen per batch)
  mooncake-prefix  Mooncake's trace (3,993 multi-turn requests, prompts 15k tokens on average)
               on 4 x H200 with prefix caching, a 512 GB host tier and cache-aware routing
  *-step       the same with fast-forward off (one event per iteration), for comparison

Usage: python benchmarks/sim_speed.py [--quick] [--scenarios a,b] [--python .venv-compiled/bin/python]
                                     [--repeat N]
(``--python``: run the scenarios under another interpreter -- ``make bench-compiled`` gives the
compiled build's, see ``make compiled``)
Prints one line per scenario: requests, wall seconds, requests per wall-second, CPU seconds of the
simulating process and requests per CPU-second (less sensitive to other load on the machine), peak
RSS, SimPy events per request, and the machine's load average while it ran; then the memory per
request (peak RSS growth between two sizes of one scenario divided by the extra requests), how
flat the per-request cost is from the smallest to the largest size, and the targets. For the real
trace, how long loading and validating it took is printed apart (kept out of the req/s figure).

Each scenario of up to ``REPEAT_MAX_REQUESTS`` requests runs ``--repeat`` times (default 3), each
in a fresh process, and its row is the run that used the least CPU, with ``spread`` the slowest
run's CPU seconds over the fastest's: on a shared machine one run's CPU time varies by up to 2x
(other tenants' work slows the core it runs on), and the fastest run is the one least disturbed,
as ``timeit`` reports it. The targets quote the fastest run and the slowest beside it. The 1M
runs take a minute each and run once.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AZURE_CONV = REPO.parent / "shared" / "traces" / "AzureLLMInferenceTrace_conv.csv"
MOONCAKE = REPO.parent / "shared" / "traces" / "mooncake_synthetic_trace.jsonl"
#: the issue's targets (engine speed): req/s on one core, and the 1M-request run's bounds
TARGETS = {"vidur": 20_000, "demo": 50_000}
MAX_1M_S, MAX_1M_MB, FLAT = 60.0, 600.0, 0.10
#: scenarios this large run once however many repeats are asked for
REPEAT_MAX_REQUESTS = 200_000


def vidur_lengths(max_tokens: int = 4096):
    """Azure conversation (prompt, output) pairs with each total capped at ``max_tokens`` the way
    Vidur's trace length generator does it: the excess is taken from prompt and output in
    proportion to their share (rounded up), keeping at least one token of each."""
    import numpy as np
    import pandas as pd

    df = pd.read_csv(AZURE_CONV, usecols=["ContextTokens", "GeneratedTokens"])
    p = df["ContextTokens"].to_numpy(np.int64)
    o = df["GeneratedTokens"].to_numpy(np.int64)
    total = p + o
    excess = np.clip(total - max_tokens, 0, None)
    p2 = np.clip(p - np.ceil(excess * p / total).astype(np.int64), 1, None)
    o2 = np.clip(o - np.ceil(excess * o / total).astype(np.int64), 1, None)
    return np.stack([p2, o2], axis=1)


def _vidur_config(fast: bool):
    from goodput.sim.config import InstanceGroupConfig, SimConfig

    cfg = SimConfig(cluster=[InstanceGroupConfig(model="llama-3.1-70b", gpu="a100-80gb", tp=2, count=4)])
    cfg.router.name = "round_robin"
    cfg.cost_model.kind = "roofline"
    cfg.fast_forward = fast
    cfg.output.timeseries_interval_s = 5.0
    s = cfg.scheduler
    s.policy, s.max_batch_size, s.block_size, s.num_gpu_blocks = "sarathi", 128, 16, 3328
    opts = s.section("sarathi")
    opts.chunk_size = opts.token_budget = 512
    return cfg


def _config(fast: bool, router: str = "round_robin"):
    from goodput.sim.config import InstanceGroupConfig, SimConfig

    cfg = SimConfig(cluster=[InstanceGroupConfig(model="llama-3.1-8b", gpu="h100", tp=1, count=4)])
    cfg.router.name = router
    cfg.cost_model.kind = "roofline"
    cfg.fast_forward = fast
    cfg.output.timeseries_interval_s = 5.0
    return cfg


def run_one(name: str) -> dict:
    """Runs inside the child process."""
    from goodput.sim.simulator import simulate
    from goodput.sim.workload.generators import synthesize_chunks
    from goodput.sim.workload.lengths import Empirical
    from goodput.sim.workload.loaders import load_trace

    fast = not name.endswith("-step")
    base = name.removesuffix("-step")
    cfg = _vidur_config(fast) if base.startswith("vidur") else _config(fast)
    if base == "mooncake-prefix":
        cfg.cluster[0].gpu, cfg.router.name = "h200", "prefix_aware"
        pc = cfg.scheduler.section("prefix_cache")
        pc.enabled, pc.host_gb = True, 512.0
    if base == "spec-conv":
        spec = cfg.scheduler.section("speculation")
        spec.method, spec.alpha, spec.draft_model = "smartspec", 0.8, "llama-3.2-1b"
        base = "azure-conv"
    load_s = None
    if base.startswith("vidur"):
        n = _size(base)
        requests = synthesize_chunks(n, rate=4.0, prompt_dist=Empirical(vidur_lengths(), "azure-conv"),
                                     seed=0, chunk=50_000)
    elif base == "mooncake-prefix":
        t_load = time.perf_counter()
        trace = load_trace(MOONCAKE)
        load_s = time.perf_counter() - t_load
        n, requests = len(trace), trace
    elif base == "azure-conv":
        t_load = time.perf_counter()
        trace = load_trace(AZURE_CONV)
        load_s = time.perf_counter() - t_load
        n, requests = len(trace), trace
    else:
        n = _size(base)
        requests = synthesize_chunks(n, rate=20.0,
                                     prompt_dist="lognormal:mean=1155,std=1100,min=4,max=8000",
                                     output_dist="lognormal:mean=211,std=160,min=1,max=2000",
                                     seed=0, chunk=50_000)
    load0 = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    res = simulate(cfg, requests, n)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    load = max(load0, os.getloadavg()[0])
    done = int((res.requests.outcome == "completed").sum())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"scenario": name, "requests": n, "completed": done, "wall_s": wall,
            "req_per_s": n / wall, "cpu_s": cpu, "req_per_cpu_s": n / cpu, "peak_rss_mb": peak_mb,
            "sim_time_s": res.sim_duration_s, "trace_load_s": load_s,
            "events_per_req": res.events / n, "load": load}


def _size(base: str) -> int:
    """10k -> 10_000, 1M -> 1_000_000 (the part after the last dash)."""
    tag = base.rsplit("-", 1)[1]
    return int(float(tag.rstrip("kM")) * (1_000_000 if tag.endswith("M") else 1_000))


def _print_row(row: dict) -> None:
    print(f"{row['scenario']:<18}{row['requests']:>10,}{row['completed']:>11,}{row['wall_s']:>9.2f}"
          f"{row['req_per_s']:>10,.0f}{row['cpu_s']:>9.2f}{row['req_per_cpu_s']:>11,.0f}"
          f"{row['peak_rss_mb']:>9.0f}{row['events_per_req']:>9.1f}{row['load']:>7.2f}"
          f"{row['runs']:>6}{row['spread']:>8.2f}", flush=True)


def _verdicts(by: dict) -> None:
    """Memory per request, flatness and the targets, from the rows measured. Flatness compares
    the median run of each size (the 1M runs are single, and the fastest of several small runs
    against one large one would lean toward growth)."""
    def cpu(row: dict) -> float:
        return row.get("cpu_s_median", row["cpu_s"])

    for family, small, big in (("synth", "synth-100k", "synth-1M"), ("vidur", "vidur-10k", "vidur-1M")):
        if small in by and big in by:
            a, b = by[small], by[big]
            per_req = (b["peak_rss_mb"] - a["peak_rss_mb"]) * 2**20 / (b["requests"] - a["requests"])
            us_a, us_b = 1e6 * cpu(a) / a["requests"], 1e6 * cpu(b) / b["requests"]
            print(f"{family}: memory growth per extra request {per_req:.0f} bytes; median CPU per request "
                  f"{us_a:.1f} us at {a['requests']:,} vs {us_b:.1f} us at {b['requests']:,} "
                  f"({us_b / us_a - 1:+.1%}, target within {FLAT:.0%})")
            mid = by.get(f"{family}-100k")
            if mid is not None and a is not mid:
                # the cost of each extra request, from the smallest size to 100k and from 100k to
                # the largest: what grows with N shows here without the fixed start-up cost
                lo = 1e6 * (cpu(mid) - cpu(a)) / (mid["requests"] - a["requests"])
                hi = 1e6 * (cpu(b) - cpu(mid)) / (b["requests"] - mid["requests"])
                print(f"{family}: CPU per extra request {lo:.1f} us from {a['requests']:,} to "
                      f"{mid['requests']:,}, {hi:.1f} us from {mid['requests']:,} to "
                      f"{b['requests']:,} ({hi / lo - 1:+.1%})")
    for label, names, target in (("vidur", ("vidur-10k", "vidur-100k", "vidur-1M"), TARGETS["vidur"]),
                                 ("demo", ("azure-conv",), TARGETS["demo"])):
        rows = [by[n] for n in names if n in by]
        if rows:
            low = min(rows, key=lambda r: r["req_per_cpu_s"])
            worst = low["req_per_cpu_s"]
            runs = (f"fastest of {low['runs']} runs, the slowest "
                    f"{low['requests'] / (low['cpu_s'] * low['spread']):,.0f}; " if low["runs"] > 1 else "")
            print(f"target {label}: >= {target:,} req/s on one core: lowest {worst:,.0f} req/cpu-s "
                  f"({low['scenario']}, {runs}{'met' if worst >= target else 'MISSED'}; "
                  f"load {max(r['load'] for r in rows):.2f})")
    for name in ("synth-1M", "vidur-1M"):
        if name in by:
            r = by[name]
            ok = r["wall_s"] < MAX_1M_S and r["peak_rss_mb"] < MAX_1M_MB
            print(f"target {name}: < {MAX_1M_S:.0f} s and < {MAX_1M_MB:.0f} MB: {r['wall_s']:.1f} s "
                  f"({r['cpu_s']:.1f} CPU s), {r['peak_rss_mb']:.0f} MB ({'met' if ok else 'MISSED'})")


def _run_child(python: str, name: str) -> dict:
    out = subprocess.run([python, __file__, "--child", name], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _run_fastest(python: str, name: str, repeat: int) -> dict:
    """The run of ``name`` that used the least CPU, of ``repeat`` fresh processes (one for the
    largest scenarios), with how many ran and the slowest's CPU over the fastest's."""
    runs = [_run_child(python, name)]
    if runs[0]["requests"] <= REPEAT_MAX_REQUESTS:
        runs += [_run_child(python, name) for _ in range(repeat - 1)]
    best = min(runs, key=lambda r: r["cpu_s"])
    return {**best, "runs": len(runs), "spread": max(r["cpu_s"] for r in runs) / best["cpu_s"],
            "cpu_s_median": statistics.median(r["cpu_s"] for r in runs),
            "load": max(r["load"] for r in runs)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes only (no 1M-request runs)")
    ap.add_argument("--scenarios", help="comma-separated subset")
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter that runs the scenarios (default: this one)")
    ap.add_argument("--repeat", type=int, default=3,
                    help=f"runs of each scenario of up to {REPEAT_MAX_REQUESTS:,} requests; the "
                         "row is the fastest (default 3)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child)))
        return 0
    names = ["azure-conv", "azure-conv-step", "spec-conv", "spec-conv-step", "mooncake-prefix",
             "mooncake-prefix-step", "synth-100k", "vidur-10k", "vidur-10k-step", "vidur-100k"]
    if not args.quick:
        names += ["synth-1M", "vidur-1M"]
    if args.scenarios:
        names = args.scenarios.split(",")
    if not MOONCAKE.exists():
        names = [n for n in names if not n.startswith("mooncake")]
    if not AZURE_CONV.exists():
        names = [n for n in names if not n.startswith(("azure", "vidur", "spec"))]
        print(f"(skipping azure-conv and vidur: {AZURE_CONV} not found)")
    rows = []
    if args.python != sys.executable:
        print(f"(scenarios run by {args.python})")
    print(f"{'scenario':<18}{'requests':>10}{'completed':>11}{'wall s':>9}{'req/s':>10}"
          f"{'cpu s':>9}{'req/cpu-s':>11}{'peak MB':>9}{'ev/req':>9}{'load':>7}{'runs':>6}{'spread':>8}")
    for name in names:
        row = _run_fastest(args.python, name, max(1, args.repeat))
        rows.append(row)
        _print_row(row)
    for row in rows:
        if row.get("trace_load_s") is not None:
            print(f"{row['scenario']}: loading and validating the trace took "
                  f"{row['trace_load_s']:.2f} s (not included above)")
    _verdicts({r["scenario"]: r for r in rows})
    print(f"(load: the 1-minute load average while it ran, on {os.cpu_count()} cores; a figure "
          "above 1 means other work shared the machine, so read req/cpu-s; runs: how many fresh "
          "processes ran the scenario, the row being the fastest; spread: the slowest's CPU "
          "seconds over the fastest's)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
