"""Request-length distributions for synthetic workloads, and their short string specs.

Specs are what configs and the CLI carry ("fixed:512", "uniform:128:2048",
"lognormal:mean=1000,std=800,min=4,max=8192", "lognormal:median=500,sigma=1,max=4096",
"empirical:PATH[:column]"), so one string reproduces a workload. Every distribution returns
whole token counts >= 1 (a request needs a prompt token and generates at least one token).

Samplers use only numpy draws that proceed value by value (random, lognormal), never
`Generator.integers`: its bounded sampler buffers 32-bit halves per call, so drawing in chunks
(as `synthesize_chunks` does) would give different numbers than one call for the whole trace.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .format_names import SPEC_HELP
from .schema import Trace, TraceError

_COLUMN_ALIASES = {"prompt": "prompt_tokens", "prompt_tokens": "prompt_tokens",
                   "output": "output_tokens", "output_tokens": "output_tokens"}
_BIG = float(2**53)  # cap for 'no max' so float->int64 conversion is exact and cannot overflow


class LengthDist:
    """Base: `sample(rng, n)` -> int64 array of n lengths (or (n, 2) pairs when `joint`)."""

    joint: bool = False

    @property
    def spec(self) -> str:
        """The ``parse_length_dist`` text that gives this distribution back."""
        return ""

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def __str__(self) -> str:
        return self.spec


@dataclass(frozen=True)
class Fixed(LengthDist):
    value: int

    def __post_init__(self):
        _check_int("fixed", "value", self.value, 1)

    @property
    def spec(self) -> str:
        return f"fixed:{self.value}"

    def sample(self, rng, n):
        return np.full(n, self.value, dtype=np.int64)


@dataclass(frozen=True)
class Uniform(LengthDist):
    """Whole numbers uniform on [low, high], both ends included."""

    low: int
    high: int

    def __post_init__(self):
        _check_int("uniform", "low", self.low, 1)
        _check_int("uniform", "high", self.high, self.low)

    @property
    def spec(self) -> str:
        return f"uniform:{self.low}:{self.high}"

    def sample(self, rng, n):
        k = np.floor(rng.random(n) * (self.high - self.low + 1)).astype(np.int64)
        return np.minimum(self.low + k, self.high)


@dataclass(frozen=True)
class LogNormal(LengthDist):
    """exp(N(mu, sigma)), rounded and clipped to [min, max].

    Clipping moves the realised mean away from a requested `mean` when the tails are cut; the
    clip bounds exist because real engines cap context length and outputs can't be < 1.
    """

    mu: float
    sigma: float
    min: int = 1
    max: int | None = None
    label: str = field(default="", compare=False)

    def __post_init__(self):
        if not (math.isfinite(self.mu) and math.isfinite(self.sigma) and self.sigma > 0):
            raise TraceError(f"lognormal: need finite mu and sigma > 0 (got mu={self.mu}, "
                             f"sigma={self.sigma}); use fixed:N for a constant length")
        _check_int("lognormal", "min", self.min, 1)
        if self.max is not None:
            _check_int("lognormal", "max", self.max, self.min)

    @classmethod
    def from_mean_std(cls, mean, std, min=1, max=None):
        if not (mean > 0 and std > 0):
            raise TraceError(f"lognormal: mean and std must be > 0 (got mean={mean}, std={std})")
        s2 = math.log1p((std / mean) ** 2)
        return cls(math.log(mean) - s2 / 2, math.sqrt(s2), min, max,
                   _label(mean=mean, std=std, min=min, max=max))

    @classmethod
    def from_median_sigma(cls, median, sigma, min=1, max=None):
        if not median > 0:
            raise TraceError(f"lognormal: median must be > 0 (got {median})")
        return cls(math.log(median), sigma, min, max,
                   _label(median=median, sigma=sigma, min=min, max=max))

    @property
    def spec(self) -> str:
        return self.label or _label(median=math.exp(self.mu), sigma=self.sigma, min=self.min,
                                    max=self.max)

    def sample(self, rng, n):
        x = np.rint(rng.lognormal(self.mu, self.sigma, n))
        return np.clip(x, self.min, _BIG if self.max is None else self.max).astype(np.int64)


class Empirical(LengthDist):
    """Resample observed lengths with replacement.

    With a column, a marginal (one length per draw). Without one, prompt and output lengths are
    drawn *together* from the same observed request (`joint`), keeping their correlation (long
    summarisation prompts with short outputs, for instance).
    """

    def __init__(self, values: np.ndarray, source: str = "", column: str | None = None):
        values = np.asarray(values, dtype=np.int64)
        if len(values) == 0:
            raise TraceError(f"empirical:{source}: no lengths to resample")
        if (values < 1).any():
            raise TraceError(f"empirical:{source}: lengths must be >= 1")
        self.values, self.source, self.column = values, source, column
        self.joint = values.ndim == 2

    @classmethod
    def from_trace(cls, trace: Trace, column: str | None = None, source: str = "") -> Empirical:
        src = source or trace.source or "trace"
        if column is None:
            return cls(trace.df[["prompt_tokens", "output_tokens"]].to_numpy(), src, None)
        if column not in _COLUMN_ALIASES:
            raise TraceError(f"empirical:{src}: column {column!r} must be one of "
                             f"{sorted(_COLUMN_ALIASES)}")
        col = _COLUMN_ALIASES[column]
        return cls(trace.df[col].to_numpy(), src, col)

    @classmethod
    def from_path(cls, path: str, column: str | None = None) -> Empirical:
        from .loaders import load_lengths  # late import: loaders -> formats -> arrivals only

        df = load_lengths(path)
        return cls.from_trace(Trace(df=df, source=str(path)), column)

    @property
    def spec(self) -> str:
        return f"empirical:{self.source}" + (f":{self.column}" if self.column else "")

    def sample(self, rng, n):
        idx = np.floor(rng.random(n) * len(self.values)).astype(np.int64)
        return self.values[np.minimum(idx, len(self.values) - 1)]


def _label(**kv) -> str:
    return "lognormal:" + ",".join(f"{k}={v:g}" for k, v in kv.items() if v is not None)


def _check_int(dist, name, v, lo):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise TraceError(f"{dist}: {name}={v!r} must be a whole number >= {lo}")


def _num(spec, key, text, whole=False):
    try:
        v = float(text)
    except ValueError:
        raise TraceError(f"{spec!r}: {key}={text!r} is not a number") from None
    if whole:
        if not v.is_integer():
            raise TraceError(f"{spec!r}: {key}={text!r} must be a whole number of tokens")
        return int(v)
    return v




def parse_length_dist(spec) -> LengthDist:
    """Build a LengthDist from a spec string (LengthDist instances pass through)."""
    if isinstance(spec, LengthDist):
        return spec
    if not isinstance(spec, str) or ":" not in spec:
        raise TraceError(f"length spec {spec!r}: expected {SPEC_HELP}")
    kind, body = spec.split(":", 1)
    kind = kind.strip().lower()
    if kind == "fixed":
        return Fixed(_num(spec, "N", body, whole=True))
    if kind == "uniform":
        parts = body.split(":")
        if len(parts) != 2:
            raise TraceError(f"{spec!r}: uniform needs uniform:LOW:HIGH, e.g. uniform:128:2048")
        return Uniform(_num(spec, "LOW", parts[0], True), _num(spec, "HIGH", parts[1], True))
    if kind == "lognormal":
        kv = {}
        for item in filter(None, (p.strip() for p in body.split(","))):
            if "=" not in item:
                raise TraceError(f"{spec!r}: {item!r} should be key=value")
            k, v = (x.strip() for x in item.split("=", 1))
            if k not in ("mean", "std", "median", "sigma", "min", "max"):
                raise TraceError(f"{spec!r}: unknown key {k!r}; use mean,std or median,sigma "
                                 f"plus optional min,max")
            kv[k] = _num(spec, k, v, whole=k in ("min", "max"))
        bounds = {"min": kv.pop("min", 1), "max": kv.pop("max", None)}
        if set(kv) == {"mean", "std"}:
            return LogNormal.from_mean_std(kv["mean"], kv["std"], **bounds)
        if set(kv) == {"median", "sigma"}:
            return LogNormal.from_median_sigma(kv["median"], kv["sigma"], **bounds)
        raise TraceError(f"{spec!r}: lognormal needs exactly mean=,std= or median=,sigma= "
                         f"(got {sorted(kv)})")
    if kind == "empirical":
        path, column = body, None
        if ":" in body and body.rsplit(":", 1)[1] in _COLUMN_ALIASES:
            path, column = body.rsplit(":", 1)
        if not path:
            raise TraceError(f"{spec!r}: empirical needs a trace path, e.g. empirical:trace.csv")
        return Empirical.from_path(path, column)
    raise TraceError(f"length spec {spec!r}: unknown distribution {kind!r}; expected {SPEC_HELP}")
