"""Cost model fitted on a measured GPU profile (``profiler/profiles/<gpu>/<model>/tp<k>/``).

Why this form: an iteration is ``layers x (one layer) + embedding + LM head/sampling + CPU
overhead (+ TP all-reduces)``, and one layer is

    layer(batch) = lin(T)                                     # GEMMs, norms, rotary, KV write
                 + [a_dec(Bd) - lin(Bd) + b_dec(Bd) * Sd]     # the Bd decodes over Sd context
                 + w . attention_features(other sequences)    # prompt chunks and verifies

``lin`` and the extras are piecewise-linear interpolations of measured sweeps; ``a_dec(B)`` and
``b_dec(B)`` are straight lines fitted per measured batch size over several contexts and
interpolated across B; ``w`` is a non-negative least-squares fit. For a pure decode batch the
layer term is exactly ``a_dec(B) + b_dec(B) * sum(ctx)``, which makes the simulator's decode
fast-forward contract hold exactly (``batch_time`` and ``decode_coefficients`` share one code
path). Loading needs only the standard library: the simulator does not depend on torch.
"""
from __future__ import annotations

import bisect
import json
from pathlib import Path

from sim.costmodel.base import Batch, CostModel

PROFILES_ROOT = Path(__file__).resolve().parents[2] / "profiler" / "profiles"
FIT_FILE = "fit.json"
#: Query rows per tile class of the paged attention kernel (profiler/paged_attention.py).
SMALL_MAX_ROWS = 64
LARGE_BLOCK_M = 128
#: Sequences with at most this many new tokens are treated as speculative verifies that need a
#: logit row per token (k + 1 <= 9 for k <= 8); longer ones are prompt chunks, one row each.
MAX_VERIFY_TOKENS = 9
FEATURES = ("small_launch", "small_kv_tokens", "small_attn_work", "small_seqs",
            "large_launch", "large_kv_tile_tokens", "large_attn_work", "large_seqs")


class PiecewiseLinear:
    """Interpolates measured (x, y) knots; flat below the first, linear beyond the last."""

    def __init__(self, xs, ys):
        if len(xs) != len(ys) or not xs:
            raise ValueError("PiecewiseLinear: need equal, non-empty knot lists")
        pairs = sorted(zip(xs, ys))
        self.xs = [float(x) for x, _ in pairs]
        self.ys = [float(y) for _, y in pairs]

    def __call__(self, x: float) -> float:
        xs, ys = self.xs, self.ys
        if x <= xs[0] or len(xs) == 1:
            return ys[0] if x <= xs[0] else ys[-1]
        i = bisect.bisect_left(xs, x)
        if i >= len(xs):
            i = len(xs) - 1  # extrapolate with the last segment
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        return y0 + (y1 - y0) * (x - x0) / (x1 - x0)

    def to_dict(self) -> dict:
        return {"x": self.xs, "y": self.ys}


def ring_allreduce_s(nbytes: float, tp: int, link_bytes_per_s: float, latency_s: float) -> float:
    """Ring all-reduce time: latency + 2 (n - 1) / n * bytes / link bandwidth."""
    if tp <= 1:
        return 0.0
    return latency_s + 2.0 * (tp - 1) / tp * nbytes / link_bytes_per_s


