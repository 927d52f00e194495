"""``goodput simulate --help``: every flag's default, and the registered choices.

The choices come from the registries (``goodput.sim.engine.policies.POLICIES``,
``goodput.sim.engine.routers.ROUTERS``, ``goodput.sim.costmodel.factory.KINDS`` and the trace
loaders' formats),
and the defaults from the config dataclasses, so the help never drifts from the code. Importing
the registries costs numpy and the engine (~0.3 s, most of a help's time), so where they are not
loaded yet their entries are read from the registering source with ``ast`` (the registration
decorators and literals; tests/test_cli_help.py checks the two agree). All of it happens only
when the help is printed (``RegistryHelp``): building the parser stays light.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import sys
from pathlib import Path

#: simulate flag dest -> dotted config path
SIM_FLAGS = {
    "policy": "scheduler.policy", "router": "router.name", "rate": "trace.rate",
    "trace_format": "trace.format", "max_requests": "trace.max_requests",
    "ttft_slo": "slo.ttft_s", "tpot_slo": "slo.tpot_s", "cost_model": "cost_model.kind",
    "profile_dir": "cost_model.profile_dir", "out": "output.dir", "seed": "seed",
    "max_sim_time": "max_sim_time_s", "num_requests": "trace.num_requests",
    "max_batch_size": "scheduler.max_batch_size", "max_batched_tokens": "scheduler.max_batched_tokens",
    "trace_events": "output.trace_events",
}
#: simulate flag dest -> field of the (single) cluster group
GROUP_FLAGS = {"model": "model", "gpu": "gpu", "tp": "tp", "instances": "count"}
#: what an empty default means, per flag
_EMPTY = {"out": "none: nothing is saved", "profile_dir": "none: found by GPU/model/TP",
          "trace_events": "none", "rate": "the trace's own arrivals", "max_requests": "all",
          "max_sim_time": "until the last request ends", "max_batched_tokens":
          "max(model context, 2048)", "ttft_slo": "no bound", "tpot_slo": "no bound"}


def _get(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _module_path(module: str) -> Path:
    """Where ``goodput.sim.<rest>`` lives, without importing it: this file's folder is goodput.sim
    (installed, or the repository's sim/ folder that goodput/sim links to)."""
    prefix = "goodput.sim."
    if not module.startswith(prefix):
        raise ValueError(f"{module!r} is not a goodput.sim module")
    return Path(__file__).resolve().parent.joinpath(*module[len(prefix):].split("."))


def _literal(module: str, name: str):
    """``module.name`` without importing ``module`` (pandas, the catalog): the loaded module's
    value when it is imported already, else the literal assigned to ``name`` in its source."""
    loaded = sys.modules.get(module)
    if loaded is not None:
        return getattr(loaded, name)
    source = _module_path(module).with_suffix(".py")
    for node in ast.parse(source.read_text()).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id == name):
            return ast.literal_eval(node.value)
    return getattr(importlib.import_module(module), name)  # pragma: no cover  (not a literal)


def format_names() -> list[str]:
    """The trace loaders' formats (``goodput.sim.workload.formats.FORMATS``, the keys of its SIGNATURES)."""
    return list(_literal("goodput.sim.workload.formats", "SIGNATURES"))


def _class_names(tree: ast.Module, decorator: str, registry: str | None = None) -> list[str]:
    """``name = "..."`` of the classes in ``tree`` decorated by ``decorator``, passed to it in a
    module-level call (``register_policy(SarathiPolicy)``) or named in the assignment to
    ``registry`` (``ROUTERS = {c.name: c for c in (RoundRobinRouter, ...)}``)."""
    listed: set[str] = set()
    for node in tree.body:
        call = node.value if isinstance(node, ast.Expr) else None
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == decorator:
            listed |= {a.id for a in call.args if isinstance(a, ast.Name)}
        if (registry and isinstance(node, ast.AnnAssign | ast.Assign)
                and registry in {t.id for t in getattr(node, "targets", [getattr(node, "target", None)])
                                 if isinstance(t, ast.Name)} and node.value is not None):
            listed |= {n.id for n in ast.walk(node.value) if isinstance(n, ast.Name)}
    out = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        decorated = any(isinstance(d, ast.Name) and d.id == decorator for d in node.decorator_list)
        if not (decorated or node.name in listed):
            continue
        for item in node.body:  # ``name = "..."`` or ``name: ClassVar[str] = "..."``
            targets = item.targets if isinstance(item, ast.Assign) else \
                [item.target] if isinstance(item, ast.AnnAssign) else []
            value = getattr(item, "value", None)
            if (any(isinstance(t, ast.Name) and t.id == "name" for t in targets)
                    and isinstance(value, ast.Constant) and isinstance(value.value, str)):
                out.append(value.value)
    return out


