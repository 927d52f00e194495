"""Column checks shared by every loader, and the final step that turns mapped columns into a Trace.

Every format loader maps its own columns onto the canonical names and then calls `finalize`, so
all formats get the same rules: token counts are whole numbers, prompts have >= 1 token, outputs
have >= 1 token (zeros are an error unless the caller opts into dropping them) except that
`kind: embed` rows have exactly 0 (prefill only), arrivals are sorted (an error unless the caller
opts into sorting), optional columns get their defaults, the compound-request columns are set
only on `rag` rows, and `prefix_blocks` obeys the block rules in `prefix`.
Errors name the column *as it is spelled in the user's file* and the first offending row, because
that is what the user has to go and fix.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .prefix import check_blocks, parse_blocks
from .schema import (
    OPTIONAL,
    PREFIX_BLOCK_TOKENS,
    RAG_COLUMNS,
    REQUEST_KINDS,
    REQUIRED,
    Trace,
    TraceError,
)

STRING_COLUMNS = ("slo_class", "session_id", "prefix_blocks", "kind")
#: counts and ids at or beyond this are refused: float64 stops being exact, int64 wraps later
_TOO_LARGE = 2**53


@dataclass
class Ctx:
    """Where rows come from, so an error can point at the exact line of the user's file.

    `line_offset` is the file line number of data row 0 (2 for a CSV with a header row, 1 for
    JSON lines); None when rows have no line numbers (Parquet).
    """

    source: str
    fmt: str
    line_offset: int | None = None
    names: dict = field(default_factory=dict)  # canonical column -> column name in the file

    def col(self, canonical: str) -> str:
        return self.names.get(canonical, canonical)

    def where(self, label) -> str:
        if self.line_offset is None:
            return f"row {label}"
        return f"row {label} (file line {int(label) + self.line_offset})"

    def fail(self, column: str, label, problem: str, fix: str) -> TraceError:
        return TraceError(
            f"{self.source}: column '{column}' ({self.fmt} format), {self.where(label)}: "
            f"{problem}. {fix}"
        )


def require_columns(df: pd.DataFrame, ctx: Ctx, needed: tuple[str, ...]) -> None:
    """Missing columns are named together with the columns the format expects."""
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise TraceError(
            f"{ctx.source}: missing column(s) {missing} for the {ctx.fmt} format, which needs "
            f"{list(needed)}; the file has {list(map(str, df.columns))}. Rename the columns or "
            f"pass the right format= (see traces/README.md)."
        )


def _first_bad(ctx: Ctx, column: str, s: pd.Series, checks: list) -> None:
    """Raise for the earliest row failing any (mask, problem) check, naming that row's problem."""
    first, why = None, None
    nbad = 0
    for mask, problem in checks:
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            nbad += int(mask.sum())
            pos = int(mask.argmax())
            if first is None or pos < first:
                first, why = pos, problem
    if first is not None:
        label, value = s.index[first], s.iloc[first]
        value = value.item() if hasattr(value, "item") else value  # np.int64(-2) -> -2
        more = f" ({nbad} bad value(s) in this column in all)" if nbad > 1 else ""
        raise ctx.fail(column, label, f"value {value!r} {why}{more}",
                       "Fix or remove those rows.")


def tokens(s: pd.Series, ctx: Ctx, column: str, signed: bool = False, exact_ids: bool = False) -> pd.Series:
    """Token counts as int64: present, numeric, whole and >= 0 (the >= 1 rule is in finalize).

    `signed` allows negative whole numbers (used for `priority`, which is not a count).
    Integers are kept exact (no trip through float64, which merges ids beyond 2^53); booleans
    (JSON ``true``) are not numbers; magnitudes of 2^53 or more are refused rather than wrapped.
    """
    if pd.api.types.is_bool_dtype(s.dtype):
        _first_bad(ctx, column, s, [(np.ones(len(s), bool), "is true/false; expected a whole number")])
    if s.dtype == object:
        is_bool = np.fromiter((isinstance(x, (bool, np.bool_)) for x in s), bool, len(s))
        _first_bad(ctx, column, s, [(is_bool, "is true/false; expected a whole number")])
    num = pd.to_numeric(s, errors="coerce")
    if pd.api.types.is_integer_dtype(num.dtype) and not pd.api.types.is_bool_dtype(num.dtype):
        iv = num.to_numpy()
        # ids are labels, exact over all of int64; counts beyond 2^53 are nonsense
        checks_i = [] if exact_ids else [(np.abs(iv) >= _TOO_LARGE, "is too large (2^53 or more)")]
        if not signed:
            checks_i.insert(0, (iv < 0, "is negative; token counts must be >= 0"))
        _first_bad(ctx, column, s, checks_i)
        return pd.Series(iv.astype(np.int64), index=s.index)
    num = num.astype("float64")
    missing = s.isna().to_numpy()
    v = num.to_numpy()
    nonnum = np.isnan(v) & ~missing
    finite = np.isfinite(v)
    checks = [
        (missing, "is missing; every request needs a value here"),
        (nonnum, "is not a number; expected a whole number"),
        (~finite & ~np.isnan(v), "is infinite; expected a whole number"),
        (finite & (np.abs(v) >= _TOO_LARGE), "is too large (2^53 or more)"),
        (finite & (v != np.floor(v)), "is not a whole number"),
    ]
    if not signed:
        checks.insert(3, (finite & (v < 0), "is negative; token counts must be >= 0"))
    _first_bad(ctx, column, s, checks)
    return pd.Series(v.astype(np.int64), index=s.index)


