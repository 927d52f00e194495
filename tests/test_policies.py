"""Hand-derived schedules of 2-5 requests for every batching policy.

Each test states the iterations a policy must run (which request computes how many tokens over
how much cached context) and checks the simulator's first_scheduled / first_token / completion
times against sums of ``RooflineCostModel.batch_time`` of exactly those batches. Every scenario
runs with and without fast-forwarding: the closed-form decode runs must reproduce the step-by-step
schedule. Engine order inside a batch is prefill chunks first, then decodes.
"""
from __future__ import annotations

import math

import pandas as pd
import pytest

from goodput.sim.catalog import get_gpu, get_model
from goodput.sim.config import InstanceGroupConfig, SimConfig
from goodput.sim.costmodel.base import Batch
from goodput.sim.costmodel.roofline import RooflineCostModel
from goodput.sim.simulator import simulate

MODEL, GPU = "llama-3.1-8b", "h100"
COST = RooflineCostModel(get_model(MODEL), get_gpu(GPU), 1)
EPS = 1e-6  # an arrival "just after" an event, well inside the next iteration


def bt(new, ctx) -> float:
    """One iteration: sequences computing ``new[i]`` tokens over ``ctx[i]`` cached tokens."""
    return COST.batch_time(Batch(list(new), list(ctx)))


def dec(*ctx) -> float:
    """One pure decode iteration of sequences with these cached contexts."""
    return COST.batch_time(Batch.decode(list(ctx)))


def decode_alone(ctx0: int, steps: int) -> float:
    """``steps`` decode iterations of one sequence starting at cached context ``ctx0``."""
    return sum(dec(ctx0 + i) for i in range(steps))


def cfg_for(policy: str, count: int = 1, fast: bool = True, **sched) -> SimConfig:
    cfg = SimConfig(cluster=[InstanceGroupConfig(model=MODEL, gpu=GPU, tp=1, count=count)])
    cfg.cost_model.kind = "roofline"
    cfg.fast_forward = fast
    cfg.scheduler.policy = policy
    for k, v in sched.items():
        if k in ("chunk_size", "token_budget"):
            setattr(cfg.scheduler.section("sarathi"), k, v)
        elif k == "reserve_output_tokens":
            setattr(cfg.scheduler.section(policy), k, v)
        else:
            setattr(cfg.scheduler, k, v)
    return cfg


def util_for_blocks(n: int, block_size: int = 16, reserve_gb: float = 2.0) -> float:
    """gpu_memory_utilization that leaves exactly ``n`` KV blocks (half a block of slack)."""
    m, g = get_model(MODEL), get_gpu(GPU)
    block = m.kv_bytes_per_token(1) * block_size
    return (m.weight_bytes(1) + reserve_gb * 1e9 + (n + 0.5) * block) / g.memory_bytes


def trace(*reqs) -> pd.DataFrame:
    """reqs: (arrival_s, prompt, output[, priority]) in request-id order."""
    rows = [{"request_id": i, "arrival_s": r[0], "prompt_tokens": r[1], "output_tokens": r[2],
             "priority": r[3] if len(r) > 3 else 0} for i, r in enumerate(reqs)]
    return pd.DataFrame(rows)


def run(cfg, df):
    res = simulate(cfg, df)
    return res, res.requests.set_index("request_id")


def check(r, rid, scheduled=None, first=None, done=None):
    row = r.loc[rid]
    assert row.outcome == "completed", (rid, row.outcome)
    assert row.generated_tokens == row.output_tokens
    for col, want in (("first_scheduled_s", scheduled), ("first_token_s", first),
                      ("completion_s", done)):
        if want is not None:
            assert row[col] == pytest.approx(want, rel=1e-9, abs=1e-12), (rid, col)


FAST = pytest.mark.parametrize("fast", [True, False], ids=["ff", "step"])


# ----------------------------------------------------------------------------------- vLLM
@FAST
def test_vllm_prefill_pauses_running_decode(fast):
    """R1 arrives while R0 decodes: the next iteration is R1's prefill alone (R0 stalls)."""
    t1 = bt([100], [0])  # R0 prefill -> token 1
    res, r = run(cfg_for("vllm", fast=fast), trace((0.0, 100, 3), (t1 + EPS, 200, 2)))
    t2 = t1 + dec(100)  # R0 token 2 (R1 arrived during this iteration)
    t3 = t2 + bt([200], [0])  # R1 prefill alone: R0 paused
    t4 = t3 + dec(101, 200)  # both decode: R0 token 3 (done), R1 token 2 (done)
    check(r, 0, 0.0, t1, t4)
    check(r, 1, t2, t3, t4)
    assert r.loc[0, "max_tbt_s"] == pytest.approx(t4 - t2, rel=1e-9)
    assert res.instances.decode_stall_s.sum() == pytest.approx(t3 - t2, rel=1e-9)
    assert res.instances.iterations.sum() == 4


