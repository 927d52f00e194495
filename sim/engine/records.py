"""Compact, append-only per-request results.

Results are kept as packed binary rows (8 bytes a value: 9 floats, then 14 integers) rather than
as Python objects, so a million-request run keeps 184 bytes per finished request, and Sequence
objects are freed as soon as their request ends. A row is written by one ``struct.pack_into``
call into a preallocated block of a fixed number of requests (never one buffer reallocated as it
grows, which fragments the heap; and one C call a request rather than a conversion per value),
and ``to_frame`` views each block as a structured array, scatters it into the sorted table and
frees it before the next, so the table is built without a second full copy of the records (at a
million requests, about 180 MB less at the peak).
"""
from __future__ import annotations

import math
import struct
from typing import Final, Protocol, cast

import numpy as np
import pandas as pd

from goodput.sim.engine.sequence import OUTCOMES, UNFINISHED, Sequence
from goodput.sim.schema import FLOAT_COLUMNS as _FLOAT_COLS
from goodput.sim.schema import INT_COLUMNS as _INT_COLS
from goodput.sim.schema import REQUEST_COLUMNS, REQUEST_KINDS

#: the order values are stored in each request's stretch of the buffers (goodput.sim.schema names them)
_F_ORDER = ("arrival_s", "first_scheduled_s", "first_token_s", "completion_s", "max_tbt_s",
            "migrated_bytes", "kv_handoff_s", "kv_landed_s", "kv_transfer_bytes")
_I_ORDER = ("request_id", "instance", "prompt_tokens", "output_tokens", "generated_tokens",
            "preemptions", "outcome", "reject_reason", "priority", "slo_class", "migrations",
            "prefill_instance", "cached_tokens", "kind")
assert sorted(_F_ORDER) == sorted(_FLOAT_COLS) and sorted(_I_ORDER) == sorted(_INT_COLS)


#: requests per block of the record buffers (2.9 MB)
BLOCK = 1 << 14
#: one request's row: its floats, then its integers, native byte order, no padding
_ROW = struct.Struct(f"={len(_F_ORDER)}d{len(_I_ORDER)}q")
#: the same row as numpy sees it
_ROW_DTYPE = np.dtype([("f", np.float64, (len(_F_ORDER),)), ("i", np.int64, (len(_I_ORDER),))])
assert _ROW_DTYPE.itemsize == _ROW.size
#: module constants (Final: a compiled build reads them without a dictionary lookup per record)
_ROW_SIZE: Final = _ROW.size
_PACK_INTO: Final = _ROW.pack_into


class Client(Protocol):
    """Who a ``Sequence.client`` is: told when that LLM call ends, instead of the records."""

    def ended(self, seq: Sequence, outcome: int, completion: float, reason: str) -> None: ...


