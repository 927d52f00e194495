"""Meaningless values are one clear error naming the field, before anything is simulated."""
from __future__ import annotations

import pandas as pd
import pytest

from goodput.sim.config import ClusterEvent, ConfigError, InstanceGroupConfig, SimConfig, load_config
from goodput.sim.simulator import simulate

ONE = pd.DataFrame({"request_id": [0], "arrival_s": [0.0], "prompt_tokens": [10], "output_tokens": [2]})


def cfg_with(**over) -> SimConfig:
    cfg = load_config(overrides={"cost_model.kind": "roofline", **over})
    return cfg


@pytest.mark.parametrize("over,needle", [
    ({"max_sim_time_s": float("nan")}, "max_sim_time_s is NaN"),
    ({"max_sim_time_s": -1.0}, "max_sim_time_s=-1.0: must be a finite number > 0"),
    ({"scheduler.activation_reserve_gb": -2.0}, "scheduler.activation_reserve_gb=-2.0"),
    ({"scheduler.swap_space_gb": -1.0}, "scheduler.swap_space_gb=-1.0"),
    ({"scheduler.host_link_gbs": 0.0}, "scheduler.host_link_gbs=0.0: must be a finite number > 0"),
    ({"router.migrate_out_freeness": float("nan")}, "router.migrate_out_freeness is NaN"),
    ({"router.link.bandwidth_gbs": 0.0}, "router.link.bandwidth_gbs"),
    ({"output.timeseries_interval_s": -0.5}, "output.timeseries_interval_s=-0.5"),
    ({"trace.max_requests": -3}, "trace.max_requests=-3"),
    ({"trace.max_requests": 0}, "trace.max_requests=0"),
    ({"cluster": [{"tp": 0}]}, "cluster[0].tp=0"),
    ({"slo.ttft_s": -1.0}, "slo.ttft_s=-1.0: must be a finite number > 0"),
    ({"slo.attainment_target": 90.0}, "write 0.9 for 90%"),
    ({"events": [{"time_s": -5.0, "action": "drain", "instance": 0}]}, "events[0].time_s=-5.0"),
    ({"events": [{"time_s": float("nan"), "action": "scale_out"}]}, "events[0].time_s is NaN"),
])
def test_bad_values_fail_before_simulating(over, needle):
    with pytest.raises(ConfigError) as exc:
        simulate(cfg_with(**over), ONE)
    assert needle in str(exc.value)


def test_draining_a_scaled_out_instance_later_is_valid():
    cfg = SimConfig(cluster=[InstanceGroupConfig(count=2)])
    cfg.cost_model.kind = "roofline"
    cfg.events = [ClusterEvent(time_s=10.0, action="scale_out", group=0),
                  ClusterEvent(time_s=20.0, action="drain", instance=2)]
    res = simulate(cfg, ONE)
    assert len(res.instances) == 3 and (res.requests.outcome == "completed").all()


def test_draining_every_instance_is_refused_with_the_fix():
    cfg = SimConfig(cluster=[InstanceGroupConfig(count=2)])
    cfg.events = [ClusterEvent(time_s=1.0, action="drain", instance=0),
                  ClusterEvent(time_s=2.0, action="drain", instance=1)]
    with pytest.raises(ConfigError, match=r"events\[1\]: drain of instance 1 .* leaves no instance"):
        simulate(cfg, ONE)


def test_drain_of_an_instance_that_never_exists():
    cfg = SimConfig(cluster=[InstanceGroupConfig(count=2)])
    cfg.events = [ClusterEvent(time_s=20.0, action="drain", instance=2),
                  ClusterEvent(time_s=30.0, action="scale_out", group=0)]
    with pytest.raises(ConfigError, match=r"events\[0\].instance 2 does not exist at t=20 s"):
        simulate(cfg, ONE)


@pytest.mark.parametrize("text,needle", [
    ("seed: 1\nseed: 2\n", "line 2: key 'seed' given twice"),
    ("scheduler: {policy: vllm\n", "not valid YAML"),
    ("scheduler:\n  policy: vllm\n  policy: sarathi\n", "key 'policy' given twice"),
])
def test_yaml_problems_are_one_line(tmp_path, text, needle):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert needle in str(exc.value) and str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_a_folder_as_config_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)


def test_an_event_after_the_last_request_does_not_stretch_the_run():
    df = pd.DataFrame({"request_id": range(5), "arrival_s": [0.0, 0.5, 1.0, 1.5, 2.0],
                       "prompt_tokens": [100] * 5, "output_tokens": [20] * 5})
    base = SimConfig()
    base.cost_model.kind = "roofline"
    late = SimConfig()
    late.cost_model.kind = "roofline"
    late.events = [ClusterEvent(time_s=1e5, action="scale_out", group=0)]
    a, b = simulate(base, df), simulate(late, df)
    assert b.sim_duration_s == pytest.approx(a.sim_duration_s, rel=1e-12)
    assert a.sim_duration_s == pytest.approx(float(a.requests.completion_s.max()), rel=1e-12)


def test_ctrl_c_is_one_line_and_exit_130():
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "goodput", "simulate", "--rate", "20",
                             "--num-requests", "2000000", "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(6.0)  # imports done (slow CI machines too), simulating
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "goodput: interrupted"


def test_instances_are_billed_for_their_own_lifetime():
    from goodput.sim.metrics import summarize
    from goodput.sim.run import slo_of

    df = pd.DataFrame({"request_id": range(40), "arrival_s": [i * 0.25 for i in range(40)],
                       "prompt_tokens": [200] * 40, "output_tokens": [30] * 40})
    cfg = SimConfig(cluster=[InstanceGroupConfig(count=2)])
    cfg.cost_model.kind = "roofline"
    cfg.events = [ClusterEvent(time_s=2.0, action="drain", instance=1),
                  ClusterEvent(time_s=5.0, action="scale_out", group=0)]
    res = simulate(cfg, df)
    inst = res.instances.set_index("instance")
    dur = res.sim_duration_s
    assert inst.billed_s[0] == pytest.approx(dur)
    assert 2.0 <= inst.ended_s[1] < 5.0 and inst.billed_s[1] == pytest.approx(inst.ended_s[1])
    assert inst.billed_s[2] == pytest.approx(dur - 5.0)
    s = summarize(res.requests, res.timeseries, res.instances, dur, slo_of(cfg))
    price = inst.price_per_hour
    assert s["cost"]["run_usd"] == pytest.approx(float((price * inst.billed_s).sum()) / 3600)
    assert s["cost"]["run_usd"] < float(price.sum()) * dur / 3600  # not every instance all run


def test_set_indexes_lists():
    assert load_config(overrides={"cluster.0.count": 3}).cluster[0].count == 3
    two = load_config(overrides={"cluster": [{"gpu": "h100"}, {"gpu": "a100-80gb"}],
                                 "cluster.1.tp": 2})
    assert [g.tp for g in two.cluster] == [1, 2]
    with pytest.raises(ConfigError, match=r"--set cluster\.1\.count: cluster has 1 entry; index it 0\.\.0"):
        load_config(overrides={"cluster.1.count": 3})
