"""Slicing: hand-counted buckets, rates, slice factor, and the zero-rate / bad-edge errors."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from goodput.planner.errors import PlannerError
from goodput.planner.slices import bucket_label, make_slices, parse_edges, trace_rate


def _trace(prompts, outputs, span=10.0):
    n = len(prompts)
    return pd.DataFrame({"request_id": np.arange(n), "arrival_s": np.linspace(0, span, n),
                         "prompt_tokens": prompts, "output_tokens": outputs})


def test_buckets_counts_and_rates_by_hand():
    # 11 requests over 10 s -> (11 - 1) / 10 = 1 req/s in total
    prompts = [10, 20, 30, 600, 600, 600, 600, 5000, 5000, 100, 100]
    outputs = [5, 5, 5, 5, 100, 100, 100, 100, 100, 300, 300]
    sl = make_slices(_trace(prompts, outputs), input_edges=(512, 4096), output_edges=(64,))
    assert sl.total_rate == pytest.approx(1.0)
    got = {b.label: b.count for b in sl.buckets}
    assert got == {"in[0,512)out[0,64)": 3, "in[0,512)out[64,inf)": 2,
                   "in[512,4096)out[0,64)": 1, "in[512,4096)out[64,inf)": 3,
                   "in[4096,inf)out[64,inf)": 2}  # empty in[4096,inf)out[0,64) left out
    rate = {b.label: b.rate for b in sl.buckets}
    assert rate["in[0,512)out[0,64)"] == pytest.approx(3 / 11)
    assert sum(rate.values()) == pytest.approx(1.0)
    b = sl.bucket("in[512,4096)out[64,inf)")
    assert b.lengths.tolist() == [[600, 100]] * 3
    assert sl.label_of(512, 64) == "in[512,4096)out[64,inf)"  # edges belong to the upper bucket


def test_slice_factor_splits_rate_not_buckets():
    tr = _trace([10, 10, 2000, 2000, 2000], [5, 5, 5, 5, 5], span=4.0)
    sl = make_slices(tr, (1024,), (64,), slice_factor=4)
    assert len(sl.buckets) == 2 and len(sl.slices) == 8
    big = [s for s in sl.slices if s.bucket == "in[1024,inf)out[0,64)"]
    assert [s.name[-2:] for s in big] == ["#0", "#1", "#2", "#3"]
    assert all(s.rate == pytest.approx(1.0 * 3 / 5 / 4) for s in big)
    assert sum(s.rate for s in sl.slices) == pytest.approx(sl.total_rate)


def test_labels_vectorised_match_single():
    tr = _trace([1, 255, 256, 9000], [1, 64, 63, 2000])
    sl = make_slices(tr)
    assert list(sl.labels(tr)) == [sl.label_of(p, o) for p, o in zip(tr.prompt_tokens,
                                                                      tr.output_tokens, strict=True)]
    assert bucket_label(0, 0, (256,), (64,)) == "in[0,256)out[0,64)"


@pytest.mark.parametrize("df, msg", [
    (_trace([10], [5]), "zero-rate trace \\(1 request"),
    (pd.DataFrame({"request_id": [0, 1], "arrival_s": [3.0, 3.0], "prompt_tokens": [5, 5],
                   "output_tokens": [5, 5]}), "span 0 s"),
])
def test_zero_rate_trace_is_an_error(df, msg):
    with pytest.raises(PlannerError, match=msg):
        trace_rate(df)
    with pytest.raises(PlannerError, match="zero-rate"):
        make_slices(df)


@pytest.mark.parametrize("edges, msg", [("512,256", "strictly increasing"), ("0,5", ">= 1"),
                                        ("a,b", "comma-separated")])
def test_bad_edges_name_the_field(edges, msg):
    with pytest.raises(PlannerError, match=f"input_edges.*{msg}|{msg}"):
        parse_edges(edges, "input_edges")
    with pytest.raises(PlannerError, match="slice_factor"):
        make_slices(_trace([1, 2], [1, 2]), slice_factor=0)
