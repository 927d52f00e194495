"""A run of speculative decode steps, executed as one event (or one step in step mode).

Each member keeps its own tokens per step: 1 + the leading run of its accepted drafts, drawn from
seeded uniforms keyed by (seed, request id, generated tokens before the step, draft position)
(``goodput.sim.engine.speculation_draws``), so a step's outcome depends on the request alone and a
fast-forwarded run of j steps is the same j steps a step engine runs. ``plan_spec_run`` walks the
steps with numpy over the batch (O(1) Python work per step, whatever the batch or the tokens) up
to the step in which a member finishes, the last whose tokens all fit in the free blocks, or the
end of the strategy's decision (``Speculation.steps_left``); it prices each step once (draft +
verify, from the group's totals) and keeps, per step, every member's kept tokens
(``per_member``), the blocks taken and the work done, so that a truncation by an arrival,
migration or drain (bisecting the step end times, as ``MixedRun`` does) and the load reads
(``Admission.load_tokens``, ``used_blocks_now``, ``generated_now``) are exact mid-run.

``finish_spec_run`` applies the steps: the decode set's common counter advances one token per
step (every member's bonus token) and ``DecodeSet.credit`` moves each member on by its accepted
drafts. When a step's tokens do not all fit in the free blocks it keeps one token per member
(its drafts are dropped), a deterministic stand-in for the preemption a real engine would do to
make room for lookahead slots.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from goodput.sim.engine.mixed_run import MixedRun
from goodput.sim.engine.speculation import MAX_K
from goodput.sim.engine.speculation_draws import accepted_table
from goodput.sim.engine.view import DECODE_ONLY

if TYPE_CHECKING:
    from goodput.sim.engine.instance import Instance
    from goodput.sim.engine.sequence import Sequence


#: a speculative step's prompt chunks: none (shared, never mutated)
_NO_CHUNKS: list[int] = []


class SpecRun(MixedRun):
    """A ``MixedRun`` of speculative decode steps (no prompt chunks), each member keeping its own
    tokens per step."""

    __slots__ = ("draft", "grown", "members", "per_member", "spec_k")

    def __init__(self, t0: float, spec_k: int, members: list, per_member: np.ndarray,
                 durs: list[float], draft: list[float], grown: list[int], work: list[int], blocks_for):
        super().__init__(t0, DECODE_ONLY, [_NO_CHUNKS] * len(durs), durs, blocks_for, len(members))
        self.spec_k = spec_k  # drafts per sequence per step
        self.members = members  # the decode set's members (join order) when the run began
        #: (steps, members): tokens each member keeps in each step (1 + accepted drafts)
        self.per_member = per_member
        self.draft = draft  # each step's drafting time (``durs``: draft + verify, + overhead)
        self.grown = grown  # KV blocks the first j steps take (grown[0] = 0)
        self.work = work  # tokens of work (up to each member's output) done by the first j steps
        self.decode_q = 0  # load reads take blocks from ``chunk_blocks_started``, not the phases

    # ---- the reads the engine and the load account share with DecodeRun / MixedRun
    def chunk_blocks_started(self, j: int) -> int:
        """KV blocks the first ``j`` steps took (``Admission.used_blocks_now``)."""
        return self.grown[j]

    def tokens_of(self, seq: Sequence, now: float) -> int:
        """Tokens ``seq`` has advanced in the steps done by ``now`` (``generated_now``)."""
        j = self.steps_by(now)
        return int(self.per_member[:j, self.members.index(seq)].sum()) if j else 0

    def cut(self, j: int) -> None:
        super().cut(j)
        del self.draft[j:]
        del self.grown[j + 1:]
        self.per_member = self.per_member[:j]


def budget_cap(inst: Instance, batch: int) -> int:
    """The largest k whose verify (batch x (1 + k w) tokens) fits the policy's token budget
    (Sarathi-Serve's ``token_budget``; policies without one: no cap)."""
    budget = getattr(inst.policy, "token_budget", None)
    if not budget:
        return MAX_K
    return max(0, min(MAX_K, (budget // batch - 1) // inst.spec.acceptance.width))


#: steps whose draws one numpy pass computes (``accepted_table``), and the most draws it may hold
WINDOW_STEPS = 32
WINDOW_DRAWS = 8192


def plan_spec_run(inst: Instance, now: float, extra: float, fast: bool) -> SpecRun | None:
    """The speculative steps from this pure-decode boundary (one in step mode). None when the
    strategy chooses k = 0 (a plain decode: the caller's ``DecodeRun``).

    Steps are planned a window at a time: one numpy pass draws what each member would keep at
    every position the window's steps can start from (``accepted_table``), the members' paths
    through it give every step's tokens, and the window's block, completion and work counts are
    column sums; so the Python work per step is a few array reads whatever the batch."""
    spec, dset, kv = inst.spec, inst.decode, inst.kv
    members = dset.members
    bsz = len(members)
    ctx_sum = dset.ctx_sum
    spec.use_cost(inst.cost)
    epoch = dset.epoch
    k = spec.choose(epoch, bsz, ctx_sum, dset.longest_context(), dset.contexts, members,
                    budget_cap(inst, bsz))
    if k == 0:
        return None
    keys, prompts, outputs, growing, alphas = spec.member_arrays(epoch, members)
    levels = spec.levels(epoch, k, alphas)
    ctx = np.array(dset.contexts(), dtype=np.int64)
    pos = ctx - prompts + 1  # output tokens generated so far: the draws' position
    left = outputs - pos
    bs = kv.block_size
    held = -(-ctx // bs)
    free = kv.total - kv.used
    remaining = spec.steps_left() if fast and not inst._preempted else 1
    width = max(1, min(WINDOW_STEPS, WINDOW_DRAWS // (bsz * k * (k + 1))))
    flat_base = np.arange(bsz, dtype=np.int64)
    windows: list[np.ndarray] = []
    starts: list[np.ndarray] = []  # each window's member contexts before it
    grown, work = [0], [0]
    while remaining > 0:
        w = min(remaining, width)
        span = (w - 1) * (k + 1) + 1  # the positions its steps can start from
        table = accepted_table(keys, pos, span, k, levels) + 1  # tokens a step from there keeps
        rows = _paths(table, w, flat_base * span)
        cum = rows.cumsum(axis=0)  # tokens each member has advanced by the end of each step
        blocks = ((-(-(ctx + cum) // bs) - held) * growing).sum(axis=1)
        fit = int(np.searchsorted(grown[-1] + blocks > free, True))  # leading steps that fit
        done = (cum >= left).any(axis=1)
        finish = int(done.argmax()) + 1 if done.any() else w + 1  # the step a member finishes in
        steps = min(fit, finish, w)
        short = steps == 0
        if short:
            if windows:
                break  # the next step's tokens do not all fit: the run ends before it
            rows = np.ones((1, bsz), dtype=np.int64)  # keep the one token the policy made room for
            cum = rows
            blocks = ((-(-(ctx + cum) // bs) - held) * growing).sum(axis=1)
            steps = 1
        rows, cum = rows[:steps], cum[:steps]
        windows.append(rows)
        starts.append(ctx + np.vstack([np.zeros((1, bsz), dtype=np.int64), cum[:-1]]))
        g0, w0 = grown[-1], work[-1]
        grown.extend((g0 + blocks[:steps]).tolist())
        work.extend((w0 + np.minimum(cum, left).sum(axis=1)).tolist())
        last = cum[-1]
        ctx, pos, left = ctx + last, pos + last, left - last
        held = -(-ctx // bs)
        remaining -= steps
        if short or steps < w or finish == w:  # a member finished, or blocks ran out
            break
    per = windows[0] if len(windows) == 1 else np.vstack(windows)
    before = np.concatenate([np.zeros(1, dtype=np.int64), per.sum(axis=1).cumsum()[:-1]])
    csums = (ctx_sum + before).tolist()  # the group's context before each step
    line = spec.step_line(k, bsz)
    if line is not None:  # priced by arithmetic: the same expression in either mode
        da, db, va, vb = line
        draft = [da + db * c for c in csums]
        durs = [d + va + vb * c for d, c in zip(draft, csums, strict=True)]
    else:
        snaps = starts[0] if len(starts) == 1 else np.vstack(starts)
        durs, draft = [], []
        for c, snap in zip(csums, snaps, strict=True):
            d, v = spec.step_time(k, bsz, c, int(snap.max()), snap.tolist)
            durs.append(d + v)
            draft.append(d)
    durs[0] += extra
    return SpecRun(now, k, list(members), per, durs, draft, grown, work, kv.blocks_for)


def _paths(table: np.ndarray, steps: int, base: np.ndarray) -> np.ndarray:
    """``(steps, B)``: the tokens each member keeps in each of ``steps`` steps, reading its path
    through ``table[i, m]`` (tokens kept by a step starting ``m`` positions on) from ``m = 0``.
    The start positions come by doubling (jumps of 1, 2, 4, ... steps composed), so the numpy
    calls grow with log(steps), not steps."""
    bsz, span = table.shape
    flat = table.ravel()
    jump = np.minimum(table + np.arange(span), span - 1).ravel()  # where a step from m lands
    rows_of = np.repeat(base, span)
    starts = np.zeros((steps, bsz), dtype=np.int64)
    done = 1
    while done < steps:
        n = min(done, steps - done)
        starts[done:done + n] = jump[base + starts[:n]]  # ``done`` steps further on
        done += n
        if done < steps:
            jump = jump[rows_of + jump]  # jumps of twice as many steps
    return flat[base + starts]


def finish_spec_run(inst: Instance, run: SpecRun, now: float) -> None:
    """Apply the run's steps: every member advances by its own kept tokens."""
    spec, steps, dset = inst.spec, run.k, inst.decode
    per = run.per_member
    bsz = len(run.members)
    assert bsz == len(dset.members) and len(per) == steps
    kept = per.sum(axis=0)
    total = int(kept.sum())
    dur = run.span(steps)
    for ob in inst.observers:
        ob.iteration(inst.index, run.t0, run.t0 + dur, steps, 0, 0, bsz, max(1, total // (steps * bsz)))
    dset.credit((kept - steps).tolist())  # the accepted drafts; ``advance`` adds a token a step
    done, overshoot = dset.advance(run.t0, steps, 1, run.durs[0], 0.0, now, run.durs)
    emitted = total - overshoot
    inst.queues.remove_work(emitted)
    inst.stats.iteration(dur, steps)
    drafting = sum(run.draft)
    spec.record(run.members, per - 1, run.spec_k, emitted, drafting, dur - drafting)
    for seq in done:
        inst._complete(seq, now)
