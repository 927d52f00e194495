"""Should NVIDIA's aiconfigurator back the cost model of GPUs we have not profiled? The evidence.

Issue 16 asks to offer aiconfigurator's operator database as an optional backend only if it
predicts unprofiled GPUs better than the calibrated roofline on the leave-one-GPU-out test. This
script runs that test on every measured batch of the profiles both tools can price (Llama-3.1-8B
on H100 and H200, TP1; Llama-3.1-70B on H200 at TP2/4/8 as an extra, where no leave-out fit
exists) and prints, per GPU and batch kind, the absolute percentage error of:

* **roofline (leave-one-GPU-out)**: the calibrated roofline fitted on the *other* GPU's profiles
  (the fitted parameters recorded in ``profiler/profiles/calibration.json``): how a GPU nobody
  profiled is priced today;
* **aiconfigurator**: its vLLM database for that GPU (measured by NVIDIA on that GPU, so this is
  the best case for it: on an unprofiled GPU it would be the same database).

The measured iteration is composed from the profile's measured rows exactly as the calibration
composes it (layers x measured layer time + embedding + LM head + all-reduce + overhead).
aiconfigurator prices uniform batches, so each measured batch is mapped to its closest query:
decode -> ``predict_decode_latency(B, mean context + 1, osl=2)`` (one step; decode attention is
linear in context, so the mean is exact for it); prefill and verify (every sequence >1 new
token) -> ``predict_prefill_latency(B, mean(context + new), prefix=mean context)``; mixed (a
prompt chunk plus decodes) -> ``mixed_step_latency(chunk tokens, decodes, mean decode context +
1, 2)``, the least exact mapping (its attention context is shared by both parts).

aiconfigurator is not a dependency: install it into a separate environment and point at it::

    python3 -m venv /tmp/aic && /tmp/aic/bin/pip install aiconfigurator==0.12.0
    .venv/bin/python benchmarks/aiconfigurator_check.py --aic-python /tmp/aic/bin/python
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from goodput.profiler.batches import expand
from goodput.profiler.fit import load_rows
from goodput.sim.catalog import get_gpu, get_model
from goodput.sim.costmodel.base import Batch
from goodput.sim.costmodel.profile_store import PROFILES_ROOT
from goodput.sim.costmodel.profiled import ProfiledCostModel, logit_rows
from goodput.sim.costmodel.roofline import RooflineCostModel, RooflineParams

#: our catalog name -> aiconfigurator's model id; our GPU -> its system name
MODELS = {"llama-3.1-8b": "meta-llama/Meta-Llama-3.1-8B", "llama-3.1-70b": "meta-llama/Meta-Llama-3.1-70B"}
SYSTEMS = {"h100-sxm": "h100_sxm", "h200": "h200_sxm"}

#: runs in aiconfigurator's environment: queries on stdin (JSON lines), milliseconds out
_AIC_EVAL = r"""
import json, logging, sys
logging.disable(logging.WARNING)
from aiconfigurator_core.sdk.engine import EngineHandle
handles = {}
out = []
for q in json.load(sys.stdin):
    key = (q["model"], q["system"], q["tp"])
    if key not in handles:
        handles[key] = EngineHandle.compile(q["model"], q["system"], "vllm", tp_size=q["tp"])
    h = handles[key]
    if q["kind"] == "decode":
        ms = h.predict_decode_latency(q["bs"], q["isl"], 2)
    elif q["kind"] == "prefill":
        ms = h.predict_prefill_latency(q["bs"], q["isl"], q["prefix"])
    else:
        ms = h.mixed_step_latency(q["ctx_tokens"], q["gen_tokens"], q["isl"], 2)
    out.append(ms)
