"""Arrival processes, length distributions, synthesize/chunks, rescale and time_slice."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from goodput.sim.workload import (
    OPTIONAL,
    REQUIRED,
    Empirical,
    Fixed,
    LogNormal,
    Trace,
    TraceError,
    Uniform,
    parse_length_dist,
    rescale,
    synthesize,
    synthesize_chunks,
    time_slice,
)


def gaps_cv(t: Trace) -> float:
    g = np.diff(t.df["arrival_s"].to_numpy())
    return g.std() / g.mean()


def test_poisson_rate_and_cv():
    t = synthesize(20_000, 8.0, "fixed:100", "fixed:10", seed=1)
    assert t.df["arrival_s"].iloc[0] == 0.0
    # (n-1)/duration has relative std ~ 1/sqrt(n) = 0.7%; 3% is > 4 sigma
    assert t.rate == pytest.approx(8.0, rel=0.03)
    assert gaps_cv(t) == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("cv", [0.5, 3.0])
def test_gamma_cv_measured(cv):
    t = synthesize(50_000, 4.0, "fixed:1", "fixed:1", arrival="gamma", cv=cv, seed=2)
    assert gaps_cv(t) == pytest.approx(cv, rel=0.08)
    assert t.rate == pytest.approx(4.0, rel=0.05)


def test_gamma_cv1_is_poisson():
    a = synthesize(1000, 2.0, "fixed:5", "fixed:5", arrival="poisson", seed=7)
    b = synthesize(1000, 2.0, "fixed:5", "fixed:5", arrival="gamma", cv=1.0, seed=7)
    assert a.df.equals(b.df)


def test_same_seed_same_trace_other_seed_differs():
    spec = ("lognormal:mean=1000,std=800,min=4,max=8192", "uniform:1:300")
    a = synthesize(500, 3.0, *spec, arrival="gamma", cv=2.0, seed=11)
    b = synthesize(500, 3.0, *spec, arrival="gamma", cv=2.0, seed=11)
    c = synthesize(500, 3.0, *spec, arrival="gamma", cv=2.0, seed=12)
    assert a.df.equals(b.df)
    assert not a.df["arrival_s"].equals(c.df["arrival_s"])
    assert not a.df["prompt_tokens"].equals(c.df["prompt_tokens"])


def test_lengths_do_not_move_arrivals():
    a = synthesize(300, 3.0, "fixed:5", "fixed:5", seed=4)
    b = synthesize(300, 3.0, "uniform:1:9", "lognormal:median=50,sigma=1", seed=4)
    assert a.df["arrival_s"].equals(b.df["arrival_s"])


@pytest.mark.parametrize("arrival,cv", [("poisson", 1.0), ("gamma", 2.5)])
def test_chunks_equal_whole(arrival, cv):
    args = (5003, 7.0, "lognormal:mean=900,std=700,min=4,max=8192", "uniform:1:512")
    whole = synthesize(*args, arrival=arrival, cv=cv, seed=5).df
    parts = list(synthesize_chunks(*args, arrival=arrival, cv=cv, seed=5, chunk=997))
    assert [len(p) for p in parts] == [997] * 5 + [18]
    joined = pd.concat(parts, ignore_index=True)
    assert joined.equals(whole)  # bit-identical, arrival times included
    assert list(whole.columns) == list(REQUIRED) + list(OPTIONAL)


def test_chunks_equal_whole_joint_empirical():
    src = Trace(pd.DataFrame({"prompt_tokens": [10, 20, 30], "output_tokens": [1, 2, 3]}))
    emp = Empirical.from_trace(src)
    whole = synthesize(1001, 1.0, emp, seed=9).df
    joined = pd.concat(synthesize_chunks(1001, 1.0, emp, seed=9, chunk=64), ignore_index=True)
    assert joined.equals(whole)
    # joint resampling keeps pairs: output = prompt / 10 in every sampled row
    assert (whole["output_tokens"] * 10 == whole["prompt_tokens"]).all()
    assert set(whole["prompt_tokens"]) == {10, 20, 30}


def test_fixed_and_uniform_ranges():
    rng = np.random.default_rng(0)
    assert (Fixed(512).sample(rng, 100) == 512).all()
    u = Uniform(3, 6).sample(rng, 20_000)
    assert set(np.unique(u)) == {3, 4, 5, 6}  # both ends included
    assert np.bincount(u)[3:].min() > 4500  # ~5000 each


def test_lognormal_moments_and_clip():
    rng = np.random.default_rng(0)
    x = LogNormal.from_mean_std(1000, 800).sample(rng, 400_000)
    assert x.mean() == pytest.approx(1000, rel=0.02)
    assert x.std() == pytest.approx(800, rel=0.05)
    m = LogNormal.from_median_sigma(200, 0.5).sample(rng, 100_000)
    assert np.median(m) == pytest.approx(200, rel=0.02)
    c = LogNormal.from_mean_std(1000, 3000, min=50, max=2000).sample(rng, 50_000)
    assert c.min() == 50 and c.max() == 2000
    assert c.dtype == np.int64


def test_parse_length_dist_specs():
    assert parse_length_dist("fixed:512") == Fixed(512)
    assert parse_length_dist("uniform:128:2048") == Uniform(128, 2048)
    d = parse_length_dist("lognormal:mean=1000,std=800,min=4,max=8192")
    assert (d.min, d.max) == (4, 8192)
    assert d.spec == "lognormal:mean=1000,std=800,min=4,max=8192"
    assert parse_length_dist("lognormal:median=500,sigma=1").mu == pytest.approx(np.log(500))


@pytest.mark.parametrize("spec,msg", [
    ("lognormal:mean=1000", "mean=,std="),
    ("lognormal:mean=1000,std=800,p=3", "unknown key 'p'"),
    ("lognormal:mean=x,std=3", "'x' is not a number"),
    ("uniform:10", "uniform:LOW:HIGH"),
    ("uniform:10:5", "high"),
    ("fixed:0", "value=0"),
    ("fixed:2.5", "whole number"),
    ("zipf:1.2", "unknown distribution 'zipf'"),
    ("512", "expected fixed:N"),
    ("empirical:", "needs a trace path"),
])
def test_parse_length_dist_errors(spec, msg):
    with pytest.raises(TraceError, match=msg):
        parse_length_dist(spec)


def test_empirical_from_path(tmp_path):
    p = tmp_path / "l.csv"
    p.write_text("num_prefill_tokens,num_decode_tokens\n100,7\n200,9\n")
    joint = parse_length_dist(f"empirical:{p}")
    assert joint.joint and joint.values.tolist() == [[100, 7], [200, 9]]
    col = parse_length_dist(f"empirical:{p}:output")
    assert not col.joint and col.values.tolist() == [7, 9]
    t = synthesize(50, 1.0, f"empirical:{p}:prompt", col, seed=0)
    assert set(t.df["prompt_tokens"]) <= {100, 200} and set(t.df["output_tokens"]) <= {7, 9}


def test_synthesize_argument_errors():
    with pytest.raises(TraceError, match="cv"):
        synthesize(10, 1.0, "fixed:1", "fixed:1", arrival="poisson", cv=2.0)
    with pytest.raises(TraceError, match="arrival"):
        synthesize(10, 1.0, "fixed:1", "fixed:1", arrival="weibull")
    with pytest.raises(TraceError, match="rate"):
        synthesize(10, 0.0, "fixed:1", "fixed:1")
    with pytest.raises(TraceError, match="output_dist"):
        synthesize(10, 1.0, "fixed:1")
    with pytest.raises(TraceError, match="seed"):
        synthesize(10, 1.0, "fixed:1", "fixed:1", seed=1.5)


def _trace(times):
    n = len(times)
    df = pd.DataFrame({"request_id": np.arange(n), "arrival_s": np.asarray(times, float),
                       "prompt_tokens": np.full(n, 5), "output_tokens": np.full(n, 1)})
    return Trace(df)


def test_rescale_to_rate_and_factor():
    t = synthesize(2000, 3.0, "fixed:1", "fixed:1", arrival="gamma", cv=2.0, seed=3)
    r = rescale(t, rate=12.0)
    assert r.rate == pytest.approx(12.0, rel=1e-12)
    assert gaps_cv(r) == pytest.approx(gaps_cv(t), rel=1e-9)  # burstiness unchanged
    h = rescale(_trace([1.0, 2.0, 5.0]), factor=2.0)
    assert h.df["arrival_s"].tolist() == [1.0, 1.5, 3.0]  # gaps halved, start kept
    with pytest.raises(TraceError, match="exactly one"):
        rescale(t)
    with pytest.raises(TraceError, match="exactly one"):
        rescale(t, rate=1.0, factor=2.0)
    with pytest.raises(TraceError, match=">= 2 requests"):
        rescale(_trace([0.0]), rate=2.0)


def test_time_slice_rebases_to_window_start():
    t = _trace([0.0, 1.0, 2.0, 3.0, 4.0])
    s = time_slice(t, 1.5, 3.5)
    assert s.df["arrival_s"].tolist() == [0.5, 1.5]
    assert s.df["request_id"].tolist() == [2, 3]
    assert time_slice(t, 1.5, 3.5, renumber=True).df["request_id"].tolist() == [0, 1]
    assert time_slice(t, 3.0).df["arrival_s"].tolist() == [0.0, 1.0]  # end=None: to the end
    with pytest.raises(TraceError, match="no requests arrive"):
        time_slice(t, 10.0, 20.0)
    with pytest.raises(TraceError, match="start_s < end_s"):
        time_slice(t, 3.0, 1.0)
