"""Cost model fitted on a measured GPU profile (``profiler/profiles/<gpu>/<model>/tp<k>/``).

Why this form: an iteration is ``layers x (one layer) + embedding + LM head/sampling + CPU
overhead (+ TP all-reduces)``, and one layer is

    layer(batch) = (1 + s) lin(T)                             # GEMMs, norms, rotary, KV write
                 + [a_dec(Bd) - lin(Bd) + b_dec(Bd) * Sd]     # the Bd decodes over Sd context
                 + w . attention_features(other sequences)    # prompt chunks and verifies

``lin`` and the extras are piecewise-linear interpolations of measured sweeps; ``a_dec(B)`` and
``b_dec(B)`` are straight lines fitted per measured batch size over several contexts and
interpolated across B; ``w`` (non-negative) and the small correction ``s`` of the sweep are a
bounded least-squares fit on the other batches. For a pure decode batch the
layer term is exactly ``a_dec(B) + b_dec(B) * sum(ctx)``, which makes the simulator's decode
fast-forward contract hold exactly (``batch_time`` and ``decode_coefficients`` share one code
path). Loading needs only the standard library: the simulator does not depend on torch.
"""
from __future__ import annotations

import bisect
import json
import math
from pathlib import Path

from goodput.sim.costmodel.base import Batch, CostModel
from goodput.sim.costmodel.collectives import CollectivesTable, formula_s
from goodput.sim.costmodel.engine import EngineOverhead, engine_for
from goodput.sim.costmodel.profile_lookup import (
    FIT_FILE,
    _display_path,
    _floor_rule,
    _measured_collectives,
    calibrated_roofline,
    find_profile,
)
from goodput.sim.costmodel.profile_store import PROFILES_ROOT

#: Tile heights of the paged attention kernel's launches (profiler/paged_attention.py): a
#: sequence with q * G query rows runs in the first class that holds them; keys in blocks of 64.
TILE_CLASSES = (16, 64, 128)
KV_BLOCK = 64
#: Sequences with at most this many new tokens are treated as speculative verifies that need a
#: logit row per token (k + 1 <= 9 for k <= 8); longer ones are prompt chunks, one row each.
MAX_VERIFY_TOKENS = 9
#: The kernel's split rule (profiler/paged_attention.py: WAVES, MIN_CHUNK_BLOCKS).
SPLIT_WAVES = 4
MIN_CHUNK_BLOCKS = 4
_PER_CLASS = ("launch", "blocks", "tiles", "split", "items")
FEATURES = (*(f"t{bm}_{name}" for bm in TILE_CLASSES for name in _PER_CLASS), "t128_attn_work",
            "t128_prefix_work")


#: Knots (log2 of the new-token count) of the fitted relative correction of lin(T). One knot:
#: a single constant. (Five knots from 1 to 16384 tokens were tried on the H100/H200 profiles
#: and predicted held-out points no better: the residual is point-to-point noise, not a trend.)
LIN_SCALE_KNOTS: tuple[float, ...] = (0.0,)


def lin_scale_basis(tokens: int) -> list[float]:
    """Hat functions of log2(tokens) on LIN_SCALE_KNOTS (flat beyond the ends); sum to 1."""
    k = LIN_SCALE_KNOTS
    if len(k) == 1:
        return [1.0]
    x = math.log2(max(1, tokens))
    out = [0.0] * len(k)
    if x <= k[0]:
        out[0] = 1.0
    elif x >= k[-1]:
        out[-1] = 1.0
    else:
        i = bisect.bisect_right(k, x) - 1
        w = (x - k[i]) / (k[i + 1] - k[i])
        out[i], out[i + 1] = 1.0 - w, w
    return out


class PiecewiseLinear:
    """Interpolates measured (x, y) knots; flat below the first, linear beyond the last.

    Beyond the last knot the slope is the secant from the knot nearest half the last x to the
    last one, never negative. Why not the last segment: two neighbouring knots carry each other's
    measurement noise, and a last segment that happens to fall (an H100 linear sweep measured
    16,384 tokens 2.6% faster than 15,024) would price a 70k-token prefill batch below a 16k one.
    Over half the range the noise is a small share of the rise, and kernel times do not fall
    with more work."""

    def __init__(self, xs, ys):
        if len(xs) != len(ys) or not xs:
            raise ValueError("PiecewiseLinear: need equal, non-empty knot lists")
        pairs = sorted(zip(xs, ys, strict=True))
        self.xs = [float(x) for x, _ in pairs]
        self.ys = [float(y) for _, y in pairs]
        self.tail_slope = 0.0
        if len(self.xs) > 1:
            j = min(range(len(self.xs) - 1), key=lambda i: abs(self.xs[i] - self.xs[-1] / 2))
            run = self.xs[-1] - self.xs[j]
            self.tail_slope = max(0.0, (self.ys[-1] - self.ys[j]) / run) if run > 0 else 0.0

    def __call__(self, x: float) -> float:
        xs, ys = self.xs, self.ys
        if x <= xs[0] or len(xs) == 1:
            return ys[0] if x <= xs[0] else ys[-1]
        if x >= xs[-1]:
            return ys[-1] + self.tail_slope * (x - xs[-1])
        i = bisect.bisect_left(xs, x)
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        return y0 + (y1 - y0) * (x - x0) / (x1 - x0)

    def to_dict(self) -> dict:
        return {"x": self.xs, "y": self.ys}


