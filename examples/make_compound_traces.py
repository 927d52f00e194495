"""Write the two small traces the compound examples replay (docs/compound.md):

* ``examples/sessions_trace.csv``: 100 conversations of 1-6 turns; each turn's prompt holds the
  conversation so far (system prompt, earlier questions and answers) plus the new question; every
  turn of a conversation carries the conversation's start as arrival_s (the next turn is sent
  after the previous reply and a think time), and every fifth turn its own think_time_s.
* ``examples/rag_trace.csv``: 300 requests at 3 req/s, 60% rag (1-3 rounds, half with a planning
  call), 20% embed, 20% plain generate.

Run from the repository root: ``python examples/make_compound_traces.py`` (seeded: same files).
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def sessions(rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    start = 0.0
    for c in range(100):
        start += rng.exponential(2.0)
        history = 200  # system prompt
        for turn in range(int(rng.integers(1, 7))):
            question, answer = int(rng.integers(30, 400)), int(rng.integers(40, 300))
            think = round(float(rng.uniform(2, 10)), 3) if turn and turn % 5 == 0 else np.nan
            rows.append((start, history + question, answer, f"conv{c:03d}", think))
            history += question + answer
    df = pd.DataFrame(rows, columns=["arrival_s", "prompt_tokens", "output_tokens", "session_id",
                                     "think_time_s"])
    df.insert(0, "request_id", np.arange(len(df)))
    df["arrival_s"] = df["arrival_s"].round(4)
    return df


def rag(rng: np.random.Generator) -> pd.DataFrame:
    n = 300
    kind = rng.choice(["rag", "embed", "generate"], n, p=[0.6, 0.2, 0.2])
    is_rag = kind == "rag"
    df = pd.DataFrame({
        "request_id": np.arange(n),
        "arrival_s": np.cumsum(rng.exponential(1 / 3.0, n)).round(4),
        "prompt_tokens": np.where(kind == "embed", rng.integers(64, 512, n), rng.integers(100, 1500, n)),
        "output_tokens": np.where(kind == "embed", 0, rng.integers(50, 400, n)),
        "kind": kind,
        "rag_rounds": np.where(is_rag, rng.integers(1, 4, n), 1),
        "plan_tokens": np.where(is_rag & (rng.random(n) < 0.5), 32, 0),
        "retrieved_tokens": np.where(is_rag, rng.integers(256, 2048, n), 0),
    })
    return df


if __name__ == "__main__":
    sessions(np.random.default_rng(1)).to_csv("examples/sessions_trace.csv", index=False)
    rag(np.random.default_rng(2)).to_csv("examples/rag_trace.csv", index=False)
