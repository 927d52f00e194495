"""Link parameters: typed specs, the link catalog (sim/catalog/links.yaml) and config overrides.

A ``LinkSpec`` is what one hop costs: bandwidth, latency, a jitter distribution and a loss rate with
its retransmission cost. Specs come from the catalog by name (``ib-ndr``), from a GPU's entry
(``h100-sxm`` -> NVLink4 + PCIe Gen5), or from a config dict that starts from a catalog entry and
overrides fields. Every value is validated here, once, so the fabric never meets a NaN bandwidth;
an error names the field and the fix in one line.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from goodput.sim.network.errors import NetworkConfigError

LINK_KINDS = ("nvlink", "pcie", "infiniband", "roce", "ethernet")
FABRIC_KINDS = ("infiniband", "roce", "ethernet")  # kinds that connect nodes
JITTER_KINDS = ("none", "normal", "lognormal", "exponential")
_CATALOG = Path(__file__).resolve().parents[1] / "catalog" / "links.yaml"


def _finite(value: Any, where: str, fix: str, *, positive: bool = False) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise NetworkConfigError(f"{where} = {value!r}: not a number; {fix}") from None
    if not math.isfinite(x) or x < 0 or (positive and x == 0):
        need = "a positive finite number" if positive else "a finite number >= 0"
        raise NetworkConfigError(f"{where} = {value!r}: must be {need}; {fix}")
    return x


@dataclass(frozen=True)
class Jitter:
    """Extra one-way delay per transfer and hop, never negative.

    ``normal``: N(0, scale_s) truncated at 0 (the convention of goodput.sim.config.LinkConfig.jitter_s);
    ``exponential``: mean ``scale_s``; ``lognormal``: median ``scale_s`` and shape ``sigma`` (heavy
    right tail, the usual shape of congested-network delays); ``none``: zero.
    """

    kind: str = "none"
    scale_s: float = 0.0
    sigma: float = 0.0

    def sample(self, rng: np.random.Generator) -> float:
        if self.kind == "none" or self.scale_s == 0:
            return 0.0
        if self.kind == "normal":
            return max(0.0, float(rng.normal(0.0, self.scale_s)))
        if self.kind == "exponential":
            return float(rng.exponential(self.scale_s))
        return float(rng.lognormal(math.log(self.scale_s), self.sigma))

    def mean(self) -> float:
        """Expected delay (normal truncated at 0: scale x sqrt(1 / 2 pi))."""
        if self.kind == "none":
            return 0.0
        if self.kind == "normal":
            return self.scale_s / math.sqrt(2 * math.pi)
        if self.kind == "exponential":
            return self.scale_s
        return self.scale_s * math.exp(self.sigma ** 2 / 2)


def parse_jitter(raw: Any, where: str) -> Jitter:
    """``none`` | ``{kind: normal, scale_s: 5e-6}`` | shorthand ``{normal: 5e-6}`` /
    ``{exponential: 2e-6}`` / ``{lognormal: {scale_s: 2e-6, sigma: 0.5}}``."""
    if raw is None or raw == "none":
        return Jitter()
    if isinstance(raw, Jitter):
        return raw
    if not isinstance(raw, Mapping):
        raise NetworkConfigError(f"{where} = {raw!r}: use none, {{normal: STD_S}}, "
                                 "{exponential: MEAN_S} or {lognormal: {scale_s: MEDIAN_S, sigma: S}}")
    d = dict(raw)
    if "kind" not in d and len(d) == 1:
        ((kind, val),) = d.items()
        d = {"kind": kind, **(dict(val) if isinstance(val, Mapping) else {"scale_s": val})}
    kind = d.pop("kind", "none")
    if kind not in JITTER_KINDS:
        raise NetworkConfigError(f"{where}.kind = {kind!r}: unknown jitter; "
                                 f"use one of {', '.join(JITTER_KINDS)}")
    unknown = set(d) - {"scale_s", "sigma"}
    if unknown:
        raise NetworkConfigError(f"{where}: unknown fields {sorted(unknown)}; "
                                 "jitter takes kind, scale_s, sigma")
    scale = _finite(d.get("scale_s", 0.0), f"{where}.scale_s", "give the delay scale in seconds")
    sigma = _finite(d.get("sigma", 0.0), f"{where}.sigma", "give the lognormal shape (e.g. 0.5)")
    if kind == "lognormal" and scale > 0 and sigma == 0:
        raise NetworkConfigError(f"{where}.sigma = 0: a lognormal jitter needs sigma > 0 (e.g. 0.5)")
    return Jitter(kind, scale, sigma)


@dataclass(frozen=True)
class LinkSpec:
    """One hop's parameters (bandwidth per direction, one-way latency, jitter, loss)."""

    name: str
    kind: str
    bandwidth_gbs: float
    latency_s: float
    jitter: Jitter = Jitter()
    loss_rate: float = 0.0  # probability one message is lost, in [0, 1)
    retransmit_timeout_s: float = 0.0  # wait before a lost message is resent
    aliases: tuple[str, ...] = ()
    source: str = ""

    @property
    def bytes_per_s(self) -> float:
        return self.bandwidth_gbs * 1e9

    def validated(self, where: str) -> LinkSpec:
        """Check every field; raise ``NetworkConfigError`` naming ``where.field`` and the fix."""
        if self.kind not in LINK_KINDS:
            raise NetworkConfigError(f"{where}.kind = {self.kind!r}: unknown link kind; "
                                     f"use one of {', '.join(LINK_KINDS)}")
        _finite(self.bandwidth_gbs, f"{where}.bandwidth_gbs",
                "give GB/s per direction (e.g. 50 for InfiniBand NDR); partition a link at runtime "
                "with Fabric.partition instead of a zero bandwidth", positive=True)
        _finite(self.latency_s, f"{where}.latency_s", "give the one-way latency in seconds (e.g. 2e-6)")
        _finite(self.retransmit_timeout_s, f"{where}.retransmit_timeout_s", "give seconds (e.g. 0.067)")
        loss = _finite(self.loss_rate, f"{where}.loss_rate", "give a probability in [0, 1)")
        if loss >= 1:
            raise NetworkConfigError(f"{where}.loss_rate = {self.loss_rate!r}: must be in [0, 1) "
                                     "(a link that loses everything is a partition: Fabric.partition)")
        return self


