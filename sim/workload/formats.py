"""Per-format column mappings: each public trace layout -> canonical columns.

A format is recognised by its *signature* columns (exact, case-sensitive names: Azure's
`TIMESTAMP` and BurstGPT's `Timestamp` differ only by case). Each mapper renames the columns it
understands, converts units, applies the format's own documented options (e.g. BurstGPT's failed
requests) and hands the frame to `validate.finalize` for the rules every format shares. Columns a
mapper does not use are listed in `trace.meta['ignored_columns']` instead of vanishing silently.
"""
from __future__ import annotations

import contextlib
import itertools
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .arrivals import arrival_times
from .format_names import FORMAT_NAMES
from .schema import PREFIX_BLOCK_TOKENS, Trace, TraceError
from .validate import Ctx, finalize, require_columns, seconds, tokens

#: format -> (signature columns used for auto-detection, one-line description)
SIGNATURES = {
    "canonical": (("arrival_s", "prompt_tokens", "output_tokens"),
                  "this project's schema (CSV, Parquet or JSON lines)"),
    "azure": (("TIMESTAMP", "ContextTokens", "GeneratedTokens"),
              "Azure LLM inference trace 2023/2024 CSV"),
    "burstgpt": (("Timestamp", "Request tokens", "Response tokens"), "BurstGPT CSV"),
    "mooncake": (("timestamp", "input_length", "output_length"), "Mooncake JSON lines"),
    "vidur": (("arrived_at", "num_prefill_tokens", "num_decode_tokens"),
              "Vidur/Sarathi processed trace CSV with arrivals"),
    "lengths": (("num_prefill_tokens", "num_decode_tokens"),
                "Vidur/Sarathi length-only CSV (no timestamps; needs rate=)"),
}
FORMATS = tuple(SIGNATURES)
if FORMATS != FORMAT_NAMES:  # the light list the CLI's help shows must name exactly these
    raise ImportError(f"goodput.sim.workload.format_names lists {FORMAT_NAMES}, the readers are {FORMATS}")
#: options each format accepts beyond the common ones (sort, zero_tokens)
FORMAT_OPTS = {
    "canonical": (), "azure": (), "vidur": (), "mooncake": (),
    "burstgpt": ("burstgpt_failed", "model", "log_type"),
    "lengths": ("rate", "arrival", "cv", "seed"),
}
COMMON_OPTS = ("sort", "zero_tokens")
MOONCAKE_BLOCK_TOKENS = PREFIX_BLOCK_TOKENS  # Mooncake's hash_ids are 512-token blocks
#: element types a hash_ids list may hold (bool is an int subclass but not a block id)
_NP_INTS = frozenset({np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
                      np.uint64})


class NeedsRate(TraceError):
    """A length-only trace was loaded without the rate needed to synthesize its arrivals."""


def detect(columns, source: str = "trace") -> str:
    """The first format (in SIGNATURES order) whose signature columns are all present."""
    cols = set(map(str, columns))
    for fmt, (sig, _) in SIGNATURES.items():
        if set(sig) <= cols:
            return fmt
    listing = "; ".join(f"{f}: {list(sig)} ({d})" for f, (sig, d) in SIGNATURES.items())
    best = max(SIGNATURES, key=lambda f: len(set(SIGNATURES[f][0]) & cols))
    near = set(SIGNATURES[best][0]) & cols
    hint = (f" Closest: {best}, which also needs "
            f"{[c for c in SIGNATURES[best][0] if c not in cols]}." if near else "")
    raise TraceError(f"{source}: cannot tell the trace format from columns {sorted(cols)}.{hint} "
                     f"Known formats and the columns that identify them: {listing}. Rename the "
                     f"columns or pass format=.")


def ignored(df: pd.DataFrame, used) -> list[str]:
    return [str(c) for c in df.columns if c not in set(used)]


def _finish(df, raw, ctx, meta, used, opts, rebase=True) -> Trace:
    meta["ignored_columns"] = ignored(raw, used)
    return finalize(df, ctx, meta, sort=opts.get("sort", False),
                    zero_tokens=opts.get("zero_tokens", "error"), rebase=rebase)


