"""Strict typed loading shared by every config section: dicts onto dataclasses and back.

Split from ``goodput.sim.config`` (which defines the sections and reads YAML) so the machinery that every
section and every pluggable strategy relies on lives in one small place: ``from_dict`` rejects an
unknown key or a wrong type naming the dotted path; strategies (batching policies, speculation
methods, routers' options) register their own option sections; ``to_dict`` writes a config back
so that it loads to an equal one; ``load_plugin`` imports user strategies. ``goodput.sim.config``
re-exports every name, so callers import from there.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import sys
import types
import typing
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """Invalid configuration; the message names the dotted field path."""


#: option sections of pluggable strategies: {config class: {section name: options dataclass}}
_SECTIONS: dict[type, dict[str, type]] = {}
#: {config class: module whose import registers the built-in sections}
_SOURCES: dict[type, str] = {}

#: fields that moved into a strategy's own section, for a helpful error
MOVED_FIELDS = {"scheduler.chunk_size": "scheduler.sarathi.chunk_size",
                "scheduler.token_budget": "scheduler.sarathi.token_budget",
                "scheduler.reserve_output_tokens":
                    "scheduler.orca.reserve_output_tokens (or scheduler.static.reserve_output_tokens)"}


def register_section(owner: type, name: str, options: type) -> None:
    """Let ``owner`` (e.g. SchedulerConfig) hold a section ``name`` parsed as ``options``."""
    _SECTIONS.setdefault(owner, {})[name] = options


def register_section_source(owner: type, module: str) -> None:
    """``module`` registers sections of ``owner`` when imported (the built-in batching policies
    register theirs on SchedulerConfig); it is imported the first time those sections are asked
    for, so loading a config never depends on what happened to be imported before."""
    _SOURCES[owner] = module


def registered_sections(owner: type) -> dict[str, type]:
    module = _SOURCES.get(owner)
    if module is not None and module not in sys.modules:
        importlib.import_module(module)
    return _SECTIONS.get(owner, {})


def section_options(cfg: Any, name: str, where: str, what: str) -> Any:
    """The options of strategy ``name`` held by ``cfg`` (a config with registered sections and a
    ``sections`` dict): what the config set, else the options' defaults, kept for next time."""
    opts = cfg.sections.get(name)
    if opts is None:
        cls = registered_sections(type(cfg)).get(name)
        if cls is None:
            raise ConfigError(f"{where}.{name}: no {what} named '{name}' has options")
        opts = cfg.sections[name] = cls()
    return opts


def register_strategy(registry: dict[str, Any], owner: type, cls: Any, what: str) -> Any:
    """Make strategy class ``cls`` available by its ``name`` in ``registry``, with its ``Options``
    as a section of config class ``owner`` (batching policies, speculation methods)."""
    if cls.name in registry and registry[cls.name] is not cls:
        raise ValueError(f"a {what} named '{cls.name}' is already registered")
    registry[cls.name] = cls
    if cls.Options is not None:
        register_section(owner, cls.name, cls.Options)
    return cls


def _coerce(value: Any, typ: Any, path: str) -> Any:
    origin = typing.get_origin(typ)
    if dataclasses.is_dataclass(typ):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__}")
        return from_dict(typ, value, path)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(typ)
        if value is None and type(None) in args:
            return None
        last = None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError as exc:
                last = exc
        raise last or ConfigError(f"{path}: invalid value {value!r}")
    if origin is list:
        (item,) = typing.get_args(typ)
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__}")
        return [_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls, data: dict, path: str = ""):
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    internal = {f.name for f in fields if f.metadata.get("internal")}
    names = {f.name for f in fields} - internal
    sections = registered_sections(cls)
    where = f"{path}." if path else ""
    parsed = {}
    for k, v in data.items():
        if k in sections and k not in names:
            if v is not None and not isinstance(v, dict):
                raise ConfigError(f"{where}{k}: expected a mapping, got {type(v).__name__}")
            parsed[k] = from_dict(sections[k], v or {}, where + k)
    unknown = set(data) - names - set(parsed)
    moved = [f"{where}{u} moved to {MOVED_FIELDS[where + u]}" for u in sorted(unknown)
             if where + u in MOVED_FIELDS]
    if moved:
        raise ConfigError("; ".join(moved))
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(
            f"unknown config field(s) {', '.join(where + u for u in sorted(unknown))}; "
            f"valid fields{' of ' + path if path else ''}: {', '.join(sorted(names | set(sections)))}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{path}.{k}" if path else k) for k, v in data.items()
              if k not in parsed}
    if parsed:
        kwargs["sections"] = parsed
    return cls(**kwargs)


def load_plugin(name: object, where: str = "plugins", base: Path | None = None) -> None:
    """Import a plugin module (dotted name) or file (``.py``, relative to ``base``): importing it
    runs its ``register_policy`` / ``register_router`` decorators."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: expected a module name or a .py path, got {name!r}")
    try:
        if name.endswith(".py"):
            file = Path(name) if Path(name).is_absolute() else (base or Path.cwd()) / name
            if not file.is_file():
                raise ConfigError(f"{where}: plugin file {file} not found")
            mod_name = f"goodput_plugin_{file.stem}"
            if mod_name in sys.modules:
                return
            spec = importlib.util.spec_from_file_location(mod_name, file)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[mod_name]
                raise
        else:
            importlib.import_module(name)
    except ConfigError:
        raise
    except Exception as exc:  # a broken plugin is a config problem: say which and why
        raise ConfigError(f"{where}: cannot import plugin '{name}': {type(exc).__name__}: {exc}") from None


def to_dict(cfg: Any) -> Any:
    """Plain data of a config; strategy sections appear as their own keys, every registered
    section with its values or defaults, so the dict loads back to an equal config."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        out = {}
        for f in dataclasses.fields(cfg):
            value = getattr(cfg, f.name)
            if f.metadata.get("internal"):
                continue
            out[f.name] = to_dict(value)
        sections = registered_sections(type(cfg))
        if sections:
            given = getattr(cfg, "sections", {})
            for name, cls in sorted(sections.items()):
                out[name] = to_dict(given.get(name) or cls())
        return out
    if isinstance(cfg, list):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg
