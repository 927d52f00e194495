"""Bounded, checked reading of trace files before pandas sees them.

A trace path must be a regular file (a FIFO, a device or ``/dev/stdin`` would block or never
end); no line may be longer than ``MAX_LINE_BYTES`` (a trace row is a few hundred bytes: a 2 GiB
"line" is a wrong file, and handing it to a parser would exhaust memory); CSV header names must
stay distinct after trimming spaces (pandas would silently rename a duplicate to ``name.1``); and
JSON lines are parsed here, one object per line, so a line that is an array, a number, a
duplicate key or nesting too deep is an error naming that line instead of a traceback or a
silently merged value. Every check streams the (decompressed) file in blocks, so memory stays
bounded by the block size and the line limit.
"""
from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import os
import stat
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np
import pandas as pd

from .schema import TraceError

#: longest line accepted in a CSV or JSON-lines trace (bytes, decompressed)
MAX_LINE_BYTES = 16 << 20
_BLOCK = 1 << 20
try:
    from zstandard import ZstdError as _ZstdError
except ImportError:  # pragma: no cover  (zstandard is a dependency; reported when opening)
    _ZstdError = OSError  # type: ignore[misc,assignment]
DECODE_ERRORS = (OSError, EOFError, lzma.LZMAError, zlib.error, zipfile.BadZipFile,
                  UnicodeDecodeError, _ZstdError)


def require_regular(path: Path, what: str = "trace") -> None:
    """TraceError unless ``path`` is an existing regular file (not a FIFO, device or folder)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise TraceError(f"{path}: no such {what} file") from None
    except OSError as exc:
        raise TraceError(f"{path}: cannot open the {what} file ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
                else "a device or socket")
        raise TraceError(f"{path}: is {kind}, not a regular file; save the {what} to a file "
                         "and give its path")


def open_binary(path: Path) -> BinaryIO:
    """The file's bytes, decompressed according to its extension (.gz .bz2 .xz .zst .zip)."""
    name = path.name.lower()
    if name.endswith(".gz"):
        return cast(BinaryIO, gzip.open(path, "rb"))
    if name.endswith(".bz2"):
        return cast(BinaryIO, bz2.open(path, "rb"))
    if name.endswith(".xz"):
        return cast(BinaryIO, lzma.open(path, "rb"))
    if name.endswith(".zst"):
        try:
            import zstandard
        except ImportError:
            raise TraceError(f"{path}: reading .zst needs the zstandard package (pip install "
                             "zstandard), or decompress the file first") from None
        fh = open(path, "rb")  # noqa: SIM115  (closed with the reader)
        reader = zstandard.ZstdDecompressor().stream_reader(fh, closefd=True)
        return cast(BinaryIO, io.BufferedReader(reader))  # adds readline
    if name.endswith(".zip"):
        zf = zipfile.ZipFile(path)
        members = [m for m in zf.namelist() if not m.endswith("/")]
        if len(members) != 1:
            zf.close()
            raise TraceError(f"{path}: a zipped trace must hold exactly one file, this one holds "
                             f"{len(members)}; unzip it and give the trace's own path")
        return cast(BinaryIO, zf.open(members[0]))
    return open(path, "rb")


def _cannot_read(path: Path, container: str, exc: BaseException) -> TraceError:
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return TraceError(f"{path}: cannot read as {container} ({type(exc).__name__}: {first}); "
                      "is the file complete and of the type its name says?")


def _too_long(path: Path, line: int) -> TraceError:
    return TraceError(f"{path}: line {line} is longer than {MAX_LINE_BYTES >> 20} MiB; a trace "
                      "row is a few hundred bytes: is this the trace file (and not, say, one "
                      "huge JSON document or a binary file)?")