def load_canonical(raw: pd.DataFrame, ctx: Ctx, opts: dict) -> Trace:
    """Our own schema. Times are kept as-is (must be >= 0); unknown columns are carried along."""
    require_columns(raw, ctx, SIGNATURES["canonical"][0])
    df = raw.copy()
    df["arrival_s"] = seconds(raw["arrival_s"], ctx, "arrival_s", nonneg=True)
    for c in ("prompt_tokens", "output_tokens"):
        df[c] = tokens(raw[c], ctx, c)
    meta = {"rows_read": len(raw), "ignored_columns": []}
    return finalize(df, ctx, meta, sort=opts.get("sort", False),
                    zero_tokens=opts.get("zero_tokens", "error"), rebase=False)


def load_azure(raw: pd.DataFrame, ctx: Ctx, opts: dict) -> Trace:
    """Azure 2023 ("2023-11-16 18:15:46.6805900") and 2024 ("...+00:00", mixed fraction widths).

    Timestamps are parsed as ISO 8601 (offset-less ones taken as UTC) to integer nanoseconds; the
    arrival is the difference from the first request, so no precision is lost to float epochs.
    """
    sig = SIGNATURES["azure"][0]
    require_columns(raw, ctx, sig)
    ctx.names = {"arrival_s": "TIMESTAMP", "prompt_tokens": "ContextTokens",
                 "output_tokens": "GeneratedTokens"}
    ts = pd.to_datetime(raw["TIMESTAMP"], format="ISO8601", utc=True, errors="coerce")
    bad = ts.isna().to_numpy()
    if bad.any():
        i = int(bad.argmax())
        raise ctx.fail("TIMESTAMP", raw.index[i],
                       f"value {raw['TIMESTAMP'].iloc[i]!r} is not a timestamp",
                       "Expected e.g. '2023-11-16 18:15:46.6805900' or "
                       "'2024-05-10 00:00:00.009930+00:00'.")
    ns = ts.dt.as_unit("ns").astype("int64").to_numpy()
    df = pd.DataFrame({"arrival_s": (ns - ns.min()) / 1e9,
                       "prompt_tokens": tokens(raw["ContextTokens"], ctx, "ContextTokens"),
                       "output_tokens": tokens(raw["GeneratedTokens"], ctx, "GeneratedTokens")},
                      index=raw.index)
    first = str(raw["TIMESTAMP"].iloc[0])
    meta = {"rows_read": len(raw), "variant": "2024" if "+" in first[10:] else "2023"}
    trace = _finish(df, raw, ctx, meta, sig, opts)
    # finalize re-based to the first kept request; restate that origin as a wall-clock time
    offset = pd.to_timedelta(round(trace.meta["time_origin"] * 1e9), unit="ns")
    trace.meta["time_origin"] = str(ts.min() + offset)
    return trace


def _as_list(v) -> list:
    return [v] if isinstance(v, str) else list(v)


def load_burstgpt(raw: pd.DataFrame, ctx: Ctx, opts: dict) -> Trace:
    """BurstGPT: failed requests (Response tokens 0) are dropped or kept by explicit option.

    burstgpt_failed="drop" (default) removes them and records the count in meta['dropped'];
    "keep" keeps them with output_tokens=1 (the prompt was still processed; one token is the
    least a serving engine produces) and records meta['failed_kept']. `model` / `log_type`
    filter rows (e.g. model="ChatGPT", log_type="Conversation log"); filtered counts are recorded.
    """
    sig = SIGNATURES["burstgpt"][0]
    require_columns(raw, ctx, sig)
    ctx.names = {"arrival_s": "Timestamp", "prompt_tokens": "Request tokens",
                 "output_tokens": "Response tokens", "session_id": "Session ID"}
    failed_mode = opts.get("burstgpt_failed", "drop")
    if failed_mode not in ("drop", "keep"):
        raise TraceError(f"burstgpt_failed={failed_mode!r}: use 'drop' (default) or 'keep'")
    dropped: dict[str, int] = {}
    meta: dict[str, object] = {"rows_read": len(raw), "dropped": dropped}
    used = list(sig)
    for opt, col in (("model", "Model"), ("log_type", "Log Type")):
        if opts.get(opt) is None:
            continue
        require_columns(raw, ctx, (col,))
        want = _as_list(opts[opt])
        keep = raw[col].isin(want)
        if not keep.any():
            raise TraceError(f"{ctx.source}: no rows have {col} in {want}; the file has "
                             f"{sorted(map(str, raw[col].dropna().unique()))[:20]}")
        dropped[f"{opt}_filter"] = int((~keep).sum())
        raw = raw[keep]
    out = tokens(raw["Response tokens"], ctx, "Response tokens")
    failed = (out == 0).to_numpy()
    if failed_mode == "drop":
        dropped["burstgpt_failed"] = int(failed.sum())
        raw, out = raw[~failed], out[~failed]
    else:
        meta["failed_kept"] = int(failed.sum())
        out = out.where(~failed, 1)
    df = pd.DataFrame({"arrival_s": seconds(raw["Timestamp"], ctx, "Timestamp"),
                       "prompt_tokens": tokens(raw["Request tokens"], ctx, "Request tokens"),
                       "output_tokens": out}, index=raw.index)
    if "Session ID" in raw.columns:
        df["session_id"] = raw["Session ID"]
        used.append("Session ID")
    used += [c for c, o in (("Model", "model"), ("Log Type", "log_type")) if opts.get(o)]
    return _finish(df, raw, ctx, meta, used, opts)


def load_mooncake(raw: pd.DataFrame, ctx: Ctx, opts: dict) -> Trace:
    """Mooncake: `timestamp` in ms; `hash_ids` (ids of 512-token prefix blocks) -> prefix_blocks."""
    sig = SIGNATURES["mooncake"][0]
    require_columns(raw, ctx, sig)
    ctx.names = {"arrival_s": "timestamp", "prompt_tokens": "input_length",
                 "output_tokens": "output_length", "prefix_blocks": "hash_ids"}
    df = pd.DataFrame({"arrival_s": seconds(raw["timestamp"], ctx, "timestamp", scale=1e-3),
                       "prompt_tokens": tokens(raw["input_length"], ctx, "input_length"),
                       "output_tokens": tokens(raw["output_length"], ctx, "output_length")},
                      index=raw.index)
    used = list(sig)
    if "hash_ids" in raw.columns:
        used.append("hash_ids")
        df["prefix_blocks"] = _hash_id_strings(raw["hash_ids"], ctx)
    meta = {"rows_read": len(raw), "prefix_block_tokens": MOONCAKE_BLOCK_TOKENS}
    return _finish(df, raw, ctx, meta, used, opts)


def _hash_id_strings(col: pd.Series, ctx: Ctx) -> list[str] | pd.Series:
    """hash_ids lists -> "1 2 3" strings. JSON lines of plain int lists (every real Mooncake file)
    take a vectorised path (Arrow joins the ids); anything else goes cell by cell, which is where
    the error for a bad cell is raised."""
    cells = col.tolist()
    if all(type(h) is list for h in cells):
        flat = list(itertools.chain.from_iterable(cells))
        if set(map(type, flat)) <= {int}:
            with contextlib.suppress(OverflowError):  # beyond int64: the cell path reports it
                ids = pa.array(np.array(flat, dtype=np.int64)).cast(pa.string())
                offsets = np.concatenate(([0], np.cumsum([len(h) for h in cells]))).astype(np.int64)
                lists = pa.LargeListArray.from_arrays(pa.array(offsets), ids)
                return pd.Series(pc.binary_join(lists, " ").to_pylist(), index=col.index, dtype=str)
    blocks = []
    for label, h in col.items():
        if isinstance(h, str) and h.lstrip().startswith("["):  # a JSON list in a CSV cell
            with contextlib.suppress(ValueError):  # else reported below as not a list
                h = json.loads(h)
        if isinstance(h, (list, tuple, np.ndarray)):
            ok = (h.dtype.kind in "iu" if isinstance(h, np.ndarray) and h.dtype != object
                  else all(type(x) is int or type(x) in _NP_INTS for x in h))
            if not ok:
                bad = [x for x in h if type(x) is not int and type(x) not in _NP_INTS]
                raise ctx.fail("hash_ids", label, f"element {bad[0]!r} is not a whole number",
                               "hash_ids must be a flat JSON list of integer block ids.")
            blocks.append(" ".join(str(int(x)) for x in h))
        elif h is None or (isinstance(h, float) and np.isnan(h)):
            blocks.append("")
        else:
            raise ctx.fail("hash_ids", label, f"value {h!r} is not a list",
                           "hash_ids must be a JSON list of integer block ids.")
    return blocks


