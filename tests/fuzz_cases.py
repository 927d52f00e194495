"""Fuzz strategies and the case runners shared by tests/test_fuzz_*.py and tests/fuzz_report.py.

Each runner takes one drawn case and returns "error" (a clean error: one of the project's error
types, one line) or "ok" (a correct run, checked against what was written); anything else (another
exception type, a hang past ``CASE_LIMIT_S``, a silent change) raises, and is a failure.
"""
from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import json
import lzma
import math
import signal
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import strategies as st

from goodput.planner.errors import PlannerError
from goodput.sim.config import ConfigError
from goodput.sim.engine.kvcache import CapacityError
from goodput.sim.workload.schema import TraceError

CLEAN = (TraceError, ConfigError, PlannerError, CapacityError)
CASE_LIMIT_S = 20.0
FORMATS = ("canonical", "azure", "burstgpt", "mooncake", "vidur", "lengths")
CONTAINERS = ("csv", "jsonl", "parquet")
COMPRESSIONS = ("", ".gz", ".bz2", ".xz", ".zst", ".zip")
#: column names per format: (arrival, prompt, output)
COLUMNS = {"canonical": ("arrival_s", "prompt_tokens", "output_tokens"),
           "azure": ("TIMESTAMP", "ContextTokens", "GeneratedTokens"),
           "burstgpt": ("Timestamp", "Request tokens", "Response tokens"),
           "mooncake": ("timestamp", "input_length", "output_length"),
           "vidur": ("arrived_at", "num_prefill_tokens", "num_decode_tokens"),
           "lengths": (None, "num_prefill_tokens", "num_decode_tokens")}


class Hang(AssertionError):
    """A case ran past CASE_LIMIT_S."""