@FAST
def test_vllm_batches_simultaneous_prompts_in_one_prefill(fast):
    res, r = run(cfg_for("vllm", fast=fast), trace((0.0, 100, 2), (0.0, 300, 3)))
    t1 = bt([100, 300], [0, 0])
    t2 = t1 + dec(100, 300)  # R0 done
    t3 = t2 + dec(301)
    check(r, 0, 0.0, t1, t2)
    check(r, 1, 0.0, t1, t3)
    assert res.instances.decode_stall_s.sum() == 0.0


# ----------------------------------------------------------------------------------- Sarathi
@FAST
def test_sarathi_chunks_a_1200_token_prompt_into_three_iterations(fast):
    res, r = run(cfg_for("sarathi", fast=fast, chunk_size=512, token_budget=512),
                 trace((0.0, 1200, 2)))
    t1 = bt([512], [0]) + bt([512], [512]) + bt([176], [1024])
    check(r, 0, 0.0, t1, t1 + dec(1200))
    assert res.instances.iterations.sum() == 4


@FAST
def test_sarathi_chunk_rides_along_with_decode_without_stalling(fast):
    """R1 (1000 tokens) arrives while R0 decodes: 511 + 489 token chunks next to R0's decodes."""
    t1 = bt([100], [0])
    res, r = run(cfg_for("sarathi", fast=fast, chunk_size=512, token_budget=512),
                 trace((0.0, 100, 4), (t1 + EPS, 1000, 2)))
    t2 = t1 + dec(100)  # R0 token 2
    t3 = t2 + bt([511, 1], [0, 101])  # budget 512 - 1 decode = 511 for R1's chunk; R0 token 3
    t4 = t3 + bt([489, 1], [511, 102])  # R1's last chunk -> its token 1; R0 token 4 (done)
    t5 = t4 + dec(1000)
    check(r, 0, 0.0, t1, t4)
    check(r, 1, t2, t4, t5)
    assert r.loc[0, "max_tbt_s"] == pytest.approx(max(t3 - t2, t4 - t3), rel=1e-9)
    assert res.instances.decode_stall_s.sum() == 0.0  # stall-free


@FAST
def test_sarathi_budget_is_shared_by_two_new_prompts(fast):
    """Budget 512, chunk 300: R0 takes 300, R1 the remaining 212, then R1 finishes its 88."""
    _, r = run(cfg_for("sarathi", fast=fast, chunk_size=300, token_budget=512),
                 trace((0.0, 300, 2), (0.0, 300, 2)))
    t1 = bt([300, 212], [0, 0])  # R0 prompt done -> token 1
    t2 = t1 + bt([88, 1], [212, 300])  # R1's rest + R0 decode (done)
    t3 = t2 + dec(300)
    check(r, 0, 0.0, t1, t2)
    check(r, 1, 0.0, t2, t3)


# ----------------------------------------------------------------------------------- Orca
@FAST
def test_orca_new_prompt_joins_the_decode_iteration(fast):
    t1 = bt([100], [0])
    res, r = run(cfg_for("orca", fast=fast), trace((0.0, 100, 3), (t1 + EPS, 200, 2)))
    t2 = t1 + dec(100)
    t3 = t2 + bt([200, 1], [0, 101])  # R1's whole prompt in the same iteration as R0's decode
    t4 = t3 + dec(200)
    check(r, 0, 0.0, t1, t3)
    check(r, 1, t2, t3, t4)
    assert res.instances.decode_stall_s.sum() == 0.0


@FAST
def test_orca_reserves_max_length_so_second_request_waits(fast):
    """8 blocks, reserve_output_tokens=64: R0 (32-token prompt) reserves blocks_for(32 + 64) = 6
    blocks although it only ever uses 3, leaving 2 < 6 for R1, which waits for R0 to finish."""
    cfg = cfg_for("orca", fast=fast, gpu_memory_utilization=util_for_blocks(8),
                  reserve_output_tokens=64, watermark=0.0)
    t1 = bt([32], [0])
    res, r = run(cfg, trace((0.0, 32, 3), (t1 + EPS, 32, 2)))
    assert res.instances.kv_blocks.iloc[0] == 8
    t3 = t1 + dec(32) + dec(33)  # R0 alone until done: R1 cannot reserve 6 blocks
    t4 = t3 + bt([32], [0])
    check(r, 0, 0.0, t1, t3)
    check(r, 1, t3, t4, t4 + dec(32))
    # vLLM pages the same cache: R1 is admitted at once (4 blocks used of 8)
    _, rv = run(cfg_for("vllm", fast=fast, gpu_memory_utilization=util_for_blocks(8),
                        watermark=0.0), trace((0.0, 32, 3), (t1 + EPS, 32, 2)))
    check(rv, 1, t1 + dec(32))


