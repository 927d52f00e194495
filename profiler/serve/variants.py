"""Fidelity cases derived from committed ones: the same trace, a few config fields changed.

Why: a new engine feature (speculative decoding, another attention kernel, another cost model)
is checked on the very traces the committed table was measured on, so its rows differ from the
old ones by that feature alone. ``derive`` copies each case's ``trace.csv`` and ``design.json``
and rewrites its ``config.yaml`` with the overrides (dotted keys, YAML values), recording them
in ``design.json`` (``derived_from``, ``overrides``). The result loads through the same checks
as any config (``goodput.sim.config.load_config``), so a misspelt field fails here with its name.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from goodput.profiler.serve.fidelity import cases_of
from goodput.sim.config import ConfigError, load_config


def parse_overrides(pairs: list[str]) -> dict:
    """``["a.b=1", "c=x"]`` -> ``{"a.b": 1, "c": "x"}`` (values read as YAML)."""
    out = {}
    for p in pairs:
        key, eq, value = p.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--set {p!r}: write FIELD=VALUE, e.g. "
                              "scheduler.speculation.method=fixed")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _apply(doc: dict, dotted: str, value) -> None:
    node = doc
    *parents, leaf = dotted.split(".")
    for name in parents:
        nxt = node.get(name)
        if nxt is None:
            nxt = node[name] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {dotted}: '{name}' is not a section")
        node = nxt
    node[leaf] = value


def derive(src: Path, out: Path, overrides: dict, prefix: str = "",
           only: list[str] | None = None) -> list[Path]:
    """Write ``out/<prefix><case>`` for every case of ``src`` (or those in ``only``)."""
    cases = [c for c in cases_of(Path(src)) if not only or c.name in only]
    if not cases:
        raise FileNotFoundError(f"no cases under '{src}'" + (f" named {only}" if only else ""))
    made = []
    for case in cases:
        doc = yaml.safe_load((case / "config.yaml").read_text())
        for key, value in overrides.items():
            _apply(doc, key, value)
        dst = Path(out) / f"{prefix}{case.name}"
        dst.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(doc, sort_keys=False)
        (dst / "config.yaml").write_text(text)
        load_config(dst / "config.yaml")  # fails here, naming the field, if an override is wrong
        shutil.copyfile(case / "trace.csv", dst / "trace.csv")
        design = json.loads((case / "design.json").read_text()) if (case / "design.json").exists() \
            else {}
        design.update({"derived_from": str(case), "overrides": overrides})
        (dst / "design.json").write_text(json.dumps(design, indent=1) + "\n")
        made.append(dst)
    return made
