"""Capacity search: what a probe measures, the bracket it returns, the zero-load limit, the cache."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from goodput.planner.capacity import (
    CapacityCache,
    CapacityTask,
    SearchSettings,
    _Prober,
    measure,
    search_capacity,
    task_key,
)
from goodput.planner.errors import PlannerError

SHORT = np.array([[128, 32], [256, 64], [200, 48]])
SMALL = SearchSettings(min_requests=40, max_requests=600, span_e2e=10, rel_tol=0.1)


def task(gpu="a100-80gb", ttft=0.5, tpot=0.05, lengths=SHORT, settings=SMALL, model="llama-3.1-8b"):
    return CapacityTask(model, gpu, 1, ttft, tpot, lengths, {"policy": "vllm"}, {"kind": "roofline"},
                        settings, "test-slice")


def test_returned_rate_passed_and_a_rate_within_tolerance_failed():
    r = search_capacity(task())
    assert r.rate > 0 and r.limit == "" and r.zero_load_attainment >= 0.9
    att = {round(rate, 9): a for rate, a, _ in r.probes}
    assert att[round(r.rate, 9)] >= 0.9  # the capacity is a rate that was observed to pass
    failing = [rate for rate, a, _ in r.probes if a < 0.9 and rate > r.rate]
    assert failing and min(failing) <= r.rate * (1 + 0.1) + 1e-9  # bracket closed to rel_tol
    assert r.cost_source == "roofline"


def test_probe_length_grows_with_rate_so_bursts_cannot_pass():
    """n(r) = max(min_requests, span_e2e * r * e2e0): higher rates replay more requests."""
    r = search_capacity(task())
    p = _Prober(task())
    p.zero_load()
    for rate, _, n in r.probes:
        assert n == max(40, math.ceil(10 * rate * p.e2e0))
    # with too few requests allowed, rates above max_requests / (span * e2e0) are not simulated
    # and count as failing: the capacity is then probe-limited and says so
    tight = SearchSettings(min_requests=40, max_requests=80, span_e2e=10, rel_tol=0.1)
    lim = search_capacity(task(settings=tight))
    assert 0 < lim.rate <= 80 / (10 * p.e2e0) and lim.rate < r.rate
    assert lim.limit.startswith("probe-limited") and "max_requests=80" in lim.limit
    assert any(a is None for _, a, _ in lim.probes)


def test_same_inputs_same_result():
    a, b = search_capacity(task()), search_capacity(task())
    assert a.rate == b.rate and a.probes == b.probes


def test_cutoff_does_not_change_attainment():
    """Stopping at last arrival + TTFT + (max output - 1) x TPOT is exact, not an approximation."""
    from goodput.sim.metrics import slo_met

    p = _Prober(task())
    for rate in (5.0, 50.0, 400.0):
        full = slo_met(p.run(p.base / rate), p.slo).mean()
        cut = slo_met(p.run(p.base / rate, cutoff=True), p.slo).mean()
        assert full == cut


def test_zero_load_miss_names_the_bound():
    # L4 (300 GB/s) reads Llama-3.1-8B's 16 GB of weights per decode step: > 50 ms per token
    r = search_capacity(task(gpu="l4", tpot=0.04))
    assert r.rate == 0.0 and r.probes == []
    assert "TPOT p90 at zero load" in r.limit and "> SLO 40 ms" in r.limit


def test_model_that_does_not_fit_has_zero_capacity():
    r = search_capacity(task(gpu="l4", model="llama-3.1-70b"))
    assert r.rate == 0.0 and r.limit.startswith("does not fit") and "l4" in r.limit


def test_prompt_longer_than_kv_cache_is_named():
    # A10G holds ~27k KV tokens of Llama-3.1-8B; 40k-token prompts can never be admitted
    r = search_capacity(task(gpu="a10g", ttft=100.0, lengths=np.array([[40000, 4]])))
    assert r.rate == 0.0 and "fail even alone" in r.limit and "40000" in r.limit


def test_ttft_bound_required():
    with pytest.raises(PlannerError, match="ttft_s is required"):
        search_capacity(task(ttft=None))
    with pytest.raises(PlannerError, match="min_requests must be >= 20"):
        SearchSettings(min_requests=5)
    with pytest.raises(PlannerError, match="max_requests \\(30\\) must be >= min_requests"):
        SearchSettings(min_requests=40, max_requests=30)


def test_cache_hit_key_sensitivity_and_corrupt_entries(tmp_path):
    cache = CapacityCache(tmp_path)
    t = task()
    first = measure([t], cache, workers=1)[0]
    assert not first.cached and len(list((tmp_path / "capacity").glob("*.json"))) == 1
    again = measure([t], cache, workers=1)[0]
    assert again.cached and again.rate == first.rate
    # every input is in the key: SLO, lengths, settings, GPU; the label is not
    assert task_key(task(tpot=0.06)) != task_key(t)
    assert task_key(task(lengths=SHORT[:2])) != task_key(t)
    assert task_key(task(settings=replace(SMALL, max_requests=601))) != task_key(t)
    assert task_key(task(gpu="h100")) != task_key(t)
    relabelled = task()
    relabelled.label = "other"
    assert task_key(relabelled) == task_key(t)
    # a corrupt entry is re-measured, not trusted
    path = tmp_path / "capacity" / f"{task_key(t)}.json"
    path.write_text("{not json")
    assert measure([t], cache, workers=1)[0].cached is False
    assert json.loads(path.read_text())["rate"] == first.rate
    off = CapacityCache(tmp_path, enabled=False)
    assert measure([t], off, workers=1)[0].cached is False
