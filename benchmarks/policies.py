"""Batching policies and cluster schedulers on the same workloads: the papers' qualitative claims.

(a) Sarathi-Serve vs vLLM vs Orca (+ decode-priority, static) on one H100 serving Llama-3.1-8B
    with request lengths resampled from the Azure LLM conversation trace and Poisson arrivals:
    TBT at one load; capacity = the highest rate whose P99 time-between-tokens meets the SLO
    while the median scheduling delay of the last fifth of arrivals stays under 2 s (above that
    the queue grows without bound and TBT says nothing), found by bisection on the rate; and the
    throughput each policy reaches when overloaded.
(b) Llumnix vs round-robin vs least-outstanding-tokens dispatch on 4 x A10G serving Llama-2-7B
    (the hardware class of the Llumnix paper: small KV caches, so memory pressure), bursty gamma
    arrivals (CV 3), Azure conversation lengths, 10% of requests at priority 1; mean over seeds.

Everything uses the roofline cost model (``cost_model.kind = roofline``, uncalibrated priors), so
the numbers do not depend on which measured profiles happen to be installed.

Usage: python benchmarks/policies.py [--quick] [--part a|b|all]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from goodput.sim.catalog import get_gpu, get_model  # noqa: E402
from goodput.sim.config import InstanceGroupConfig, SimConfig  # noqa: E402
from goodput.sim.costmodel.base import Batch  # noqa: E402
from goodput.sim.costmodel.roofline import RooflineCostModel  # noqa: E402
from goodput.sim.engine.kvcache import kv_capacity  # noqa: E402
from goodput.sim.run import run_and_report  # noqa: E402
from goodput.sim.workload.generators import synthesize  # noqa: E402
from goodput.sim.workload.loaders import load_lengths  # noqa: E402

CONV = REPO.parent / "shared" / "traces" / "AzureLLMInferenceTrace_conv.csv"
MAX_SCHED_DELAY_S = 2.0  # median scheduling delay above which a load is not sustainable


# ----------------------------------------------------------------------------------- workloads
def conv_lengths(max_total: int | None = None) -> tuple[pd.DataFrame, str]:
    """(prompt, output) pairs of the Azure conversation trace, or a stand-in if it is absent."""
    if CONV.exists():
        lengths = load_lengths(CONV)
        src = "Azure LLM conv trace lengths"
    else:  # lognormal fit to the same means (see ../shared/traces/README.md)
        df = synthesize(20000, 1.0, "lognormal:mean=1155,std=1100,min=4,max=8000",
                        "lognormal:mean=211,std=160,min=1,max=2000", seed=0).df
        lengths = df[["prompt_tokens", "output_tokens"]]
        src = "lognormal stand-in (Azure conv trace not found)"
    if max_total:
        lengths = lengths[lengths.prompt_tokens + lengths.output_tokens <= max_total]
        src += f", prompt + output <= {max_total}"
    return lengths.reset_index(drop=True), src


def workload(lengths: pd.DataFrame, n: int, rate: float, seed: int, arrival: str = "poisson",
             cv: float = 1.0, high_fraction: float = 0.0) -> pd.DataFrame:
    """n requests at ``rate``: lengths resampled from ``lengths``, arrivals from the generator.

    Arrivals are drawn at 1 req/s and divided by ``rate``, so every rate sees the same sample
    path (common random numbers): a bisection on the rate is not fooled by a lucky draw.
    """
    df = synthesize(n, 1.0, "fixed:1", "fixed:1", arrival=arrival, cv=cv, seed=seed).df
    rng = np.random.default_rng(seed + 1000)
    idx = rng.integers(0, len(lengths), n)
    df["arrival_s"] = df["arrival_s"] / rate
    df["prompt_tokens"] = lengths.prompt_tokens.to_numpy()[idx]
    df["output_tokens"] = lengths.output_tokens.to_numpy()[idx]
    df["priority"] = (rng.random(n) < high_fraction).astype(int)
    return df


def config(policy: str, model: str, gpu: str, count: int = 1, router: str = "round_robin",
           **sched) -> SimConfig:
    cfg = SimConfig(cluster=[InstanceGroupConfig(model=model, gpu=gpu, tp=1, count=count)])
    cfg.cost_model.kind = "roofline"
    cfg.scheduler.policy = policy
    cfg.router.name = router
    cfg.output.timeseries_interval_s = 5.0
    for k, v in sched.items():
        if k in ("chunk_size", "token_budget"):  # Sarathi-Serve's own section
            setattr(cfg.scheduler.section("sarathi"), k, v)
        elif hasattr(cfg.scheduler, k):
            setattr(cfg.scheduler, k, v)
        else:
            setattr(cfg.router, k, v)
    return cfg


def kv_blocks(model: str, gpu: str) -> int:
    """KV-cache blocks of one instance under the default scheduler memory settings."""
    s = SimConfig().scheduler
    return kv_capacity(get_model(model), get_gpu(gpu), 1, s.block_size, s.gpu_memory_utilization,
                       s.activation_reserve_gb).total_blocks


def run(cfg: SimConfig, df: pd.DataFrame) -> dict:
    res = run_and_report(cfg, df)
    s, q = res.summary, res.requests
    done = q[q.outcome == "completed"]
    return {"p50_tbt": s["tokens"]["tbt_p50_s"], "p99_tbt": s["tokens"]["tbt_p99_s"],
            "stall_s": s["tokens"]["decode_stall_s"], "p99_ttft": s["latency"]["ttft_s"]["p99"],
            "mean_ttft": s["latency"]["ttft_s"]["mean"], "p99_e2e": s["latency"]["e2e_s"]["p99"],
            "sched_p50": float(q.queueing_delay_s.median()),
            # last fifth of the arrivals: in an overloaded but finite run the median over all
            # requests can stay small while the queue keeps growing; the late ones show it
            "sched_p50_late": float(q[q.arrival_s >= q.arrival_s.quantile(0.8)]
                                    .queueing_delay_s.median()),
            "tok_s": s["throughput"]["output_tok_per_s"],
            "req_s": s["throughput"]["completed_req_per_s"], "preempt": s["preemptions"],
            "migrations": s["migrations"], "migrated_gb": s["migrated_bytes"] / 1e9,
            "completed": s["counts"]["completed"], "n": s["counts"]["total"],
            "hi_ttft": float(done[done.priority == 1].ttft_s.mean()),
            "lo_ttft": float(done[done.priority == 0].ttft_s.mean()),
            "hi_tpot": float(done[done.priority == 1].tpot_s.mean()),
            "lo_tpot": float(done[done.priority == 0].tpot_s.mean()),
            "hi_e2e": float(done[done.priority == 1].e2e_s.mean()),
            "lo_e2e": float(done[done.priority == 0].e2e_s.mean())}


def table(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    """cols: (key, header, format)."""
    head = [h for _, h, _ in cols]
    body = [[format(r[k], f) if isinstance(r[k], (int, float, np.number)) else str(r[k])
             for k, _, f in cols] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    line = lambda xs: "  ".join(x.rjust(w) if i else x.ljust(w)  # noqa: E731
                                 for i, (x, w) in enumerate(zip(xs, widths, strict=True)))
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(b) for b in body])


# ----------------------------------------------------------------------------------- part (a)
A_MODEL, A_GPU = "llama-3.1-8b", "h100"
A_POLICIES = [("vllm", {}), ("orca", {}), ("decode_priority", {}),
              ("sarathi", {"chunk_size": 512, "token_budget": 512}), ("static", {})]


def strict_slo() -> float:
    """5 x one decode iteration of a lone request with a 4096-token context."""
    cost = RooflineCostModel(get_model(A_MODEL), get_gpu(A_GPU), 1)
    return 5 * cost.batch_time(Batch.decode([4096]))


def capacity(policy: str, sched: dict, lengths, n: int, slo: float, lo=0.25, hi=40.0,
             steps: int = 8) -> tuple[float, dict | None]:
    """Bisection on the rate for the highest load meeting P99 TBT <= slo and the delay bound."""
    best, best_row = 0.0, None
    for _ in range(steps):
        mid = (lo + hi) / 2
        row = run(config(policy, A_MODEL, A_GPU, **sched), workload(lengths, n, mid, seed=7))
        if row["p99_tbt"] <= slo and row["sched_p50_late"] <= MAX_SCHED_DELAY_S:
            best, best_row, lo = mid, row, mid
        else:
            hi = mid
    return best, best_row


def part_a(quick: bool) -> None:
    lengths, src = conv_lengths()
    n = 800 if quick else 3000
    slo = strict_slo()
    rate = 12.0
    print(f"(a) {A_MODEL} on 1 x {A_GPU} ({kv_blocks(A_MODEL, A_GPU)} KV blocks of 16 tokens), "
          f"roofline cost model; {src}; Poisson arrivals, {n} requests")
    print(f"    strict SLO: P99 TBT <= {slo * 1e3:.1f} ms "
          "(5 x one decode iteration at 4k context)\n")
    rows = []
    for policy, sched in A_POLICIES:
        r = run(config(policy, A_MODEL, A_GPU, **sched), workload(lengths, n, rate, seed=7))
        name = policy + (f" (chunk {sched['chunk_size']}, budget {sched['token_budget']})"
                         if sched else "")
        rows.append({"policy": name, **r, "slo": "yes" if r["p99_tbt"] <= slo else "NO",
                     "p50_ms": r["p50_tbt"] * 1e3, "p99_ms": r["p99_tbt"] * 1e3})
    print(f"(a1) same workload at {rate:g} req/s")
    print(table(rows, [("policy", "policy", ""), ("p50_ms", "P50 TBT ms", ".1f"),
                       ("p99_ms", "P99 TBT ms", ".1f"), ("slo", "meets SLO", ""),
                       ("stall_s", "decode stall s", ".1f"), ("p99_ttft", "P99 TTFT s", ".2f"),
                       ("sched_p50", "median sched delay s", ".3f"),
                       ("tok_s", "output tok/s", ".0f"), ("preempt", "preemptions", "d")]))
    print()
    rows = []
    for policy, sched in A_POLICIES[:4]:
        cap, r = capacity(policy, sched, lengths, n, slo)
        rows.append({"policy": policy, "capacity": cap,
                     "p99_ms": r["p99_tbt"] * 1e3 if r else float("nan"),
                     "sched": r["sched_p50_late"] if r else float("nan"),
                     "tok_s": r["tok_s"] if r else float("nan")})
    print(f"(a2) capacity: highest rate with P99 TBT <= {slo * 1e3:.1f} ms and median scheduling "
          f"delay of the last fifth of arrivals <= {MAX_SCHED_DELAY_S:g} s "
          "(bisection on [0.25, 40] req/s, 8 probes)")
    print(table(rows, [("policy", "policy", ""), ("capacity", "capacity req/s", ".2f"),
                       ("p99_ms", "P99 TBT ms there", ".1f"),
                       ("sched", "late median sched delay s", ".3f"),
                       ("tok_s", "output tok/s", ".0f")]))
    print()
    rows = []
    for policy, sched in A_POLICIES[:4]:
        r = run(config(policy, A_MODEL, A_GPU, **sched), workload(lengths, n, 40.0, seed=7))
        rows.append({"policy": policy, **r, "p99_ms": r["p99_tbt"] * 1e3})
    print("(a3) saturation: the same requests offered at 40 req/s (far above every capacity)")
    print(table(rows, [("policy", "policy", ""), ("tok_s", "output tok/s", ".0f"),
                       ("req_s", "completed req/s", ".2f"), ("p99_ms", "P99 TBT ms", ".1f"),
                       ("preempt", "preemptions", "d")]))
    print()


# ----------------------------------------------------------------------------------- part (b)
B_MODEL, B_GPU, B_COUNT = "llama-2-7b", "a10g", 4
B_ROUTERS = [("round_robin", {}), ("least_outstanding_tokens", {}), ("least_kv", {}),
             ("llumnix, headroom 0, migration off",
              {"priority_headroom": 0.0, "migration": False}),
             ("llumnix, headroom 0", {"priority_headroom": 0.0}),
             ("llumnix, migration off", {"migration": False}),
             ("llumnix", {})]


def part_b(quick: bool) -> None:
    lengths, src = conv_lengths(max_total=get_model(B_MODEL).max_context)
    n = 1000 if quick else 3000
    seeds = (1,) if quick else (1, 2, 3)
    print(f"(b) {B_COUNT} x {B_GPU} serving {B_MODEL} ({kv_blocks(B_MODEL, B_GPU)} KV blocks of 16 "
          f"tokens each; vLLM batching), roofline cost model; {src}; gamma arrivals CV 3; "
          f"10% of requests priority 1; {n} requests; mean of seeds {seeds}")
    for rate in (1.5, 2.0):
        rows = []
        for name, knobs in B_ROUTERS:
            router = name.split(",")[0]
            runs = [run(config("vllm", B_MODEL, B_GPU, B_COUNT, router, **knobs),
                        workload(lengths, n, rate, seed, "gamma", 3.0, high_fraction=0.1))
                    for seed in seeds]
            mean = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
            rows.append({"router": name, **mean,
                         "hi_lo_ttft": f"{mean['hi_ttft']:.2f} / {mean['lo_ttft']:.2f}",
                         "hi_lo_tpot": f"{mean['hi_tpot'] * 1e3:.0f} / "
                                       f"{mean['lo_tpot'] * 1e3:.0f}"})
        print(f"\n(b) {rate:g} req/s")
        print(table(rows, [("router", "router", ""), ("p99_ttft", "P99 TTFT s", ".2f"),
                           ("mean_ttft", "mean TTFT s", ".2f"), ("p99_e2e", "P99 e2e s", ".1f"),
                           ("preempt", "preemptions", ".1f"), ("migrations", "migrations", ".1f"),
                           ("migrated_gb", "migrated GB", ".1f"),
                           ("hi_lo_ttft", "TTFT s high / normal", ""),
                           ("hi_lo_tpot", "TPOT ms high / normal", "")]))
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer requests and seeds (smoke run)")
    ap.add_argument("--part", choices=["a", "b", "all"], default="all")
    args = ap.parse_args()
    t0 = time.perf_counter()
    if args.part in ("a", "all"):
        part_a(args.quick)
    if args.part in ("b", "all"):
        part_b(args.quick)
    print(f"wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
