"""The canonical request schema every trace loader produces and the simulator consumes.

One row per request. Required columns are validated strictly (a clear error names the column and
the fix); optional columns get defaults so later features (priorities, SLO classes, sessions,
prefix sharing, request kinds) read them without special cases.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pandas as pd

REQUIRED = ("request_id", "arrival_s", "prompt_tokens", "output_tokens")
#: tokens per prefix block when the format does not say (Mooncake's hash_ids are 512-token
#: blocks; canonical files use the same size so a Mooncake trace converts without rescaling)
PREFIX_BLOCK_TOKENS = 512
#: optional column -> default value
OPTIONAL: dict[str, int | float | str] = {
    "priority": 0,  # larger = more important
    "slo_class": "default",
    "session_id": "",
    "prefix_blocks": "",  # space-separated ids of PREFIX_BLOCK_TOKENS-token blocks (Mooncake hash_ids)
    "kind": "generate",  # generate | embed (prefill-only) | rag (multi-step)
    # compound (rag) requests: rounds of plan -> retrieve -> generate, tokens each round adds
    "rag_rounds": 1,
    "plan_tokens": 0,
    "retrieved_tokens": 0,
    "think_time_s": float("nan"),  # user think time before this turn; NaN = the config's
}
REQUEST_KINDS = ("generate", "embed", "rag")
#: columns that only a `kind: rag` row may set away from their defaults
RAG_COLUMNS = ("rag_rounds", "plan_tokens", "retrieved_tokens")


class TraceError(ValueError):
    """Malformed or unusable trace input; the message names the field and how to fix it."""


@dataclass
class Trace:
    """A validated, arrival-sorted table of requests plus where it came from."""

    df: pd.DataFrame
    source: str = ""
    format: str = "canonical"
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.df)

    @property
    def duration_s(self) -> float:
        if len(self.df) < 2:
            return 0.0
        return float(self.df["arrival_s"].iloc[-1] - self.df["arrival_s"].iloc[0])

    @property
    def rate(self) -> float:
        d = self.duration_s
        return (len(self.df) - 1) / d if d > 0 else float("nan")

    def chunks(self, size: int = 65536) -> Iterator[pd.DataFrame]:
        """Arrival-ordered slices; the simulator consumes traces chunk by chunk."""
        for start in range(0, len(self.df), size):
            yield self.df.iloc[start : start + size]
