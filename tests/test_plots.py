"""Plots write real PNGs, including the empty and the downsampled cases."""
import numpy as np
import pandas as pd
import pytest

from sim import plots
from sim.metrics import SLO

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def requests(n: int = 500, seed: int = 0, scale: float = 1.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    arrival = np.sort(rng.uniform(0, 100, n))
    ttft = rng.exponential(0.3 * scale, n)
    out = rng.integers(1, 50, n)
    done = arrival + ttft + out * 0.02 * scale
    outcome = np.where(rng.random(n) < 0.9, "completed", "rejected")
    return pd.DataFrame({"request_id": np.arange(n), "arrival_s": arrival,
                         "first_scheduled_s": arrival + ttft / 2, "first_token_s": arrival + ttft,
                         "completion_s": np.where(outcome == "completed", done, np.nan),
                         "prompt_tokens": 100, "output_tokens": out, "outcome": outcome})


def timeseries(instances: int = 2, samples: int = 50) -> pd.DataFrame:
    t = np.tile(np.linspace(0, 100, samples), instances)
    inst = np.repeat(np.arange(instances), samples)
    rng = np.random.default_rng(1)
    return pd.DataFrame({"time_s": t, "instance": inst, "batch_size": rng.integers(0, 64, t.size),
                         "prefill_tokens": 0, "running": 0, "waiting": rng.integers(0, 10, t.size),
                         "kv_used_blocks": rng.integers(0, 1000, t.size), "kv_total_blocks": 1000})


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000  # a real rendered figure, not a stub


def test_latency_cdfs_png(tmp_path):
    p = plots.plot_latency_cdfs(requests(), tmp_path / "sub" / "cdf.png", SLO(0.5, 0.05))
    assert_png(p)


def test_latency_cdfs_with_no_completed_requests(tmp_path):
    df = requests(20)
    df["outcome"], df["completion_s"] = "rejected", np.nan
    assert_png(plots.plot_latency_cdfs(df, tmp_path / "cdf.png"))


def test_timeseries_png_and_empty(tmp_path):
    assert_png(plots.plot_timeseries(timeseries(), tmp_path / "ts.png"))
    assert_png(plots.plot_timeseries(timeseries(instances=20, samples=3000), tmp_path / "big.png"))
    assert_png(plots.plot_timeseries(timeseries().iloc[:0], tmp_path / "empty.png"))


def test_timeseries_missing_column(tmp_path):
    with pytest.raises(ValueError, match="kv_total_blocks"):
        plots.plot_timeseries(timeseries().drop(columns="kv_total_blocks"), tmp_path / "x.png")


def test_comparison_png(tmp_path):
    runs = {"small": requests(seed=1), "large": requests(seed=2, scale=2.0)}
    assert_png(plots.plot_comparison(runs, tmp_path / "cmp.png", SLO(0.5, None)))
    with pytest.raises(ValueError, match="requests_by_label"):
        plots.plot_comparison({}, tmp_path / "none.png")


def test_save_all_plots(tmp_path):
    paths = plots.save_all_plots(tmp_path, requests(), timeseries(), SLO(0.5, 0.05))
    assert [p.name for p in paths] == ["latency_cdfs.png", "timeseries.png"]
    for p in paths:
        assert_png(p)


def test_cdf_points_capped_and_exact_when_small():
    x, y = plots._cdf_points(np.array([3.0, np.nan, 1.0, 2.0]))
    assert x.tolist() == [1.0, 2.0, 3.0] and y.tolist() == pytest.approx([1 / 3, 2 / 3, 1.0])
    x, y = plots._cdf_points(np.arange(1_000_000, dtype=float))
    assert x.size == plots.CDF_POINTS and x[0] == 0 and y[-1] == 1.0


def test_downsample_bins_means():
    ts = timeseries(instances=2, samples=4000)
    small = plots._downsample(ts, ["batch_size"], points=100)
    assert small.groupby("instance").size().tolist() == [100, 100]
    # the mean of bin means equals the overall mean when bins hold equal counts (40 each)
    assert small["batch_size"].mean() == pytest.approx(ts["batch_size"].mean())
    assert plots._downsample(ts, ["batch_size"], points=5000) is ts


def test_cluster_mean_averages_instances_per_bin():
    ts = pd.DataFrame({"time_s": [0.0, 0.0, 10.0, 10.0], "instance": [0, 1, 0, 1],
                       "waiting": [0, 10, 2, 4]})
    mean = plots._cluster_mean(ts, ["waiting"], points=2)
    assert mean["waiting"].tolist() == [5.0, 3.0] and mean["time_s"].tolist() == [0.0, 10.0]
