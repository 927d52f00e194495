"""Flow-level fabric: max-min sharing, latency, loss, faults and accounting, all derivable by hand.

Most tests use two nodes of two GPUs and ONE NIC each, with a 1 GB/s fabric and a fast, zero-latency
PCIe, so an inter-node transfer of B bytes alone takes ``latency + B / 1e9`` seconds and the NIC is
the link that flows share.
"""
from __future__ import annotations

import pytest

from goodput.sim.engine.clock import SimClock
from goodput.sim.network import Fabric, GpuId, NetworkConfigError, Topology, max_min_rates

A0, A1, B0, B1 = GpuId(0, 0), GpuId(0, 1), GpuId(1, 0), GpuId(1, 1)
GB = 1e9


def topo(bw: float = 1.0, lat: float = 0.0, **fabric) -> Topology:
    return Topology.from_config({
        "nodes": 2, "gpus_per_node": 2, "nics_per_node": 1,
        "fabric": {"base": "ib-ndr", "bandwidth_gbs": bw, "latency_s": lat, **fabric},
        "links": {"pcie": {"bandwidth_gbs": 1000.0, "latency_s": 0.0},
                  "nvlink": {"bandwidth_gbs": 1.0, "latency_s": 0.0}},
    })


def make(bw: float = 1.0, lat: float = 0.0, seed: int = 0, **kw) -> tuple[SimClock, Fabric]:
    clock = SimClock()
    fabric_kw = {k: kw.pop(k) for k in ("message_bytes", "stall_timeout_s") if k in kw}
    return clock, Fabric(clock, topo(bw, lat, **kw), seed=seed, **fabric_kw)


def at(clock: SimClock, t: float, fn) -> None:
    clock.call_later(t, lambda _ev: fn())


def test_single_transfer_is_latency_plus_bytes_over_bandwidth():
    clock, f = make(lat=0.01)
    done = []
    f.submit(A0, B0, 2 * GB, done.append)
    clock.run()
    (r,) = done
    assert r.ok and r.end_s == pytest.approx(0.01 + 2.0)
    assert r.transmit_end_s == pytest.approx(2.0) and r.latency_s == pytest.approx(0.01)
    assert r.transmission_s == pytest.approx(2.0) and r.queueing_s == pytest.approx(0.0)


def test_two_equal_flows_each_get_half_and_finish_at_twice_the_time():
    clock, f = make()
    done = []
    f.submit(A0, B0, 1 * GB, done.append)
    f.submit(A1, B1, 1 * GB, done.append)  # same NIC pair: each gets 0.5 GB/s
    clock.run()
    assert [r.end_s for r in done] == pytest.approx([2.0, 2.0])
    assert all(r.queueing_s == pytest.approx(1.0) for r in done)  # 1 s lost to sharing


def test_max_min_classic_three_flows_two_links():
    # link a (cap 1) carries flows 1, 2; link b (cap 2) carries flows 2, 3. Filling: a saturates at
    # 0.5 per flow -> flows 1, 2 frozen at 0.5; b has 2 - 0.5 = 1.5 left for flow 3.
    rates = max_min_rates({1: ["a"], 2: ["a", "b"], 3: ["b"]}, {"a": 1.0, "b": 2.0})
    assert rates == pytest.approx({1: 0.5, 2: 0.5, 3: 1.5})
    # caps act as a private link: flow 1 capped at 0.2 leaves 0.8 of link a to flow 2
    assert max_min_rates({1: ["a"], 2: ["a"]}, {"a": 1.0}, {1: 0.2}) == pytest.approx({1: 0.2, 2: 0.8})


def test_shared_port_other_direction_and_nvlink_are_independent():
    # n0.nic0.tx degraded to 0.5 GB/s is shared by A0->B0 and A1->B0 (0.25 each); B1->A0 uses the
    # other direction of the same NICs (full duplex: 1 GB/s) and A0->A1 stays on NVLink (1 GB/s).
    clock, f = make()
    f.degrade("n0.nic0.tx", 0.5)
    ts = [f.submit(A0, B0, GB), f.submit(A1, B0, GB), f.submit(B1, A0, GB), f.submit(A0, A1, GB)]
    assert [t.rate / GB for t in ts] == pytest.approx([0.25, 0.25, 1.0, 1.0])
    clock.run()
    assert [r.end_s for r in f.records] == pytest.approx([1.0, 1.0, 4.0, 4.0])