def check_lines(path: Path, container: str) -> str:
    """Stream the file once: TraceError if a line exceeds MAX_LINE_BYTES; returns line 1."""
    run, line, first = 0, 1, b""
    try:
        with open_binary(path) as fh:
            while block := fh.read(_BLOCK):
                nl = np.flatnonzero(np.frombuffer(block, np.uint8) == 10)
                if line == 1 and not first:
                    first = block[: nl[0]] if len(nl) else block[:MAX_LINE_BYTES]
                if len(nl) == 0:
                    run += len(block)
                    if run > MAX_LINE_BYTES:
                        raise _too_long(path, line)
                    continue
                gaps = np.diff(nl, prepend=-1) - 1
                gaps[0] += run
                if gaps.max() > MAX_LINE_BYTES:
                    raise _too_long(path, line + int(gaps.argmax()))
                line += len(nl)
                run = len(block) - int(nl[-1]) - 1
                if run > MAX_LINE_BYTES:
                    raise _too_long(path, line)
    except TraceError:
        raise
    except DECODE_ERRORS as exc:
        raise _cannot_read(path, container, exc) from None
    return first.decode("utf-8-sig", errors="replace").rstrip("\r")


def check_csv_header(path: Path, header: str) -> None:
    """Header names must be distinct after trimming (pandas would rename one to ``name.1``)."""
    try:
        names = next(csv.reader([header]), [])
    except csv.Error:
        return  # pandas reports a malformed header itself
    seen: dict[str, int] = {}
    for i, name in enumerate(n.strip() for n in names):
        if name in seen:
            raise TraceError(f"{path}: columns {seen[name] + 1} and {i + 1} of the header are both "
                             f"named {name!r} (after trimming spaces); rename or remove one")
        seen[name] = i


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


class _DuplicateKey(ValueError):
    pass


def _json_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with open_binary(path) as fh:
        for n, raw in enumerate(iter(lambda: fh.readline(MAX_LINE_BYTES + 1), b""), start=1):
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                raise _too_long(path, n)
            yield n, raw


def _parse_line(path: Path, n: int, text: bytes) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except _DuplicateKey as exc:
        raise TraceError(f"{path}: line {n}: key {exc.args[0]!r} appears twice in one object; "
                         "keep one") from None
    except RecursionError:
        raise TraceError(f"{path}: line {n}: JSON nested too deeply; a trace line is one flat "
                         "object like {\"timestamp\": 0, \"input_length\": 10, ...}") from None
    except ValueError as exc:  # JSONDecodeError, and UnicodeDecodeError of non-UTF-8 bytes
        raise TraceError(f"{path}: line {n}: not valid JSON ({exc}); each line must be one JSON "
                         "object") from None


def read_jsonl(path: Path) -> pd.DataFrame:
    """One JSON object per line (blank lines skipped) as a DataFrame, with clean errors.

    The lines are parsed as one JSON array (one C-level call: fast); only when that fails is
    each line parsed alone, to name the line at fault."""
    numbers: list[int] = []
    texts: list[bytes] = []
    try:
        for n, raw in _json_lines(path):
            text = raw.strip()
            if n == 1 and text.startswith(b"\xef\xbb\xbf"):
                text = text[3:]  # UTF-8 byte-order mark
            if text:
                numbers.append(n)
                texts.append(text)
    except TraceError:
        raise
    except DECODE_ERRORS as exc:
        raise _cannot_read(path, "jsonl", exc) from None
    if not texts:
        raise TraceError(f"{path}: the file holds no JSON objects; a trace needs requests")
    try:
        rows = json.loads(b"[" + b",".join(texts) + b"]", object_pairs_hook=_no_duplicate_keys)
        if len(rows) != len(texts):  # a line like `1, 2` holds two values
            raise ValueError("value count")
    except (ValueError, RecursionError):
        rows = [_parse_line(path, n, t) for n, t in zip(numbers, texts, strict=True)]
    for n, obj in zip(numbers, rows, strict=True):
        if not isinstance(obj, dict):
            raise TraceError(f"{path}: line {n}: is a JSON {type(obj).__name__}, not an object; "
                             "each line must be one object like "
                             "{\"arrival_s\": 0.5, \"prompt_tokens\": 10, ...}")
    return pd.DataFrame.from_records(rows)


__all__ = ["MAX_LINE_BYTES", "check_csv_header", "check_lines", "open_binary", "read_jsonl",
           "require_regular"]