def seconds(s: pd.Series, ctx: Ctx, column: str, scale: float = 1.0,
            nonneg: bool = False) -> pd.Series:
    """A numeric time column as float64 seconds (`scale` converts e.g. ms -> s). Timestamps
    (datetime columns, e.g. from Parquet) are wall-clock times: they become seconds since the
    earliest one, so the run starts at 0; durations become seconds. Their own unit is used
    whatever it is (it used to be read as raw microseconds); `scale` does not apply to them."""
    if pd.api.types.is_datetime64_any_dtype(s.dtype) or pd.api.types.is_timedelta64_dtype(s.dtype):
        missing = s.isna().to_numpy()
        _first_bad(ctx, column, s, [(missing, "is missing; every request needs an arrival time")])
        if pd.api.types.is_datetime64_any_dtype(s.dtype):
            t = s.dt.tz_convert("UTC").dt.tz_localize(None) if s.dt.tz is not None else s
            secs = (t - t.min()).dt.total_seconds()
        else:
            secs = s.dt.total_seconds()
        return pd.Series(secs.to_numpy(dtype=np.float64), index=s.index)
    num = pd.to_numeric(s, errors="coerce").astype("float64")
    missing = s.isna().to_numpy()
    v = num.to_numpy()
    checks = [
        (missing, "is missing; every request needs an arrival time"),
        (np.isnan(v) & ~missing, "is not a number"),
        (np.isinf(v), "is infinite"),
    ]
    if nonneg:
        checks.append((v < 0, "is negative; arrival times must be >= 0 seconds"))
    _first_bad(ctx, column, s, checks)
    return pd.Series(v * scale, index=s.index)


def _embed_rows(df: pd.DataFrame) -> np.ndarray:
    """Rows of kind 'embed' (read before `_optional` fills the column: zero outputs depend on it)."""
    if "kind" not in df.columns:
        return np.zeros(len(df), dtype=bool)
    return (df["kind"].where(df["kind"].notna(), "").astype(str) == "embed").to_numpy()


def _check_embed_outputs(df: pd.DataFrame, ctx: Ctx) -> None:
    """An embed request only prefills: its output_tokens must be 0, so no decode is simulated."""
    bad = _embed_rows(df) & (df["output_tokens"] != 0).to_numpy()
    if bad.any():
        label = df.index[int(bad.argmax())]
        raise ctx.fail(ctx.col("output_tokens"), label,
                       f"is {int(df['output_tokens'][label])} on a kind 'embed' row ({int(bad.sum())} "
                       f"such row(s)); embed requests are prefill only",
                       "Set output_tokens to 0 on embed rows, or give them kind generate.")


def _drop_or_fail(df: pd.DataFrame, ctx: Ctx, meta: dict, zero_tokens: str) -> pd.DataFrame:
    for canon, rule in (("prompt_tokens", "a prompt needs at least 1 token"),
                        ("output_tokens", "a request must generate at least 1 token")):
        zero = (df[canon] == 0).to_numpy()
        if canon == "output_tokens":
            zero = zero & ~_embed_rows(df)  # 0 is the rule for embed rows, not a defect
        if not zero.any():
            continue
        if zero_tokens == "drop":
            meta["dropped"][f"zero_{canon}"] = int(zero.sum())
            df = df[~zero]
        else:
            label = df.index[int(zero.argmax())]
            raise ctx.fail(ctx.col(canon), label, f"is 0 ({int(zero.sum())} such row(s)); {rule}",
                           "Fix those rows, or pass zero_tokens='drop' (CLI --zero-tokens drop) "
                           "to drop them; the count dropped is recorded in trace.meta['dropped']")
    return df


