"""Cluster topology: nodes of GPUs and NICs, the directed links between them, and paths.

Path model (docs/network.md has the picture):

* Every link is full duplex, so each direction is its own resource with its own bandwidth; a
  transfer a -> b never slows a transfer b -> a.
* **Same node, NVLink** (an NVSwitch box, as in DGX/HGX): ``a.nvlink.tx -> b.nvlink.rx``. The
  switch is non-blocking, so contention happens only at the GPUs' ports: two GPUs sending to a
  third share its receive bandwidth. One hop: latency and loss are charged once (on ``tx``).
* **Same node, no NVLink** (L4, L40S): staged through the host, ``a.pcie.up -> b.pcie.down``; two
  PCIe hops, each with its latency.
* **Different nodes**: GPUDirect RDMA, ``a.pcie.up -> nicA.tx -> [core] -> nicB.rx -> b.pcie.down``.
  GPU ``g`` of a node with ``G`` GPUs and ``K`` NICs uses NIC ``g * K // G`` (rail-aligned: one NIC
  per GPU on a DGX H100, two GPUs per NIC with half as many). The fabric between NICs is a
  non-blocking fat tree unless ``core_gbs`` is given, which adds one shared ``fabric.core`` link
  (an oversubscribed spine) every inter-node transfer crosses. The fabric hop's latency, jitter
  and loss are charged once, on the sending NIC.
* **Same GPU**: an empty path (the KV is already there); the transfer costs nothing.

Link ids are strings (``n0.g3.nvlink.tx``, ``n1.nic0.rx``, ``n0.g3.pcie.up``, ``fabric.core``): what
``Fabric.partition`` / ``degrade`` and the per-link statistics are keyed by.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

from goodput.sim.network.errors import NetworkConfigError
from goodput.sim.network.linkspec import (
    FABRIC_KINDS,
    LinkSpec,
    gpu_link_specs,
    link_spec,
    parse_overrides,
)


class GpuId(NamedTuple):
    node: int
    gpu: int

    def __str__(self) -> str:
        return f"n{self.node}.g{self.gpu}"


@dataclass(frozen=True)
class NodeSpec:
    """One machine: ``gpus`` GPUs of one type, ``nics`` network ports, and the specs of its links."""

    gpu: str
    gpus: int
    nics: int
    nvlink: LinkSpec | None  # None: peer copies go through the host over PCIe
    pcie: LinkSpec
    nic: LinkSpec  # the inter-node fabric port (infiniband | roce | ethernet)

    def nic_of(self, gpu: int) -> int:
        return gpu * self.nics // self.gpus


@dataclass(frozen=True)
class LinkRef:
    """One directed resource of the topology: its spec, and whether it charges the hop's latency,
    jitter and loss (the egress end of a hop does; the ingress end of an NVLink/NIC hop does not)."""

    id: str
    spec: LinkSpec
    charges_hop: bool


@dataclass(frozen=True)
class Path:
    """The resources a transfer crosses, in order."""

    src: GpuId
    dst: GpuId
    links: tuple[LinkRef, ...]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(link.id for link in self.links)

    @property
    def hops(self) -> tuple[LinkSpec, ...]:
        return tuple(link.spec for link in self.links if link.charges_hop)

    @property
    def latency_s(self) -> float:
        """Sum of the hops' base one-way latencies (jitter not included)."""
        return sum(h.latency_s for h in self.hops)

    @property
    def bottleneck_gbs(self) -> float:
        """Nominal bandwidth of the slowest resource (a lone transfer's rate); inf for an empty path."""
        return min((link.spec.bandwidth_gbs for link in self.links), default=float("inf"))