def load_vidur(raw: pd.DataFrame, ctx: Ctx, opts: dict) -> Trace:
    """Vidur/Sarathi processed trace with `arrived_at` seconds."""
    sig = SIGNATURES["vidur"][0]
    require_columns(raw, ctx, sig)
    ctx.names = {"arrival_s": "arrived_at", "prompt_tokens": "num_prefill_tokens",
                 "output_tokens": "num_decode_tokens"}
    df = pd.DataFrame({"arrival_s": seconds(raw["arrived_at"], ctx, "arrived_at"),
                       "prompt_tokens": tokens(raw["num_prefill_tokens"], ctx,
                                               "num_prefill_tokens"),
                       "output_tokens": tokens(raw["num_decode_tokens"], ctx,
                                               "num_decode_tokens")}, index=raw.index)
    _check_total(raw, df, ctx)
    used = list(sig) + [c for c in ("num_total_tokens", "pd_ratio") if c in raw.columns]
    return _finish(df, raw, ctx, {"rows_read": len(raw)}, used, opts)


def _check_total(raw: pd.DataFrame, df: pd.DataFrame, ctx: Ctx) -> None:
    """num_total_tokens, when present, must equal prefill + decode (catches shifted columns)."""
    if "num_total_tokens" not in raw.columns:
        return
    total = tokens(raw["num_total_tokens"], ctx, "num_total_tokens")
    bad = (total != df["prompt_tokens"] + df["output_tokens"]).to_numpy()
    if bad.any():
        label = raw.index[int(bad.argmax())]
        raise ctx.fail("num_total_tokens", label,
                       f"{total[label]} != num_prefill_tokens + num_decode_tokens "
                       f"({df['prompt_tokens'][label]} + {df['output_tokens'][label]})",
                       "Fix the row or drop the num_total_tokens column.")


def load_lengths(raw: pd.DataFrame, ctx: Ctx, opts: dict) -> Trace:
    """Length-only trace: arrivals are synthesized (rows keep file order) at `rate` req/s."""
    sig = SIGNATURES["lengths"][0]
    require_columns(raw, ctx, sig)
    ctx.names = {"prompt_tokens": "num_prefill_tokens", "output_tokens": "num_decode_tokens"}
    rate = opts.get("rate")
    if rate is None:
        raise NeedsRate(f"{ctx.source} has request lengths but no timestamps (format "
                         f"'lengths'); pass rate=R (req/s; CLI --rate R) to synthesize arrivals, "
                         f"optionally with arrival='gamma', cv=C and seed=S")
    df = pd.DataFrame({"prompt_tokens": tokens(raw["num_prefill_tokens"], ctx,
                                               "num_prefill_tokens"),
                       "output_tokens": tokens(raw["num_decode_tokens"], ctx,
                                               "num_decode_tokens")}, index=raw.index)
    _check_total(raw, df, ctx)
    arrival, cv, seed = opts.get("arrival", "poisson"), opts.get("cv"), opts.get("seed", 0)
    df.insert(0, "arrival_s", arrival_times(len(df), rate, arrival, cv, seed))
    meta = {"rows_read": len(raw),
            "arrivals": {"synthesized": arrival, "rate": float(rate),
                         "cv": 1.0 if cv is None else float(cv), "seed": seed}}
    used = list(sig) + [c for c in ("num_total_tokens", "pd_ratio") if c in raw.columns]
    return _finish(df, raw, ctx, meta, used, opts)


LOADERS = {"canonical": load_canonical, "azure": load_azure, "burstgpt": load_burstgpt,
           "mooncake": load_mooncake, "vidur": load_vidur, "lengths": load_lengths}
assert set(LOADERS) == set(FORMATS)