_FIELDS = {"kind", "bandwidth_gbs", "latency_s", "jitter", "jitter_s", "loss_rate",
           "retransmit_timeout_s", "source", "aliases"}


def _build(name: str, entry: Mapping[str, Any], base: LinkSpec | None, where: str) -> LinkSpec:
    unknown = set(entry) - _FIELDS - {"base"}
    if unknown:
        raise NetworkConfigError(f"{where}: unknown fields {sorted(unknown)}; "
                                 f"a link takes base, {', '.join(sorted(_FIELDS))}")
    kw: dict[str, Any] = {k: entry[k] for k in entry if k in _FIELDS - {"jitter", "jitter_s", "aliases"}}
    if "jitter" in entry:
        kw["jitter"] = parse_jitter(entry["jitter"], f"{where}.jitter")
    elif "jitter_s" in entry:  # goodput.sim.config.LinkConfig's field: a truncated-normal std-dev
        kw["jitter"] = Jitter("normal", _finite(entry["jitter_s"], f"{where}.jitter_s", "give seconds"))
    if "aliases" in entry:
        kw["aliases"] = tuple(str(a).lower() for a in entry["aliases"])
    if base is None:
        missing = {"kind", "bandwidth_gbs", "latency_s"} - set(kw)
        if missing:
            raise NetworkConfigError(f"{where}: missing {sorted(missing)}; give them or a catalog "
                                     f"'base' ({', '.join(sorted(catalog()))})")
        spec = LinkSpec(name=name, **kw)
    else:
        spec = replace(base, name=name, **kw)
    return spec.validated(where)