@contextlib.contextmanager
def time_limit(seconds: float = CASE_LIMIT_S):
    def fire(signum, frame):
        raise Hang(f"case ran past {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def clean(exc: BaseException) -> str:
    """'error' for a clean one-line error of the project's types; re-raise anything else."""
    if isinstance(exc, CLEAN) and str(exc) and "\n" not in str(exc).strip():
        return "error"
    raise exc


# ------------------------------------------------------------------ traces
HOSTILE = st.sampled_from([-1, 0, 2**53, 2**63, 1.5, float("nan"), float("inf"), "abc", "", None,
                           True, "7", 1e30, -0.0])
TOKENS = st.integers(1, 100_000)


@st.composite
def trace_cases(draw):
    fmt = draw(st.sampled_from(FORMATS))
    container = draw(st.sampled_from(CONTAINERS))
    if fmt == "azure" and container == "jsonl":
        container = "csv"
    n = draw(st.integers(1, 6))
    gaps = draw(st.lists(st.integers(0, 10**6), min_size=n, max_size=n))
    ticks = np.cumsum(gaps).tolist()  # microseconds (azure), ms (mooncake), 1e-3 s otherwise
    prompt = draw(st.lists(TOKENS, min_size=n, max_size=n))
    output = draw(st.lists(TOKENS, min_size=n, max_size=n))
    hostile = draw(st.booleans()) and draw(st.integers(0, 3)) > 0
    cells = {"prompt": list(prompt), "output": list(output), "arrival": list(ticks)}
    if hostile:
        col = draw(st.sampled_from(sorted(cells)))
        i = draw(st.integers(0, n - 1))
        cells[col][i] = draw(HOSTILE)
    hash_ids = draw(st.lists(st.lists(st.integers(0, 2**40), max_size=4, unique=True),
                             min_size=n, max_size=n))
    hash_ids = [_valid_blocks(h, p, i) for i, (h, p) in enumerate(zip(hash_ids, prompt, strict=True))]
    return {"fmt": fmt, "container": container, "compression": draw(st.sampled_from(COMPRESSIONS)),
            "cells": cells, "hostile": hostile, "ticks": ticks, "prompt": prompt, "output": output,
            "hash_ids": hash_ids}


def _valid_blocks(ids: list[int], prompt: int, row: int) -> list[int]:
    """Drawn ids made to obey the prefix-block rules (sim/workload/prefix.py): at most one per
    512-token block of the prompt, and a partial last block gets an id no other row uses."""
    ids = ids[: -(-prompt // 512)]
    if ids and len(ids) * 512 > prompt:
        ids[-1] = 2**41 + row
    return ids


def _arrival_cell(fmt: str, v):
    if fmt == "azure" and isinstance(v, int) and not isinstance(v, bool):
        ts = pd.Timestamp("2023-11-16 18:15:46") + pd.Timedelta(microseconds=v)
        return ts.strftime("%Y-%m-%d %H:%M:%S.%f")
    if fmt in ("canonical", "burstgpt", "vidur") and isinstance(v, int) and not isinstance(v, bool):
        return v / 1000.0
    return v  # mooncake: integer ms; hostile values as they are


def raw_frame(case) -> pd.DataFrame:
    fmt = case["fmt"]
    a, p, o = COLUMNS[fmt]
    cols = {}
    if a is not None:
        cols[a] = [_arrival_cell(fmt, v) for v in case["cells"]["arrival"]]
    cols[p], cols[o] = case["cells"]["prompt"], case["cells"]["output"]
    if fmt == "mooncake":
        cols["hash_ids"] = case["hash_ids"]
    return pd.DataFrame(cols)


def write_file(df: pd.DataFrame, path: Path, container: str, compression: str) -> None:
    if container == "csv":
        data = df.to_csv(index=False).encode()
    elif container == "jsonl":
        data = "".join(json.dumps(r) + "\n" for r in df.to_dict("records")).encode()
    else:
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        data = buf.getvalue()
    path.write_bytes(compress(data, compression, path.name))


def compress(data: bytes, compression: str, name: str) -> bytes:
    if compression == ".gz":
        return gzip.compress(data)
    if compression == ".bz2":
        return bz2.compress(data)
    if compression == ".xz":
        return lzma.compress(data)
    if compression == ".zst":
        import zstandard

        return zstandard.ZstdCompressor().compress(data)
    if compression == ".zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr(name.removesuffix(".zip"), data)
        return buf.getvalue()
    return data


def _expected_arrivals(case) -> np.ndarray:
    t = np.asarray(case["ticks"], dtype=np.int64)
    fmt = case["fmt"]
    if fmt == "azure":
        ns = t * 1000
        return (ns - ns.min()) / 1e9
    if fmt == "mooncake":
        s = t.astype(np.float64) * 1e-3
        return s - s[0]
    s = t / 1000.0
    return s if fmt == "canonical" else s - s[0]


def run_trace_case(case) -> str:
    """Write the case's rows in its format/container/compression and load them back."""
    from goodput.sim.workload.loaders import load_trace

    df = raw_frame(case)
    with tempfile.TemporaryDirectory() as d:
        ext = {"csv": ".csv", "jsonl": ".jsonl", "parquet": ".parquet"}[case["container"]]
        path = Path(d) / f"t{ext}{case['compression']}"
        try:
            write_file(df, path, case["container"], case["compression"])
        except (ValueError, TypeError, OverflowError, ArithmeticError):
            return "skip"  # the writer itself (pyarrow, json) cannot hold this value
        opts = {"rate": 1.0} if case["fmt"] == "lengths" else {}
        try:
            with time_limit():
                trace = load_trace(path, **opts)
        except Hang:
            raise
        except Exception as exc:
            if not case["hostile"]:
                raise AssertionError(f"a valid {case['fmt']} trace was refused: {exc}") from exc
            return clean(exc)
    out = trace.df
    n = len(case["prompt"])
    dropped = sum(trace.meta.get("dropped", {}).values())
    assert len(out) + dropped == n, f"{len(out)} rows + {dropped} dropped != {n} written"
    assert (out["prompt_tokens"] >= 1).all() and (out["output_tokens"] >= 1).all()
    assert np.isfinite(out["arrival_s"]).all() and (np.diff(out["arrival_s"]) >= 0).all()
    if not case["hostile"]:
        assert out["prompt_tokens"].tolist() == case["prompt"], "prompt tokens changed"
        assert out["output_tokens"].tolist() == case["output"], "output tokens changed"
        assert out["request_id"].tolist() == list(range(n))
        if case["fmt"] != "lengths":
            exp = _expected_arrivals(case)
            assert np.allclose(out["arrival_s"].to_numpy(), exp, rtol=0, atol=1e-9), \
                f"arrivals changed: {out['arrival_s'].tolist()} != {exp.tolist()}"
        if case["fmt"] == "mooncake":
            assert out["prefix_blocks"].tolist() == [" ".join(map(str, h)) for h in case["hash_ids"]]
    return "ok"


@st.composite
def mutated_files(draw):
    """A valid small trace file, then a few byte edits (flip, insert, delete, truncate)."""
    case = draw(trace_cases())
    case["hostile"] = True
    df = raw_frame({**case, "cells": {"prompt": case["prompt"], "output": case["output"],
                                      "arrival": case["ticks"]}})
    ops = draw(st.lists(st.tuples(st.sampled_from(["flip", "insert", "delete", "truncate"]),
                                  st.floats(0, 1), st.binary(min_size=1, max_size=8)),
                        min_size=1, max_size=4))
    return case, df, ops


def run_mutated_case(drawn) -> str:
    from goodput.sim.workload.loaders import load_trace

    case, df, ops = drawn
    with tempfile.TemporaryDirectory() as d:
        ext = {"csv": ".csv", "jsonl": ".jsonl", "parquet": ".parquet"}[case["container"]]
        path = Path(d) / f"t{ext}{case['compression']}"
        write_file(df, path, case["container"], case["compression"])
        data = bytearray(path.read_bytes())
        for op, where, blob in ops:
            i = min(int(where * len(data)), max(len(data) - 1, 0))
            if op == "flip" and data:
                data[i] ^= blob[0] or 1
            elif op == "insert":
                data[i:i] = blob
            elif op == "delete":
                del data[i:i + len(blob)]
            else:
                del data[i:]
        path.write_bytes(bytes(data))
        opts = {"rate": 1.0} if case["fmt"] == "lengths" else {}
        try:
            with time_limit():
                trace = load_trace(path, **opts)
        except Hang:
            raise
        except Exception as exc:
            return clean(exc)
    out = trace.df
    assert len(out) >= 1 and (out["prompt_tokens"] >= 1).all() and (out["output_tokens"] >= 1).all()
    assert np.isfinite(out["arrival_s"]).all() and (np.diff(out["arrival_s"]) >= 0).all()
    assert out["request_id"].is_unique
    return "ok"


# ------------------------------------------------------------------ configs and --set
def _finite(x) -> bool:
    return not isinstance(x, float) or math.isfinite(x)


SCALARS = st.one_of(st.integers(-5, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                    st.booleans(), st.none(), st.text(max_size=8),
                    st.sampled_from(["vllm", "sarathi", "orca", "llumnix", "round_robin", "swap",
                                     "recompute", "roofline", "h100", "l4", "drain", "scale_out"]))
SENSIBLE = st.one_of(st.integers(1, 8), st.floats(0.01, 100), st.sampled_from([0.5, 0.9, 1.0, 16]),
                    st.sampled_from(["vllm", "sarathi", "llumnix", "round_robin", "power_of_two",
                                     "least_kv", "swap", "recompute", "h100", "l4", "a10g"]))
HOSTILE_VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(st.text(max_size=6), inner,
                                                                        max_size=3)), max_leaves=6)
VALUES = st.one_of(SENSIBLE, SENSIBLE, HOSTILE_VALUES)
#: dotted config paths the fuzzer aims at (plus random ones)
PATHS = ["seed", "fast_forward", "max_sim_time_s", "cluster.0.count", "cluster.0.tp", "cluster.0.gpu",
         "cluster.0.model", "scheduler.policy", "scheduler.max_batch_size",
         "scheduler.max_batched_tokens", "scheduler.block_size", "scheduler.gpu_memory_utilization",
         "scheduler.activation_reserve_gb", "scheduler.preemption", "scheduler.watermark",
         "scheduler.swap_space_gb", "scheduler.host_link_gbs", "scheduler.num_gpu_blocks",
         "scheduler.sarathi.chunk_size", "router.name", "router.migration_interval_s",
         "router.migrate_out_freeness", "router.migrate_in_freeness", "router.max_stages",
         "router.priority_headroom", "router.link.bandwidth_gbs", "router.link.latency_s",
         "slo.ttft_s", "slo.tpot_s", "slo.attainment_target", "trace.rate", "trace.max_requests",
         "trace.num_requests", "trace.cv", "trace.arrival", "output.timeseries_interval_s",
         "cost_model.kind", "events", "events.0.time_s", "cluster", "scheduler", "plugins",
         "nonsense", "scheduler.nonsense", "cluster.9.count", "seed.x", "router.link"]
_KNOWN = st.sampled_from(PATHS)
KEYS = st.one_of(_KNOWN, _KNOWN, _KNOWN, _KNOWN, _KNOWN,
                 st.text(alphabet="abc.01_", min_size=1, max_size=12))


def _tiny_run(cfg) -> None:
    """Simulate 3 small requests under ``cfg``: each request exactly once, with an outcome."""
    from goodput.sim.simulator import simulate

    cfg.cost_model.kind = "roofline"
    cfg.progress = False
    cfg.output.dir = ""
    cfg.max_sim_time_s = cfg.max_sim_time_s if cfg.max_sim_time_s is None else min(cfg.max_sim_time_s, 600)
    df = pd.DataFrame({"request_id": [0, 1, 2], "arrival_s": [0.0, 0.1, 0.2],
                       "prompt_tokens": [16, 40, 8], "output_tokens": [4, 2, 3]})
    res = simulate(cfg, df)
    ids = sorted(res.requests["request_id"].tolist())
    assert ids == [0, 1, 2], f"requests lost or duplicated: {ids}"
    assert res.requests["outcome"].notna().all()


def run_config_case(pairs: list, as_yaml: bool, simulate_it: bool) -> str:
    """Apply ``pairs`` (dotted key, value) as YAML text or ``--set`` overrides; load and check."""
    import yaml

    from goodput.sim.cli import _parse_set
    from goodput.sim.config import _set_dotted, load_config
    from goodput.sim.config_checks import check_config

    try:
        with time_limit():
            if as_yaml:
                data: dict = {}
                for k, v in pairs:  # nested as a user would write them
                    _set_dotted(data, k, v)
                with tempfile.TemporaryDirectory() as d:
                    p = Path(d) / "c.yaml"
                    p.write_text(yaml.safe_dump(data))
                    cfg = load_config(p)
            else:
                items = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}"
                         .removesuffix("...").strip() for k, v in pairs]
                cfg = load_config(overrides=_parse_set(items))
            check_config(cfg)
            if simulate_it and sum(g.count for g in cfg.cluster) <= 4 and not cfg.events:
                _tiny_run(cfg)
    except Hang:
        raise
    except Exception as exc:
        return clean(exc)
    if not as_yaml:  # a plain top-level override that loaded must hold the value given
        last = dict(pairs)
        for key in ("seed", "max_sim_time_s", "fast_forward"):
            if key in last and _finite(last[key]):
                got = getattr(cfg, key)
                assert got == last[key] or (got is None and last[key] is None), (key, got, last[key])
    return "ok"


