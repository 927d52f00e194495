"""KV transfer modes (after_prefill, layer_by_layer, pull) and the worked example."""
from __future__ import annotations

import pytest

from goodput.sim.engine.clock import SimClock
from goodput.sim.network import (
    Fabric,
    GpuId,
    NetworkConfigError,
    Topology,
    after_prefill,
    layer_by_layer,
    layer_by_layer_estimate,
    pull,
)

SRC, DST = GpuId(0, 0), GpuId(1, 0)
GB = 1e9
LAT = 0.01  # fabric hop latency; PCIe is made free so the path latency is exactly LAT


def make(bw: float = 1.0, stall: float | None = None, **fabric) -> tuple[SimClock, Fabric]:
    t = Topology.from_config({
        "nodes": 2, "gpus_per_node": 1, "nics_per_node": 1,
        "fabric": {"base": "ib-ndr", "bandwidth_gbs": bw, "latency_s": LAT, **fabric},
        "links": {"pcie": {"bandwidth_gbs": 1000.0, "latency_s": 0.0}},
    })
    clock = SimClock()
    return clock, Fabric(clock, t, stall_timeout_s=stall)


def test_after_prefill_leaves_at_prefill_end():
    clock, f = make()
    out = []
    after_prefill(f, SRC, DST, 2 * GB, 1.0, out.append)
    clock.run()
    (r,) = out
    assert r.ok and r.started_s == 1.0 and r.landed_s == pytest.approx(1.0 + 2.0 + LAT)
    assert r.bytes == 2 * GB and r.mode == "after_prefill"


def test_layer_by_layer_fast_link_pays_only_the_last_layer():
    # 1 GB over 10 layers, prefill [0, 1] s: produced at 1 GB/s, link 10 GB/s. Layers 1-9 ride
    # along prefill (capped at 1 GB/s), the last 0.1 GB leaves at 1.0 and takes 0.01 s.
    clock, f = make(bw=10.0)
    out = []
    layer_by_layer(f, SRC, DST, GB, 10, 0.0, 1.0, out.append)
    clock.run()
    assert out[0].landed_s == pytest.approx(1.0 + 0.1 / 10 + LAT)
    assert out[0].landed_s == pytest.approx(layer_by_layer_estimate(GB, 10, 0.0, 1.0, 10.0, LAT))
    assert out[0].started_s == pytest.approx(0.1)  # first layer done
    assert sum(r.payload_bytes for r in out[0].records) == pytest.approx(GB)


def test_layer_by_layer_slow_link_is_link_limited():
    # same KV, link 0.5 GB/s (< 1 GB/s production): link busy from layer 1 (t = 0.1) until all
    # 1 GB is through: 0.1 + 2.0, + latency.
    clock, f = make(bw=0.5)
    out = []
    layer_by_layer(f, SRC, DST, GB, 10, 0.0, 1.0, out.append)
    clock.run()
    assert out[0].landed_s == pytest.approx(0.1 + 2.0 + LAT)
    assert out[0].landed_s == pytest.approx(layer_by_layer_estimate(GB, 10, 0.0, 1.0, 0.5, LAT))


def test_layer_by_layer_one_layer_is_after_prefill():
    for fn in ("lbl", "after"):
        clock, f = make()
        out = []
        if fn == "lbl":
            layer_by_layer(f, SRC, DST, GB, 1, 0.0, 0.5, out.append)
        else:
            after_prefill(f, SRC, DST, GB, 0.5, out.append)
        clock.run()
        assert out[0].landed_s == pytest.approx(0.5 + 1.0 + LAT)


def test_pull_adds_the_request_message():
    # decode side reserves blocks at t = 0.2, KV ready at 0.5: the request leaves at 0.5, reaches
    # the prefill GPU after LAT, then 1 GB flows back: 0.5 + LAT + 1.0 + LAT
    clock, f = make()
    out = []
    clock.call_later(0.2, lambda _ev: pull(f, SRC, DST, GB, out.append, ready_s=0.5))
    clock.run()
    (r,) = out
    assert r.ok and r.landed_s == pytest.approx(0.5 + LAT + 1.0 + LAT)
    assert [x.payload_bytes for x in r.records] == [0.0, GB]


def test_contention_between_requests_shows():
    # two requests' KV leave at the same time over one NIC pair: each gets half the link
    clock, f = make()
    out = []
    after_prefill(f, SRC, DST, GB, 0.0, out.append)
    after_prefill(f, SRC, DST, GB, 0.0, out.append)
    clock.run()
    assert [r.landed_s for r in out] == pytest.approx([2.0 + LAT] * 2)
    assert all(r.records[0].queueing_s == pytest.approx(1.0) for r in out)


def test_failure_is_reported_not_lost():
    clock, f = make(stall=0.3)
    out = []
    layer_by_layer(f, SRC, DST, GB, 4, 0.0, 1.0, out.append)
    clock.call_later(0.5, lambda _ev: f.partition("n1.nic0.rx"))
    clock.run()
    (r,) = out  # one callback, reporting the failure
    assert r.ok is False and "n1.nic0.rx" in r.failure and r.landed_s == pytest.approx(0.8)
    assert f.in_flight == 0 and all(rec.ok is False for rec in f.records)


def test_cancel_stops_everything_silently():
    clock, f = make()
    out = []
    kv = layer_by_layer(f, SRC, DST, GB, 4, 0.0, 1.0, out.append)
    clock.call_later(0.5, lambda _ev: kv.cancel())
    clock.run()
    assert out == [] and f.in_flight == 0 and [r.failure for r in f.records] == ["cancelled"]


@pytest.mark.parametrize("call", [
    lambda f: after_prefill(f, SRC, DST, -1.0, 0.0),
    lambda f: layer_by_layer(f, SRC, DST, GB, 0, 0.0, 1.0),
    lambda f: layer_by_layer(f, SRC, DST, GB, 4, 1.0, 0.5),
    lambda f: after_prefill(f, SRC, DST, GB, float("nan")),
])
def test_bad_mode_arguments(call):
    _, f = make()
    with pytest.raises(NetworkConfigError):
        call(f)


def test_worked_example_runs_and_prints_the_doc_numbers(capsys):
    from goodput.sim.network.example import main

    main()
    out = capsys.readouterr().out
    assert "327,680 B" in out and "2,621,440 B" in out
    assert "1.684 ms after prefill" in out and "13.428 ms after prefill" in out
    assert "6.684 ms" in out
