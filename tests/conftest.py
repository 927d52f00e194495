"""Shared fixtures: where the real traces live and small workload builders."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_TRACES = REPO.parent / "shared" / "traces"


def shared_trace(name: str) -> Path:
    path = SHARED_TRACES / name
    if not path.exists():
        pytest.skip(f"real trace {name} not available in {SHARED_TRACES}")
    return path


def poisson_requests(n: int, rate: float, prompt=(50, 2000), output=(1, 400), seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "request_id": np.arange(n),
        "arrival_s": np.cumsum(rng.exponential(1.0 / rate, n)),
        "prompt_tokens": rng.integers(prompt[0], prompt[1], n),
        "output_tokens": rng.integers(output[0], output[1], n),
    })


def with_priorities(df: pd.DataFrame, high_fraction: float = 0.2, seed: int = 0) -> pd.DataFrame:
    """A copy of ``df`` where a random ``high_fraction`` of requests get priority 1 (others 0)."""
    rng = np.random.default_rng(seed)
    out = df.copy()
    out["priority"] = (rng.random(len(df)) < high_fraction).astype(np.int64)
    return out


def virtual_serve(cfg, df):
    """The real-GPU serving loop with the cost model as its clock and executor: what
    tests/test_serve_loop.py and test_serve_spec.py compare with ``simulate`` (it must equal it)."""
    from goodput.profiler.serve import CostModelExecutor, ServingLoop, VirtualClock, instance_capacity
    from goodput.sim.catalog import get_gpu, get_model
    from goodput.sim.costmodel.factory import make_cost_model

    model = get_model(cfg.cluster[0].model)
    cost = make_cost_model(model, get_gpu(cfg.cluster[0].gpu), 1, cfg.cost_model)
    clock = VirtualClock()
    loop = ServingLoop(cfg, instance_capacity(cfg, model), model.max_context,
                       CostModelExecutor(cost, clock), clock, cost)
    return loop.run(df)
