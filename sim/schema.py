"""The per-request results table: its columns (names, dtypes, order) and outcome names, once.

Every run produces one row per request (``SimResult.requests``, ``requests.parquet``). The
engine's record sink (``goodput.sim.engine.records``) stores these columns,
``goodput.sim.metrics`` validates and
summarises them, and the planner, the profiler's real serving loop and the notebooks read them;
all of them take the names from here. (The *input* boundary, the canonical trace, has its own
schema in ``goodput.sim.workload.schema``.)

Storage: the sink keeps each column in an ``array.array`` of float64 (``FLOAT_COLUMNS``) or int64
(``INT_COLUMNS``). The four categorical columns are stored as int64 codes and become
``pandas.Categorical`` in the frame: ``outcome`` (codes index ``OUTCOMES``), ``reject_reason``
(codes index the sink's reason list, 0 = "") and ``slo_class`` (codes index the trace's SLO
class names, 0 = "default") and ``kind`` (codes index ``REQUEST_KINDS``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

#: outcome codes stored in the records, and their names (index = code)
COMPLETED: Final = 0
REJECTED: Final = 1
UNFINISHED: Final = 2
OUTCOMES = ("completed", "rejected", "unfinished")
#: request kinds stored in the records (index = the code ``Sequence.kind`` holds)
GENERATE, EMBED, RAG = 0, 1, 2
REQUEST_KINDS = ("generate", "embed", "rag")


@dataclass(frozen=True)
class Column:
    """One column of the per-request table."""

    name: str
    #: dtype in the frame: "float64", "int64" or "category" (stored as int64 codes)
    dtype: str
    #: a table handed to ``goodput.sim.metrics`` must have it (else it is filled with ``default``)
    required: bool
    #: fill value for a missing optional column; None means "copy output_tokens"
    default: Any = None
    doc: str = ""

    @property
    def storage(self) -> str:
        """The record sink's buffer type: "float64" or "int64"."""
        return "float64" if self.dtype == "float64" else "int64"


_NAN = float("nan")

#: the table's columns in frame order
REQUEST_SCHEMA: tuple[Column, ...] = (
    Column("request_id", "int64", True, doc="the trace's request id"),
    Column("instance", "int64", False, -1, "instance that served it (-1: none)"),
    Column("arrival_s", "float64", True, doc="arrival time, s"),
    Column("first_scheduled_s", "float64", True, doc="first time in a batch, s (NaN: never)"),
    Column("first_token_s", "float64", True, doc="first output token, s (NaN: none)"),
    Column("completion_s", "float64", True, doc="last output token, s (NaN: not completed)"),
    Column("prompt_tokens", "int64", True, doc="prompt length, tokens"),
    Column("output_tokens", "int64", True, doc="requested output length, tokens"),
    Column("generated_tokens", "int64", False, None, "output tokens produced"),
    Column("preemptions", "int64", False, 0, "times preempted"),
    Column("max_tbt_s", "float64", False, _NAN, "longest gap between two output tokens, s"),
    Column("outcome", "category", True, doc="one of OUTCOMES"),
    Column("reject_reason", "category", False, "", "why it was rejected ('' if not)"),
    Column("priority", "int64", False, 0, "the trace's priority (larger = more important)"),
    Column("slo_class", "category", False, "default", "the trace's SLO class"),
    Column("migrations", "int64", False, 0, "live migrations of its KV cache"),
    Column("migrated_bytes", "float64", False, 0.0, "bytes moved by those migrations"),
    Column("prefill_instance", "int64", False, -1,
           "instance whose prefill produced the first token (-1: none)"),
    Column("kv_handoff_s", "float64", False, _NAN,
           "prefill-only instance finished the prompt and handed its KV on, s (NaN: not disaggregated)"),
    Column("kv_landed_s", "float64", False, _NAN, "its KV landed on the decode instance, s"),
    Column("kv_transfer_bytes", "float64", False, 0.0, "KV bytes moved prefill -> decode"),
    Column("cached_tokens", "int64", False, 0,
           "prompt tokens served from the prefix cache (not prefilled) at its last admission"),
    Column("kind", "category", False, "generate", "request kind (one of REQUEST_KINDS)"),
)

#: column names in frame order
REQUEST_COLUMNS: tuple[str, ...] = tuple(c.name for c in REQUEST_SCHEMA)
#: columns the record sink stores as float64 / as int64 (categoricals as codes)
FLOAT_COLUMNS: tuple[str, ...] = tuple(c.name for c in REQUEST_SCHEMA if c.storage == "float64")
INT_COLUMNS: tuple[str, ...] = tuple(c.name for c in REQUEST_SCHEMA if c.storage == "int64")
CATEGORICAL_COLUMNS: tuple[str, ...] = tuple(c.name for c in REQUEST_SCHEMA
                                             if c.dtype == "category")
#: columns a request table must have for ``goodput.sim.metrics``
REQUIRED_COLUMNS: tuple[str, ...] = tuple(c.name for c in REQUEST_SCHEMA if c.required)
#: optional column -> default (None: copy output_tokens), so hand-built or older tables summarise
OPTIONAL_DEFAULTS: dict[str, Any] = {c.name: c.default for c in REQUEST_SCHEMA
                                        if not c.required}

__all__ = [
    "CATEGORICAL_COLUMNS",
    "COMPLETED",
    "FLOAT_COLUMNS",
    "INT_COLUMNS",
    "OPTIONAL_DEFAULTS",
    "OUTCOMES",
    "REJECTED",
    "REQUEST_COLUMNS",
    "REQUEST_KINDS",
    "REQUEST_SCHEMA",
    "REQUIRED_COLUMNS",
    "UNFINISHED",
    "Column",
]