# ----------------------------------------------------------------------------------- static
@FAST
def test_static_batch_runs_to_completion_before_the_next_forms(fast):
    """R0, R1 form a batch at t=0; R2 arriving during it waits until R1 (the longest) finishes."""
    _, r = run(cfg_for("static", fast=fast), trace((0.0, 100, 2), (0.0, 50, 4), (EPS, 80, 2)))
    t1 = bt([100, 50], [0, 0])
    t2 = t1 + dec(100, 50)  # R0 done
    t4 = t2 + dec(51) + dec(52)  # R1 decodes alone to its 4th token; the batch slot stays closed
    t5 = t4 + bt([80], [0])
    check(r, 0, 0.0, t1, t2)
    check(r, 1, 0.0, t1, t4)
    check(r, 2, t4, t5, t5 + dec(80))


# ------------------------------------------------------------------------------- decode_priority
@FAST
def test_decode_priority_prompt_waits_for_token_budget_not_pausing_decodes(fast):
    """max_batched_tokens 300: R2 (299 tokens) does not fit next to 2 decodes (298 left); it
    joins when R0 finishes, in the same iteration as R1's decode. vLLM would pause both."""
    cfg = cfg_for("decode_priority", fast=fast, max_batched_tokens=300)
    res, r = run(cfg, trace((0.0, 100, 3), (0.0, 100, 5), (EPS, 299, 2)))
    t1 = bt([100, 100], [0, 0])
    t3 = t1 + dec(100, 100) + dec(101, 101)  # R0 done
    t4 = t3 + bt([299, 1], [0, 102])  # R2's prompt + R1's decode
    t5 = t4 + dec(103, 299)  # R1 token 5 and R2 token 2: both done
    check(r, 0, 0.0, t1, t3)
    check(r, 1, 0.0, t1, t5)
    check(r, 2, t3, t4, t5)
    assert res.instances.decode_stall_s.sum() == 0.0


@FAST
def test_vllm_same_workload_pauses_decodes_for_the_prompt(fast):
    res, r = run(cfg_for("vllm", fast=fast, max_batched_tokens=300),
                 trace((0.0, 100, 3), (0.0, 100, 5), (EPS, 299, 2)))
    t1 = bt([100, 100], [0, 0])
    t2 = t1 + bt([299], [0])  # R2 prefill alone, R0 and R1 stall
    t3 = t2 + dec(100, 100, 299)  # R2 done (2 tokens)
    check(r, 2, t1, t2, t3)
    assert res.instances.decode_stall_s.sum() == pytest.approx(t2 - t1, rel=1e-9)


# ----------------------------------------------------------------------------------- priorities
@pytest.mark.parametrize("policy", ["vllm", "sarathi", "orca", "static", "decode_priority"])
def test_high_priority_request_is_admitted_before_earlier_low_priority_ones(policy):
    """max_batch_size 1: R1, R2 (priority 0) and R3 (priority 1) queue behind R0; R3 runs next."""
    cfg = cfg_for(policy, max_batch_size=1)
    _, r = run(cfg, trace((0.0, 100, 3), (EPS, 100, 2), (2 * EPS, 100, 2), (3 * EPS, 100, 2, 1)))
    t0 = bt([100], [0]) + dec(100) + dec(101)  # R0 alone (sarathi: 100 < chunk, same batches)
    one = bt([100], [0]) + dec(100)  # each queued request alone: prefill + 1 decode
    check(r, 0, 0.0, None, t0)
    check(r, 3, t0, None, t0 + one)
    check(r, 1, t0 + one, None, t0 + 2 * one)
    check(r, 2, t0 + 2 * one, None, t0 + 3 * one)


# ----------------------------------------------------------------------------------- preemption
def _pressure(policy, fast, **sched):
    """9 KV blocks; two 64-token prompts (4 blocks each) that decode 40 tokens (7 blocks each).
    R1 arrives during R0's prefill. Once both hold 4 blocks, a decode step needing a 5th block
    for each finds one free: R1 (later arrival) is preempted.
    """
    cfg = cfg_for(policy, fast=fast, gpu_memory_utilization=util_for_blocks(9), watermark=0.0,
                  **sched)
    t1 = bt([64], [0])
    res, r = run(cfg, trace((0.0, 64, 40), (EPS, 64, 40)))
    assert res.instances.kv_blocks.iloc[0] == 9
    return res, r, t1