@cache
def catalog() -> dict[str, LinkSpec]:
    """Named link types from sim/catalog/links.yaml."""
    raw = yaml.safe_load(_CATALOG.read_text())
    return {name.lower(): _build(name, e, None, f"links.yaml:links.{name}")
            for name, e in raw["links"].items()}


@cache
def gpu_links() -> dict[str, dict[str, str | None]]:
    """GPU name -> {'nvlink': link name | None, 'pcie': link name} from links.yaml."""
    raw = yaml.safe_load(_CATALOG.read_text())
    return {k.lower(): dict(v) for k, v in raw["gpu_links"].items()}


def get_link(name: str, where: str = "link") -> LinkSpec:
    """A catalog entry by name or alias (case-insensitive)."""
    key = name.strip().lower()
    table = catalog()
    if key in table:
        return table[key]
    for spec in table.values():
        if key in spec.aliases:
            return spec
    raise NetworkConfigError(f"{where} = {name!r}: unknown link; known: {', '.join(sorted(table))}")


def link_spec(raw: str | Mapping[str, Any] | LinkSpec, where: str = "link",
              default: LinkSpec | None = None) -> LinkSpec:
    """Resolve a config value to a validated spec.

    ``raw`` is a catalog name, a ``LinkSpec``, or a dict of fields, optionally with ``base: NAME``
    (without it the dict overrides ``default``, e.g. the GPU's own NVLink). The dict form accepts
    goodput.sim.config.LinkConfig's fields (``bandwidth_gbs``, ``latency_s``, ``jitter_s``) unchanged.
    """
    if isinstance(raw, LinkSpec):
        return raw.validated(where)
    if isinstance(raw, str):
        return get_link(raw, where)
    if not isinstance(raw, Mapping):
        raise NetworkConfigError(f"{where} = {raw!r}: give a catalog link name or a dict of fields")
    base = get_link(str(raw["base"]), f"{where}.base") if "base" in raw else default
    name = str(raw.get("base", default.name if default else where))
    return _build(name, raw, base, where)


def gpu_link_specs(gpu: str, where: str = "gpu") -> tuple[LinkSpec | None, LinkSpec]:
    """(NVLink spec or None, PCIe spec) of a GPU type, matched through goodput.sim.catalog's aliases."""
    from goodput.sim.catalog import get_gpu  # catalog of GPUs; imported here so kv/fabric stay light

    try:
        canonical = get_gpu(gpu).name.lower()
    except ValueError as e:
        raise NetworkConfigError(f"{where}: {e}") from None
    table = gpu_links()
    if canonical not in table:
        raise NetworkConfigError(f"{where} = {gpu!r}: no entry in links.yaml gpu_links; add one "
                                 f"(known: {', '.join(sorted(table))})")
    entry = table[canonical]
    nv = entry.get("nvlink")
    return (get_link(nv, where) if nv else None), get_link(str(entry["pcie"]), where)


@dataclass(frozen=True)
class LinkOverrides:
    """Per-kind overrides applied on top of catalog specs (``links: {infiniband: {loss_rate: 1e-6}}``)."""

    by_kind: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def apply(self, spec: LinkSpec, where: str) -> LinkSpec:
        over = self.by_kind.get(spec.kind)
        return link_spec(over, f"{where}.{spec.kind}", default=spec) if over else spec


def parse_overrides(raw: Mapping[str, Any] | None, where: str) -> LinkOverrides:
    raw = raw or {}
    bad = set(raw) - set(LINK_KINDS)
    if bad:
        raise NetworkConfigError(f"{where}: unknown link kinds {sorted(bad)}; use {', '.join(LINK_KINDS)}")
    return LinkOverrides({k: dict(v) for k, v in raw.items()})
