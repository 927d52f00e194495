"""One speculative step in the serving loop, planned and applied by the simulator's own code.

Why here and not in the executor: acceptance is the simulator's (random weights cannot accept on
their own), so the loop asks the instance what a step of the current decode set drafts (``k``) and
how many tokens each member keeps (``advance``: accepted drafts + the target's own token), runs
the draft and verify passes for real, and hands the measured end time back. In step mode the
simulator plans a speculative step with ``plan_spec_run(..., fast=False)`` and applies it with
``finish_spec_run``; the loop calls exactly those, so with the cost model as its clock it is the
simulator (``tests/test_serve_spec.py``).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from goodput.sim.engine.speculation_run import SpecRun, finish_spec_run, plan_spec_run


@dataclass
class SpecStep:
    """What one speculative iteration computes, per member of the decode set (join order)."""

    run: SpecRun
    seqs: list  # the decode set's members
    contexts: np.ndarray  # each member's cached KV tokens before the step
    k: int  # drafts per sequence (the verify computes k + 1 tokens per sequence)
    advance: np.ndarray  # tokens each member keeps: accepted drafts + the target's own one
    #: the simulator's price of the step (draft + verify) and of its drafting, kept here when
    #: planned: applying the step replaces the run's times by the measured ones
    predicted_s: float = float("nan")
    predicted_draft_s: float = float("nan")


def advance_of(run: SpecRun) -> np.ndarray:
    """Tokens each member keeps in the run's first step: 1 + its accepted drafts, drawn by the
    simulator (``goodput.sim.engine.speculation_draws``, keyed by seed, request id and position)."""
    return np.asarray(run.per_member[0], dtype=np.int64)


def plan_spec_step(inst, now: float) -> SpecStep | None:
    """The speculative step the instance would run now from a pure-decode plan (None: the
    strategy chose k = 0, a plain decode)."""
    run = plan_spec_run(inst, now, 0.0, False)
    if run is None:
        return None
    seqs = list(inst.decode.members)
    ctx = np.asarray(inst.decode.contexts(), dtype=np.int64)
    return SpecStep(run, seqs, ctx, int(run.spec_k), advance_of(run),
                    float(run.durs[0]), float(run.draft[0]))


def finish_spec_step(inst, step: SpecStep, t0: float, end: float,
                     draft_s: float | None = None) -> None:
    """Apply the step that ran from ``t0`` to ``end``: the measured span replaces the predicted
    one (and ``draft_s``, when measured, the predicted drafting time), then the simulator's
    bookkeeping runs as in step mode."""
    run = step.run
    dur = end - t0
    if dur != run.durs[0]:
        run.durs[0] = dur
        run.ends[0] = dur
    if draft_s is not None and draft_s == draft_s:
        run.draft[0] = min(draft_s, dur)
    finish_spec_run(inst, run, end)


def decisions_fingerprint() -> str:
    """A hash of the simulator code that takes a speculative step's decisions (k, the acceptance
    draws, what each member keeps). A real run records it; ``compare`` flags a case whose
    simulator has changed since, because the real engine then ran other accepted counts than
    the simulation it is compared with. The import namespace is not a decision: module paths
    are hashed as ``sim.`` whether the code names them ``goodput.sim.`` (since the packages moved
    under one namespace) or not, so a run recorded before the move keeps its fingerprint."""
    import goodput.sim.engine

    h = hashlib.sha256()
    for f in sorted(Path(goodput.sim.engine.__file__).parent.glob("speculation*.py")):
        h.update(f.name.encode())
        h.update(f.read_bytes().replace(b"goodput.sim.", b"sim."))
    return h.hexdigest()[:12]