def run_yaml_text_case(text: str) -> str:
    from goodput.sim.config import load_config

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "c.yaml"
        p.write_text(text)
        try:
            with time_limit():
                load_config(p)
        except Hang:
            raise
        except Exception as exc:
            return clean(exc)
    return "ok"


# ------------------------------------------------------------------ planner arguments
PLAN_FLAGS = {
    "--ttft-slo": st.sampled_from(["1", "0", "-1", "nan", "inf", "0.5", "x"]),
    "--tpot-slo": st.sampled_from(["0.1", "0", "-0.1", "nan", "1e-9"]),
    "--attainment": st.sampled_from(["0.9", "0", "1", "90", "nan", "-1"]),
    "--gpus": st.sampled_from(["h100", "l4,a10g", "", ",", "nope", "h100,h100"]),
    "--tp": st.sampled_from(["1", "0", "-1", "1,2", "x", "", "3"]),
    "--availability": st.sampled_from(["h100=8", "h100=-1", "h100", "nope=2", "h100=x", ""]),
    "--power-budget": st.sampled_from(["1000", "0", "-5", "nan"]),
    "--input-edges": st.sampled_from(["256,1024", "0", "1024,256", "x", "5"]),
    "--output-edges": st.sampled_from(["64,256", "-1", "", "64,64"]),
    "--slice-factor": st.sampled_from(["1", "0", "-2", "3"]),
    "--rel-tol": st.sampled_from(["0.05", "0", "-1", "nan", "inf"]),
    "--max-probe-requests": st.sampled_from(["6000", "10", "0", "-5"]),
    "--min-probe-requests": st.sampled_from(["300", "19", "0", "7000"]),
    "--workers": st.sampled_from(["1", "0", "-1", "4"]),
    "--verify-rounds": st.sampled_from(["6", "0", "-1", "100"]),
    "--rate": st.sampled_from(["2", "0", "-1", "nan", "inf"]),
    "--max-requests": st.sampled_from(["5", "0", "-3"]),
    "--solver": st.sampled_from(["cbc", "gurobi"]),
    "--assignment": st.sampled_from(["whole", "half"]),
}


