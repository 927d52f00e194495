"""Metrics on small hand-built tables whose expected values are worked out in the comments."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from goodput.sim.metrics import (
    SLO,
    MetricsError,
    compare,
    format_summary,
    request_metrics,
    save_results,
    slo_met,
    summarize,
)

NAN = float("nan")


def raw_requests() -> pd.DataFrame:
    """0: completed, 5 tokens. 1: completed, 1 token. 2: rejected. 3: unfinished (4 of 10 tokens)."""
    return pd.DataFrame({
        "request_id": [0, 1, 2, 3],
        "instance": [0, 1, -1, 0],
        "arrival_s": [1.0, 2.0, 2.5, 3.0],
        "first_scheduled_s": [1.2, 2.0, NAN, 3.5],
        "first_token_s": [1.5, 2.1, NAN, 4.0],
        "completion_s": [3.5, 2.1, NAN, NAN],
        "prompt_tokens": [10, 20, 30, 40],
        "output_tokens": [5, 1, 7, 10],
        "generated_tokens": [5, 1, 0, 4],
        "preemptions": [1, 0, 0, 2],
        "max_tbt_s": [0.7, NAN, NAN, 0.3],
        "outcome": ["completed", "completed", "rejected", "unfinished"],
        "reject_reason": ["", "", "kv_capacity", ""],
        "priority": [0, 0, 0, 0],
        "slo_class": ["interactive", "default", "default", "default"],
        "migrations": [1, 0, 0, 0],
        "migrated_bytes": [1e6, 0.0, 0.0, 0.0],
    })


def instances() -> pd.DataFrame:
    return pd.DataFrame({"instance": [0, 1], "group": ["a", "a"], "gpu": ["h100", "h100"],
                         "model": ["m", "m"], "tp": [1, 2], "num_gpus": [1, 2],
                         "price_per_hour": [2.0, 4.0], "busy_s": [900.0, 450.0],
                         "iterations": [10, 5], "tdp_w": [700.0, 700.0]})


def timeseries() -> pd.DataFrame:
    # deliberately unsorted: summarize must sort per instance by time
    return pd.DataFrame({"time_s": [4.0, 0.0, 1.0, 0.0, 2.0, 3.0],
                         "instance": [0, 0, 0, 1, 1, 1],
                         "batch_size": [8, 2, 4, 0, 3, 5],
                         "prefill_tokens": [0] * 6, "running": [0] * 6,
                         "waiting": [0, 1, 3, 0, 6, 0],
                         "kv_used_blocks": [100, 20, 60, 0, 40, 80],
                         "kv_total_blocks": [100] * 6})


def test_derived_columns_exact():
    df = request_metrics(raw_requests())
    r0 = df.iloc[0]
    assert r0["queueing_delay_s"] == pytest.approx(0.2)
    assert r0["ttft_s"] == pytest.approx(0.5)
    assert r0["tpot_s"] == pytest.approx(0.5)  # (3.5 - 1.5) / (5 - 1)
    assert r0["e2e_s"] == pytest.approx(2.5)
    assert r0["normalized_latency_s_per_token"] == pytest.approx(0.5)  # 2.5 / 5
    assert math.isnan(df.iloc[1]["tpot_s"])  # one output token: no inter-token gap
    assert df.iloc[1]["ttft_s"] == pytest.approx(0.1)
    assert df.iloc[2][["ttft_s", "tpot_s", "e2e_s"]].isna().all()
    assert df.iloc[3]["ttft_s"] == pytest.approx(1.0) and math.isnan(df.iloc[3]["e2e_s"])
    assert "ttft_s" not in raw_requests().columns  # input not modified


def test_optional_columns_get_defaults():
    raw = raw_requests().drop(columns=["slo_class", "migrations", "generated_tokens"])
    df = request_metrics(raw)
    assert (df["slo_class"] == "default").all()
    assert (df["migrations"] == 0).all()
    assert df["generated_tokens"].tolist() == [5, 1, 7, 10]


def test_missing_column_error_names_it():
    with pytest.raises(MetricsError, match=r"completion_s"):
        request_metrics(raw_requests().drop(columns=["completion_s"]))
    with pytest.raises(MetricsError, match=r"busy_s"):
        summarize(raw_requests(), None, instances().drop(columns=["busy_s"]), 10.0, SLO(1, 1))
    with pytest.raises(MetricsError, match=r"kv_total_blocks"):
        summarize(raw_requests(), timeseries().drop(columns=["kv_total_blocks"]), instances(),
                  10.0, SLO(1, 1))


def test_unknown_outcome_rejected():
    raw = raw_requests()
    raw.loc[0, "outcome"] = "done"
    with pytest.raises(MetricsError, match=r"outcome.*'done'"):
        request_metrics(raw)


@pytest.mark.parametrize("kwargs, field", [
    ({"ttft_s": 0, "tpot_s": 1}, "ttft_s"),
    ({"ttft_s": 1, "tpot_s": -0.1}, "tpot_s"),
    ({"ttft_s": NAN, "tpot_s": 1}, "ttft_s"),
    ({"ttft_s": "fast", "tpot_s": 1}, "ttft_s"),
    ({"ttft_s": 1, "tpot_s": 1, "attainment_target": 90}, "attainment_target"),
    ({"ttft_s": 1, "tpot_s": 1, "per_class": {"batch": (0, 1)}}, "per_class"),
    ({"ttft_s": 1, "tpot_s": 1, "per_class": {"batch": (1,)}}, "per_class"),
    ({"ttft_s": 1, "tpot_s": 1, "per_class": {"batch": {"ttft": 1}}}, "per_class"),
])
def test_invalid_slo_error_names_field(kwargs, field):
    with pytest.raises(MetricsError, match=field):
        SLO(**kwargs)


def test_slo_met_misses_rejected_and_unfinished():
    # 0: ttft 0.5, tpot 0.5 -> met. 1: ttft 0.1, tpot NaN -> met. 2, 3 never meet.
    met = slo_met(raw_requests(), SLO(ttft_s=0.6, tpot_s=0.6))
    assert met.tolist() == [True, True, False, False]
    assert slo_met(raw_requests(), SLO(ttft_s=0.4, tpot_s=None)).tolist() == [False, True, False, False]
    assert slo_met(raw_requests(), SLO(ttft_s=None, tpot_s=0.4)).tolist() == [False, True, False, False]


def test_per_class_override_replaces_global_pair():
    # request 0 is "interactive": its TTFT 0.5 breaks the class bound 0.4
    slo = SLO(ttft_s=0.6, tpot_s=0.6, per_class={"interactive": (0.4, None)})
    assert slo_met(raw_requests(), slo).tolist() == [False, True, False, False]
    slo = SLO(ttft_s=0.01, tpot_s=0.01, per_class={"interactive": {"ttft_s": 1.0}})
    assert slo_met(raw_requests(), slo).tolist() == [True, False, False, False]


def test_summary_counts_slo_and_goodput():
    s = summarize(raw_requests(), timeseries(), instances(), 10.0,
                  SLO(ttft_s=0.6, tpot_s=0.6, attainment_target=0.9))
    assert s["counts"] == {"total": 4, "completed": 2, "rejected": 1, "unfinished": 1,
                           "rejected_by_reason": {"kv_capacity": 1}}
    assert s["slo"]["met"] == 2
    assert s["slo"]["attainment"] == pytest.approx(0.5)  # 2 of ALL 4 requests
    assert s["slo"]["meets_target"] is False
    assert s["slo"]["goodput_req_per_s"] == pytest.approx(0.2)  # 2 / 10 s
    assert s["slo"]["per_class"]["default"] == {"requests": 3, "met": 1, "attainment": pytest.approx(1 / 3),
                                                "ttft_s": 0.6, "tpot_s": 0.6}
    assert s["slo"]["per_class"]["interactive"]["attainment"] == 1.0
    assert s["throughput"]["completed_req_per_s"] == pytest.approx(0.2)
    assert s["throughput"]["output_tok_per_s"] == pytest.approx(0.6)  # (5 + 1) / 10
    assert s["throughput"]["total_tok_per_s"] == pytest.approx(3.6)  # (5 + 1 + 10 + 20) / 10
    assert s["preemptions"] == 3 and s["migrations"] == 1 and s["migrated_bytes"] == 1e6
    # latency over completed requests only: TTFT {0.5, 0.1}, TPOT {0.5} (NaN dropped)
    assert s["latency"]["ttft_s"]["mean"] == pytest.approx(0.3)
    assert s["latency"]["tpot_s"]["p99"] == pytest.approx(0.5)
    assert s["latency"]["max_tbt_s"]["mean"] == pytest.approx(0.7)  # the unfinished 0.3 excluded


def test_percentiles_on_known_data():
    n = 100
    raw = pd.DataFrame({"request_id": range(n), "arrival_s": 0.0, "first_scheduled_s": 0.0,
                        "first_token_s": np.arange(1, n + 1, dtype=float),
                        "completion_s": np.arange(1, n + 1, dtype=float) + 10.0,
                        "prompt_tokens": 1, "output_tokens": 11, "outcome": "completed"})
    s = summarize(raw, None, instances(), 200.0, SLO(ttft_s=50.0, tpot_s=None))
    ttft = s["latency"]["ttft_s"]
    # linear interpolation on 1..100: p90 sits at rank 89.1 -> 90.1
    assert (ttft["mean"], ttft["p50"], ttft["p90"], ttft["p99"]) == pytest.approx((50.5, 50.5, 90.1, 99.01))
    assert s["latency"]["tpot_s"]["p50"] == pytest.approx(1.0)  # 10 s over 10 gaps
    assert s["slo"]["attainment"] == pytest.approx(0.5)  # ttft 1..50 meet 50
    assert s["counts"]["rejected_by_reason"] == {}


def test_cost_energy_and_utilisation_hand_computed():
    s = summarize(raw_requests(), None, instances(), 1800.0, SLO(1, 1))
    c = s["cost"]
    assert c["cluster_usd_per_hour"] == pytest.approx(6.0)
    assert c["run_usd"] == pytest.approx(3.0)  # 6 $/h for half an hour
    assert c["usd_per_million_output_tokens"] == pytest.approx(3.0 / 6 * 1e6)  # 6 output tokens
    assert c["usd_per_million_total_tokens"] == pytest.approx(3.0 / 36 * 1e6)  # +30 prompt tokens
    assert s["utilisation"]["mean_busy_fraction"] == pytest.approx((0.5 + 0.25) / 2)
    e = s["energy_upper_bound"]
    # 700 W x 1 GPU x 900 s + 700 W x 2 GPUs x 450 s = 1.26 MJ = 0.35 kWh
    assert e["busy_at_tdp_kwh"] == pytest.approx(0.35)
    assert e["whole_run_at_tdp_kwh"] == pytest.approx(2100 * 1800 / 3.6e6)
    assert e["busy_joules_per_output_token"] == pytest.approx(1.26e6 / 6)


def test_time_weighted_kv_and_batch():
    s = summarize(raw_requests(), timeseries(), instances(), 10.0, SLO(1, 1))["timeseries"]
    # inst 0: 0.2 for 1 s, 0.6 for 3 s -> 0.5 (last sample has no duration)
    # inst 1: 0.0 for 2 s, 0.4 for 1 s -> 0.4/3; mean of instances
    assert s["kv_mean_used_fraction"] == pytest.approx((0.5 + 0.4 / 3) / 2)
    assert s["kv_max_used_fraction"] == pytest.approx(1.0)
    # batch inst 0: (2*1 + 4*3)/4 = 3.5; inst 1: (0*2 + 3*1)/3 = 1.0
    assert s["mean_batch_size"] == pytest.approx(2.25)
    assert s["mean_batch_size_when_busy"] == pytest.approx((3.5 + 3.0) / 2)
    assert s["mean_waiting"] == pytest.approx(((1 * 1 + 3 * 3) / 4 + (0 * 2 + 6 * 1) / 3) / 2)


def test_summary_is_strict_json_with_nan_as_none():
    raw = raw_requests()
    raw["outcome"] = ["rejected", "rejected", "rejected", "unfinished"]
    s = summarize(raw, pd.DataFrame(columns=list(timeseries().columns)), instances(), 10.0, SLO(1, 1))
    text = json.dumps(s, allow_nan=False)  # raises if any NaN/inf slipped through
    assert json.loads(text)["latency"]["ttft_s"] == {"mean": None, "p50": None, "p90": None, "p99": None}
    assert s["cost"]["usd_per_million_output_tokens"] is None
    assert s["timeseries"]["kv_mean_used_fraction"] is None


def test_bad_duration_rejected():
    with pytest.raises(MetricsError, match="sim_duration_s"):
        summarize(raw_requests(), None, instances(), -1.0, SLO(1, 1))


def test_format_summary_shows_key_numbers():
    text = format_summary(summarize(raw_requests(), timeseries(), instances(), 10.0, SLO(0.6, 0.6)))
    assert "attainment 50.0%" in text
    assert "kv_capacity=1" in text
    assert "latency (ms)" in text  # printed in ms (the JSON summary keeps seconds)
    ttft_line = next(line for line in text.splitlines() if line.split()[:1] == ["ttft"])
    assert ttft_line.split()[1:] == ["300", "300", "460", "496"]


def test_save_results_roundtrip(tmp_path):
    s = summarize(raw_requests(), timeseries(), instances(), 10.0, SLO(0.6, 0.6))
    paths = save_results(tmp_path / "run", raw_requests(), timeseries(), instances(), s, csv=True)
    assert set(paths) == {"requests", "requests_csv", "timeseries", "instances", "summary"}
    req = pd.read_parquet(paths["requests"])
    assert req.loc[0, "ttft_s"] == pytest.approx(0.5)  # derived columns are saved too
    assert len(pd.read_csv(paths["requests_csv"])) == 4
    assert len(pd.read_parquet(paths["timeseries"])) == 6
    assert pd.read_csv(paths["instances"])["price_per_hour"].sum() == pytest.approx(6.0)
    assert json.loads(paths["summary"].read_text()) == json.loads(json.dumps(s))


def test_compare_side_by_side():
    a = summarize(raw_requests(), None, instances(), 10.0, SLO(0.6, 0.6))
    b = summarize(raw_requests(), None, instances(), 20.0, SLO(0.01, 0.01))
    table = compare({"a": a, "b": b})
    assert list(table.columns) == ["a", "b"]
    assert table.loc["goodput req/s", "a"] == pytest.approx(0.2)
    assert table.loc["goodput req/s", "b"] == pytest.approx(0.0)
    assert table.loc["req/s", "b"] == pytest.approx(0.1)
    assert math.isnan(table.loc["kv mean fraction", "a"])  # no timeseries -> NaN, not an error
    custom = compare({"a": a}, metrics={"p": "counts.total", "missing": "no.such.key"})
    assert custom["a"].tolist()[0] == 4 and math.isnan(custom["a"].tolist()[1])


def test_slo_from_config_mapping_or_object():
    class Cfg:  # like goodput.sim.config.SLOConfig, which has no per_class
        ttft_s, tpot_s, attainment_target = 0.5, None, 0.95

    assert SLO.from_config(Cfg()) == SLO(0.5, None, 0.95)
    slo = SLO.from_config({"ttft_s": 1, "per_class": {"batch": {"tpot_s": 2}}})
    assert slo.per_class == {"batch": (None, 2.0)} and slo.attainment_target == 0.9
    with pytest.raises(MetricsError, match="tpot_s"):
        SLO.from_config({"ttft_s": 1, "tpot_s": 0})
