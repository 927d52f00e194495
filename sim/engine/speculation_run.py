"""A run of speculative decode steps, executed as one event (or one step in step mode).

Every member advances by the same count per step: step j (1-based) of a run that starts with the
instance's carried fraction ``c0`` (in ``Acceptance.UNITS``) and expects ``E`` units per step
makes ``(c0 + j E) // U - (c0 + (j-1) E) // U`` tokens, so the tokens after j steps,
``cum(j) = (c0 + j E) // U``, and the number of steps until a member finishes or the free blocks
run out are exact integer arithmetic. Each step is priced once (draft + verify, from the group's
totals), the run keeps its step end times and finds a truncation boundary by bisection, as
``MixedRun`` does.

Load reads (``Admission.load_tokens``, ``used_blocks_now``, ``generated_now``) multiply
``steps_done_by(now)`` by ``decode_q``; steps make different token counts here, so this run counts
its progress in *tokens*: ``decode_q`` is 1 and ``steps_done_by`` is the tokens each member has
advanced in the steps done by ``now``. The instance itself uses the step reads (``steps_by``,
``first_boundary_at_or_after``, ``span``, ``cut``). It is a ``MixedRun`` (one priced entry per
iteration, no prompt chunks) so the instance's run slot holds it as it is typed.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from sim.engine.mixed_run import MixedRun
from sim.engine.speculation import Acceptance
from sim.engine.view import DECODE_ONLY

if TYPE_CHECKING:
    from sim.engine.instance import Instance


#: a speculative step's prompt chunks: none (shared, never mutated)
_NO_CHUNKS: list[int] = []


class SpecRun(MixedRun):
    """A ``MixedRun`` of speculative decode steps (no prompt chunks), counted in tokens."""

    __slots__ = ("c0", "cum", "draft", "eu", "spec_k")

    def __init__(self, t0: float, spec_k: int, batch: int, c0: int, eu: int, cum: list[int],
                 durs: list[float], draft: list[float], blocks_for):
        super().__init__(t0, DECODE_ONLY, [_NO_CHUNKS] * len(durs), durs, blocks_for, batch)
        self.spec_k = spec_k  # drafts per sequence per step
        self.c0, self.eu = c0, eu
        self.cum = cum  # tokens each member advanced by the end of step j (cum[0] = 0)
        self.draft = draft  # each step's drafting time (``durs``: draft + verify, + overhead)

    # ---- the reads the engine and the load account share with DecodeRun / MixedRun
    def work_done(self, tokens: int) -> int:
        return self.batch * tokens

    def chunk_blocks_started(self, j: int) -> int:
        return 0

    def steps_done_by(self, now: float) -> int:
        """Tokens each member has advanced in the steps done by ``now`` (not steps: see above)."""
        return self.cum[self.steps_by(now)]

    # ---- step reads
    def cut(self, j: int) -> None:
        super().cut(j)
        del self.draft[j:]
        del self.cum[j + 1:]


def plan_spec_run(inst: Instance, now: float, extra: float, fast: bool) -> SpecRun | None:
    """The speculative steps from this pure-decode boundary: up to the step in which a member
    finishes (or the last whose tokens all fit in the free blocks) in fast-forward, else one.
    None when the strategy chooses k = 0 (a plain decode: the caller's ``DecodeRun``)."""
    spec, dset, kv = inst.spec, inst.decode, inst.kv
    bsz = len(dset.members)
    ctx_sum, ctx_max = dset.ctx_sum, dset.longest_context()
    spec.use_cost(inst.cost)
    k = spec.choose(dset.epoch, bsz, ctx_sum, ctx_max, dset.contexts, dset.members)
    if k == 0:
        return None
    units, eu, c0 = Acceptance.UNITS, spec.units(k), spec.carry
    fit = dset.steps_until_shortage(kv.total - kv.used) if kv.phases.size else 1 << 60
    # steps whose tokens all fit: the largest j with cum(j) <= fit
    steps = ((fit + 1) * units - 1 - c0) // eu
    if steps < 1:  # the next step's tokens do not all fit: it keeps what fits (at least the one
        cum = [0, max(1, min(fit, (c0 + eu) // units))]  # the policy made room for)
    else:
        if fast and not inst._preempted:
            to_done = dset.steps_to_completion()  # tokens until the first member finishes
            steps = min(steps, max(1, -(-(to_done * units - c0) // eu)))
        else:
            steps = 1
        cum = [(c0 + j * eu) // units for j in range(steps + 1)]
    line = spec.step_line(k, bsz)
    if line is not None:  # priced by arithmetic: the same expression in step and fast-forward mode
        da, db, va, vb = line
        draft = [da + db * (ctx_sum + bsz * t) for t in cum[:-1]]
        durs = [d + va + vb * (ctx_sum + bsz * t) for d, t in zip(draft, cum, strict=False)]
    else:
        step_time = spec.step_time
        durs, draft = [], []
        for j in range(len(cum) - 1):
            t = cum[j]
            d, v = step_time(k, bsz, ctx_sum + bsz * t, ctx_max + t, _contexts_after(dset, t))
            durs.append(d + v)
            draft.append(d)
    durs[0] += extra
    return SpecRun(now, k, bsz, c0, eu, cum, durs, draft, kv.blocks_for)


def finish_spec_run(inst: Instance, run: SpecRun, now: float) -> None:
    """Apply the run's steps: every member advances ``cum[k]`` tokens; the carry moves on."""
    spec, k, total = inst.spec, run.k, run.cum[run.k]
    bsz = len(inst.running)
    dur = run.span(k)
    spec.carry = (run.c0 + k * run.eu) % Acceptance.UNITS
    for ob in inst.observers:
        ob.iteration(inst.index, run.t0, run.t0 + dur, k, 0, 0, bsz, max(1, total // k))
    done, overshoot = inst.decode.advance(run.t0, k, 1, run.durs[0], 0.0, now, run.durs, total)
    emitted = bsz * total - overshoot
    inst.queues.remove_work(emitted)
    inst.stats.iteration(dur, k)
    draft = sum(run.draft)
    spec.record(k, bsz, run.spec_k, emitted, draft, dur - draft)
    for seq in done:
        inst._complete(seq, now)


def _contexts_after(dset, tokens: int):
    return lambda: [c + tokens for c in dset.contexts()]
