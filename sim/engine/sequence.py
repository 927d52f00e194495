"""Runtime state of one request inside an instance.

While a sequence sits in an instance's running decode set, its token counters are *virtual*:
``generated = gen_base + (instance.decode_steps - step_base)``. The instance advances one counter for
the whole set, so a run of k decode iterations costs O(1) Python work rather than O(k * batch).
Counters are materialised (``materialise``) whenever the sequence leaves the set.
"""
from __future__ import annotations

import math

# lifecycle states
WAITING, PREFILLING, DECODING, DONE = 0, 1, 2, 3

# outcome codes used in the records
COMPLETED, REJECTED, UNFINISHED = 0, 1, 2
OUTCOMES = ("completed", "rejected", "unfinished")


class Sequence:
    __slots__ = (
        "rid", "row", "arrival", "prompt", "output", "priority", "slo_class", "kind",
        "instance", "prefill_target", "prefilled", "generated", "blocks",
        "first_scheduled", "first_token", "last_token", "max_tbt", "preemptions",
        "migrations", "migrated_bytes", "step_base", "gen_base", "join_run", "phase",
        "finish_step", "state", "reserved", "swapped", "migration",
    )

    def __init__(self, rid: int, arrival: float, prompt: int, output: int, priority: int = 0,
                 slo_class: int = 0, kind: int = 0):
        self.rid = rid
        self.arrival = arrival
        self.prompt = prompt
        self.output = output
        self.priority = priority
        self.slo_class = slo_class
        self.kind = kind
        self.instance = -1
        self.prefill_target = prompt  # tokens the next (re)prefill must compute
        self.prefilled = 0  # of prefill_target, tokens whose KV is already computed
        self.generated = 0  # output tokens produced so far (materialised value)
        self.blocks = 0  # KV blocks held while not in the decode set
        self.first_scheduled = math.nan
        self.first_token = math.nan
        self.last_token = math.nan
        self.max_tbt = math.nan
        self.preemptions = 0
        self.migrations = 0
        self.migrated_bytes = 0.0
        # decode-set bookkeeping (valid only while in the running decode set)
        self.step_base = 0
        self.gen_base = 0
        self.join_run = 0
        self.phase = 0
        self.finish_step = 0
        self.state = WAITING
        self.reserved = False  # KV reserved up front (Orca/static): the decode set does not grow it
        self.swapped = False  # KV sits in host memory after a swap preemption
        self.migration = None  # the live migration moving this request, if any

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return (f"Sequence(rid={self.rid}, prompt={self.prompt}, output={self.output}, "
                f"generated={self.generated}, prefilled={self.prefilled}/{self.prefill_target})")