def test_leftover_goes_to_the_flow_not_on_the_bottleneck():
    # Three single-GPU nodes. f1 node 0 -> node 1 crosses n0.nic0.tx (degraded to 0.25 GB/s) and
    # n1.nic0.rx (1 GB/s); f2 node 2 -> node 1 crosses only n1.nic0.rx. Filling freezes f1 at its
    # bottleneck 0.25; the receiver's leftover 0.75 goes to f2.
    t = Topology.from_config({"nodes": 3, "gpus_per_node": 1, "nics_per_node": 1,
                              "fabric": {"base": "ib-ndr", "bandwidth_gbs": 1.0, "latency_s": 0.0},
                              "links": {"pcie": {"bandwidth_gbs": 1000.0, "latency_s": 0.0}}})
    clock = SimClock()
    f = Fabric(clock, t)
    f.degrade("n0.nic0.tx", 0.25)
    done = {}
    f1 = f.submit(GpuId(0, 0), GpuId(1, 0), 0.25 * GB, lambda r: done.setdefault("f1", r.end_s))
    f2 = f.submit(GpuId(2, 0), GpuId(1, 0), 1.5 * GB, lambda r: done.setdefault("f2", r.end_s))
    assert (f1.rate / GB, f2.rate / GB) == pytest.approx((0.25, 0.75))
    clock.run()
    # f1: 0.25 GB at 0.25 -> 1 s; f2 did 0.75 GB by then, 0.75 GB left at the full 1 GB/s -> 1.75 s
    assert done == pytest.approx({"f1": 1.0, "f2": 1.75})


def test_flow_starting_mid_transfer_slows_the_first_exactly():
    # A: 2 GB from t=0 at 1 GB/s. At t=0.5 (1.5 GB left) B: 0.5 GB joins; both at 0.5 GB/s.
    # B ends at 0.5 + 0.5/0.5 = 1.5; A then has 1.5 - 0.5 = 1.0 GB at 1 GB/s -> 2.5. +10 ms latency.
    clock, f = make(lat=0.01)
    done = {}
    f.submit(A0, B0, 2 * GB, lambda r: done.setdefault("A", []).append(r.end_s))
    at(clock, 0.5, lambda: f.submit(A1, B1, 0.5 * GB, lambda r: done.setdefault("B", []).append(r.end_s)))
    clock.run()
    assert done["A"] == pytest.approx([2.51]) and done["B"] == pytest.approx([1.51])  # each once


def test_conservation_bytes_per_link_equal_the_flows_that_cross_it():
    clock, f = make(loss_rate=0.05, retransmit_timeout_s=0.001, message_bytes=1e7, seed=3)
    pairs = [(A0, B0, 1.0), (A1, B1, 0.3), (B0, A1, 0.7), (A0, A1, 0.2), (B1, B0, 0.4), (A1, B0, 0.9)]
    handles = []
    for k, (s, d, gb) in enumerate(pairs):
        at(clock, 0.1 * k, lambda s=s, d=d, gb=gb: handles.append(f.submit(s, d, gb * GB)))
    clock.run()
    assert len(f.records) == len(pairs) and sum(r.lost_messages for r in f.records) > 0
    expected: dict[str, float] = {}
    for t in handles:
        for i in t.path.ids:
            expected[i] = expected.get(i, 0.0) + t.record.wire_bytes
    for i, st in f.stats.items():
        assert st.bytes == pytest.approx(expected.get(i, 0.0), rel=1e-9, abs=1e-3)


