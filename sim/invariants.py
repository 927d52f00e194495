"""Invariants checked at the end of every run (cheap, always on): a failure is a simulator bug.

* every request read from the trace has exactly one record with an outcome;
* tokens are conserved: a completed request produced exactly its output tokens, no request more;
* KV blocks return to zero: when the run ended with nothing left to do, every instance's GPU
  blocks, reservations and host (swap) blocks are all free again;
* the steps of rag requests (``check_steps``): every LLM call handed to the engine ended in
  exactly one step row with its tokens conserved, and a request's steps agree with its record
  (a completed request completed every step, ending with its final generate call).

They cost a few vectorised passes over the result table; tests/test_policies_invariants.py and
tests/test_fast_forward.py check much more, on purpose-built cases.
"""
from __future__ import annotations

import pandas as pd


class InvariantError(AssertionError):
    """The simulator broke one of its own guarantees (please report it with the config)."""


def check_run(requests: pd.DataFrame, rows_read: int, idle_instances: list,
              steps: pd.DataFrame | None = None, calls_created: int = 0) -> None:
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
    check_steps(requests, steps, calls_created)


def _fail(what: str) -> InvariantError:
    return InvariantError(f"internal error: {what}; please report this with the config and trace")


def check_steps(requests: pd.DataFrame, steps: pd.DataFrame | None, calls_created: int) -> None:
    """The steps table of compound requests against the engine's calls and the request table."""
    if steps is None or not len(steps):
        if calls_created:
            raise _fail(f"{calls_created} LLM calls of rag requests but no step recorded")
        if "kind" not in requests:
            return
        done_rag = (requests["kind"] == "rag") & (requests["outcome"] == "completed")
        if done_rag.any():
            raise _fail(f"rag request {int(requests['request_id'][done_rag].iloc[0])} completed "
                        "without a step")
        return
    calls = steps[steps["call_id"] < 0]
    if len(calls) != calls_created or not calls["call_id"].is_unique:
        raise _fail(f"{calls_created} LLM calls of rag requests but {len(calls)} step rows "
                    f"({calls['call_id'].nunique()} distinct)")
    gen, out = calls["generated_tokens"], calls["output_tokens"]
    bad = calls[((calls["outcome"] == "completed") & (gen != out)) | (gen > out)]
    if len(bad):
        r = bad.iloc[0]
        raise _fail(f"LLM call {int(r.call_id)} of request {int(r.request_id)} ({r.outcome}) "
                    f"generated {int(r.generated_tokens)} of {int(r.output_tokens)} tokens")
    rag = requests[requests["kind"] == "rag"].set_index("request_id")
    rid = steps["request_id"]
    if not rid.isin(rag.index).all():
        raise _fail(f"steps of request {int(rid[~rid.isin(rag.index)].iloc[0])}, not a rag request")
    by = steps.groupby("request_id", sort=False)["step"]
    if not (steps["step"] == by.cumcount()).all():
        raise _fail("the steps of a rag request are not numbered 0, 1, ... in order")
    last = steps["step"] == by.transform("max")
    early = steps[~last & (steps["outcome"] != "completed")]
    if len(early):
        raise _fail(f"rag request {int(early.request_id.iloc[0])} went on after a step that did "
                    "not complete")
    ends = steps[last].set_index("request_id")
    done = rag[rag["outcome"] == "completed"]
    missing = done.index.difference(ends.index)
    if len(missing):
        raise _fail(f"rag request {int(missing[0])} completed without a step")
    e = ends.loc[done.index]
    ok = (e["type"] == "generate") & (e["outcome"] == "completed") & \
        (e["end_s"] == done["completion_s"]) & (e["generated_tokens"] == done["generated_tokens"])
    if not ok.all():
        raise _fail(f"rag request {int(ok.index[~ok.to_numpy()][0])} completed, but its last step "
                    "is not its completed final generate call")
