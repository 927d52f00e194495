"""Load any supported trace file into a validated canonical `Trace`, and write canonical files.

`load_trace` picks the container from the file extension (CSV, JSON lines, Parquet, optionally
compressed) and the format from the column names (see `formats.SIGNATURES`), so users point the
simulator at the file they downloaded without converting it first. Every format is checked by
the same rules (`validate.finalize`); anything the loader removes is removed only by an explicit
option and counted in `trace.meta['dropped']`.
"""
from __future__ import annotations

import gzip
import io
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from .formats import COMMON_OPTS, FORMAT_OPTS, FORMATS, LOADERS, SIGNATURES, NeedsRate, detect
from .rawio import (
    DECODE_ERRORS,
    check_csv_header,
    check_lines,
    open_binary,
    read_jsonl,
    require_regular,
)
from .schema import Trace, TraceError
from .validate import STRING_COLUMNS, Ctx

COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".zip")
EXTENSIONS = {".csv": "csv", ".txt": "csv", ".jsonl": "jsonl", ".json": "jsonl",
              ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
#: read as text so ids like "007" or "123" are not turned into numbers
_STR_DTYPES = {**dict.fromkeys(STRING_COLUMNS, str), "Session ID": str, "Model": str,
               "Log Type": str, "TIMESTAMP": str}


def _ext(path: Path) -> str:
    name = path.name.lower()
    for c in COMPRESSIONS:
        if name.endswith(c):
            name = name[: -len(c)]
    return Path(name).suffix


def container_of(path: Path, fmt: str = "auto") -> str:
    """'csv' | 'jsonl' | 'parquet' from the extension; a known format implies its container."""
    ext = _ext(path)
    if ext in EXTENSIONS:
        return EXTENSIONS[ext]
    if fmt == "mooncake":
        return "jsonl"
    if fmt not in ("auto", "canonical"):
        return "csv"
    raise TraceError(f"{path}: unknown file extension {ext!r}; use one of "
                     f"{sorted(EXTENSIONS)} (optionally + {list(COMPRESSIONS)}) or pass format= "
                     f"(one of {list(FORMATS)})")


def read_raw(path: Path, container: str) -> tuple[pd.DataFrame, int | None]:
    """The file as a DataFrame plus the file line number of data row 0 (for error messages).

    Text files are first streamed once by ``rawio`` (line length, CSV header names); JSON lines
    are parsed there. Every failure to read is a one-line TraceError."""
    try:
        if container == "csv":
            check_csv_header(path, check_lines(path, container))
            return pd.read_csv(path, dtype=_STR_DTYPES, low_memory=False,
                               skipinitialspace=True), 2
        if container == "jsonl":
            return read_jsonl(path), 1
        if any(path.name.lower().endswith(c) for c in COMPRESSIONS):
            with open_binary(path) as fh:
                return pd.read_parquet(io.BytesIO(fh.read())), None
        return pd.read_parquet(path), None
    except TraceError:
        raise
    except pd.errors.EmptyDataError:
        raise TraceError(f"{path}: the file is empty; a trace needs a header and requests") from None
    except ImportError as e:  # e.g. .zst without the zstandard package
        raise TraceError(f"{path}: reading this compression needs a package that is not installed "
                         f"({str(e).splitlines()[0]}); install it, or decompress the file first") from None
    except (ValueError, TypeError, pd.errors.ParserError, OverflowError, *DECODE_ERRORS) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TraceError(f"{path}: cannot read as {container} ({type(e).__name__}: {first}); "
                         "is the file complete and of the type its name says?") from None


def load_trace(path, format: str = "auto", **opts) -> Trace:
    """Read a trace file and return a validated Trace (arrival-sorted, canonical columns).

    format: "auto" (default: detect from extension and column names) or one of FORMATS.
    opts (None values mean 'not given'):
      sort=False          unsorted arrivals are an error unless True (then stably sorted)
      zero_tokens="error" zero prompt/output tokens are an error; "drop" drops and counts them
      burstgpt_failed="drop"|"keep", model=..., log_type=...   (BurstGPT only)
      rate=, arrival="poisson"|"gamma", cv=, seed=0            (length-only traces only)
    """
    path = Path(path)
    if format != "auto" and format not in FORMATS:
        raise TraceError(f"format={format!r} is not known; use 'auto' or one of {list(FORMATS)}")
    require_regular(path)  # a FIFO or device would block or never end
    if path.stat().st_size == 0:
        raise TraceError(f"{path}: the file is empty; a trace needs a header and requests")
    container = container_of(path, format)
    raw, line_offset = read_raw(path, container)
    raw.columns = [str(c).strip() for c in raw.columns]
    dup = raw.columns[raw.columns.duplicated()]
    if len(dup):
        raise TraceError(f"{path}: two columns are named {dup[0]!r} (after trimming spaces); "
                         "rename or remove one")
    fmt = detect(raw.columns, str(path)) if format == "auto" else format
    opts = {k: v for k, v in opts.items() if v is not None}
    allowed = COMMON_OPTS + FORMAT_OPTS[fmt]
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        hint = " (rate only applies to length-only traces; use generators.rescale() to change " \
               "a timed trace's rate)" if "rate" in unknown else ""
        raise TraceError(f"option(s) {unknown} do not apply to the {fmt} format, which accepts "
                         f"{list(allowed)}{hint}")
    ctx = Ctx(source=str(path), fmt=fmt, line_offset=line_offset)
    if len(raw) == 0:
        raise TraceError(f"{path}: has columns {list(raw.columns)} but no requests")
    trace = LOADERS[fmt](raw, ctx, opts)
    trace.meta["container"] = container
    return trace


def load_lengths(path, format: str = "auto", **opts) -> pd.DataFrame:
    """Just the (prompt_tokens, output_tokens) pairs of any trace, e.g. to resample lengths.

    Length-only files need no rate here because their arrivals are thrown away.
    """
    try:
        trace = load_trace(path, format, **opts)
    except NeedsRate:
        trace = load_trace(path, format, **{**opts, "rate": 1.0})
    return trace.df[["prompt_tokens", "output_tokens"]]


def write_chunks(chunks: Iterable[pd.DataFrame], path, float_format: str | None = None) -> int:
    """Stream canonical chunks to CSV (optionally .gz), Parquet or JSON lines; returns row count.

    Streaming lets `trace generate` write million-request traces without holding them in memory.
    JSON lines keep 15 significant digits of arrival_s (pandas' limit; sub-nanosecond here).
    """
    path = Path(path)
    container = container_of(path)
    comp = path.name.lower().endswith(".gz")
    if any(path.name.lower().endswith(c) for c in COMPRESSIONS) and not comp:
        raise TraceError(f"{path}: writing supports plain files or .gz only")
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    if container == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq
        writer = None
        try:
            for df in chunks:
                table = pa.Table.from_pandas(df, preserve_index=False)
                writer = writer or pq.ParquetWriter(path, table.schema)
                writer.write_table(table)
                n += len(df)
        finally:
            if writer is not None:
                writer.close()
        return n
    with (gzip.open(path, "wt", newline="") if comp else open(path, "w", newline="")) as fh:
        for df in chunks:
            if container == "csv":
                df.to_csv(fh, index=False, header=(n == 0), float_format=float_format,
                          lineterminator="\n")
            else:
                text = df.to_json(orient="records", lines=True, double_precision=15)
                if text:
                    fh.write(text if text.endswith("\n") else text + "\n")
            n += len(df)
    return n


def save_trace(trace: Trace, path, float_format: str | None = None) -> None:
    """Write a Trace in the canonical format; the container follows the extension."""
    if len(trace) == 0:
        raise TraceError(f"{path}: refusing to write an empty trace")
    write_chunks(trace.chunks(), path, float_format=float_format)


__all__ = [
    "FORMATS",
    "SIGNATURES",
    "container_of",
    "load_lengths",
    "load_trace",
    "save_trace",
    "write_chunks",
]
