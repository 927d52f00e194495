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

    def add_unarrived(self, rids, arrivals, prompts, outputs, priorities, slo_codes, reason: str) -> None:
        """Requests the run never reached (arrival after ``max_sim_time_s``): counted unfinished."""
        n = len(rids)
        if n == 0:
            return
        nan = np.full(n, np.nan)
        zeros = np.zeros(n, dtype=np.int64)
        for col, vals in (("arrival_s", arrivals), ("first_scheduled_s", nan), ("first_token_s", nan),
                          ("completion_s", nan), ("max_tbt_s", nan), ("migrated_bytes", zeros)):
            self.f[col].extend(np.asarray(vals, dtype=np.float64).tolist())
        code = self.reason_code(reason)
        for col, vals in (("request_id", rids), ("instance", zeros - 1), ("prompt_tokens", prompts),
                          ("output_tokens", outputs), ("generated_tokens", zeros),
                          ("preemptions", zeros), ("outcome", zeros + UNFINISHED),
                          ("reject_reason", zeros + code),
                          ("priority", priorities), ("slo_class", slo_codes), ("migrations", zeros)):
            self.i[col].extend(np.asarray(vals, dtype=np.int64).tolist())

    def __len__(self) -> int:
        return len(self.i["request_id"])

    def to_frame(self) -> pd.DataFrame:
        data = {c: np.frombuffer(self.f[c], dtype=np.float64) if len(self.f[c]) else np.zeros(0)
                for c in _FLOAT_COLS}
        data.update({c: np.frombuffer(self.i[c], dtype=np.int64) if len(self.i[c]) else
                     np.zeros(0, dtype=np.int64) for c in _INT_COLS})
        df = pd.DataFrame(data)
        for col, names in (("outcome", list(OUTCOMES)), ("reject_reason", self.reasons),
                           ("slo_class", self.slo_classes)):
            df[col] = pd.Categorical.from_codes(df[col].to_numpy(), categories=pd.Index(names))
        order = list(REQUEST_COLUMNS)
        return df[order].sort_values("request_id", kind="stable").reset_index(drop=True)
