"""Runtime state of one request inside an instance.

Every sequence advances by a number of tokens per iteration ("tokens to catch up"): a prompt
chunk, one token for a decode, k+1 for a speculative verify, a whole recompute. While a sequence
sits in an instance's running decode set its token counters are *virtual*:
``generated = gen_base + (decode_set.tokens - token_base)``, where the set's counter advances by the
tokens every member produced, so a run of k decode iterations costs O(1) Python work rather than
O(k * batch). Counters are materialised when the sequence leaves the set (``DecodeSet.leave``).
"""
from __future__ import annotations

import math
from typing import Any, Final

# outcome codes and names used in the records: defined once, in goodput.sim.schema (re-exported here)
from goodput.sim.schema import COMPLETED as COMPLETED
from goodput.sim.schema import OUTCOMES as OUTCOMES
from goodput.sim.schema import REJECTED as REJECTED
from goodput.sim.schema import UNFINISHED as UNFINISHED

# lifecycle states (TRANSFERRING: prefilled, its KV on the way to a decode instance)
# (Final: a compiled build inlines them)
WAITING: Final = 0
PREFILLING: Final = 1
DECODING: Final = 2
DONE: Final = 3
TRANSFERRING: Final = 4


class Sequence:
    __slots__ = (
        "alpha",
        "alpha_accepted",
        "alpha_checked",
        "arrival",
        "blocks",
        "cache_node",
        "cached",
        "client",
        "finish_at",
        "first_scheduled",
        "first_token",
        "gen_base",
        "generated",
        "instance",
        "join_run",
        "kind",
        "kv_bytes",
        "kv_handoff",
        "kv_landed",
        "last_token",
        "max_tbt",
        "migrated_bytes",
        "migration",
        "migrations",
        "output",
        "phase",
        "preemptions",
        "prefill_instance",
        "prefill_target",
        "prefilled",
        "prefix",
        "priority",
        "prompt",
        "reserved",
        "rid",
        "row",
        "shared",
        "slo_class",
        "state",
        "swapped",
        "token_base",
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
        self.blocks = 0  # KV blocks held while not in the decode set (written by KVPool only)
        self.first_scheduled = math.nan
        self.first_token = math.nan
        self.last_token = math.nan
        self.max_tbt = math.nan
        self.preemptions = 0
        self.migrations = 0
        self.migrated_bytes = 0.0
        # decode-set bookkeeping (valid only while in the running decode set)
        self.token_base = 0  # the set's token counter when this sequence joined
        self.gen_base = 0  # output tokens produced when it joined
        self.join_run = 0
        self.phase = 0  # token phase (mod block size) at which it needs a new KV block
        self.finish_at = 0  # the set's token counter at which its last output token is produced
        self.state = WAITING
        self.reserved = False  # KV reserved up front (Orca/static): the decode set does not grow it
        self.swapped = False  # KV sits in host memory after a swap preemption
        self.migration: object | None = None  # the live migration moving this request, if any
        # disaggregated prefill/decode (goodput.sim.engine.disagg)
        self.prefill_instance = -1  # the instance whose prefill produced the first token
        self.kv_handoff = math.nan  # when a prefill-only instance handed the KV on
        self.kv_landed = math.nan  # when it landed on the decode instance
        self.kv_bytes = 0.0
        # prefix caching (goodput.sim.engine.prefix_cache; written by KVPool only)
        self.prefix: tuple[int, ...] | None = None  # the trace's prefix block ids (None: none)
        self.cache_node: Any = None  # deepest prefix-cache node it references (a Node), or None
        self.shared = 0  # of ``blocks``, those owned by the prefix cache (counted once there)
        self.cached = 0  # prompt tokens the cache served at its last admission (records)
        #: who is told when this request ends (a session, closed-loop client or compound
        #: request driver; goodput.sim.clients / goodput.sim.compound), or None
        self.client: object | None = None
        #: this request's speculative acceptance rate (NaN: the run's alpha, or drawn from
        #: scheduler.speculation.alpha_dist when the batch first needs it)
        self.alpha = math.nan
        #: its acceptance as an online policy estimates it: moving averages of the drafts it had
        #: accepted and of the draft positions checked per step (SmartSpec; the estimate is their
        #: ratio; NaN: nothing observed yet)
        self.alpha_accepted = math.nan
        self.alpha_checked = math.nan

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return (f"Sequence(rid={self.rid}, prompt={self.prompt}, output={self.output}, "
                f"generated={self.generated}, prefilled={self.prefilled}/{self.prefill_target})")
