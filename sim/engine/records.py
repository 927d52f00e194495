"""Compact, append-only per-request results.

Results are kept column-wise in ``array.array`` buffers (8 bytes a value) rather than as Python
objects, so a million-request run keeps ~150 bytes per finished request, and Sequence objects are
freed as soon as their request ends.
"""
from __future__ import annotations

import math
from array import array

import numpy as np
import pandas as pd

from sim.engine.sequence import OUTCOMES, UNFINISHED, Sequence
from sim.schema import FLOAT_COLUMNS as _FLOAT_COLS
from sim.schema import INT_COLUMNS as _INT_COLS
from sim.schema import REQUEST_COLUMNS


class RecordSink:
    def __init__(self) -> None:
        self.f = {c: array("d") for c in _FLOAT_COLS}
        self.i = {c: array("q") for c in _INT_COLS}
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
        f, i = self.f, self.i
        f["arrival_s"].append(seq.arrival)
        f["first_scheduled_s"].append(seq.first_scheduled)
        f["first_token_s"].append(seq.first_token)
        f["completion_s"].append(completion)
        f["max_tbt_s"].append(seq.max_tbt)
        f["migrated_bytes"].append(seq.migrated_bytes)
        i["request_id"].append(seq.rid)
        i["instance"].append(seq.instance)
        i["prompt_tokens"].append(seq.prompt)
        i["output_tokens"].append(seq.output)
        i["generated_tokens"].append(seq.generated)
        i["preemptions"].append(seq.preemptions)
        i["outcome"].append(outcome)
        i["reject_reason"].append(self.reason_code(reason) if reason else 0)
        i["priority"].append(seq.priority)
        i["slo_class"].append(seq.slo_class)
        i["migrations"].append(seq.migrations)
        i["prefill_instance"].append(seq.prefill_instance)
        f["kv_handoff_s"].append(seq.kv_handoff)
        f["kv_landed_s"].append(seq.kv_landed)
        f["kv_transfer_bytes"].append(seq.kv_bytes)

    def add_unarrived(self, rids, arrivals, prompts, outputs, priorities, slo_codes, reason: str) -> None:
        """Requests the run never reached (arrival after ``max_sim_time_s``): counted unfinished."""
        n = len(rids)
        if n == 0:
            return
        nan = np.full(n, np.nan)
        zeros = np.zeros(n, dtype=np.int64)
        for col, vals in (("arrival_s", arrivals), ("first_scheduled_s", nan), ("first_token_s", nan),
                          ("completion_s", nan), ("max_tbt_s", nan), ("migrated_bytes", zeros),
                          ("kv_handoff_s", nan), ("kv_landed_s", nan), ("kv_transfer_bytes", zeros)):
            self.f[col].extend(np.asarray(vals, dtype=np.float64).tolist())
        code = self.reason_code(reason)
        for col, vals in (("request_id", rids), ("instance", zeros - 1), ("prompt_tokens", prompts),
                          ("output_tokens", outputs), ("generated_tokens", zeros),
                          ("preemptions", zeros), ("outcome", zeros + UNFINISHED),
                          ("reject_reason", zeros + code),
                          ("priority", priorities), ("slo_class", slo_codes), ("migrations", zeros),
                          ("prefill_instance", zeros - 1)):
            self.i[col].extend(np.asarray(vals, dtype=np.int64).tolist())

    def __len__(self) -> int:
        return len(self.i["request_id"])

    def to_frame(self) -> pd.DataFrame:
        """The records as a table sorted by request id. Each column is sorted straight from its
        buffer into the frame (one copy per column, no consolidated block, no re-sort), so a
        million-request run peaks at about twice the buffers rather than four times."""
        ids = np.frombuffer(self.i["request_id"], dtype=np.int64) if len(self) else np.zeros(0, np.int64)
        order = np.argsort(ids, kind="stable")
        categories = {"outcome": list(OUTCOMES), "reject_reason": self.reasons,
                      "slo_class": self.slo_classes}
        data: dict[str, object] = {}
        for col in REQUEST_COLUMNS:
            buf, dtype = (self.f[col], np.float64) if col in self.f else (self.i[col], np.int64)
            values = np.frombuffer(buf, dtype=dtype)[order] if len(buf) else np.zeros(0, dtype)
            if col in categories:
                data[col] = pd.Categorical.from_codes(values.astype(np.int64, copy=False),
                                                     categories=pd.Index(categories[col]))
            else:
                data[col] = values
        return pd.DataFrame(data, copy=False)