def _request_ids(df: pd.DataFrame, ctx: Ctx) -> pd.Series:
    if "request_id" not in df.columns:
        return pd.Series(np.arange(len(df), dtype=np.int64), index=df.index)
    ids = tokens(df["request_id"], ctx, ctx.col("request_id"), exact_ids=True)
    dup = ids.duplicated().to_numpy()
    if dup.any():
        label = df.index[int(dup.argmax())]
        raise ctx.fail(ctx.col("request_id"), label, f"id {ids[label]} appears twice",
                       "Request ids must be unique; remove the column to get ids 0..N-1.")
    return ids


def think_times(s: pd.Series, ctx: Ctx, column: str) -> pd.Series:
    """Seconds >= 0 as float64; missing stays NaN, which means "the config's think time"."""
    if pd.api.types.is_bool_dtype(s.dtype) or s.dtype == object:
        is_bool = np.fromiter((isinstance(x, (bool, np.bool_)) for x in s), bool, len(s))
        _first_bad(ctx, column, s, [(is_bool, "is true/false; expected seconds")])
    v = pd.to_numeric(s, errors="coerce").astype("float64").to_numpy()
    missing = s.isna().to_numpy()
    _first_bad(ctx, column, s, [
        (np.isnan(v) & ~missing, "is not a number; expected seconds (empty = the config's think time)"),
        (np.isinf(v), "is infinite; expected seconds"),
        (v < 0, "is negative; a think time is >= 0 seconds"),
    ])
    return pd.Series(v, index=s.index)


def _number_column(df: pd.DataFrame, ctx: Ctx, name: str, default) -> pd.Series:
    filled = df[name].where(df[name].notna(), default)
    if name == "think_time_s":
        return think_times(df[name], ctx, ctx.col(name))
    # priority may be negative; rag_rounds's own >= 1 rule (with its message) is in _compound
    return tokens(filled, ctx, ctx.col(name), signed=name in ("priority", "rag_rounds"))


def _optional(df: pd.DataFrame, ctx: Ctx) -> pd.DataFrame:
    """Fill optional columns; empty cells mean 'use the default' (documented in docs/traces.md)."""
    for name, default in OPTIONAL.items():
        if name not in df.columns:
            df[name] = default
        elif name in STRING_COLUMNS:
            df[name] = df[name].where(df[name].notna(), default).astype(str)
        else:
            df[name] = _number_column(df, ctx, name, default)
    bad = ~df["kind"].isin(REQUEST_KINDS).to_numpy()
    if bad.any():
        label = df.index[int(bad.argmax())]
        raise ctx.fail(ctx.col("kind"), label, f"value {df['kind'][label]!r} is not a request kind",
                       f"Use one of {list(REQUEST_KINDS)}.")
    _compound(df, ctx)
    if "alpha" in df.columns:
        df["alpha"] = acceptance_rates(df["alpha"], ctx, ctx.col("alpha"))
    return df


def acceptance_rates(s: pd.Series, ctx: Ctx, column: str) -> pd.Series:
    """The optional per-request speculative acceptance rate ``alpha``: float64 in [0, 1]; empty
    stays NaN, which means "the config's alpha (or alpha_dist)" (docs/speculation.md)."""
    if pd.api.types.is_bool_dtype(s.dtype) or s.dtype == object:
        is_bool = np.fromiter((isinstance(x, (bool, np.bool_)) for x in s), bool, len(s))
        _first_bad(ctx, column, s, [(is_bool, "is true/false; expected an acceptance rate in [0, 1]")])
    v = pd.to_numeric(s, errors="coerce").astype("float64").to_numpy()
    missing = s.isna().to_numpy()
    _first_bad(ctx, column, s, [
        (np.isnan(v) & ~missing, "is not a number; expected an acceptance rate in [0, 1] (empty = "
                                 "scheduler.speculation.alpha)"),
        ((v < 0) | (v > 1), "is outside [0, 1]; an acceptance rate is a probability"),
    ])
    return pd.Series(v, index=s.index)


