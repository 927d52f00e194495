"""Goodput: simulate, profile and plan LLM serving clusters.

The package is the public face of the project: the ``goodput`` command (``goodput.cli``) and a
small API for notebooks and scripts. Names are imported on first use, so ``import goodput`` is
fast and pulls in neither numpy nor pandas until you touch one of them.

    import goodput

    cfg = goodput.load_config(overrides={
        "cluster": [{"model": "llama-3.1-8b", "gpu": "h100", "count": 2}],
        "slo.ttft_s": 1.0, "slo.tpot_s": 0.05})
    trace = goodput.load_trace("traces/sample_chat.csv")
    result = goodput.run_and_report(cfg, trace)     # a SimResult; result.summary is the report
    result.summary["slo"]["attainment"]             # 1.0 (docs/simulator.md, "Public API")

API (each name is re-exported from where it lives; see docs/simulator.md, "Public API"):

* ``load_config(path=None, overrides=None) -> SimConfig``: YAML plus dotted overrides.
* ``SimConfig`` and its sections ``InstanceGroupConfig``, ``SchedulerConfig``, ``RouterConfig``,
  ``CostModelConfig``, ``SLOConfig``, ``TraceConfig``, ``OutputConfig``, ``LinkConfig``,
  ``ClusterEvent``; ``ConfigError`` for bad values.
* ``load_trace(path, format="auto", **opts) -> Trace``: any supported trace file.
* ``build_trace(trace_cfg, seed=0) -> (trace, count)``: the ``trace`` section of a config
  (file, rescaling, or a synthetic workload) as ``goodput simulate`` builds it.
* ``simulate(cfg, trace, total=None) -> SimResult``: the raw run (per-request records,
  timeseries, instance table).
* ``run_and_report(cfg, trace, count=None) -> SimResult``: simulate, then add the derived
  request metrics and ``result.summary``; writes files and plots when ``cfg.output.dir`` is set.
* ``SimResult``: what both return.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

#: the distribution's name on the package index ("goodput" there is an unrelated project)
DISTRIBUTION = "goodput-serving"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


#: public name -> module that defines it
_EXPORTS = {
    "load_config": "goodput.sim.config",
    "SimConfig": "goodput.sim.config",
    "InstanceGroupConfig": "goodput.sim.config",
    "SchedulerConfig": "goodput.sim.config",
    "RouterConfig": "goodput.sim.config",
    "CostModelConfig": "goodput.sim.config",
    "SLOConfig": "goodput.sim.config",
    "TraceConfig": "goodput.sim.config",
    "OutputConfig": "goodput.sim.config",
    "LinkConfig": "goodput.sim.config",
    "ClusterEvent": "goodput.sim.config",
    "ConfigError": "goodput.sim.config",
    "load_trace": "goodput.sim.workload",
    "Trace": "goodput.sim.workload",
    "build_trace": "goodput.sim.inputs",
    "simulate": "goodput.sim.simulator",
    "SimResult": "goodput.sim.simulator",
    "run_and_report": "goodput.sim.run",
}

__all__ = [  # noqa: RUF022  (grouped as in the docstring)
    "__version__",
    "load_config", "SimConfig", "InstanceGroupConfig", "SchedulerConfig", "RouterConfig",
    "CostModelConfig", "SLOConfig", "TraceConfig", "OutputConfig", "LinkConfig", "ClusterEvent",
    "ConfigError", "load_trace", "Trace", "build_trace", "simulate", "SimResult", "run_and_report",
]


def __getattr__(name: str) -> Any:
    if name == "__version__":  # importlib.metadata alone costs ~40 ms: read it when asked
        globals()[name] = value = _version()
        return value
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'goodput' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # static tools see the real names; at run time they load lazily
    __version__: str
    from goodput.sim.config import (
        ClusterEvent,
        ConfigError,
        CostModelConfig,
        InstanceGroupConfig,
        LinkConfig,
        OutputConfig,
        RouterConfig,
        SchedulerConfig,
        SimConfig,
        SLOConfig,
        TraceConfig,
        load_config,
    )
    from goodput.sim.inputs import build_trace
    from goodput.sim.run import run_and_report
    from goodput.sim.simulator import SimResult, simulate
    from goodput.sim.workload import Trace, load_trace
