"""Parallel capacity sweeps: the process pool and Ray give the same numbers as a serial run."""
from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from goodput.planner.capacity import CapacityCache, CapacityTask, SearchSettings, measure
from goodput.planner.errors import PlannerError
from goodput.planner.parallel import run_parallel

LENGTHS = [np.array([[128, 16], [200, 24]]), np.array([[900, 16]])]


def tiny_sweep():
    s = SearchSettings(min_requests=30, max_requests=300, span_e2e=5, rel_tol=0.2)
    return [CapacityTask("llama-3.1-8b", gpu, 1, 0.5, 0.05, lengths, {}, {"kind": "roofline"}, s)
            for gpu in ("a100-80gb", "h100") for lengths in LENGTHS]


def test_local_pool_keeps_order():
    assert run_parallel(math.sqrt, [1.0, 4.0, 9.0, 16.0], "local", workers=2) == [1, 2, 3, 4]
    assert run_parallel(math.sqrt, [], "local") == []
    with pytest.raises(PlannerError, match="backend='dask'"):
        run_parallel(math.sqrt, [1.0], "dask")
    with pytest.raises(PlannerError, match="workers must be >= 1"):
        run_parallel(math.sqrt, [1.0], "local", workers=0)


def test_pool_matches_serial(tmp_path):
    serial = measure(tiny_sweep(), CapacityCache(tmp_path / "a"), workers=1)
    pooled = measure(tiny_sweep(), CapacityCache(tmp_path / "b"), workers=2)
    assert [r.rate for r in serial] == [r.rate for r in pooled]
    assert all(r.rate > 0 for r in serial)


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")
def test_ray_backend_matches_local(tmp_path):
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        via_ray = measure(tiny_sweep(), CapacityCache(tmp_path / "ray"), backend="ray")
    finally:
        ray.shutdown()
    local = measure(tiny_sweep(), CapacityCache(tmp_path / "local"), workers=1)
    assert [r.rate for r in via_ray] == [r.rate for r in local]
    assert len(list((tmp_path / "ray" / "capacity").glob("*.json"))) == len(local)