@dataclass(frozen=True)
class Topology:
    nodes: tuple[NodeSpec, ...]
    core_gbs: float | None = None  # None: non-blocking fabric; else one shared spine link (GB/s)

    def __post_init__(self) -> None:
        if not self.nodes:
            raise NetworkConfigError("network.topology.nodes is empty: give at least one node")
        if self.core_gbs is not None and not (self.core_gbs > 0 and self.core_gbs < float("inf")):
            raise NetworkConfigError(f"network.topology.core_gbs = {self.core_gbs!r}: must be a positive "
                                     "finite GB/s, or omitted for a non-blocking fabric")

    # ---- inventory ----
    def gpu_ids(self) -> list[GpuId]:
        return [GpuId(n, g) for n, node in enumerate(self.nodes) for g in range(node.gpus)]

    def _check_gpu(self, gid: GpuId) -> None:
        if not (0 <= gid.node < len(self.nodes) and 0 <= gid.gpu < self.nodes[gid.node].gpus):
            raise NetworkConfigError(f"GPU {gid} is not in the topology ({len(self.nodes)} nodes; "
                                     "node and GPU indices start at 0)")

    def links(self) -> dict[str, LinkRef]:
        """Every directed resource, by id (built once; do not mutate)."""
        return self._links

    @cached_property
    def _links(self) -> dict[str, LinkRef]:
        out: dict[str, LinkRef] = {}
        for n, node in enumerate(self.nodes):
            for g in range(node.gpus):
                out[f"n{n}.g{g}.pcie.up"] = LinkRef(f"n{n}.g{g}.pcie.up", node.pcie, True)
                out[f"n{n}.g{g}.pcie.down"] = LinkRef(f"n{n}.g{g}.pcie.down", node.pcie, True)
                if node.nvlink is not None:
                    out[f"n{n}.g{g}.nvlink.tx"] = LinkRef(f"n{n}.g{g}.nvlink.tx", node.nvlink, True)
                    out[f"n{n}.g{g}.nvlink.rx"] = LinkRef(f"n{n}.g{g}.nvlink.rx", node.nvlink, False)
            for k in range(node.nics):
                out[f"n{n}.nic{k}.tx"] = LinkRef(f"n{n}.nic{k}.tx", node.nic, True)
                out[f"n{n}.nic{k}.rx"] = LinkRef(f"n{n}.nic{k}.rx", node.nic, False)
        if self.core_gbs is not None:
            kind = self.nodes[0].nic.kind
            core = LinkSpec("fabric.core", kind, self.core_gbs, 0.0, source="config: core_gbs")
            out["fabric.core"] = LinkRef("fabric.core", core, False)
        return out

    def node_links(self, node: int) -> list[str]:
        """Ids of a node's NIC links (both directions): partition them all to cut a node off."""
        return [f"n{node}.nic{k}.{d}" for k in range(self.nodes[node].nics) for d in ("tx", "rx")]

    # ---- paths ----
    def path(self, src: GpuId, dst: GpuId) -> Path:
        self._check_gpu(src)
        self._check_gpu(dst)
        links = self.links()
        if src == dst:
            ids: list[str] = []
        elif src.node == dst.node and self.nodes[src.node].nvlink is not None:
            ids = [f"{src}.nvlink.tx", f"{dst}.nvlink.rx"]
        elif src.node == dst.node:
            ids = [f"{src}.pcie.up", f"{dst}.pcie.down"]
        else:
            a, b = self.nodes[src.node], self.nodes[dst.node]
            ids = [f"{src}.pcie.up", f"n{src.node}.nic{a.nic_of(src.gpu)}.tx"]
            if self.core_gbs is not None:
                ids.append("fabric.core")
            ids += [f"n{dst.node}.nic{b.nic_of(dst.gpu)}.rx", f"{dst}.pcie.down"]
        return Path(src, dst, tuple(links[i] for i in ids))

    # ---- construction ----
    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None = None) -> Topology:
        """Build from a config dict (every key optional; docs/network.md lists them)::

            nodes: 2                 # or a list of per-node dicts with the keys below
            gpus_per_node: 8
            gpu: h100-sxm            # picks NVLink / PCIe specs from links.yaml gpu_links
            nics_per_node: 8         # default: one per GPU
            fabric: ib-ndr           # catalog name or dict (base: NAME + overrides)
            core_gbs: null           # oversubscribed spine bandwidth, GB/s
            links: {infiniband: {loss_rate: 1e-6}, nvlink: {latency_s: 5e-6}}   # per-kind overrides
        """
        cfg = dict(cfg or {})
        where = "network.topology"
        known = {"nodes", "gpus_per_node", "gpu", "nics_per_node", "fabric", "core_gbs", "links"}
        _no_unknown(cfg, known, where)
        overrides = parse_overrides(cfg.get("links"), f"{where}.links")
        shared = ("gpus_per_node", "gpu", "nics_per_node", "fabric")
        defaults: dict[str, Any] = {k: cfg[k] for k in shared if k in cfg}
        raw_nodes = cfg.get("nodes", 1)
        if isinstance(raw_nodes, bool | str) or not isinstance(raw_nodes, int | Sequence):
            raise NetworkConfigError(f"{where}.nodes = {raw_nodes!r}: give a node count or a list of nodes")
        if isinstance(raw_nodes, int):
            if raw_nodes < 1:
                raise NetworkConfigError(f"{where}.nodes = {raw_nodes}: give at least one node")
            node_cfgs: list[Mapping[str, Any]] = [{}] * raw_nodes
        else:
            node_cfgs = list(raw_nodes)
        nodes = tuple(_node({**defaults, **nc}, overrides, f"{where}.nodes[{i}]")
                      for i, nc in enumerate(node_cfgs))
        core = cfg.get("core_gbs")
        return cls(nodes, None if core is None else float(core))