from importlib.metadata import version
print(json.dumps({"ms": out, "version": version("aiconfigurator-core")}))
"""


def measured_batches(gpu: str, model: str, tp: int) -> list[dict]:
    """Every measured batch row of one profile, with its composed iteration time (seconds)."""
    d = PROFILES_ROOT / gpu / model / f"tp{tp}"
    cm = ProfiledCostModel.from_dir(d)
    out = []
    for row in load_rows(d):
        if row["kind"] != "batch" or row.get("status", "ok") != "ok":
            continue
        q, c = expand(row["code"])
        t = sum(q)
        meas = (cm.layers * float(row["median_s"]) + cm.embed(t) + cm.lmhead(logit_rows(q))
                + cm._allreduce(t) + cm._overhead(len(q)))
        out.append({"gpu": gpu, "model": model, "tp": tp, "slice": row["subkind"], "q": q, "c": c,
                    "measured_s": meas})
    return out


def aic_query(b: dict) -> dict:
    q, c = np.array(b["q"]), np.array(b["c"])
    base = {"model": MODELS[b["model"]], "system": SYSTEMS[b["gpu"]], "tp": b["tp"]}
    dec = q == 1
    if dec.all():
        return {**base, "kind": "decode", "bs": len(q), "isl": round(float(c.mean())) + 1}
    if not dec.any():
        return {**base, "kind": "prefill", "bs": len(q), "isl": round(float((c + q).mean())),
                "prefix": round(float(c.mean()))}
    isl = round(float(c[dec].mean())) + 1
    return {**base, "kind": "mixed", "ctx_tokens": int(q[~dec].sum()), "gen_tokens": int(dec.sum()),
            "isl": isl}


def roofline_loo(b: dict, calibration: dict) -> float | None:
    """The calibrated roofline fitted without this GPU's profiles (None: no such fit)."""
    fit = calibration.get("error_by_phase", {}).get(f"leave_out_{b['gpu']}", {}).get("fitted_params")
    if not fit:
        return None
    cm = RooflineCostModel(get_model(b["model"]), get_gpu(b["gpu"]), b["tp"], RooflineParams(**fit))
    return cm.batch_time(Batch(b["q"], b["c"]))


def _stats(errors: list[float]) -> str:
    if not errors:
        return "| - | - | - |"
    e = np.abs(np.array(errors)) * 100
    return f"| {np.median(e):.1f} | {np.percentile(e, 95):.1f} | {np.median(np.array(errors)) * 100:+.1f} |"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--aic-python", required=True,
                    help="python of an environment with aiconfigurator installed")
    ap.add_argument("--json", type=Path, help="also write every point and prediction here")
    args = ap.parse_args(argv)
    calibration = json.loads((PROFILES_ROOT / "calibration.json").read_text())
    profiles = [("h100-sxm", "llama-3.1-8b", 1), ("h200", "llama-3.1-8b", 1),
                *[("h200", "llama-3.1-70b", tp) for tp in (2, 4, 8)]]
    batches = [b for p in profiles if (PROFILES_ROOT / p[0] / p[1] / f"tp{p[2]}").is_dir()
               for b in measured_batches(*p)]
    queries = [aic_query(b) for b in batches]
    run = subprocess.run([args.aic_python, "-c", _AIC_EVAL], input=json.dumps(queries),
                         capture_output=True, text=True, timeout=1800)
    if run.returncode != 0:
        print(f"aiconfigurator failed: {run.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return 1
    answer = json.loads(run.stdout.strip().splitlines()[-1])
    for b, ms, query in zip(batches, answer["ms"], queries, strict=True):
        b["aic_s"], b["aic_query"] = ms / 1e3, query
        b["roofline_loo_s"] = roofline_loo(b, calibration)
    print(f"aiconfigurator {answer['version']} (vllm database) against the measured profiles; "
          f"{len(batches)} batches")
    print("\n| profile | slice | n | aiconfigurator median % | P95 % | signed median % "
          "| roofline (leave-one-GPU-out) median % | P95 % | signed median % |")
    print("|---|---|---|---|---|---|---|---|---|")
    keys = sorted({(b["gpu"], b["model"], b["tp"]) for b in batches})
    for key in keys:
        rows = [b for b in batches if (b["gpu"], b["model"], b["tp"]) == key]
        for sl in ["all", *sorted({b["slice"] for b in rows})]:
            sel = [b for b in rows if sl == "all" or b["slice"] == sl]
            aic = [b["aic_s"] / b["measured_s"] - 1 for b in sel]
            loo = [b["roofline_loo_s"] / b["measured_s"] - 1 for b in sel if b["roofline_loo_s"]]
            name = f"{key[0]} {key[1]} TP{key[2]}"
            print(f"| {name} | {sl} | {len(sel)} {_stats(aic)} {_stats(loo)[1:]}")
    if args.json:
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(batches, indent=0))
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
