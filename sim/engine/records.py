"""Compact, append-only per-request results.

Results are kept in ``array.array`` buffers (8 bytes a value) rather than as Python objects, so a
million-request run keeps about 170 bytes per finished request, and Sequence objects are freed as
soon as their request ends.
"""
from __future__ import annotations

import math
from array import array

import numpy as np
import pandas as pd

from sim.engine.sequence import OUTCOMES, UNFINISHED, Sequence
from sim.schema import FLOAT_COLUMNS as _FLOAT_COLS
from sim.schema import INT_COLUMNS as _INT_COLS
from sim.schema import REQUEST_COLUMNS, REQUEST_KINDS

#: the order values are stored in each request's stretch of the buffers (sim.schema names them)
_F_ORDER = ("arrival_s", "first_scheduled_s", "first_token_s", "completion_s", "max_tbt_s",
            "migrated_bytes", "kv_handoff_s", "kv_landed_s", "kv_transfer_bytes")
_I_ORDER = ("request_id", "instance", "prompt_tokens", "output_tokens", "generated_tokens",
            "preemptions", "outcome", "reject_reason", "priority", "slo_class", "migrations",
            "prefill_instance", "cached_tokens", "kind")
assert sorted(_F_ORDER) == sorted(_FLOAT_COLS) and sorted(_I_ORDER) == sorted(_INT_COLS)


class RecordSink:
    """One float64 and one int64 buffer, each request's values side by side (one ``extend`` a
    request rather than a call per column: this runs once per request on the hot path)."""

    def __init__(self) -> None:
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

    def __len__(self) -> int:
        return len(self._i) // len(_I_ORDER)

    def to_frame(self) -> pd.DataFrame:
        """The records as a table sorted by request id. Each column is sorted straight from its
        buffer into the frame (one copy per column, no consolidated block, no re-sort), so a
        million-request run peaks at about twice the buffers rather than four times."""
        fv = np.frombuffer(self._f, dtype=np.float64).reshape(-1, len(_F_ORDER)) if len(self) else \
            np.zeros((0, len(_F_ORDER)))
        iv = np.frombuffer(self._i, dtype=np.int64).reshape(-1, len(_I_ORDER)) if len(self) else \
            np.zeros((0, len(_I_ORDER)), dtype=np.int64)
        order = np.argsort(iv[:, 0], kind="stable")
        categories = {"outcome": list(OUTCOMES), "reject_reason": self.reasons,
                      "slo_class": self.slo_classes, "kind": list(REQUEST_KINDS)}
        data: dict[str, object] = {}
        for col in REQUEST_COLUMNS:
            if col in _F_ORDER:
                data[col] = fv[order, _F_ORDER.index(col)]
                continue
            values = iv[order, _I_ORDER.index(col)]
            if col in categories:
                data[col] = pd.Categorical.from_codes(values, categories=pd.Index(categories[col]))
            else:
                data[col] = values
        return pd.DataFrame(data, copy=False)