class RecordSink:
    """Blocks of ``BLOCK`` packed rows, one row a request (one ``pack_into`` a request rather
    than a call per column: this runs once per request on the hot path)."""

    def __init__(self) -> None:
        self._blocks: list[bytearray] = []  # full blocks (the last possibly cut short)
        self._block_bytes = BLOCK * _ROW_SIZE
        self._buf = bytearray(self._block_bytes)
        self._at = 0  # byte offset of the next row in ``_buf``
        self.reasons: list[str] = [""]
        self._reason_code = {"": 0}
        self.slo_classes: list[str] = ["default"]

    def reason_code(self, reason: str) -> int:
        code = self._reason_code.get(reason)
        if code is None:
            code = self._reason_code[reason] = len(self.reasons)
            self.reasons.append(reason)
        return code

    def add(self, seq: Sequence, outcome: int, completion: float = math.nan, reason: str = "") -> None:
        """A request ended (every end comes here): a request with a ``client`` (its session,
        closed loop or compound request, goodput.sim.clients) is handed to it, which writes the
        trace row's record itself (``write``) and sends what follows; any other is written."""
        client = seq.client
        if client is not None:
            cast(Client, client).ended(seq, outcome, completion, reason)
            return
        self.write(seq, outcome, completion, reason)

    def write(self, seq: Sequence, outcome: int, completion: float = math.nan, reason: str = "") -> None:
        """Write ``seq``'s record."""
        _PACK_INTO(self._buf, self._at,
                   seq.arrival, seq.first_scheduled, seq.first_token, completion, seq.max_tbt,
                   seq.migrated_bytes, seq.kv_handoff, seq.kv_landed, seq.kv_bytes,
                   seq.rid, seq.instance, seq.prompt, seq.output, seq.generated, seq.preemptions,
                   outcome, self.reason_code(reason) if reason else 0, seq.priority,
                   seq.slo_class, seq.migrations, seq.prefill_instance, seq.cached, seq.kind)
        self._at += _ROW_SIZE
        if self._at == self._block_bytes:
            self._seal()

    def _seal(self) -> None:
        """Keep the current block (cut to its rows) and start another."""
        buf = self._buf
        if self._at < len(buf):
            del buf[self._at:]
        if buf:
            self._blocks.append(buf)
        self._buf, self._at = bytearray(self._block_bytes), 0

    def add_unarrived(self, rids, arrivals, prompts, outputs, priorities, slo_codes, reason: str) -> None:
        """Requests the run never reached (arrival after ``max_sim_time_s``): counted unfinished."""
        n = len(rids)
        if n == 0:
            return
        rows = np.empty(n, dtype=_ROW_DTYPE)
        f, i = rows["f"], rows["i"]
        f[:] = np.nan
        f[:, _F_ORDER.index("arrival_s")] = arrivals
        for col in ("migrated_bytes", "kv_transfer_bytes"):
            f[:, _F_ORDER.index(col)] = 0.0
        i[:] = 0
        for col, vals in (("request_id", rids), ("instance", -1), ("prompt_tokens", prompts),
                          ("output_tokens", outputs), ("outcome", UNFINISHED),
                          ("reject_reason", self.reason_code(reason)), ("priority", priorities),
                          ("slo_class", slo_codes), ("prefill_instance", -1)):
            i[:, _I_ORDER.index(col)] = vals
        self._seal()
        self._blocks.append(bytearray(rows.tobytes()))

    def __len__(self) -> int:
        return (sum(len(b) for b in self._blocks) + self._at) // _ROW_SIZE

    def to_frame(self) -> pd.DataFrame:
        """The records as a table sorted by request id; the sink is emptied. Each block is
        scattered into the table's columns at its requests' sorted positions and freed before
        the next, so the peak is the records plus one block, not the records twice."""
        self._seal()
        blocks, self._blocks = self._blocks, []
        nf, ni = len(_F_ORDER), len(_I_ORDER)
        ids = np.concatenate([np.frombuffer(b, dtype=_ROW_DTYPE)["i"][:, 0] for b in blocks]) \
            if blocks else np.zeros(0, np.int64)
        n = len(ids)
        rank = np.empty(n, dtype=np.int64)  # where each record goes in the table
        rank[np.argsort(ids, kind="stable")] = np.arange(n)
        del ids
        fcols = [np.empty(n, dtype=np.float64) for _ in range(nf)]
        icols = [np.empty(n, dtype=np.int64) for _ in range(ni)]
        lo = 0
        while blocks:
            block = blocks.pop(0)
            rows = np.frombuffer(block, dtype=_ROW_DTYPE)
            fv, iv = rows["f"], rows["i"]
            at = rank[lo:lo + len(iv)]
            for j in range(nf):
                fcols[j][at] = fv[:, j]
            for j in range(ni):
                icols[j][at] = iv[:, j]
            lo += len(iv)
            del fv, iv, rows, block
        categories = {"outcome": list(OUTCOMES), "reject_reason": self.reasons,
                      "slo_class": self.slo_classes, "kind": list(REQUEST_KINDS)}
        data: dict[str, object] = {}
        for col in REQUEST_COLUMNS:
            if col in _F_ORDER:
                data[col] = fcols[_F_ORDER.index(col)]
                continue
            values = icols[_I_ORDER.index(col)]
            if col in categories:
                data[col] = pd.Categorical.from_codes(values, categories=pd.Index(categories[col]))
            else:
                data[col] = values
        return pd.DataFrame(data, copy=False)