def _sources(package: str) -> list[Path]:
    base = _module_path(package)
    return sorted(base.glob("*.py")) if base.is_dir() else [base.with_suffix(".py")]


def policy_names() -> list[str]:
    """``goodput.sim.engine.policies.POLICIES`` (plugins too) when it is loaded, else the built-in policies
    read from their source (classes decorated with ``register_policy``): no engine import."""
    loaded = sys.modules.get("goodput.sim.engine.policies")
    if loaded is not None:
        return sorted(loaded.POLICIES)
    return sorted({n for f in _sources("goodput.sim.engine.policies")
                   for n in _class_names(ast.parse(f.read_text()), "register_policy")})


def router_names() -> list[str]:
    """``goodput.sim.engine.routers.ROUTERS`` when it is loaded, else read from its source (as above)."""
    loaded = sys.modules.get("goodput.sim.engine.routers")
    if loaded is not None:
        return sorted(loaded.ROUTERS)
    tree = ast.parse(_sources("goodput.sim.engine.routers")[0].read_text())
    return sorted(set(_class_names(tree, "register_router", "ROUTERS")))


def choices() -> dict[str, list[str]]:
    """flag dest -> the names it accepts, from the registries (see policy_names)."""
    return {"policy": policy_names(), "router": router_names(),
            "trace_format": ["auto", *format_names()],
            "cost_model": list(_literal("goodput.sim.costmodel.factory", "KINDS"))}


def defaults() -> dict[str, object]:
    """flag dest -> its default, from the config dataclasses."""
    from goodput.sim.config import InstanceGroupConfig, SimConfig

    cfg, group = SimConfig(), InstanceGroupConfig()
    out = {dest: _get(cfg, path) for dest, path in SIM_FLAGS.items()}
    out.update({dest: getattr(group, field) for dest, field in GROUP_FLAGS.items()})
    return out


def fill_help(parser: argparse.ArgumentParser) -> None:
    """Append the choices and the default to the help of every flag that maps to the config."""
    if getattr(parser, "_registry_help_filled", False):
        return
    names, default = choices(), defaults()
    for action in parser._actions:
        dest = action.dest
        if dest not in default:
            continue
        text = action.help or ""
        if dest in names:
            extra = " (or one a config's plugins: register)" if dest in ("policy", "router") else ""
            text += f": {', '.join(names[dest])}{extra}"
        value = default[dest]
        shown = _EMPTY.get(dest, "none") if value in (None, "") else value
        text += f" (default: {shown})"
        action.help = text.replace("%", "%%")
    parser._registry_help_filled = True  # type: ignore[attr-defined]


class _FillingHelp(argparse.Action):
    """``-h/--help`` that completes the parser's help text (``fill``) only when asked, then
    prints: the registries are imported on demand, so a plain run never pays for them."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def fill(self, parser: argparse.ArgumentParser) -> None:
        raise NotImplementedError

    def __call__(self, parser, namespace, values, option_string=None):
        self.fill(parser)
        parser.print_help()
        parser.exit()


class RegistryHelp(_FillingHelp):
    """Help that fills in the registries' choices and the defaults."""

    def fill(self, parser):
        fill_help(parser)


def fill_choices_and_defaults(parser: argparse.ArgumentParser, names: dict[str, list[str]]) -> None:
    """For a parser whose defaults are its own (``goodput plan``): append the registry names of
    the flags in ``names`` and ``(default: X)`` to every flag whose help does not say it yet."""
    if getattr(parser, "_registry_help_filled", False):
        return
    for action in parser._actions:
        if not action.option_strings or action.default is argparse.SUPPRESS:
            continue
        text = action.help or ""
        if action.dest in names:
            text += f": {', '.join(names[action.dest])}"
        if "default" not in text and action.nargs != 0 and action.default is not None:
            text += f" (default: {action.default})"
        action.help = text.replace("%", "%%")
    parser._registry_help_filled = True  # type: ignore[attr-defined]


class ChoicesHelp(_FillingHelp):
    """Help for a parser with its own defaults: registries' names, then every default."""

    def fill(self, parser):
        names = choices()
        fill_choices_and_defaults(parser, {k: names[k] for k in ("policy", "trace_format", "cost_model")})