@st.composite
def plan_argvs(draw):
    flags = draw(st.lists(st.sampled_from(sorted(PLAN_FLAGS)), unique=True, max_size=5))
    argv = {"--trace": "traces/sample_tiny.csv", "--model": "llama-3.1-8b", "--ttft-slo": "1",
            "--tpot-slo": "0.1", "--gpus": "h100"}
    for f in flags:
        argv[f] = draw(PLAN_FLAGS[f])
    if draw(st.booleans()):
        argv.pop(draw(st.sampled_from(sorted(argv))))
    return [x for kv in argv.items() for x in kv]


def run_plan_args_case(argv: list[str], repo: Path) -> str:
    """Parse and check ``goodput plan`` arguments as cmd_plan does, up to the first search."""
    from goodput.cli import build_parser
    from goodput.planner.assemble import check_options
    from goodput.planner.cli import load_planning_trace, options_from_args
    from goodput.planner.pipeline import instance_types
    from goodput.planner.slices import make_slices, parse_edges

    try:
        with time_limit(), contextlib.redirect_stderr(io.StringIO()):
            args = build_parser().parse_args(["plan", *argv])
    except SystemExit as exc:  # argparse: usage line and exit 2
        assert exc.code == 2
        return "error"
    args.trace = str(repo / args.trace)
    try:
        with time_limit():
            opts = options_from_args(args)
            check_options(opts)
            opts.input_edges = parse_edges(opts.input_edges, "--input-edges")
            opts.output_edges = parse_edges(opts.output_edges, "--output-edges")
            trace = load_planning_trace(args.trace, args.trace_format, args.rate,
                                        args.max_requests, args.seed)
            make_slices(trace, opts.input_edges, opts.output_edges, opts.slice_factor)
            instance_types(opts.model, opts.gpus, opts.tps, opts.scheduler)
    except Hang:
        raise
    except Exception as exc:
        return clean(exc)
    assert opts.workers is None or opts.workers >= 1
    assert opts.verify_rounds >= 0 and 0 < opts.attainment_target <= 1
    return "ok"
