"""Typed run configuration, loadable from YAML and overridable from the command line.

Every section is a dataclass; ``load_config`` maps nested dicts onto them strictly: an unknown key
or a value of the wrong type is an error naming the dotted path (``scheduler.max_batch_size``) so a
typo never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from goodput.sim.config_base import (
    MOVED_FIELDS,
    ConfigError,
    from_dict,
    load_plugin,
    register_section,
    register_section_source,
    register_strategy,
    registered_sections,
    section_options,
    to_dict,
)
from goodput.sim.config_clients import ClientsConfig, RetrievalConfig

__all__ = ["MOVED_FIELDS", "ClusterEvent", "ConfigError", "CostModelConfig", "InstanceGroupConfig",
           "LinkConfig", "NetworkConfig", "OutputConfig", "RouterConfig", "SLOConfig",
           "SchedulerConfig", "SimConfig", "TraceConfig", "from_dict", "load_config", "load_plugin",
           "register_section", "register_strategy", "registered_sections", "section_options",
           "to_dict"]


@dataclass
class InstanceGroupConfig:
    """A pool of identical serving instances (one instance = ``tp`` GPUs running one engine)."""

    model: str = "llama-3.1-8b"
    gpu: str = "h100"
    tp: int = 1
    #: pipeline-parallel stages: the instance spans tp x pp GPUs and runs pp virtual engines
    #: (vLLM), each its own batches and 1/pp of the KV cache (goodput.sim.costmodel.pipelined)
    pp: int = 1
    count: int = 1
    name: str = ""
    #: which requests this group serves (used by plans from the planner): slo_class or '' for all
    serves: list[str] = field(default_factory=list)
    #: mixed (prompts and decodes), prefill (prompts only; each request's KV then moves to a
    #: decode instance) or decode (takes only prefilled requests): DistServe / Splitwise pools
    role: str = "mixed"
    #: this group's batching policy ('' = scheduler.policy), so pools can batch differently
    policy: str = ""


@dataclass
class SchedulerConfig:
    """Per-instance batching policy and memory settings."""

    policy: str = "vllm"
    max_batch_size: int = 256  # max sequences in one iteration (vLLM max_num_seqs)
    #: max new tokens in one iteration (vLLM max_num_batched_tokens); None = max(model context, 2048)
    max_batched_tokens: int | None = None
    block_size: int = 16  # KV-cache block size in tokens
    gpu_memory_utilization: float = 0.9  # fraction of HBM the engine may use
    activation_reserve_gb: float = 2.0  # per GPU, held back for activations / CUDA graphs
    preemption: str = "recompute"  # recompute | swap
    watermark: float = 0.01  # fraction of KV blocks kept free when admitting (vLLM)
    swap_space_gb: float = 4.0  # host memory per instance for swap preemption (vLLM swap_space)
    host_link_gbs: float | None = None  # host<->GPU bandwidth for swaps; None = the GPU's PCIe
    #: KV blocks per instance, overriding the memory-based count (vLLM num_gpu_blocks_override):
    #: pins the cache size to a real engine's, as the fidelity runs do
    num_gpu_blocks: int | None = None
    #: each policy's own options, by policy name (YAML: ``scheduler.<policy>: {...}``); filled
    #: by the loader from registered sections, read with ``section(name)``
    sections: dict[str, Any] = field(default_factory=dict, metadata={"internal": True})

    def section(self, name: str) -> Any:
        """The options of policy ``name`` (its defaults if the config did not set them)."""
        return section_options(self, name, "scheduler", "policy")


@dataclass
class LinkConfig:
    """A network or device link: time = latency + bytes / bandwidth, plus optional jitter."""

    bandwidth_gbs: float = 25.0  # GB/s (25 GB/s = 200 Gb/s InfiniBand)
    latency_s: float = 20e-6
    jitter_s: float = 0.0  # std-dev of a normal delay added per transfer (truncated at 0)


@dataclass
class NetworkConfig:
    """How KV moves from prefill to decode instances (used when the cluster has pools)."""

    #: nodes, GPUs and links (goodput.sim.network.Topology.from_config; docs/network.md); empty = every
    #: group on its own nodes of 8 GPUs of its type, InfiniBand NDR between nodes
    topology: dict[str, Any] = field(default_factory=dict)
    #: after_prefill | layer_by_layer (overlapped with the last prefill iteration) | pull
    kv_transfer: str = "after_prefill"
    #: how a prefilled request picks its decode instance: least_loaded (fewest KV blocks in use
    #: or reserved, DistServe/Splitwise join-the-shortest-queue) | round_robin
    decode_dispatch: str = "least_loaded"
    message_bytes: int = 1 << 20  # transfer unit for loss and retransmission
    #: fail a transfer stalled this long on a partitioned link (None: wait for recovery)
    stall_timeout_s: float | None = None
    seed: int = 0


@dataclass
class ClusterEvent:
    """A change to the cluster during the run (docs/reliability.md, fault injection): drain an
    instance, scale out by one, fail / recover an instance, slow one down (a straggler), or
    degrade / partition / restore network links."""

    time_s: float = 0.0
    #: drain | scale_out | fail | recover | slow | degrade_link | partition_link | restore_link
    action: str = "drain"
    instance: int = 0  # drain, fail, recover, slow: which instance
    group: int = 0  # scale_out: which cluster[] group the new instance copies
    #: slow: iteration time multiplier (1 restores); degrade_link: bandwidth multiplier in (0, 1]
    factor: float = 1.0
    #: link events: fabric link ids (``n0.nic0.tx``) or ``node:N`` for all of node N's NIC links;
    #: empty = the live-migration link (degrade only)
    links: list[str] = field(default_factory=list)


@dataclass
class RouterConfig:
    #: round_robin | least_outstanding_tokens | least_kv | power_of_two | prefix_aware | llumnix
    name: str = "round_robin"
    seed: int = 0
    #: pools with mixed instances (Splitwise's mixed-pool overflow): prompts go to prefill
    #: instances while one has fewer than this many tokens of work, else to any that takes
    #: prompts; None = prefill and mixed instances alike
    pool_overflow_tokens: int | None = None
    # --- Llumnix ---
    migration: bool = True  # periodic rebalancing by live migration
    migration_interval_s: float = 0.5
    migrate_out_freeness: float = 10.0  # instances below this freeness (blocks/seq) shed load
    migrate_in_freeness: float = 60.0  # instances above it may receive migrations
    max_stages: int = 8  # pre-copy stages before the final stop-and-copy
    high_priority: int = 1  # priority at or above which requests get headroom
    #: virtual usage added per high-priority request, as a fraction of the instance's KV blocks
    #: (so the same setting means the same thing on an 80 GB and a 24 GB GPU)
    priority_headroom: float = 0.01
    link: LinkConfig = field(default_factory=LinkConfig)


@dataclass
class CostModelConfig:
    """Which cost model answers batch_time: auto = a measured profile if one matches, else roofline."""

    kind: str = "auto"  # auto | roofline | profiled
    profile_dir: str = ""  # explicit profile directory (kind=profiled)
    #: host costs of a real engine on top of a profile's kernels (goodput.sim.costmodel.engine):
    #: auto = profiler/profiles/<gpu>/engine.json when present, none, or a path
    engine: str = "auto"


@dataclass
class SLOConfig:
    ttft_s: float | None = None
    tpot_s: float | None = None
    attainment_target: float = 0.9
    #: bound on a whole request's latency (arrival to last token; all steps of a rag request)
    e2e_s: float | None = None


@dataclass
class TraceConfig:
    """Where requests come from: a file, or a synthetic generator when ``path`` is empty."""

    path: str = ""
    format: str = "auto"
    rate: float | None = None  # rescale arrivals to this req/s (or synthesize at it)
    start_s: float | None = None  # time slice of a real trace
    end_s: float | None = None
    max_requests: int | None = None
    # synthetic workload (used when path is empty)
    num_requests: int = 1000
    arrival: str = "poisson"  # poisson | gamma
    cv: float = 1.0
    prompt: str = "lognormal:mean=1024,std=800,min=16,max=8192"
    output: str = "lognormal:mean=200,std=150,min=1,max=2048"


@dataclass
class OutputConfig:
    dir: str = ""  # where results go; empty = do not write files
    plots: bool = True
    csv: bool = False
    timeseries_interval_s: float = 0.5  # sampling period of batch/KV/queue series; 0 = every boundary
    #: write a Chrome/Perfetto trace-event JSON of the run here (iterations, request lifecycles,
    #: preemptions, migrations); empty = none. Open it in ui.perfetto.dev or chrome://tracing
    trace_events: str = ""


@dataclass
class SimConfig:
    cluster: list[InstanceGroupConfig] = field(default_factory=lambda: [InstanceGroupConfig()])
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    cost_model: CostModelConfig = field(default_factory=CostModelConfig)
    slo: SLOConfig = field(default_factory=SLOConfig)
    trace: TraceConfig = field(default_factory=TraceConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    seed: int = 0
    #: advance over runs of unchanged decode iterations in closed form (False = one event per step)
    fast_forward: bool = True
    events: list[ClusterEvent] = field(default_factory=list)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    #: stop simulating at this simulated time (requests still running are counted 'unfinished')
    max_sim_time_s: float | None = None
    progress: bool = False
    #: modules (``pkg.module``) or ``.py`` files imported before the config is read, so that the
    #: policies and routers they register (and their option sections) can be named here
    plugins: list[str] = field(default_factory=list)
    #: open or closed-loop clients and think time; the rag requests' retrieval service
    #: (goodput.sim.config_clients, docs/compound.md)
    clients: ClientsConfig = field(default_factory=ClientsConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)


register_section_source(SchedulerConfig, "goodput.sim.engine.policies")  # the built-in policies' sections


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last
    silently, so a typo'd duplicate would override the value the user was looking at)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"line {key_node.start_mark.line + 1}: key '{key}' given twice in "
                                  "one mapping; keep one")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> SimConfig:
    """Load a YAML file (optional) and apply dotted overrides like {"scheduler.policy": "vllm"}."""
    data: dict = {}
    if path:
        p = Path(path)
        if not p.is_file():  # False for a FIFO or a device too: they would block
            why = ("is a folder" if p.is_dir() else "not found" if not p.exists()
                   else "is not a regular file (a FIFO or device)")
            raise ConfigError(f"config {path}: {why}; give the path of a YAML file (see examples/)")
        try:
            data = yaml.load(p.read_text(), Loader=_StrictLoader) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"config {path}:{where}: not valid YAML ({problem})") from None
        except ConfigError as exc:
            raise ConfigError(f"config {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections")
    for dotted, value in (overrides or {}).items():
        _set_dotted(data, dotted, value)
    plugins = data.get("plugins") or []
    if not isinstance(plugins, list):
        raise ConfigError(f"plugins: expected a list of modules or .py files, got {plugins!r}")
    for i, name in enumerate(plugins):
        load_plugin(name, f"plugins[{i}]")  # paths relative to the working folder, as trace.path
    return from_dict(SimConfig, data)


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    """Apply ``a.b.c=value``; a number indexes a list (``cluster.0.count=3``; an absent
    ``cluster`` is its one default group)."""
    parts = dotted.split(".")
    _check_path(dotted, parts)
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not node:
                raise ConfigError(f"--set {dotted}: {'.'.join(parts[:i])} has no entries; give the "
                                  f"whole list (--set {'.'.join(parts[:i])}='[...]') or edit the config")
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {dotted}: {'.'.join(parts[:i])} has {len(node)} entr"
                                  f"{'y' if len(node) == 1 else 'ies'}; index it 0..{len(node) - 1}")
            if last:
                node[int(part)] = value
                return
            if not isinstance(node[int(part)], dict):
                raise ConfigError(f"--set {dotted}: {where} is not a section")
            node = node[int(part)]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {'.'.join(parts[:i])} is a value, not a section")
        if last:
            node[part] = value
            return
        if part not in node:
            node[part] = ([{}] if part == "cluster" else []) if parts[i + 1].isdigit() else {}
        node = node[part]


def _check_path(dotted: str, parts: list[str]) -> None:
    """``--set seed.x=1``: a dotted key must not descend into a plain value (unknown names are
    left to ``from_dict``, which lists the valid ones)."""
    typ: Any = SimConfig
    for i, part in enumerate(parts):
        if typing.get_origin(typ) is list:
            if not part.isdigit():
                raise ConfigError(f"--set {dotted}: {'.'.join(parts[:i])} is a list; index it "
                                  f"with a number ({'.'.join(parts[:i])}.0...)")
            (typ,) = typing.get_args(typ)
            continue
        if not dataclasses.is_dataclass(typ) or i == len(parts) - 1:
            return
        hints = typing.get_type_hints(typ)
        if part not in hints or part == "sections":
            return  # unknown field or a strategy section: reported by from_dict
        typ = hints[part]
        if typing.get_origin(typ) in (typing.Union, types.UnionType):
            typ = next(a for a in typing.get_args(typ) if a is not type(None))
        if not dataclasses.is_dataclass(typ) and typing.get_origin(typ) is not list:
            where = ".".join(parts[: i + 1])
            raise ConfigError(f"--set {dotted}: {where} is a value, not a section; write "
                              f"--set {where}=VALUE")