def ring_allreduce_s(nbytes: float, tp: int, link_bytes_per_s: float, latency_s: float) -> float:
    """Ring all-reduce time: latency + 2 (n - 1) / n * bytes / link bandwidth (0 for one GPU)."""
    if tp <= 1:
        return 0.0
    return formula_s("all_reduce", nbytes, tp, latency_s, link_bytes_per_s)


def attention_features(q_lens, ctx_lens, group: int, kv_heads: int = 8,
                       sm_count: int = 132, decodes: int = 0, decode_ctx_sum: int = 0,
                       decode_ctx_max: int = 0) -> list[float]:
    """Work of the non-decode sequences (q > 1), per tile class of the attention kernel.

    Mechanism: a tile of BLOCK_M query rows streams its KV in blocks of 64 keys up to its last
    query, and every block costs about the same (one K/V load, two fixed-size dot products), so a
    class costs about ``launch + blocks * c + tiles * d``. When the class's longest tile exceeds
    the balanced chunk size (``total blocks / (4 waves x SMs / KV heads)``, at least 4 blocks),
    the kernel cuts tiles into chunks and merges partial results: ``split`` and ``items`` (number
    of chunks) carry that cost. ``t128_attn_work`` (query-key pairs) lets the fit weigh the
    causal masking of long prompts; ``t128_prefix_work`` (the pairs against a cached prefix,
    q x ctx) lets it price chunks over a cached prefix apart from fresh prompts, since the
    fastest kernels differ there (goodput.profiler.attention_backends; fit.json files written before
    this feature have one coefficient fewer and ignore it). Decodes (q = 1) only enter the
    split decision of the 16-row class they share; their own cost is the measured decode
    line. ``decodes`` more one-token sequences may be given by their totals (context sum and
    largest context): that is all the split decision reads of them.
    """
    n_cls = len(TILE_CLASSES)
    tot_blocks = [0.0] * n_cls  # every sequence, decodes included (the split decision)
    max_blocks = [0] * n_cls
    own = [[0.0, 0.0, 0.0] for _ in range(n_cls)]  # non-decode: present, blocks, tiles
    work128 = prefix128 = 0.0
    for q, c in zip(q_lens, ctx_lens, strict=True):
        rows = q * group
        k = 0 if rows <= TILE_CLASSES[0] else 1 if rows <= TILE_CLASSES[1] else 2
        qpt = max(1, TILE_CLASSES[k] // group)
        n = -(-q // qpt)
        # keys streamed by the n tiles (tile j ends at query min((j+1) qpt, q)), in blocks;
        # the ceil of each tile's last partial block is absorbed by the per-tile coefficient
        blocks = (n * c + qpt * n * (n - 1) / 2.0 + q) / KV_BLOCK
        tot_blocks[k] += blocks
        max_blocks[k] = max(max_blocks[k], -(-(c + q) // KV_BLOCK))
        if q > 1:
            own[k][0] = 1.0
            own[k][1] += blocks
            own[k][2] += n
            if k == 2:
                work128 += q * (c + (q + 1) / 2.0)
                prefix128 += float(q * c)
    if decodes:  # a one-token tile over c keys streams (c + 1) / KV_BLOCK blocks
        rows = group
        k = 0 if rows <= TILE_CLASSES[0] else 1 if rows <= TILE_CLASSES[1] else 2
        tot_blocks[k] += (decode_ctx_sum + decodes) / KV_BLOCK
        max_blocks[k] = max(max_blocks[k], -(-(decode_ctx_max + 1) // KV_BLOCK))
    f = []
    target = -(-SPLIT_WAVES * sm_count // max(1, kv_heads))
    for k in range(n_cls):
        present, blocks, tiles = own[k]
        chunk = max(MIN_CHUNK_BLOCKS, tot_blocks[k] / target)
        split = 1.0 if present and max_blocks[k] > chunk else 0.0
        items = split * (blocks / chunk + tiles / 2.0)
        f += [present, blocks, tiles, split, items]
    return [*f, work128, prefix128]


def logit_rows(q_lens) -> int:
    return sum(q if q <= MAX_VERIFY_TOKENS else 1 for q in q_lens)


class ProfiledCostModel(CostModel):
    """Iteration time from a fitted profile (see module docstring); built by ``from_dir``."""

    def __init__(self, fit: dict, path: Path | None = None,
                 collectives: CollectivesTable | None = None,
                 engine: EngineOverhead | None = None):
        self.fit = fit
        self.path = path
        self.layers = int(fit["layers"])
        self.group = int(fit["group"])
        self.kv_heads = int(fit.get("kv_heads", 8))
        self.sm_count = int(fit.get("sm_count", 132))
        self.hidden = int(fit["hidden_size"])
        self.tp = int(fit["tp"])
        self.lin = PiecewiseLinear(fit["linear"]["x"], fit["linear"]["y"])
        self.embed = PiecewiseLinear(fit["embed"]["x"], fit["embed"]["y"])
        self.lmhead = PiecewiseLinear(fit["lmhead"]["x"], fit["lmhead"]["y"])
        self.a_dec = PiecewiseLinear(fit["decode"]["B"], fit["decode"]["a"])
        self.b_dec = PiecewiseLinear(fit["decode"]["B"], fit["decode"]["b"])
        self.w = [float(x) for x in fit["attention"]["coef"]]
        #: fitted relative correction of lin(T) in batches that are not pure decodes, on the
        #: LIN_SCALE_KNOTS hat basis (see goodput.profiler.fit.fit_attention)
        ls = fit.get("lin_scale") or {}
        self.lin_scale = [float(v) for v in ls.get("scale", [0.0] * len(LIN_SCALE_KNOTS))]
        self.overhead_c = (float(fit["overhead"]["c0"]), float(fit["overhead"]["c1"]))
        ar = fit.get("allreduce") or {}
        self.ar = (float(ar.get("link_bytes_per_s", 1.0)), float(ar.get("latency_s", 0.0)))
        #: the estimate for sizes the measured table does not cover: the per-call floor and bus
        #: bandwidth of goodput.sim.costmodel.tp_estimate (measured TP2 floor, ring-step rule) when
        #: fit.json holds only the old roofline estimate (~10 us per call)
        self.ar_rule = _floor_rule(fit, self.tp)
        if self.ar_rule is not None:
            self.ar = (self.ar_rule.bus_eff * self.ar_rule.link_bytes_per_s,
                       self.ar_rule.floor(self.tp))
        #: measured collectives of this GPU at world = tp (``goodput profile collectives``);
        #: when set, its all-reduce replaces the estimate above
        if collectives is not None and (collectives.world != self.tp
                                        or "all_reduce" not in collectives.curves):
            raise ValueError(f"collectives table {collectives.path} (world {collectives.world}, "
                             f"ops {sorted(collectives.curves)}) cannot serve the all-reduce of a "
                             f"tp={self.tp} profile; it needs all_reduce rows at world {self.tp}")
        self.collectives = collectives if self.tp > 1 else None
        #: message size from which the measured all-reduce is used: every size of a graph table;
        #: an eager one only where bandwidth-bound (CollectivesTable.measured_from)
        self._ar_measured_from = (self.collectives.measured_from()
                                  if self.collectives is not None else math.inf)
        #: engine host costs fitted on real serving (goodput.sim.costmodel.engine); replaces the
        #: profile's own host term when set
        self.engine = engine
        self.source = (f"profile:{fit['gpu']}/{fit['model']}/tp{self.tp}"
                       f"@{fit['profile_version']}"
                       + (f"+engine:{engine.name}" if engine is not None else ""))
        self._coeff_cache: dict[int, tuple[float, float]] = {}

    @classmethod
    def from_dir(cls, path, collectives_root=None, engine: str = "auto") -> ProfiledCostModel:
        """Load ``fit.json``; for TP > 1, also the measured collectives of that GPU and TP
        degree, ``<root>/<gpu>/collectives/tp<k>.csv``, where ``root`` is the profiles root
        holding this profile (``<root>/<gpu>/<model>/tp<k>/``) unless ``collectives_root``
        names another. Without that table the all-reduce stays the estimate in ``fit.json``.
        ``engine``: ``cost_model.engine`` (auto | none | path; see goodput.sim.costmodel.engine)."""
        path = Path(path)
        fit_path = path / FIT_FILE if path.is_dir() else path
        if not fit_path.exists():
            raise FileNotFoundError(
                f"no {FIT_FILE} in '{path}' (cost_model.profile_dir); run "
                f"`goodput profile fit {path}` on the measured table first")
        fit = json.loads(fit_path.read_text())
        parents = fit_path.parent.resolve().parents
        root = parents[2] if len(parents) >= 3 else fit_path.parent  # <root>/<gpu>/<model>/tp<k>
        return cls(fit, fit_path.parent,
                   collectives=_measured_collectives(fit, fit_path.parent, collectives_root),
                   engine=engine_for(engine, root, fit["gpu"]))

    # ---- pieces --------------------------------------------------------------------------
    def _allreduce(self, tokens: int) -> float:
        """All-reduces per iteration: two per layer plus the vocab-parallel embedding's, each of
        tokens x hidden bf16; measured (interpolated table) when loaded, else estimated. Depends
        on the token count only, so a decode batch's share lands in ``a`` of the linear model."""
        if self.tp == 1:
            return 0.0
        nbytes = tokens * self.hidden * 2
        one = ring_allreduce_s(nbytes, self.tp, *self.ar)
        if self.collectives is not None:  # the table's rule (CollectivesTable.charge)
            one = self.collectives.charge("all_reduce", nbytes, one)
        return (2 * self.layers + 1) * one

    def _overhead(self, n_seqs: int) -> float:
        """The profile's own host term (profiler overhead points)."""
        return self.overhead_c[0] + self.overhead_c[1] * n_seqs

    def _finish(self, kernel_s: float, n_seqs: int) -> float:
        """Kernel time plus the host side: the fitted engine's, else the profile's."""
        if self.engine is not None:
            return self.engine.apply(kernel_s, n_seqs)
        return kernel_s + self._overhead(n_seqs)

    def decode_layer(self, batch_size: int) -> tuple[float, float]:
        """Per-layer (a, b) of a pure decode batch."""
        return self.a_dec(batch_size), self.b_dec(batch_size)

    def layer_time(self, q_lens, ctx_lens, decodes: int = 0, decode_ctx_sum: int = 0,
                   decode_ctx_max: int = 0) -> float:
        """Seconds of one decoder layer for the batch (what the profile table measures); the
        listed sequences plus ``decodes`` one-token sequences given by their context totals."""
        dec = [c for q, c in zip(q_lens, ctx_lens, strict=True) if q == 1]
        bd, sd = len(dec) + decodes, sum(dec) + decode_ctx_sum
        if len(dec) == len(q_lens):
            a, b = self.decode_layer(bd)
            return a + b * sd
        t = sum(q_lens) + decodes
        corr = sum(s * h for s, h in zip(self.lin_scale, lin_scale_basis(t), strict=False))
        out = self.lin(t) * (1.0 + corr)
        if bd:
            out += self.a_dec(bd) - self.lin(bd) + self.b_dec(bd) * sd
        feats = attention_features(q_lens, ctx_lens, self.group, self.kv_heads, self.sm_count,
                                   decodes, decode_ctx_sum, decode_ctx_max)
        return out + sum(w * x for w, x in zip(self.w, feats, strict=False))

    # ---- CostModel API -------------------------------------------------------------------
    def decode_coefficients(self, batch_size: int) -> tuple[float, float]:
        if batch_size < 1:
            raise ValueError(f"decode_coefficients: batch_size={batch_size} must be >= 1")
        hit = self._coeff_cache.get(batch_size)
        if hit is None:
            a, b = self.decode_layer(batch_size)
            fixed = self.embed(batch_size) + self.lmhead(batch_size) + self._allreduce(batch_size)
            a_all = self._finish(self.layers * a + fixed, batch_size)
            b_all = self.layers * b * (1.0 + (self.engine.kernel_scale if self.engine else 0.0))
            hit = self._coeff_cache[batch_size] = (a_all, b_all)
        return hit

    def batch_time(self, batch: Batch) -> float:
        if batch.size == 0:
            raise ValueError("batch_time: the batch has no sequences; an empty iteration has no cost")
        q_lens, ctx_lens = list(batch.new_tokens), list(batch.context_tokens)
        for q, c in zip(q_lens, ctx_lens, strict=True):
            if q < 1 or c < 0:
                raise ValueError(f"batch_time: new_tokens={q}, context_tokens={c}; need "
                                 "new_tokens >= 1 and context_tokens >= 0 for every sequence")
        if all(q == 1 for q in q_lens):
            a, b = self.decode_coefficients(len(q_lens))
            return a + b * sum(ctx_lens)
        return self._finish(self._kernels(q_lens, ctx_lens), len(q_lens))

    def iteration_time(self, new_tokens, context_tokens, decodes=0, decode_tokens=1,
                       decode_ctx_sum=0, decode_ctx_max=0, decode_contexts=None) -> float:
        """As ``batch_time``; one-token decodes enter only through their count, context sum and
        largest context (the decode line and the kernel's split decision)."""
        if decodes and decode_tokens != 1:
            return super().iteration_time(new_tokens, context_tokens, decodes, decode_tokens,
                                          decode_ctx_sum, decode_ctx_max, decode_contexts)
        q_lens, ctx_lens = list(new_tokens), list(context_tokens)
        n = len(q_lens) + decodes
        if n == 0:
            raise ValueError("batch_time: the batch has no sequences; an empty iteration has no cost")
        for q, c in zip(q_lens, ctx_lens, strict=True):
            if q < 1 or c < 0:
                raise ValueError(f"batch_time: new_tokens={q}, context_tokens={c}; need "
                                 "new_tokens >= 1 and context_tokens >= 0 for every sequence")
        if all(q == 1 for q in q_lens):
            a, b = self.decode_coefficients(n)
            return a + b * (sum(ctx_lens) + decode_ctx_sum)
        return self._finish(self._kernels(q_lens, ctx_lens, decodes, decode_ctx_sum, decode_ctx_max), n)

    def verify_time(self, decodes, q, ctx_sum, ctx_max, contexts=None) -> float:
        """From the group's totals (``goodput.sim.costmodel.speculative.profiled_verify_time``)."""
        if q == 1:
            return super().verify_time(decodes, q, ctx_sum, ctx_max, contexts)
        from goodput.sim.costmodel.speculative import profiled_verify_time

        return profiled_verify_time(self, decodes, q, ctx_sum, ctx_max)

    def _kernels(self, q_lens, ctx_lens, decodes: int = 0, decode_ctx_sum: int = 0,
                 decode_ctx_max: int = 0) -> float:
        t = sum(q_lens) + decodes
        return (self.layers * self.layer_time(q_lens, ctx_lens, decodes, decode_ctx_sum, decode_ctx_max)
                + self.embed(t) + self.lmhead(logit_rows(q_lens) + decodes) + self._allreduce(t))

    def kernel_time(self, batch: Batch) -> float:
        """The GPU part of ``batch_time``: the profile's prediction without any host term."""
        q_lens, ctx_lens = list(batch.new_tokens), list(batch.context_tokens)
        if all(q == 1 for q in q_lens):
            a, b = self.decode_layer(len(q_lens))
            t = len(q_lens)
            return (self.layers * (a + b * sum(ctx_lens)) + self.embed(t) + self.lmhead(t)
                    + self._allreduce(t))
        return self._kernels(q_lens, ctx_lens)

    def describe(self) -> dict:
        from goodput.sim.costmodel.errors import profiled_error

        f = self.fit
        return {**profiled_error(self),
            "source": self.source,
            "gpu": f["gpu"], "model": f["model"], "tp": self.tp,
            "profile_dir": str(self.path) if self.path else None,
            "allreduce_source": self._allreduce_source(),
            "engine": (self.engine.to_dict() if self.engine is not None
                       else "profile host term (no engine calibration)"),
            "heldout_error": f.get("heldout_error"),
            "measured_on": f.get("measured_on"),
        }

    def _allreduce_time(self, tokens: int) -> float:
        """The all-reduce share of an iteration (the name the roofline uses, for errors.py)."""
        return self._allreduce(tokens)

    def _allreduce_source(self) -> str:
        est = (self.fit.get("allreduce") or {}).get("source", "estimated")
        if self.ar_rule is not None:
            est = (f"estimated: {self.ar_rule.describe(self.tp)['rule']} (replaces fit.json's "
                   f"'{est}')")
        if self.collectives is None:
            return est if self.tp > 1 else "none (tp=1)"
        if self.collectives.graph:
            return (f"measured (graph): GPU time of CUDA-graph-captured calls at every size "
                    f"({_display_path(self.collectives.path)}, "
                    f"{self.collectives.date or 'date unknown'})")
        return (f"measured from {self._ar_measured_from / 2**20:.0f} MiB per message "
                f"({_display_path(self.collectives.path)}, "
                f"{self.collectives.date or 'date unknown'}); smaller messages {est} "
                "(the eager sweep times host launches there)")


__all__ = ["FIT_FILE", "PROFILES_ROOT", "ProfiledCostModel", "attention_features",
           "calibrated_roofline", "find_profile", "logit_rows", "ring_allreduce_s"]
