"""Seeded acceptance draws for speculative steps, keyed by request and position, not by batch.

A speculative step keeps, per sequence, the leading run of accepted drafts plus the target's own
token. Whether draft ``d`` (1-based) of a request's step is accepted is decided by a uniform
``u = hash(seed, request id, position, d)`` compared with that position's acceptance rate, where
``position`` is the request's generated output tokens before the step. A counter-based draw
(counter ``64 position + d - 1`` of a splitmix64 stream whose key mixes the seed and the request
id) instead of a shared random stream makes the draws a function of the request alone:
they do not depend on which other requests share the batch, on how many steps a fast-forwarded
run covers, on preemption (a recomputed request redraws the same numbers at the same positions),
or on which engine asks. The real serving loop (``profiler/serve``) imposes the same draws on
its draft + verify iterations (random weights cannot accept on their own).

``acceptance_uniform`` is the scalar pure-Python reference; ``acceptance_uniforms`` computes a
batch's ``(B, k)`` matrix with numpy (equal bit for bit, tests check it).
"""
from __future__ import annotations

import numpy as np

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_TO_UNIT = 2.0 ** -53


def _finalise_int(z: int) -> int:
    """splitmix64's finaliser (all mod 2^64)."""
    z = ((z ^ (z >> 30)) * _M1) & _MASK
    z = ((z ^ (z >> 27)) * _M2) & _MASK
    return z ^ (z >> 31)


def _mix(z: int) -> int:
    """splitmix64's step: add the golden gamma, then its finaliser."""
    return _finalise_int((z + _GOLDEN) & _MASK)


#: draft positions per step the counter leaves room for (k x tree width never exceeds it)
DRAFT_SLOTS = 64


def request_key(seed: int, rid: int) -> int:
    """The request's stream key, ``mix(mix(seed) ^ rid)``."""
    return _mix(_mix(seed & _MASK) ^ (rid & _MASK))


def acceptance_uniform(seed: int, rid: int, position: int, draft: int) -> float:
    """The uniform in [0, 1) deciding draft ``draft`` (1-based) of request ``rid``'s step that
    starts with ``position`` output tokens generated (the reference implementation): counter
    ``c = 64 position + draft - 1`` of the splitmix64 stream keyed by the request, i.e. the top
    53 bits of ``finalise(key + c x golden)``."""
    c = (position * DRAFT_SLOTS + draft - 1) & _MASK
    h = _finalise_int((request_key(seed, rid) + c * _GOLDEN) & _MASK)
    return (h >> 11) * _TO_UNIT


_U_GOLDEN, _U_M1, _U_M2 = np.uint64(_GOLDEN), np.uint64(_M1), np.uint64(_M2)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)


def _finalise(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, in place on a fresh uint64 array (wraps mod 2^64)."""
    z ^= z >> _S30
    z *= _U_M1
    z ^= z >> _S27
    z *= _U_M2
    z ^= z >> _S31
    return z


def _mix_array(z: np.ndarray) -> np.ndarray:
    return _finalise(z + _U_GOLDEN)


def _u64(values) -> np.ndarray:
    """Integers as uint64 (negative ones wrap mod 2^64, as the reference masks them)."""
    return np.asarray(values, dtype=np.int64).astype(np.uint64)


def request_keys(seed: int, rids) -> np.ndarray:
    """Every request's stream key (constant while it runs: callers keep them)."""
    with np.errstate(over="ignore"):
        h = _mix_array(np.full(1, seed & _MASK, dtype=np.uint64))
        return _mix_array(h ^ _u64(rids))


_DRAFTS = np.arange(DRAFT_SLOTS, dtype=np.uint64)  # draft d's counter offset: d - 1


def _uniforms(keys: np.ndarray, counters: np.ndarray) -> np.ndarray:
    """Uniforms of stream ``keys[i]`` (broadcast) at ``counters`` (uint64, draft 1 at offset 0)."""
    with np.errstate(over="ignore"):
        z = _finalise(keys + counters * _U_GOLDEN)
    return (z >> _S11) * _TO_UNIT


def acceptance_uniforms_keyed(keys: np.ndarray, positions, k: int) -> np.ndarray:
    """``(B, k)`` uniforms for requests with keys ``keys`` (``request_keys``) at ``positions``."""
    base = _u64(positions) * np.uint64(DRAFT_SLOTS)
    return _uniforms(keys[:, None], base[:, None] + _DRAFTS[None, :k])


def acceptance_uniforms(seed: int, rids, positions, k: int) -> np.ndarray:
    """``(B, k)``: row i, column d - 1 is ``acceptance_uniform(seed, rids[i], positions[i], d)``."""
    return acceptance_uniforms_keyed(request_keys(seed, rids), positions, k)


def accepted_table(keys: np.ndarray, positions: np.ndarray, span: int, k: int,
                   levels: np.ndarray) -> np.ndarray:
    """``(B, span)``: drafts request i would keep in a step of k drafts starting at position
    ``positions[i] + m``, for m = 0 .. span - 1 (a run of several steps reads its path through
    it, with one numpy pass for all of them)."""
    start = _u64(positions) * np.uint64(DRAFT_SLOTS)
    offs = (np.arange(span, dtype=np.uint64) * np.uint64(DRAFT_SLOTS))[:, None] + _DRAFTS[None, :k]
    u = _uniforms(keys[:, None, None], start[:, None, None] + offs[None, :, :])
    return accepted_counts(u, levels[:, None, :])


def accepted_counts(uniforms: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Accepted drafts per row: the leading run of ``uniforms < levels`` along the last axis
    (0 .. k). ``levels`` is each row's acceptance per draft position (broadcast to the shape)."""
    ok = uniforms < levels
    if ok.shape[-1] == 0:
        return np.zeros(ok.shape[:-1], dtype=np.int64)
    return np.cumprod(ok, axis=-1, dtype=np.int64).sum(axis=-1)
