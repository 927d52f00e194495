"""Plots write real PNGs, including the empty and the downsampled cases."""
import numpy as np
import pandas as pd
import pytest

from goodput.sim import plot_timeseries, plots
from goodput.sim.metrics import SLO

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
    small = plot_timeseries._downsample(ts, ["batch_size"], points=100)
    assert small.groupby("instance").size().tolist() == [100, 100]
    # the mean of bin means equals the overall mean when bins hold equal counts (40 each)
    assert small["batch_size"].mean() == pytest.approx(ts["batch_size"].mean())
    assert plot_timeseries._downsample(ts, ["batch_size"], points=5000) is ts


def test_held_grid_holds_each_instance_last_sample():
    ts = pd.DataFrame({"time_s": [0.0, 0.0, 10.0, 6.0], "instance": [0, 1, 0, 1],
                       "waiting": [0, 10, 2, 4]})
    grid, held = plot_timeseries.held_grid(ts.sort_values(["instance", "time_s"]), ["waiting"], 3)
    assert grid.tolist() == [0.0, 5.0, 10.0]
    assert held["waiting"].tolist() == [[0, 0, 2], [10, 10, 4]]


# ------------------------------------------------------------------ what the figures show
def idle_gap_series() -> pd.DataFrame:
    """One instance busy, then idle 0.5 s sample at t=10 (batch 0), silent until t=40, busy
    again; a second instance with an all-zero queue. Sampled every 0.5 s while busy."""
    busy1, busy2 = np.arange(0, 10, 0.5), np.arange(40, 50, 0.5)
    t = np.concatenate([busy1, [10.0], busy2])
    batch = np.concatenate([np.full(busy1.size, 8), [0], np.full(busy2.size, 5)])
    rows = pd.DataFrame({"time_s": t, "instance": 0, "batch_size": batch, "waiting": 0,
                         "kv_used_blocks": batch * 10, "kv_total_blocks": 1000})
    other = rows.assign(instance=1, batch_size=3, kv_used_blocks=30)
    return pd.concat([rows, other], ignore_index=True)


def test_break_gaps_inserts_nan_only_after_an_idle_sample():
    t = np.array([0.0, 1.0, 5.0, 6.0, 20.0])
    y = np.array([1.0, 0.0, 2.0, 3.0, 4.0])
    idle = np.array([False, True, False, False, False])
    x2, y2 = plot_timeseries.break_gaps(t, y, idle, max_step=2.0)
    # the silence 1 -> 5 follows an idle sample: broken; 6 -> 20 follows a busy one (a
    # fast-forwarded run): drawn through
    assert np.isnan(y2).sum() == 1 and np.isnan(y2[2]) and x2[2] == 3.0
    assert x2.tolist()[3:] == [5.0, 6.0, 20.0]


def test_timeseries_small_multiples_per_instance_with_gaps_and_zero_based_axes():
    fig = plot_timeseries.timeseries_figure(idle_gap_series(), interval_s=0.5,
                                            names={0: "llama@h100", 1: "llama@h100"})
    axes = fig.axes
    assert len(axes) == 2 * len(plot_timeseries.PANELS)  # one row per instance
    for ax in axes:
        assert ax.get_ylim()[0] == 0 and ax.get_ylim()[1] > 0  # never a negative axis
    batch_line = axes[0].get_lines()[0].get_ydata()
    assert np.isnan(batch_line).sum() == 1  # the idle stretch 10 -> 40 s is a gap
    assert not np.isnan(axes[3].get_lines()[0].get_ydata()).any()  # instance 1 never idle
    waiting = axes[2]  # all zero: 0..1 and said so, not a centred axis
    assert waiting.get_ylim() == (0.0, 1.0)
    assert any("0 throughout" in t.get_text() for t in waiting.texts)
    assert "2 instances, one row each" in fig._suptitle.get_text()


def test_timeseries_beyond_max_panels_shows_the_cluster_and_says_so():
    ts = timeseries(instances=plot_timeseries.MAX_PANELS + 4, samples=200)
    fig = plot_timeseries.timeseries_figure(ts, interval_s=0.5)
    assert len(fig.axes) == len(plot_timeseries.PANELS)
    title = fig._suptitle.get_text()
    assert f"{plot_timeseries.MAX_PANELS + 4} instances" in title and "mean" in title
    for ax in fig.axes:
        assert ax.get_ylim()[0] == 0


def test_timeseries_png_file(tmp_path):
    p = plots.plot_timeseries(idle_gap_series(), tmp_path / "ts.png", 0.5)
    assert_png(p)
    from matplotlib.image import imread

    h, w = imread(p).shape[:2]
    assert h > 300 and w > 1000


def test_cdfs_in_milliseconds_with_readable_ticks():
    fig = plots.cdf_figure({"a": requests(seed=1), "b": requests(seed=2)}, SLO(0.5, 0.05))
    ttft, tpot, e2e = fig.axes
    assert "ms" in ttft.get_title() and "ms" in tpot.get_title() and "(s)" in e2e.get_title()
    assert any(line.get_xdata()[0] == 50.0 for line in tpot.get_lines())  # the SLO, in ms
    for ax in fig.axes:
        assert len(ax.get_xticks()) <= 8 and ax.get_xlim()[0] == 0