@FAST
def test_vllm_preemption_by_recompute(fast):
    res, r, t1 = _pressure("vllm", fast, preemption="recompute")
    t2 = t1 + bt([64], [0])  # R1 prefill (R0 paused): R1 token 1
    t3 = t2 + decode_alone(64, 39)  # R1 preempted at t2; R0 decodes tokens 2..40 alone
    t4 = t3 + bt([65], [0])  # R1 recompute: prompt + 1 generated token -> token 2
    t5 = t4 + decode_alone(65, 38)  # tokens 3..40
    check(r, 0, 0.0, t1, t3)
    check(r, 1, t1, t2, t5)
    assert list(r.preemptions) == [0, 1]
    assert r.loc[1, "max_tbt_s"] == pytest.approx(t4 - t2, rel=1e-9)
    assert res.instances.swaps.sum() == 0


@FAST
def test_vllm_preemption_by_swap_charges_pcie_transfers(fast):
    res, r, t1 = _pressure("vllm", fast, preemption="swap", swap_space_gb=1.0, host_link_gbs=10.0)
    xfer = 4 * 16 * get_model(MODEL).kv_bytes_per_token(1) / 10e9  # 4 blocks over 10 GB/s
    t2 = t1 + bt([64], [0])
    t3 = t2 + xfer + decode_alone(64, 39)  # swap-out charged to R0's next iteration
    t5 = t3 + xfer + decode_alone(64, 39)  # swap-in, then R1 resumes with its KV (no recompute)
    check(r, 0, 0.0, t1, t3)
    check(r, 1, t1, t2, t5)
    assert list(r.preemptions) == [0, 1]
    assert res.instances.swaps.sum() == 1
    assert r.loc[1, "max_tbt_s"] == pytest.approx(t3 + xfer + dec(64) - t2, rel=1e-9)


@FAST
def test_swap_without_host_space_falls_back_to_recompute(fast):
    res, r, t1 = _pressure("vllm", fast, preemption="swap", swap_space_gb=0.0)
    t3 = t1 + bt([64], [0]) + decode_alone(64, 39)
    check(r, 1, None, None, t3 + bt([65], [0]) + decode_alone(65, 38))
    assert res.instances.swaps.sum() == 0 and r.preemptions.sum() == 1


@FAST
def test_sarathi_preemption_recomputes_prompt_plus_generated_in_chunks(fast):
    """Same pressure under Sarathi (chunk 512): R1's 64-token prompt rides with R0's decode, then
    the recompute of 65 tokens runs as one chunk once R0 is done."""
    res, r, t1 = _pressure("sarathi", fast, chunk_size=512, token_budget=512)
    t2 = t1 + bt([64, 1], [0, 64])  # R1 prompt + R0 decode: R0 token 2 (5th block), R1 token 1
    # all 9 blocks used; the next step R1 (64 cached) needs a 5th block, R0 (65) not: preempt R1
    t3 = t2 + decode_alone(65, 38)  # R0 tokens 3..40
    t4 = t3 + bt([65], [0])
    check(r, 0, 0.0, t1, t3)
    check(r, 1, t1, t2, t4 + decode_alone(65, 38))
    assert list(r.preemptions) == [0, 1]
    assert math.isclose(res.instances.decode_stall_s.sum(), 0.0)


@FAST
def test_equal_arrivals_preempt_the_most_recently_joined(fast):
    """R0 and R1 arrive together and share one prefill; on the shortage the later in the running
    queue (R1) is preempted, as vLLM pops the tail of its running queue."""
    cfg = cfg_for("vllm", fast=fast, gpu_memory_utilization=util_for_blocks(9), watermark=0.0)
    _, r = run(cfg, trace((0.0, 64, 40), (0.0, 64, 40)))
    t1 = bt([64, 64], [0, 0])
    t3 = t1 + decode_alone(64, 39)
    check(r, 0, 0.0, t1, t3)
    check(r, 1, 0.0, t1, t3 + bt([65], [0]) + decode_alone(65, 38))
    assert list(r.preemptions) == [0, 1]


@FAST
def test_sarathi_admits_a_prompt_only_if_it_can_finish(fast):
    """9 blocks, chunk 64, two 100-token prompts (7 blocks each). Admitting R1's first chunk next
    to R0's would leave both half-prefilled with 1 block free and nothing able to run (a
    deadlock, seen before the fix); R1 must wait until R0 has finished and freed its blocks."""
    cfg = cfg_for("sarathi", fast=fast, gpu_memory_utilization=util_for_blocks(9), watermark=0.0,
                  chunk_size=64, token_budget=512)
    _, r = run(cfg, trace((0.0, 100, 10), (0.0, 100, 10)))
    prefill = bt([64], [0]) + bt([36], [64])
    t0 = prefill + decode_alone(100, 9)
    check(r, 0, 0.0, prefill, t0)
    check(r, 1, t0, t0 + prefill, 2 * t0)
