"""Measurement grids: which batches to time for one model on one GPU.

Why these points: the fitted cost model needs (a) the context-free part of a layer as a function
of the new-token count T (dense, log-spaced, so piecewise-linear interpolation between points is
accurate), (b) pure decode at several total contexts per batch size B (the linearity contract
a(B) + b(B) * sum(ctx) is fitted per B), and (c) enough prefill, verify and mixed batches to fit
and then test the attention terms. Everything is log-spaced from 1 up to the model's context
limit and bounded by the token budget the runner derives from GPU memory; points beyond it are
still listed and recorded as infeasible, never silently dropped. Same model, same grid: the
random mixed batches come from a fixed seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from goodput.profiler.batches import encode


@dataclass(frozen=True)
class Point:
    kind: str  # batch | linear | embed | lmhead | overhead
    subkind: str  # prefill | decode | verify | mixed | sarathi | random | sweep
    code: str  # batch code (see goodput.profiler.batches) or "T=..." / "N=..."

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.code)


def log_grid(lo: int, hi: int, per_octave: int) -> list[int]:
    """Integers from lo to hi (both included), ``per_octave`` log-spaced steps per doubling."""
    if hi < lo:
        return []
    n = int(np.ceil(np.log2(hi / lo) * per_octave)) + 1
    vals = np.unique(np.round(lo * 2.0 ** (np.arange(n) / per_octave)).astype(int))
    out = [int(v) for v in vals if lo <= v <= hi]
    return [*out, hi] if out[-1] < hi else out


def linear_grid(max_t: int, per_octave: int) -> list[int]:
    """Token counts for the context-free sweep: dense where GEMM time moves in tile-sized steps.

    cuBLAS picks tiles of 64-256 rows, so the time of the linear layers is a staircase in T up to
    a few thousand tokens; sampling every 16 tokens to 512, 32 to 1024 and 64 to 4096 puts a
    point on (or next to) every step, and log-spaced points beyond, where the staircase is fine
    relative to T, keep the sweep short. ``per_octave`` sets the spacing below 16 and above 4096.
    """
    pts = set(log_grid(1, min(16, max_t), per_octave))
    for lo, hi, step in ((16, 512, 16), (512, 1024, 32), (1024, 4096, 64)):
        pts.update(range(lo, min(hi, max_t) + 1, step))
    if max_t > 4096:
        pts.update(log_grid(4096, max_t, 2 * per_octave))
    return sorted(t for t in pts if t <= max_t)


@dataclass(frozen=True)
class GridConfig:
    max_tokens: int = 16384  # largest T per iteration (engines' max_num_batched_tokens range)
    batch_sizes: tuple = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
    decode_ctx_per_octave: float = 0.5
    linear_per_octave: int = 4
    verify_batches: tuple = (1, 8, 32, 128)
    verify_k: tuple = (1, 2, 3, 4, 5, 6, 7, 8)
    verify_ctx: tuple = (256, 4096)
    random_batches: int = 40
    lmhead_rows: tuple = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
    overhead_batches: tuple = (1, 16, 64, 256)
    #: Prompts beyond max_tokens up to the context limit (sparse), one prompt each, with the
    #: linear and embedding sweeps at the same T: long prefill is measured, not extrapolated.
    long_prompts: tuple = (24576, 32768, 49152, 65536, 98304, 131072)
    #: Chunked prefill over a long cached prefix: (chunk, prefix); each alone and with 16 decodes
    long_chunks: tuple = ((512, 32768), (2048, 32768), (8192, 32768), (2048, 65536),
                          (8192, 65536), (512, 122880), (2048, 122880), (8192, 122880))
    #: Decode at long contexts: these batch sizes at these contexts too (the log-spaced decode
    #: contexts already hold 65536 and the limit); beyond the KV budget they are infeasible
    long_decode_batches: tuple = (1, 2, 4, 8, 16, 32)
    long_decode_ctx: tuple = (32768, 49152, 98304)
    #: Sarathi-Serve's mixed iterations, densely: ``nd`` decodes at context ``c`` each beside one
    #: prompt chunk of ``sarathi_budget - nd`` tokens (Sarathi fills the token budget) or a
    #: prompt's last, shorter piece (``sarathi_tails``), over a cached prefix. The serving
    #: loop's held-out Sarathi runs at 30-90% load (profiler/fidelity/h200) hold 4-65 decodes of
    #: ~1k context next to chunks over 0-4k of prefix, where the three chunk x three decode-count
    #: points above left the fit 2-6% short (docs/fidelity.md, "Mixed iterations").
    sarathi_budget: int = 512
    sarathi_tails: tuple = (200,)
    sarathi_decodes: tuple = (4, 8, 24, 40, 56)
    sarathi_prefixes: tuple = (0, 1024, 3072)
    sarathi_decode_ctx: tuple = (600, 1200, 2000)


QUICK = GridConfig(max_tokens=2048, batch_sizes=(1, 4, 16, 64, 256),
                   decode_ctx_per_octave=0.34, linear_per_octave=2, verify_batches=(1, 16),
                   verify_k=(1, 4, 8), verify_ctx=(256,), random_batches=8,
                   lmhead_rows=(1, 16, 256, 2048), overhead_batches=(1, 64), long_prompts=(),
                   long_chunks=(), long_decode_batches=(), sarathi_decodes=())


#: The CPU mode's grid (tiny synthetic model): every kind of point, a few seconds in total.
CPU_TINY = GridConfig(max_tokens=512, batch_sizes=(1, 2, 4, 8, 16, 32, 64),
                      linear_per_octave=2, verify_batches=(1, 8), verify_k=(1, 2, 4, 8),
                      verify_ctx=(64,), random_batches=10, lmhead_rows=(1, 8, 64, 512),
                      overhead_batches=(1, 16), long_prompts=(768, 1024),
                      long_chunks=((128, 768),), long_decode_batches=(1, 4),
                      long_decode_ctx=(900,), sarathi_budget=64, sarathi_tails=(20,),
                      sarathi_decodes=(4, 16), sarathi_prefixes=(0, 100),
                      sarathi_decode_ctx=(60,))


def build_grid(max_context: int, cfg: GridConfig = GridConfig(), seed: int = 0,
               token_budget: int | None = None) -> list[Point]:
    """All points for a model with context limit ``max_context``, in (seeded, shuffled) run order.

    ``token_budget``: most KV tokens one batch may hold (from GPU memory). Points above it stay
    in the grid (recorded infeasible); it only adds decode contexts below it so that every batch
    size keeps at least four feasible contexts to fit its a(B) + b(B) * sum(ctx) line on, and
    keeps the random batches mostly feasible.
    """
    budget_tok = token_budget if token_budget is not None else 1 << 62
    pts: list[Point] = []
    max_t = cfg.max_tokens
    longs = [p for p in cfg.long_prompts if max_t < p <= max_context]
    for t in linear_grid(max_t, cfg.linear_per_octave) + longs:
        pts.append(Point("linear", "sweep", f"T={t}"))
    for t in log_grid(1, max_t, 2) + longs:
        pts.append(Point("embed", "sweep", f"T={t}"))
    for n in cfg.lmhead_rows:
        pts.append(Point("lmhead", "sweep", f"N={n}"))
    for b in cfg.overhead_batches:
        pts.append(Point("overhead", "sweep", encode([(b, 1, min(256, max_context - 1))])))

    def batch(sub, groups):
        pts.append(Point("batch", sub, encode(groups)))

    # Prefill: one prompt of each length, then equal-length prompt batches.
    for p in log_grid(16, min(max_t, max_context), 2) + longs:
        batch("prefill", [(1, p, 0)])
    for n in (2, 4, 8, 16, 32, 64):
        for p in (32, 128, 512, 2048):
            if n * p <= max_t and p <= max_context:
                batch("prefill", [(n, p, 0)])
    # Decode: contexts log-spaced from 16 to the limit for every batch size.
    per = max(1, round(1 / cfg.decode_ctx_per_octave))
    ctxs = log_grid(16, max_context - 1, 1)[::per]
    if ctxs[-1] != max_context - 1:
        ctxs.append(max_context - 1)
    for b in cfg.batch_sizes:
        limit = min(max_context - 1, budget_tok // b - 1)
        feasible = [c for c in ctxs if c <= limit]
        extra = []
        if len(feasible) < 4 and limit >= 16:
            extra = [round(float(x)) for x in np.geomspace(16, limit, 4)]
        long = [c for c in cfg.long_decode_ctx if c < max_context] \
            if b in cfg.long_decode_batches else []
        if cfg.long_decode_batches and feasible and limit > 1.5 * feasible[-1]:
            long.append(limit)  # the longest context the KV budget allows at this B
        for c in sorted(set(ctxs) | set(extra) | set(long)):
            batch("decode", [(b, 1, c)])
    # Speculative verify: B sequences x (k + 1) query tokens.
    for b in cfg.verify_batches:
        for c in cfg.verify_ctx:
            for k in cfg.verify_k:
                if c + k + 1 <= max_context:
                    batch("verify", [(b, k + 1, c)])
    # Chunked prefill: one chunk over a cached prefix, plus running decodes.
    for chunk in (128, 512, 2048):
        for pre in (0, 2048, 8192):
            for nd in (0, 16, 128):
                if chunk + pre > max_context or (pre == 0 and nd == 0) or chunk + nd > max_t:
                    continue
                groups = [(1, chunk, pre)] + ([(nd, 1, min(1024, max_context - 1))] if nd else [])
                batch("mixed", groups)
    for chunk, pre in cfg.long_chunks:  # long cached prefixes (chunk <= max_t is not required)
        if chunk + pre <= max_context:
            batch("mixed", [(1, chunk, pre)])
            batch("mixed", [(1, chunk, pre), (16, 1, min(1024, max_context - 1))])
    for nd in cfg.sarathi_decodes:  # Sarathi-Serve's budget-filling mixes (GridConfig)
        for chunk in (cfg.sarathi_budget - nd, *cfg.sarathi_tails):
            for pre in cfg.sarathi_prefixes:
                for c in cfg.sarathi_decode_ctx:
                    if chunk > 0 and chunk + pre <= max_context and c + 1 <= max_context:
                        batch("sarathi", [(1, chunk, pre), (nd, 1, c)])
    # Random compositions (seeded), as a scheduler under load produces them.
    rng = np.random.default_rng(seed)
    for _ in range(cfg.random_batches):
        groups, budget = [], max_t
        n_dec = int(rng.choice([0, 1, 8, 32, 100, 250]))
        if n_dec:
            hi = max(17, min(max_context - 1, 16384, budget_tok // (2 * n_dec)))
            c = int(np.exp(rng.uniform(np.log(16), np.log(hi))))
            groups.append((n_dec, 1, min(c, max_context - 1)))
            budget -= n_dec
        for _ in range(int(rng.integers(0 if n_dec else 1, 4))):
            q = int(np.exp(rng.uniform(np.log(2), np.log(max(3, min(budget, 4096))))))
            ctx = int(rng.choice([0, int(np.exp(rng.uniform(np.log(16), np.log(max_context))))]))
            q = max(2, min(q, budget, max_context - 1))
            ctx = min(ctx, max_context - q)
            if budget - q < 0:
                break
            groups.append((1, q, ctx))
            budget -= q
        if groups:
            batch("random", groups)
    seen, uniq = set(), []
    for pt in pts:
        if pt.key not in seen:
            seen.add(pt.key)
            uniq.append(pt)
    # Measure in a seeded random order: a GPU's clock under sustained GEMM load drifts with
    # power and temperature, and sweeping the heavy points back to back would turn that drift
    # into a bias between kinds of points (the linear sweep vs the batches) instead of noise.
    order = np.random.default_rng(seed + 1).permutation(len(uniq))
    return [uniq[i] for i in order]