def test_loss_zero_is_exact_and_loss_p_matches_the_expected_time():
    # 100 messages of 1 MB at 1 GB/s, p = 0.05, timeout 10 ms: losses ~ NegBin(100, 0.95) with
    # mean 100 x 0.05 / 0.95; each costs 1 MB more on the wire (1 ms) and a 10 ms timeout.
    kw = {"lat": 0.1, "retransmit_timeout_s": 0.01, "message_bytes": 1e6}
    clock, f = make(loss_rate=0.0, **kw)
    f.submit(A0, B0, 1e8)
    clock.run()
    assert f.records[0].end_s == pytest.approx(0.1 + 0.1) and f.records[0].lost_messages == 0
    times = []
    for seed in range(400):
        clock, f = make(loss_rate=0.05, seed=seed, **kw)
        f.submit(A0, B0, 1e8)
        clock.run()
        r = f.records[0]
        # each run exactly: latency + wire / bandwidth + losses x timeout
        assert r.end_s == pytest.approx(0.1 + (1e8 + r.lost_messages * 1e6) / GB + r.lost_messages * 0.01)
        times.append(r.end_s)
    lost = 100 * 0.05 / 0.95
    expected = 0.1 + (1e8 + lost * 1e6) / GB + lost * 0.01
    assert sum(times) / len(times) == pytest.approx(expected, rel=0.03)
    assert f.estimate(A0, B0, 1e8) == pytest.approx(expected)


def test_partition_then_restore_waits_and_resumes():
    # 1 GB at 1 GB/s; partitioned over [0.25, 1.25] -> 1 s stall, lands at 2.0 + latency
    clock, f = make(lat=0.01)
    done = []
    f.submit(A0, B0, GB, done.append)
    at(clock, 0.25, lambda: f.partition(f.topology.node_links(1)))
    at(clock, 1.25, lambda: f.restore(f.topology.node_links(1)))
    clock.run()
    (r,) = done
    assert r.ok and r.end_s == pytest.approx(2.01)
    assert r.stalled_s == pytest.approx(1.0) and r.queueing_s == pytest.approx(1.0)
    assert r.queueing_s + r.transmission_s + r.latency_s + r.retransmit_s == pytest.approx(r.duration_s)


def test_partition_with_stall_timeout_fails_with_a_reason():
    clock, f = make(stall_timeout_s=0.5)
    done = []
    f.submit(A0, B0, GB, done.append)
    f.submit(A0, A1, GB, done.append)  # NVLink inside node 0: unaffected
    at(clock, 0.25, lambda: f.partition("n1.nic0.rx"))
    clock.run()
    ok, failed = sorted(done, key=lambda r: not r.ok)
    assert ok.ok and ok.end_s == pytest.approx(1.0)
    assert failed.ok is False and failed.end_s == pytest.approx(0.75) and "n1.nic0.rx" in failed.failure
    assert len(f.records) == 2 and f.in_flight == 0  # nothing vanished


def test_submitted_into_a_partition_waits_and_loss_one_waits_too():
    clock, f = make()
    done = []
    f.partition("n0.nic0.tx")
    f.submit(A0, B0, GB, done.append)
    at(clock, 3.0, lambda: f.restore("n0.nic0.tx"))
    at(clock, 4.0, lambda: f.degrade("n1.nic0.rx", 1.0, loss_rate=1.0))  # drops everything
    at(clock, 4.0, lambda: f.submit(A1, B1, GB, done.append))
    at(clock, 6.0, lambda: f.restore("n1.nic0.rx"))
    clock.run()
    assert [r.end_s for r in done] == pytest.approx([4.0, 7.0])
    assert done[1].lost_messages == 0  # losses sampled when it could first move, after the restore


def test_degrade_halves_the_rate_from_that_moment():
    clock, f = make()
    done = []
    f.submit(A0, B0, GB, done.append)
    at(clock, 0.5, lambda: f.degrade("n0.nic0.tx", 0.5))  # 0.5 GB left at 0.5 GB/s
    clock.run()
    assert done[0].end_s == pytest.approx(1.5) and done[0].queueing_s == pytest.approx(0.5)


def test_link_accounting_and_utilisation():
    clock, f = make()
    f.submit(A0, B0, GB)
    at(clock, 2.0, lambda: f.submit(A1, B1, 0.5 * GB))
    clock.run()
    st = f.stats["n0.nic0.tx"]
    assert st.bytes == pytest.approx(1.5 * GB) and st.busy_s == pytest.approx(1.5) and st.transfers == 2
    assert f.utilisation("n0.nic0.tx", 0.0, 3.0) == pytest.approx(0.5)
    assert f.utilisation("n0.nic0.tx", 0.0, 1.0) == pytest.approx(1.0)
    assert f.stats["n1.nic0.tx"].bytes == 0


