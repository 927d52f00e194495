"""Link catalog, topology construction, paths and validation (goodput.sim.network.linkspec / topology)."""
from __future__ import annotations

import math

import pytest

from goodput.sim.catalog import gpus
from goodput.sim.network import GpuId, NetworkConfigError, Topology, get_link, link_spec
from goodput.sim.network.linkspec import LINK_KINDS, Jitter, catalog, gpu_link_specs, parse_jitter


def test_every_catalog_link_has_a_source_and_a_known_kind():
    for spec in catalog().values():
        assert spec.source and spec.kind in LINK_KINDS
        assert spec.bandwidth_gbs > 0 and spec.latency_s >= 0


def test_headline_bandwidths():
    assert get_link("nvlink4").bandwidth_gbs == 450  # H100: 900 GB/s both directions
    assert get_link("nvlink3").bandwidth_gbs == 300  # A100: 600 GB/s both directions
    assert get_link("ib-ndr").bandwidth_gbs == 400 / 8
    assert get_link("ib-hdr").bandwidth_gbs == 200 / 8
    assert get_link("roce-400g").bandwidth_gbs == 50 and get_link("roce-100g").bandwidth_gbs == 12.5
    assert get_link("eth-25g").bandwidth_gbs == 25 / 8 and get_link("eth-100g").bandwidth_gbs == 12.5
    assert get_link("pcie4-x16").bandwidth_gbs == 32 and get_link("pcie5-x16").bandwidth_gbs == 64
    assert get_link("NDR") is get_link("ib-ndr")  # aliases, case-insensitive


@pytest.mark.parametrize("name", sorted(gpus()))
def test_every_gpu_is_mapped_and_agrees_with_gpus_yaml(name):
    g = gpus()[name]
    nv, pcie = gpu_link_specs(name)
    assert (nv.bandwidth_gbs if nv else 0) == g.nvlink_gbs
    assert pcie.bandwidth_gbs == g.pcie_gbs


def test_gpu_aliases_resolve():
    nv, _ = gpu_link_specs("h100")
    assert nv is not None and nv.name == "nvlink4"


def test_paths_and_latency():
    t = Topology.from_config({"nodes": 2, "gpus_per_node": 8, "nics_per_node": 4, "gpu": "h100-sxm"})
    same = t.path(GpuId(0, 1), GpuId(0, 5))
    assert same.ids == ("n0.g1.nvlink.tx", "n0.g5.nvlink.rx")
    assert same.latency_s == get_link("nvlink4").latency_s  # one hop, charged once
    assert same.bottleneck_gbs == 450
    cross = t.path(GpuId(0, 5), GpuId(1, 0))  # GPU 5 of 8 with 4 NICs uses NIC 5 * 4 // 8 = 2
    assert cross.ids == ("n0.g5.pcie.up", "n0.nic2.tx", "n1.nic0.rx", "n1.g0.pcie.down")
    assert cross.latency_s == pytest.approx(2 * get_link("pcie5").latency_s + get_link("ib-ndr").latency_s)
    assert cross.bottleneck_gbs == 50
    assert t.path(GpuId(1, 3), GpuId(1, 3)).links == ()


def test_no_nvlink_goes_through_the_host_and_core_link_is_shared():
    t = Topology.from_config({"nodes": 2, "gpus_per_node": 4, "gpu": "l40s", "core_gbs": 20,
                              "fabric": "roce-200g"})
    assert t.path(GpuId(0, 0), GpuId(0, 1)).ids == ("n0.g0.pcie.up", "n0.g1.pcie.down")
    assert "fabric.core" in t.path(GpuId(0, 0), GpuId(1, 1)).ids
    assert t.path(GpuId(0, 0), GpuId(1, 1)).bottleneck_gbs == 20


def test_heterogeneous_nodes_and_overrides():
    t = Topology.from_config({
        "fabric": "ib-ndr",
        "nodes": [{"gpu": "h100-sxm", "gpus": 8},
                  {"gpu": "a100-80gb", "gpus": 4, "nics": 2, "fabric": "ib-hdr"}],
        "links": {"infiniband": {"loss_rate": 1e-6}, "nvlink": {"latency_s": 5e-6}},
    })
    assert t.nodes[0].nvlink.bandwidth_gbs == 450 and t.nodes[1].nvlink.bandwidth_gbs == 300
    assert t.nodes[1].nic.bandwidth_gbs == 25 and t.nodes[1].nic.loss_rate == 1e-6
    assert t.nodes[0].nvlink.latency_s == 5e-6
    assert len(t.gpu_ids()) == 12 and len(t.node_links(1)) == 4


def test_link_config_fields_are_accepted():
    # goodput.sim.config.LinkConfig's fields (bandwidth_gbs, latency_s, jitter_s) map onto a spec unchanged
    s = link_spec({"kind": "infiniband", "bandwidth_gbs": 25.0, "latency_s": 20e-6, "jitter_s": 1e-6})
    assert s.jitter == Jitter("normal", 1e-6) and s.bytes_per_s == 25e9


def test_jitter_forms():
    assert parse_jitter("none", "j") == Jitter()
    assert parse_jitter({"exponential": 2e-6}, "j") == Jitter("exponential", 2e-6)
    assert parse_jitter({"lognormal": {"scale_s": 1e-6, "sigma": 0.5}}, "j").mean() == \
        pytest.approx(1e-6 * math.exp(0.125))


BAD = [
    ({"fabric": {"base": "ib-ndr", "bandwidth_gbs": 0}}, "bandwidth_gbs"),
    ({"fabric": {"base": "ib-ndr", "bandwidth_gbs": -5}}, "bandwidth_gbs"),
    ({"fabric": {"base": "ib-ndr", "bandwidth_gbs": float("nan")}}, "bandwidth_gbs"),
    ({"fabric": {"base": "ib-ndr", "latency_s": -1e-6}}, "latency_s"),
    ({"fabric": {"base": "ib-ndr", "loss_rate": 1.0}}, "loss_rate"),
    ({"fabric": {"base": "ib-ndr", "loss_rate": -0.1}}, "loss_rate"),
    ({"fabric": {"kind": "myrinet", "bandwidth_gbs": 1, "latency_s": 0}}, "kind"),
    ({"fabric": "ib-xdr"}, "unknown link"),
    ({"fabric": "nvlink4"}, "cannot connect nodes"),
    ({"fabric": {"base": "ib-ndr", "speed": 3}}, "unknown fields"),
    ({"links": {"token-ring": {}}}, "unknown link kinds"),
    ({"links": {"pcie": {"bandwidth_gbs": 0}}}, "links.pcie.bandwidth_gbs"),
    ({"nodes": 0}, "nodes"),
    ({"nodes": []}, "nodes"),
    ({"gpus_per_node": 0}, "gpus"),
    ({"gpu": "tpu-v5"}, "gpu"),
    ({"core_gbs": 0}, "core_gbs"),
    ({"fabric": {"base": "ib-ndr", "jitter": {"lognormal": {"scale_s": 1e-6}}}}, "sigma"),
    ({"colour": "blue"}, "unknown fields"),
]


@pytest.mark.parametrize("cfg, field", BAD)
def test_bad_config_is_one_clear_line(cfg, field):
    with pytest.raises(NetworkConfigError, match=field) as err:
        Topology.from_config(cfg)
    assert "\n" not in str(err.value) and isinstance(err.value, ValueError)


def test_gpu_outside_the_topology():
    t = Topology.from_config({"nodes": 1, "gpus_per_node": 2})
    with pytest.raises(NetworkConfigError, match=r"n0\.g2"):
        t.path(GpuId(0, 0), GpuId(0, 2))
