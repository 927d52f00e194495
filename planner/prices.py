"""GPU prices the planner optimises: the catalog's, a user price file, or ``--price gpu=USD``.

A price file is YAML (or JSON) mapping a GPU name or alias to either a number (USD per
GPU-hour) or a mapping with ``on_demand`` and/or ``spot``; ``--price-kind`` picks the column.
Every price carries its source (the file and kind, the flag, or the catalog entry's source), and
plan.yaml and the printed table show it, so a plan's cost says where its prices came from.
"""
from __future__ import annotations

import math
from pathlib import Path

import yaml

from goodput.planner.errors import PlannerError

KINDS = ("on_demand", "spot")


def _gpu_name(name: str, where: str) -> str:
    from goodput.sim.catalog import get_gpu

    try:
        return get_gpu(str(name).strip()).name
    except ValueError as exc:
        raise PlannerError(f"{where}: {exc}") from None


def _usd(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value <= 0:
        raise PlannerError(f"{where}: price {value!r} must be a number of USD per GPU-hour > 0")
    return float(value)


def load_price_file(path: str, kind: str = "on_demand") -> dict[str, tuple[float, str]]:
    """GPU name -> (USD per GPU-hour, source) from a YAML/JSON price file."""
    kind = kind.replace("-", "_")
    if kind not in KINDS:
        raise PlannerError(f"--price-kind {kind!r}: use on-demand or spot")
    p = Path(path)
    if not p.is_file():
        raise PlannerError(f"--prices {path}: no such file")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise PlannerError(f"--prices {path}: not valid YAML/JSON ({exc.__class__.__name__})") \
            from None
    if not isinstance(data, dict) or not data:
        raise PlannerError(f"--prices {path}: expected a mapping gpu -> price or gpu -> "
                           f"{{on_demand: USD, spot: USD}}")
    out = {}
    for name, v in data.items():
        where = f"--prices {path}: {name}"
        if isinstance(v, dict):
            unknown = set(v) - set(KINDS) - {"on-demand"}
            if unknown:
                raise PlannerError(f"{where}: unknown key(s) {sorted(unknown)}; use on_demand, spot")
            v = v.get(kind, v.get(kind.replace("_", "-")))
            if v is None:
                continue  # no price of this kind for this GPU: the catalog's stays
        out[_gpu_name(name, where)] = (_usd(v, where), f"{p.name} ({kind.replace('_', '-')})")
    return out


def parse_price_flags(items: list[str] | None) -> dict[str, tuple[float, str]]:
    """``--price h100=4.50`` (repeatable, or comma-separated) -> GPU name -> (USD, '--price')."""
    out = {}
    for text in items or []:
        for item in str(text).split(","):
            if not item.strip():
                continue
            if "=" not in item:
                raise PlannerError(f"--price expects GPU=USD, e.g. h100=4.50; got {item!r}")
            k, v = item.split("=", 1)
            try:
                usd = float(v)
            except ValueError:
                raise PlannerError(f"--price {k.strip()}: {v!r} is not a number") from None
            out[_gpu_name(k, "--price")] = (_usd(usd, f"--price {k.strip()}"), "--price flag")
    return out


def price_of(gpu, prices: dict) -> tuple[float, str]:
    """(USD per GPU-hour, source) of a catalog GPUSpec under the overrides ``prices``."""
    if gpu.name in prices:
        usd, src = prices[gpu.name]
        return float(usd), str(src)
    return float(gpu.price_per_hour), "catalog (sim/catalog/gpus.yaml: on-demand list price)"