def _compound(df: pd.DataFrame, ctx: Ctx) -> None:
    """rag_rounds >= 1, and the rag columns stay at their defaults on non-rag rows (a generate
    row with retrieved_tokens would silently simulate nothing of what the user meant)."""
    low = (df["rag_rounds"] < 1).to_numpy()
    if low.any():
        label = df.index[int(low.argmax())]
        raise ctx.fail(ctx.col("rag_rounds"), label,
                       f"value {int(df['rag_rounds'][label])} is below 1; a rag request runs at "
                       f"least one retrieval round", "Use a whole number >= 1 (empty = 1).")
    not_rag = (df["kind"] != "rag").to_numpy()
    for name in RAG_COLUMNS:
        off = not_rag & (df[name] != OPTIONAL[name]).to_numpy()
        if off.any():
            label = df.index[int(off.argmax())]
            raise ctx.fail(ctx.col(name), label,
                           f"value {int(df[name][label])} on a kind {df['kind'][label]!r} row "
                           f"({int(off.sum())} such row(s)); {', '.join(RAG_COLUMNS)} describe "
                           f"rag requests only",
                           f"Set kind to rag on those rows, or leave {name} empty "
                           f"(default {OPTIONAL[name]}).")


def _prefix_blocks(df: pd.DataFrame, ctx: Ctx, block_tokens: int) -> None:
    """The block rules of `prefix` (one-line errors naming the file's column and row)."""
    col = ctx.col("prefix_blocks")

    def fail(pos: int, problem: str, fix: str) -> TraceError:
        return ctx.fail(col, df.index[pos], problem, fix)

    blocks = parse_blocks(df["prefix_blocks"], fail)
    check_blocks(blocks, df["prompt_tokens"].to_numpy(dtype=np.int64), block_tokens, fail,
                 prompt_col=ctx.col("prompt_tokens"), where=lambda pos: ctx.where(df.index[pos]))


def finalize(df: pd.DataFrame, ctx: Ctx, meta: dict, *, sort: bool = False,
             zero_tokens: str = "error", rebase: bool = True) -> Trace:
    """Apply the shared rules to a frame already holding canonical column names.

    `df` keeps the file's row labels so errors point at file rows. `rebase` moves the first
    arrival to t=0 (real traces use wall-clock or arbitrary origins); canonical files are not
    re-based because their times are already the user's simulation clock.
    """
    meta.setdefault("dropped", {})
    df = df.copy()  # never write into the caller's (possibly filtered) frame
    if zero_tokens not in ("error", "drop"):
        raise TraceError(f"zero_tokens={zero_tokens!r}: use 'error' (default) or 'drop'")
    _check_embed_outputs(df, ctx)
    df = _drop_or_fail(df, ctx, meta, zero_tokens)
    if len(df) == 0:
        raise TraceError(f"{ctx.source}: no requests left after dropping "
                         f"{meta['dropped']}; nothing to simulate")
    arr = df["arrival_s"].to_numpy()
    back = np.diff(arr) < 0
    if back.any():
        if not sort:
            i = int(back.argmax()) + 1
            raise ctx.fail(ctx.col("arrival_s"), df.index[i],
                           f"arrival goes back in time ({float(arr[i - 1]):.6f} s then "
                           f"{float(arr[i]):.6f} s; "
                           f"{int(back.sum())} such step(s))",
                           "Sort the file by arrival time, or pass sort=True (CLI --sort).")
        df = df.iloc[np.argsort(arr, kind="stable")]
    meta["sorted"] = bool(back.any())
    if rebase:
        origin = float(df["arrival_s"].iloc[0])
        meta["time_origin"] = origin  # in the file's time axis; loaders may restate it
        df["arrival_s"] = df["arrival_s"] - origin
    df["request_id"] = _request_ids(df, ctx)
    df = _optional(df, ctx)
    meta.setdefault("prefix_block_tokens", PREFIX_BLOCK_TOKENS)
    _prefix_blocks(df, ctx, int(meta["prefix_block_tokens"]))
    df["arrival_s"] = df["arrival_s"].astype(np.float64)
    for c in ("prompt_tokens", "output_tokens"):
        df[c] = df[c].astype(np.int64)
    extras = [c for c in df.columns if c not in REQUIRED and c not in OPTIONAL]
    df = df[list(REQUIRED) + list(OPTIONAL) + extras].reset_index(drop=True)
    return Trace(df=df, source=ctx.source, format=ctx.fmt, meta=meta)
