"""The per-request record sink: blocks of records scattered into one table sorted by request id.

``RecordSink`` keeps records in fixed-size blocks and ``to_frame`` scatters each block into the
table and frees it (engine speed: no second full copy at the peak). These tests make the blocks
tiny so that a few dozen requests span many of them, and check the table against one built
directly from the same values: same rows, sorted by id (stable for equal ids), every column.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from goodput.sim.engine import records
from goodput.sim.engine.records import RecordSink
from goodput.sim.engine.sequence import COMPLETED, OUTCOMES, UNFINISHED, Sequence


@pytest.fixture
def tiny_blocks(monkeypatch):
    monkeypatch.setattr(records, "BLOCK", 4)  # rows per block of a sink made after this


def _seq(rid: int, rng: np.random.Generator) -> Sequence:
    seq = Sequence(rid, float(rng.uniform(0, 100)), int(rng.integers(1, 4000)), int(rng.integers(1, 500)))
    seq.instance = int(rng.integers(0, 4))
    seq.generated = seq.output
    seq.first_scheduled = seq.arrival + 0.5
    seq.first_token = seq.arrival + 1.0
    seq.max_tbt = float(rng.uniform(0, 1))
    seq.preemptions = int(rng.integers(0, 3))
    return seq


def test_blocks_scatter_into_one_sorted_table(tiny_blocks):
    rng = np.random.default_rng(7)
    sink = RecordSink()
    rids = rng.permutation(40)
    expected = []
    for n, rid in enumerate(rids):
        seq = _seq(int(rid), rng)
        sink.add(seq, COMPLETED, completion=seq.arrival + 2.0, reason="" if n % 5 else "late")
        expected.append((int(rid), seq.arrival, seq.arrival + 2.0, seq.prompt, seq.max_tbt,
                         seq.preemptions, "completed"))
        if n == 17:  # a bulk add in the middle of a block, with a repeated id
            sink.add_unarrived([100, 101, 3], [200.0, 201.0, 202.0], [5, 6, 7], [8, 9, 10], [0, 0, 0],
                               [0, 0, 0], "arrives after max_sim_time_s")
            expected += [(100, 200.0, math.nan, 5, math.nan, 0, "unfinished"),
                         (101, 201.0, math.nan, 6, math.nan, 0, "unfinished"),
                         (3, 202.0, math.nan, 7, math.nan, 0, "unfinished")]
    assert len(sink) == 43
    assert len(sink._blocks) > 5  # the tiny blocks were really used
    frame = sink.to_frame()
    want = pd.DataFrame(expected, columns=["request_id", "arrival_s", "completion_s", "prompt_tokens",
                                           "max_tbt_s", "preemptions", "outcome"])
    want = want.sort_values("request_id", kind="stable").reset_index(drop=True)
    for col in want.columns:
        got = frame[col].astype(str if col == "outcome" else frame[col].dtype).to_numpy()
        np.testing.assert_array_equal(got, want[col].to_numpy(), err_msg=col)
    assert list(frame["outcome"].cat.categories) == list(OUTCOMES)
    assert set(frame["reject_reason"].astype(str)) == {"", "late", "arrives after max_sim_time_s"}
    assert (frame["outcome"] == OUTCOMES[UNFINISHED]).sum() == 3
    assert len(sink) == 0  # emptied: its buffers were freed while the table was built


def test_empty_sink_has_every_column():
    frame = RecordSink().to_frame()
    assert len(frame) == 0
    assert list(frame.columns) == list(records.REQUEST_COLUMNS)


def test_block_size_does_not_change_a_run(monkeypatch):
    """A whole simulation's table is identical with tiny blocks and with the default ones."""
    from goodput.sim.config import InstanceGroupConfig, SimConfig
    from goodput.sim.simulator import simulate
    from tests.conftest import poisson_requests

    def run():
        cfg = SimConfig(cluster=[InstanceGroupConfig(model="llama-3.1-8b", gpu="h100", count=2)])
        cfg.cost_model.kind = "roofline"
        cfg.scheduler.policy = "sarathi"
        cfg.scheduler.num_gpu_blocks = 600
        cfg.max_sim_time_s = 20.0
        return simulate(cfg, poisson_requests(300, 8.0, seed=3)).requests

    default = run()
    monkeypatch.setattr(records, "BLOCK", 7)
    tiny = run()
    assert (default["outcome"] == "unfinished").any()  # the cut's bulk add is exercised too
    pd.testing.assert_frame_equal(default, tiny)