def attention_features(q_lens, ctx_lens, group: int) -> list[float]:
    """Work of the non-decode sequences (q > 1), split by the kernel's tile class.

    kv_tokens: K/V rows each tile streams (memory term); attn_work: sum of q * (ctx + (q+1)/2)
    query-key pairs (compute term); seqs: per-sequence cost; launch: 1 if the class is present.
    """
    f = [0.0] * len(FEATURES)
    for q, c in zip(q_lens, ctx_lens):
        if q <= 1:
            continue
        work = q * (c + (q + 1) / 2.0)
        if q * group <= SMALL_MAX_ROWS:
            f[0] = 1.0
            f[1] += c + q
            f[2] += work
            f[3] += 1
        else:
            tiles = -(-q // max(1, LARGE_BLOCK_M // group))
            f[4] = 1.0
            f[5] += (c + q) * tiles
            f[6] += work
            f[7] += 1
    return f


def logit_rows(q_lens) -> int:
    return sum(q if q <= MAX_VERIFY_TOKENS else 1 for q in q_lens)


class ProfiledCostModel(CostModel):
    """Iteration time from a fitted profile (see module docstring); built by ``from_dir``."""

    def __init__(self, fit: dict, path: Path | None = None):
        self.fit = fit
        self.path = path
        self.layers = int(fit["layers"])
        self.group = int(fit["group"])
        self.hidden = int(fit["hidden_size"])
        self.tp = int(fit["tp"])
        self.lin = PiecewiseLinear(fit["linear"]["x"], fit["linear"]["y"])
        self.embed = PiecewiseLinear(fit["embed"]["x"], fit["embed"]["y"])
        self.lmhead = PiecewiseLinear(fit["lmhead"]["x"], fit["lmhead"]["y"])
        self.a_dec = PiecewiseLinear(fit["decode"]["B"], fit["decode"]["a"])
        self.b_dec = PiecewiseLinear(fit["decode"]["B"], fit["decode"]["b"])
        self.w = [float(x) for x in fit["attention"]["coef"]]
        self.overhead_c = (float(fit["overhead"]["c0"]), float(fit["overhead"]["c1"]))
        ar = fit.get("allreduce") or {}
        self.ar = (float(ar.get("link_bytes_per_s", 1.0)), float(ar.get("latency_s", 0.0)))
        self.source = (f"profile:{fit['gpu']}/{fit['model']}/tp{self.tp}"
                       f"@{fit['profile_version']}")
        self._coeff_cache: dict[int, tuple[float, float]] = {}

    @classmethod
    def from_dir(cls, path) -> "ProfiledCostModel":
        path = Path(path)
        fit_path = path / FIT_FILE if path.is_dir() else path
        if not fit_path.exists():
            raise FileNotFoundError(
                f"no {FIT_FILE} in '{path}' (cost_model.profile_dir); run "
                f"`goodput profile fit {path}` on the measured table first")
        return cls(json.loads(fit_path.read_text()), fit_path.parent)

    # ---- pieces --------------------------------------------------------------------------
    def _allreduce(self, tokens: int) -> float:
        """All-reduces per iteration: two per layer plus the vocab-parallel embedding's."""
        if self.tp == 1:
            return 0.0
        one = ring_allreduce_s(tokens * self.hidden * 2, self.tp, *self.ar)
        return (2 * self.layers + 1) * one

    def _overhead(self, n_seqs: int) -> float:
        return self.overhead_c[0] + self.overhead_c[1] * n_seqs

    def decode_layer(self, batch_size: int) -> tuple[float, float]:
        """Per-layer (a, b) of a pure decode batch."""
        return self.a_dec(batch_size), self.b_dec(batch_size)

    def layer_time(self, q_lens, ctx_lens) -> float:
        """Seconds of one decoder layer for the batch (what the profile table measures)."""
        dec = [c for q, c in zip(q_lens, ctx_lens) if q == 1]
        if len(dec) == len(q_lens):
            a, b = self.decode_layer(len(dec))
            return a + b * sum(dec)
        t = sum(q_lens)
        out = self.lin(t)
        if dec:
            bd = len(dec)
            out += self.a_dec(bd) - self.lin(bd) + self.b_dec(bd) * sum(dec)
        feats = attention_features(q_lens, ctx_lens, self.group)
        return out + sum(w * x for w, x in zip(self.w, feats))

    # ---- CostModel API -------------------------------------------------------------------
    def decode_coefficients(self, batch_size: int) -> tuple[float, float]:
        if batch_size < 1:
            raise ValueError(f"decode_coefficients: batch_size={batch_size} must be >= 1")
        hit = self._coeff_cache.get(batch_size)
        if hit is None:
            a, b = self.decode_layer(batch_size)
            fixed = (self.embed(batch_size) + self.lmhead(batch_size)
                     + self._allreduce(batch_size) + self._overhead(batch_size))
            hit = self._coeff_cache[batch_size] = (self.layers * a + fixed, self.layers * b)
        return hit

    def batch_time(self, batch: Batch) -> float:
        if batch.size == 0:
            raise ValueError("batch_time: the batch has no sequences; an empty iteration has no cost")
        q_lens, ctx_lens = list(batch.new_tokens), list(batch.context_tokens)
        for q, c in zip(q_lens, ctx_lens):
            if q < 1 or c < 0:
                raise ValueError(f"batch_time: new_tokens={q}, context_tokens={c}; need "
                                 "new_tokens >= 1 and context_tokens >= 0 for every sequence")
        if all(q == 1 for q in q_lens):
            a, b = self.decode_coefficients(len(q_lens))
            return a + b * sum(ctx_lens)
        t = sum(q_lens)
        return (self.layers * self.layer_time(q_lens, ctx_lens) + self.embed(t)
                + self.lmhead(logit_rows(q_lens)) + self._allreduce(t)
                + self._overhead(len(q_lens)))

    def describe(self) -> dict:
        f = self.fit
        return {
            "source": self.source,
            "gpu": f["gpu"], "model": f["model"], "tp": self.tp,
            "profile_dir": str(self.path) if self.path else None,
            "allreduce_source": (f.get("allreduce") or {}).get("source", "none (tp=1)"),
            "heldout_error": f.get("heldout_error"),
            "measured_on": f.get("measured_on"),
        }


def _canonical(kind: str, name: str) -> str:
    from sim.catalog import get_gpu, get_model

    try:
        return (get_gpu(name) if kind == "gpu" else get_model(name)).name.lower()
    except ValueError:
        return name.strip().lower()


def find_profile(gpu: str, model: str, tp: int, root: Path | None = None) -> Path | None:
    """The fitted profile directory for (gpu, model, tp), or None when none is shipped."""
    root = Path(root) if root else PROFILES_ROOT
    path = root / _canonical("gpu", gpu) / _canonical("model", model) / f"tp{int(tp)}"
    return path if (path / FIT_FILE).exists() else None


def calibrated_roofline(model, gpu, tp: int, root: Path | None = None):
    """Roofline with efficiencies fitted on the profiled GPUs, for GPUs without a profile.

    Returns None when no calibration has been made (``goodput profile calibrate``).
    """
    from sim.costmodel.roofline import RooflineCostModel, RooflineParams

    path = (Path(root) if root else PROFILES_ROOT) / "calibration.json"
    if not path.exists():
        return None
    cal = json.loads(path.read_text())
    cm = RooflineCostModel(model, gpu, tp, RooflineParams(**cal["params"]))
    cm.source = f"roofline(calibrated from {','.join(cal['gpus'])})"
    return cm
