"""Synthetic multi-turn sessions with shared prefixes, written as Mooncake JSON lines or canonical.

Real prefix sharing comes from two sources, and both are generated here: chat sessions, whose
every turn re-sends the whole conversation so far (previous prompt + previous answer + the new
user message), and a few system prompts that many sessions start with. Block ids follow
Mooncake's conventions, so the files pass the prefix-block rules (`prefix`) and behave like the
real trace under a prefix cache: a turn lists ceil(prompt / block_tokens) ids; its ids start with
the previous turn's *full*-block ids (the previous turn's partial last block is now filled with
new text, so it gets a new id); a system prompt's full blocks have the same ids in every session
that uses it; and ids are numbered 0, 1, 2, ... in order of first appearance.

Arrivals: sessions start as a Poisson process at `rate` sessions/s; each later turn follows its
previous turn after an exponential think time of mean `think_s` (open loop: the trace does not
know how long the answer took, a closed-loop replay uses `think_time_s` instead).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .lengths import LengthDist, parse_length_dist
from .schema import OPTIONAL, PREFIX_BLOCK_TOKENS, TraceError

MOONCAKE_COLUMNS = ("timestamp", "input_length", "output_length", "hash_ids")
USER_TOKENS = "lognormal:mean=400,std=300,min=16,max=4096"
OUTPUT_TOKENS = "lognormal:mean=200,std=150,min=1,max=1024"


def _whole(name: str, v, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise TraceError(f"{name}={v!r} must be a whole number >= {lo}")
    return int(v)


def _positive(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not np.isfinite(v) \
            or v <= 0:
        raise TraceError(f"{name}={v!r} must be a positive number")
    return float(v)


def _dist(name: str, spec) -> LengthDist:
    try:
        d = parse_length_dist(spec)
    except TraceError as e:
        raise TraceError(f"{name}: {e}") from None
    if d.joint:
        raise TraceError(f"{name}={d.spec!r} is a joint (prompt, output) distribution; add "
                         f"':prompt' or ':output' to resample one column")
    return d


def mooncake_like(sessions: int = 100, turns: int | str = 4, system_prompts: int = 4,
                  system_tokens: int = 2048, user_tokens=USER_TOKENS, output_tokens=OUTPUT_TOKENS,
                  rate: float = 1.0, think_s: float = 30.0, seed: int = 0,
                  block_tokens: int = PREFIX_BLOCK_TOKENS) -> pd.DataFrame:
    """A seeded multi-turn trace in Mooncake's columns, arrival-sorted.

    sessions: conversations; turns: turns each (an int, or a length spec like "uniform:1:8");
    system_prompts: distinct shared system prompts (0 = none), each `system_tokens` long, one
    picked uniformly per session; user_tokens / output_tokens: length specs of each new user
    message and each answer; rate: session starts per second; think_s: mean gap between turns.
    Returns columns timestamp (int ms), input_length, output_length, hash_ids (list of int), plus
    session_id (str) and turn (1, 2, ...), which `save_mooncake` leaves out of the file.
    """
    sessions = _whole("sessions", sessions, 1)
    system_prompts = _whole("system_prompts", system_prompts, 0)
    system_tokens = _whole("system_tokens", system_tokens, 0)
    bt = _whole("block_tokens", block_tokens, 1)
    rate, think_s = _positive("rate", rate), _positive("think_s", think_s)
    turn_dist = _dist("turns", f"fixed:{_whole('turns', turns, 1)}" if not isinstance(turns, str)
                      else turns)
    user, out = _dist("user_tokens", user_tokens), _dist("output_tokens", output_tokens)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TraceError(f"seed={seed!r}: pass an integer seed so traces are reproducible")
    rng = np.random.default_rng(int(seed))
    n_turns = turn_dist.sample(rng, sessions).astype(np.int64)
    if (n_turns < 1).any():
        raise TraceError(f"turns={turn_dist.spec!r} drew a session with 0 turns; use a spec >= 1")
    starts = np.cumsum(np.concatenate(([0.0], rng.exponential(1 / rate, sessions - 1))))
    picks = rng.integers(0, system_prompts, sessions) if system_prompts else np.full(sessions, -1)
    n = int(n_turns.sum())
    users, outs = user.sample(rng, n).astype(np.int64), out.sample(rng, n).astype(np.int64)
    gaps = rng.exponential(think_s, n)
    nsys = system_tokens // bt if system_prompts else 0
    next_id = system_prompts * nsys  # system prompt p owns ids p*nsys .. (p+1)*nsys - 1
    rows: list[tuple] = []
    i = 0
    for s in range(sessions):
        ids = list(range(picks[s] * nsys, (picks[s] + 1) * nsys)) if picks[s] >= 0 else []
        prompt = system_tokens if picks[s] >= 0 else 0
        t = float(starts[s])
        for k in range(int(n_turns[s])):
            keep = prompt // bt  # the last prompt's full blocks; its partial one gets new text
            if k:
                prompt += int(outs[i - 1])
                t += float(gaps[i])
            prompt += int(users[i])
            fresh = -(-prompt // bt) - keep
            ids = ids[:keep] + list(range(next_id, next_id + fresh))
            next_id += fresh
            rows.append((round(t * 1000), prompt, int(outs[i]), ids, f"s{s}", k + 1))
            i += 1
    df = pd.DataFrame(rows, columns=[*MOONCAKE_COLUMNS, "session_id", "turn"])
    df = df.iloc[np.argsort(df["timestamp"].to_numpy(), kind="stable")].reset_index(drop=True)
    return _renumber(df)


def _renumber(df: pd.DataFrame) -> pd.DataFrame:
    """Ids 0, 1, 2, ... in order of first appearance, as in Mooncake's own traces."""
    counts = df["hash_ids"].map(len).to_numpy()
    flat = np.fromiter((x for h in df["hash_ids"] for x in h), np.int64, int(counts.sum()))
    codes, _ = pd.factorize(flat)
    cuts = np.cumsum(counts)[:-1]
    df["hash_ids"] = [c.tolist() for c in np.split(codes.astype(np.int64), cuts)]
    return df


def save_mooncake(df: pd.DataFrame, path) -> int:
    """Write Mooncake JSON lines (only its four fields, as the real trace has); returns rows."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for r in df[list(MOONCAKE_COLUMNS)].itertuples(index=False):
            fh.write(json.dumps({"timestamp": int(r[0]), "input_length": int(r[1]),
                                 "output_length": int(r[2]), "hash_ids": list(r[3])}) + "\n")
    return len(df)


def to_canonical(df: pd.DataFrame) -> pd.DataFrame:
    """The same requests in the canonical schema, keeping session_id (times re-based to 0)."""
    ms = df["timestamp"].to_numpy(dtype=np.int64)
    out = pd.DataFrame({"request_id": np.arange(len(df), dtype=np.int64),
                        "arrival_s": (ms - ms.min()) / 1000.0,
                        "prompt_tokens": df["input_length"].to_numpy(dtype=np.int64),
                        "output_tokens": df["output_length"].to_numpy(dtype=np.int64)})
    for name, default in OPTIONAL.items():
        out[name] = default
    out["session_id"] = df["session_id"].astype(str).to_numpy()
    out["prefix_blocks"] = [" ".join(map(str, h)) for h in df["hash_ids"]]
    return out
