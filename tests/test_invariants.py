"""The always-on end-of-run invariants (goodput.sim.invariants) and the cases that once broke them."""
from __future__ import annotations

import pandas as pd
import pytest

from goodput.sim.config import SimConfig
from goodput.sim.invariants import InvariantError, check_run
from goodput.sim.simulator import simulate
from tests.conftest import poisson_requests


def _cfg(cut=None) -> SimConfig:
    cfg = SimConfig()
    cfg.cost_model.kind = "roofline"
    cfg.max_sim_time_s = cut
    return cfg


def test_a_request_arriving_exactly_at_the_cut_is_counted():
    """The clock stops before events due at the cut itself; that arrival used to vanish."""
    df = pd.DataFrame({"request_id": [0, 1, 2], "arrival_s": [0.0, 5.0, 9.0],
                       "prompt_tokens": [100] * 3, "output_tokens": [10] * 3})
    res = simulate(_cfg(cut=5.0), df)
    q = res.requests.set_index("request_id")
    assert list(q.index) == [0, 1, 2]
    assert q.loc[1, "outcome"] == "unfinished" and q.loc[2, "outcome"] == "unfinished"


@pytest.mark.parametrize("cut", [None, 3.0, 7.5])
def test_every_run_passes_its_own_checks(cut):
    res = simulate(_cfg(cut), poisson_requests(300, rate=30, seed=51))
    assert len(res.requests) == 300


def _table(**over):
    df = pd.DataFrame({"request_id": [0, 1], "generated_tokens": [5, 3], "output_tokens": [5, 4],
                       "outcome": ["completed", "unfinished"]})
    for k, v in over.items():
        df[k] = v
    return df


def test_the_checks_catch_what_they_guard():
    check_run(_table(), 2, [])
    with pytest.raises(InvariantError, match="3 requests read but 2 recorded"):
        check_run(_table(), 3, [])
    with pytest.raises(InvariantError, match="recorded twice"):
        check_run(_table(request_id=[7, 7]), 2, [])
    with pytest.raises(InvariantError, match="generated 5 of 4"):
        check_run(_table(generated_tokens=[5, 5]), 2, [])
    with pytest.raises(InvariantError, match=r"request 0 \(completed\) generated 4 of 5"):
        check_run(_table(generated_tokens=[4, 3]), 2, [])

    class Pool:
        used, reserved, host_used = 3, 0, 0

    class Inst:
        index, kv = 2, Pool()

    with pytest.raises(InvariantError, match="instance 2 ended with nothing to do but 3 KV blocks"):
        check_run(_table(), 2, [Inst()])
