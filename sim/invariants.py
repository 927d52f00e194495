"""Invariants checked at the end of every run (cheap, always on): a failure is a simulator bug.

* every request read from the trace has exactly one record with an outcome;
* tokens are conserved: a completed request produced exactly its output tokens, no request more;
* KV blocks return to zero: when the run ended with nothing left to do, every instance's GPU
  blocks, reservations and host (swap) blocks are all free again.

They cost a few vectorised passes over the result table; tests/test_policies_invariants.py and
tests/test_fast_forward.py check much more, on purpose-built cases.
"""
from __future__ import annotations

import pandas as pd


class InvariantError(AssertionError):
    """The simulator broke one of its own guarantees (please report it with the config)."""


def check_run(requests: pd.DataFrame, rows_read: int, idle_instances: list) -> None:
    n = len(requests)
    if n != rows_read:
        raise InvariantError(f"internal error: {rows_read} requests read but {n} recorded; "
                             "please report this with the config and trace")
    ids = requests["request_id"]
    if not ids.is_unique:
        raise InvariantError(f"internal error: request {int(ids[ids.duplicated()].iloc[0])} "
                             "recorded twice; please report this with the config and trace")
    gen, out = requests["generated_tokens"], requests["output_tokens"]
    done = requests["outcome"] == "completed"
    bad = requests[(done & (gen != out)) | (gen > out)]
    if len(bad):
        r = bad.iloc[0]
        raise InvariantError(f"internal error: request {int(r.request_id)} ({r.outcome}) generated "
                             f"{int(r.generated_tokens)} of {int(r.output_tokens)} output tokens; "
                             "please report this with the config and trace")
    for inst in idle_instances:
        kv = inst.kv
        if kv.used or kv.reserved or kv.host_used:
            raise InvariantError(f"internal error: instance {inst.index} ended with nothing to do "
                                 f"but {kv.used} KV blocks in use ({kv.reserved} reserved, "
                                 f"{kv.host_used} on the host); please report this with the config")