def test_zero_bytes_same_gpu_and_rate_caps():
    clock, f = make(lat=0.01)
    done = []
    f.submit(A0, B0, 0.0, done.append)  # a control message: latency only
    f.submit(A0, A0, GB, done.append)  # already there: free
    f.submit(A1, B1, GB, done.append, max_rate_gbs=0.25)  # capped: 4 s
    clock.run()
    assert sorted(r.end_s for r in done) == pytest.approx([0.0, 0.01, 4.01])


def test_cancel_records_and_frees_bandwidth():
    clock, f = make()
    done = []
    t = f.submit(A0, B0, GB, done.append)
    f.submit(A1, B1, GB, done.append)
    at(clock, 1.0, lambda: f.cancel(t))  # the survivor did 0.5 GB, 0.5 GB left at full rate
    clock.run()
    assert [r.end_s for r in done] == pytest.approx([1.5])
    assert [r.failure for r in f.records] == ["cancelled", None]


def test_deterministic_for_a_seed():
    def run(seed):
        clock = SimClock()
        f = Fabric(clock, topo(lat=1e-3, loss_rate=0.01, jitter={"lognormal": {"scale_s": 1e-3, "sigma": 1}}),
                   seed=seed, message_bytes=1e7)
        for k in range(6):
            at(clock, 0.05 * k, lambda k=k: f.submit((A0, A1)[k % 2], (B0, B1)[k % 2], 0.3 * GB))
        clock.run()
        return [(r.id, r.end_s, r.lost_messages) for r in f.records]
    assert run(7) == run(7) and run(7) != run(8)


@pytest.mark.parametrize("call, field", [
    (lambda f: f.submit(A0, B0, -1.0), "bytes"),
    (lambda f: f.submit(A0, B0, float("nan")), "bytes"),
    (lambda f: f.degrade("n0.nic0.tx", 1.5), "factor"),
    (lambda f: f.degrade("n0.nic0.tx", 0.5, loss_rate=2.0), "loss_rate"),
    (lambda f: f.partition("n9.nic0.tx"), "unknown link id"),
    (lambda f: f.submit(A0, GpuId(5, 0), 1.0), "not in the topology"),
    (lambda f: f.submit(A0, B0, 1.0, stall_timeout_s=0.0), "stall_timeout_s"),
])
def test_bad_calls_raise_network_config_error(call, field):
    _, f = make()
    with pytest.raises(NetworkConfigError, match=field):
        call(f)


def test_bad_fabric_settings():
    with pytest.raises(NetworkConfigError, match="message_bytes"):
        Fabric(SimClock(), topo(), message_bytes=0)
    with pytest.raises(NetworkConfigError, match="stall_timeout_s"):
        Fabric(SimClock(), topo(), stall_timeout_s=-1)


def test_jitter_is_added_once_per_hop_and_never_negative():
    # exponential jitter of mean 1 ms on the fabric hop only: latency = 10 ms + Exp(1 ms)
    clock, f = make(lat=0.01, jitter={"exponential": 1e-3})
    for _ in range(2000):
        f.submit(A0, A0, 0.0)  # same GPU: empty path, no jitter
        f.submit(A0, B0, 0.0)
    clock.run()
    lat = [r.latency_s for r in f.records if r.dst == "n1.g0"]
    assert min(lat) >= 0.01 and sum(lat) / len(lat) == pytest.approx(0.011, rel=0.01)
    assert all(r.latency_s == 0 for r in f.records if r.dst == "n0.g0")
    assert f.estimate(A0, B0, 0.0) == pytest.approx(0.011)


def test_a_flow_too_short_for_the_clock_to_resolve_still_lands():
    """Late in a run the clock's resolution is coarse: at t = 1e4 s a 1-millibyte rest on a
    50 GB/s link would end 2e-14 s later, below one clock step (1.8e-12 s). It must land, not
    re-fire at the same instant forever (it once did, hanging a disaggregated run)."""
    topo = Topology.from_config({"nodes": 2, "gpus_per_node": 1, "gpu": "h100-sxm"})
    clock = SimClock()
    fabric = Fabric(clock, topo)
    landed = []
    clock.call_later(1e4, lambda _e: fabric.submit(GpuId(0, 0), GpuId(1, 0), 1e-3, landed.append))
    for _ in range(1000):  # a handful of events, not an endless loop at one instant
        if landed or clock.peek() == float("inf"):
            break
        clock.step()
    assert landed and landed[0].ok
