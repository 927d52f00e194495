"""The compiled build (``make compiled``) against this working tree: current, compiled, and the
same bytes.

1. *Current*: every ``goodput`` source file the compiled install holds equals the working tree's
   (the install is a snapshot; after an edit it is stale and this says so).
2. *Compiled*: each module ``[tool.goodput] compiled`` lists is a C extension there.
3. *Same bytes*: the per-request table and the instance table of each configuration below hash
   the same under both interpreters -- every batching policy with recompute and swap preemption,
   two routers, fast-forward and step mode, under KV pressure; SmartSpec speculation; Vidur's
   chunked-prefill scenario and the demo's cluster -- and so do the per-request and time-series
   tables of every shipped example (``examples/*.yaml`` through the CLI, 300 requests each).

Usage: python benchmarks/compiled_check.py --python .venv-compiled/bin/python
(this interpreter runs the working tree's source; ``--python`` the compiled install). Prints one
line per check and exits 1 if any fails.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _cfg(fast: bool, policy: str = "vllm", preemption: str = "recompute", router: str = "round_robin"):
    from goodput.sim.config import InstanceGroupConfig, SimConfig

    cfg = SimConfig(cluster=[InstanceGroupConfig(model="llama-3.1-8b", gpu="h100", count=2)])
    s = cfg.scheduler
    s.policy, s.preemption, s.swap_space_gb, s.num_gpu_blocks = policy, preemption, 4.0, 800
    cfg.cost_model.kind = "roofline"
    cfg.router.name = router
    cfg.fast_forward = fast
    return cfg


def _requests(n: int, rate: float, seed: int):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    return pd.DataFrame({"request_id": np.arange(n),
                         "arrival_s": np.cumsum(rng.exponential(1 / rate, n)),
                         "prompt_tokens": rng.integers(50, 2000, n),
                         "output_tokens": rng.integers(1, 400, n)})


def _digest(res) -> str:
    import pandas as pd

    parts = [pd.util.hash_pandas_object(res.requests, index=True).values.tobytes(),
             pd.util.hash_pandas_object(res.instances, index=True).values.tobytes()]
    return hashlib.sha256(b"".join(parts)).hexdigest()[:16]


def _examples() -> dict[str, str]:
    """Every shipped example through the CLI (300 requests, as the tests run them): disaggregated
    pools, prefix caching, sessions, compound requests, faults, priorities, speculation, a
    plugin policy -- the per-request and time-series tables it writes. Real-trace examples are
    left out without ../shared/traces."""
    import tempfile

    import pandas as pd

    from goodput.cli import main as cli
    from goodput.sim.config import load_config

    out = {}
    for path in sorted((REPO / "examples").glob("*.yaml")):
        cfg = load_config(path)
        if cfg.trace.path and not (REPO / cfg.trace.path).exists():
            continue
        with tempfile.TemporaryDirectory() as tmp:
            args = ["simulate", "--config", str(path), "--no-progress", "--no-plots", "--out", tmp,
                    "--max-requests", "300", "--force"]
            code = cli(args)
            tables = [pd.read_parquet(Path(tmp) / f) for f in ("requests.parquet", "timeseries.parquet")]
        parts = [pd.util.hash_pandas_object(t, index=True).values.tobytes() for t in tables]
        out[f"example-{path.stem}"] = f"{code}-" + hashlib.sha256(b"".join(parts)).hexdigest()[:16]
    return out


def child() -> dict:
    """Runs under each interpreter: the digests of every configuration, and what is compiled."""
    import importlib

    sys.path.insert(0, str(REPO / "benchmarks"))
    import sim_speed

    from goodput.sim.simulator import simulate
    from goodput.sim.workload.generators import synthesize_chunks
    from goodput.sim.workload.lengths import Empirical

    out: dict[str, str] = {}
    df = _requests(400, 30.0, 3)
    for policy, modes in (("vllm", ("recompute", "swap")), ("sarathi", ("recompute", "swap")),
                          ("orca", ("recompute",))):
        for pre in modes:
            for router in ("round_robin", "least_outstanding_tokens"):
                for fast in (True, False):
                    out[f"{policy}-{pre}-{router}-{'ff' if fast else 'step'}"] = _digest(
                        simulate(_cfg(fast, policy, pre, router), df))
    for fast in (True, False):
        cfg = _cfg(fast)
        spec = cfg.scheduler.section("speculation")
        spec.method, spec.alpha, spec.draft_model = "smartspec", 0.8, "llama-3.2-1b"
        out[f"smartspec-{'ff' if fast else 'step'}"] = _digest(simulate(cfg, df))
    if sim_speed.AZURE_CONV.exists():
        lengths = Empirical(sim_speed.vidur_lengths(), "azure-conv")
        for fast, n in ((True, 3000), (False, 1000)):
            reqs = synthesize_chunks(n, rate=4.0, prompt_dist=lengths, seed=0, chunk=50_000)
            out[f"vidur-{n}-{'ff' if fast else 'step'}"] = _digest(
                simulate(sim_speed._vidur_config(fast), reqs, n))
    reqs = synthesize_chunks(5000, rate=20.0, prompt_dist="lognormal:mean=1155,std=1100,min=4,max=8000",
                             output_dist="lognormal:mean=211,std=160,min=1,max=2000", seed=0, chunk=50_000)
    out["demo-cluster-5k"] = _digest(simulate(sim_speed._config(True), reqs, 5000))
    out.update(_examples())
    listed = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["goodput"]["compiled"]
    modules = {m: importlib.import_module("goodput." + m.removesuffix(".py").replace("/", "."))
               for m in listed}
    import goodput

    root = Path(goodput.__file__).resolve().parent
    sources = {}
    for folder, _, files in os.walk(root, followlinks=True):  # goodput/sim links to ../sim here
        for f in files:
            if f.endswith(".py"):
                path = Path(folder) / f
                sources[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"digests": out, "compiled": {m: not mod.__file__.endswith(".py") for m, mod in modules.items()},
            "sources": sources}


def _run(python: str) -> dict:
    out = subprocess.run([python, __file__, "--child"], cwd=REPO, check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", help="the compiled install's interpreter")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child()))
        return 0
    if not args.python:
        ap.error("give --python (the compiled install's interpreter: make compiled)")
    mine, theirs = _run(sys.executable), _run(args.python)
    ok = True
    stale = sorted(f for f, h in theirs["sources"].items() if mine["sources"].get(f) != h)
    stale += sorted(f for f in mine["sources"] if f not in theirs["sources"])
    print(f"current: {'yes' if not stale else 'NO, rebuild with make compiled: ' + ', '.join(stale[:8])}")
    ok &= not stale
    interpreted = [m for m, c in theirs["compiled"].items() if not c]
    print(f"compiled: {len(theirs['compiled']) - len(interpreted)} of {len(theirs['compiled'])} modules"
          + (f" (interpreted: {', '.join(interpreted)})" if interpreted else ""))
    ok &= not interpreted
    differ = [k for k in mine["digests"] if theirs["digests"].get(k) != mine["digests"][k]]
    print(f"same bytes: {len(mine['digests']) - len(differ)} of {len(mine['digests'])} configurations"
          + (f" (differ: {', '.join(differ)})" if differ else ""))
    ok &= not differ
    failed = sorted(k for run in (mine, theirs) for k, v in run["digests"].items()
                    if k.startswith("example-") and not v.startswith("0-"))
    examples = sum(k.startswith("example-") for k in mine["digests"])
    print(f"examples: {examples - len(set(failed))} of {examples} ran"
          + (f" (failed: {', '.join(sorted(set(failed)))})" if failed else ""))
    ok &= not failed
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