def _no_unknown(cfg: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = set(cfg) - known
    if unknown:
        raise NetworkConfigError(f"{where}: unknown fields {sorted(unknown)}; "
                                 f"known: {', '.join(sorted(known))}")


def _count(raw: Any, where: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise NetworkConfigError(f"{where} = {raw!r}: must be an integer >= 1")
    return raw


def _node(cfg: Mapping[str, Any], overrides: Any, where: str) -> NodeSpec:
    known = {"gpus_per_node", "gpus", "gpu", "nics_per_node", "nics", "fabric", "nvlink", "pcie"}
    _no_unknown(cfg, known, where)
    gpu = str(cfg.get("gpu", "h100-sxm"))
    gpus = _count(cfg.get("gpus", cfg.get("gpus_per_node", 8)), f"{where}.gpus")
    nics = _count(cfg.get("nics", cfg.get("nics_per_node", gpus)), f"{where}.nics")
    nv, pcie = gpu_link_specs(gpu, f"{where}.gpu")
    if "nvlink" in cfg:  # None disables NVLink; a name/dict replaces or overrides the GPU's own
        nv = None if cfg["nvlink"] is None else link_spec(cfg["nvlink"], f"{where}.nvlink", default=nv)
    if "pcie" in cfg:
        pcie = link_spec(cfg["pcie"], f"{where}.pcie", default=pcie)
    nic = link_spec(cfg.get("fabric", "ib-ndr"), f"{where}.fabric")
    if nic.kind not in FABRIC_KINDS:
        raise NetworkConfigError(f"{where}.fabric: kind {nic.kind!r} cannot connect nodes; "
                                 f"use {', '.join(FABRIC_KINDS)}")
    for spec, kind in ((nv, "nvlink"), (pcie, "pcie")):
        if spec is not None and spec.kind != kind:
            raise NetworkConfigError(f"{where}.{kind}: got a {spec.kind!r} link; use a {kind} entry")
    return NodeSpec(
        gpu=gpu, gpus=gpus, nics=nics,
        nvlink=None if nv is None else overrides.apply(nv, "network.topology.links"),
        pcie=overrides.apply(pcie, "network.topology.links"),
        nic=overrides.apply(nic, "network.topology.links"),
    )
