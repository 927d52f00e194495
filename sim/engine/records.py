"""Compact, append-only per-request results.

Results are kept in ``array.array`` buffers (8 bytes a value) rather than as Python objects, so a
million-request run keeps 184 bytes per finished request, and Sequence objects are freed as soon
as their request ends. The buffers are blocks of a fixed number of requests (never one buffer
reallocated as it grows, which fragments the heap), and ``to_frame`` scatters each block into the
sorted table and frees it before the next, so the table is built without a second full copy of
the records (at a million requests, about 180 MB less at the peak).
"""
from __future__ import annotations

import math
from array import array

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


#: requests per block of the record buffers (1.5 MB of floats, 2.3 MB of ints)
BLOCK = 1 << 14


class RecordSink:
    """One float64 and one int64 buffer per block of ``BLOCK`` requests, each request's values
    side by side (one ``extend`` a request rather than a call per column: this runs once per
    request on the hot path)."""

    def __init__(self) -> None:
        self._blocks: list[tuple[array, array]] = []  # full blocks
        self._f = array("d")
        self._i = array("q")
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
        self._f.extend((seq.arrival, seq.first_scheduled, seq.first_token, completion, seq.max_tbt,
                        seq.migrated_bytes, seq.kv_handoff, seq.kv_landed, seq.kv_bytes))
        self._i.extend((seq.rid, seq.instance, seq.prompt, seq.output, seq.generated, seq.preemptions,
                        outcome, self.reason_code(reason) if reason else 0, seq.priority,
                        seq.slo_class, seq.migrations, seq.prefill_instance, seq.cached, seq.kind))
        if len(self._i) >= _I_BLOCK:
            self._seal()

    def _seal(self) -> None:
        """The current block is full (or a bulk add overfilled it): keep it, start another."""
        self._blocks.append((self._f, self._i))
        self._f, self._i = array("d"), array("q")

    def add_unarrived(self, rids, arrivals, prompts, outputs, priorities, slo_codes, reason: str) -> None:
        """Requests the run never reached (arrival after ``max_sim_time_s``): counted unfinished."""
        n = len(rids)
        if n == 0:
            return
        f = np.full((n, len(_F_ORDER)), np.nan)
        f[:, _F_ORDER.index("arrival_s")] = arrivals
        for col in ("migrated_bytes", "kv_transfer_bytes"):
            f[:, _F_ORDER.index(col)] = 0.0
        i = np.zeros((n, len(_I_ORDER)), dtype=np.int64)
        for col, vals in (("request_id", rids), ("instance", -1), ("prompt_tokens", prompts),
                          ("output_tokens", outputs), ("outcome", UNFINISHED),
                          ("reject_reason", self.reason_code(reason)), ("priority", priorities),
                          ("slo_class", slo_codes), ("prefill_instance", -1)):
            i[:, _I_ORDER.index(col)] = vals
        self._f.frombytes(f.tobytes())
        self._i.frombytes(i.tobytes())
        self._seal()

    def __len__(self) -> int:
        return (sum(len(i) for _, i in self._blocks) + len(self._i)) // len(_I_ORDER)

    def to_frame(self) -> pd.DataFrame:
        """The records as a table sorted by request id; the sink is emptied. Each block is
        scattered into the table's columns at its requests' sorted positions and freed before
        the next, so the peak is the records plus one block, not the records twice."""
        self._seal()
        blocks, self._blocks = self._blocks, []
        nf, ni = len(_F_ORDER), len(_I_ORDER)
        ids = np.concatenate([np.frombuffer(i, dtype=np.int64)[::ni] for _, i in blocks]) \
            if blocks else np.zeros(0, np.int64)
        n = len(ids)
        rank = np.empty(n, dtype=np.int64)  # where each record goes in the table
        rank[np.argsort(ids, kind="stable")] = np.arange(n)
        del ids
        fcols = [np.empty(n, dtype=np.float64) for _ in range(nf)]
        icols = [np.empty(n, dtype=np.int64) for _ in range(ni)]
        lo = 0
        while blocks:
            fb, ib = blocks.pop(0)
            fv = np.frombuffer(fb, dtype=np.float64).reshape(-1, nf)
            iv = np.frombuffer(ib, dtype=np.int64).reshape(-1, ni)
            at = rank[lo:lo + len(iv)]
            for j in range(nf):
                fcols[j][at] = fv[:, j]
            for j in range(ni):
                icols[j][at] = iv[:, j]
            lo += len(iv)
            del fv, iv, fb, ib
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


#: int values in a full block
_I_BLOCK = BLOCK * len(_I_ORDER)
