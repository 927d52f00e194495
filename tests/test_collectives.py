"""Measured TP collectives: the gloo sweep and CLI (the NCCL code path on the CPU), the
latency/bandwidth fit, the interpolating table, and the profiled cost model's use of it."""
from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import pytest

from goodput.sim.costmodel.collectives import (
    COLUMNS,
    OPS,
    CollectiveCurve,
    CollectivesTable,
    bus_factor,
    collectives_path,
    fit_latency_bandwidth,
    formula_s,
)
from goodput.sim.costmodel.profiled import PROFILES_ROOT, ProfiledCostModel, ring_allreduce_s

REPO = Path(__file__).resolve().parents[1]
SIZES = [1 << p for p in range(10, 29)]  # 1 KiB .. 256 MiB


# ---- measuring (gloo, 2-3 CPU processes) ------------------------------------------------------
def test_cli_sweeps_every_op_and_size_and_writes_table_with_provenance(tmp_path):
    from goodput.profiler.cli import main as profile_main

    rc = profile_main(["profile", "collectives", "--world", "2", "--device", "cpu",
                       "--sizes", "1K,4K,64K", "--rounds", "3", "--out", str(tmp_path)])
    assert rc == 0
    path = collectives_path(tmp_path, "cpu", 2)
    with path.open() as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == COLUMNS
        rows = list(reader)
    got = {(r["op"], int(r["bytes"])) for r in rows}
    assert got == {(op, n) for op in OPS for n in (1024, 4096, 65536)}  # float32: exact sizes
    for r in rows:
        assert int(r["world"]) == 2
        p10, med, p90 = (float(r[k]) for k in ("p10_s", "median_s", "p90_s"))
        assert 0 < p10 <= med <= p90 < 1.0, r
    prov = json.loads(path.with_suffix(".provenance.json").read_text())
    for key in ("date_utc", "command", "torch", "driver", "cuda", "device_name", "git_commit"):
        assert key in prov, key
    assert prov["backend"] == "gloo" and prov["world"] == 2
    assert set(prov["fit"]) == set(OPS)
    table = CollectivesTable.from_csv(path)  # what the cost model loads
    assert table.world == 2 and table.date == prov["date_utc"][:10]
    assert table.time("all_reduce", 4096) > 0


def test_odd_world_sweep_idles_the_unpaired_rank_and_rounds_gather_sizes():
    from goodput.profiler.collectives import measure_collectives

    rows = measure_collectives(3, backend="gloo", sizes=[1000, 1 << 14],
                               ops=("all_gather", "send_recv"), rounds=3)
    by = {(r["op"], r["bytes"]): r for r in rows}
    # all_gather bytes = gathered output, a whole number of float32 elements per rank
    assert set(by) == {("all_gather", 996), ("all_gather", 16380),
                       ("send_recv", 1000), ("send_recv", 1 << 14)}
    assert all(r["world"] == 3 and r["median_s"] > 0 for r in rows)


def test_too_few_gpus_and_bad_arguments_name_the_fix():
    import torch

    from goodput.profiler.cli import _parse_bytes
    from goodput.profiler.collectives import measure_collectives

    if torch.cuda.device_count() < 4:
        with pytest.raises(ValueError, match=r"needs 4 GPUs.*nvidia-h200-x4"):
            measure_collectives(4, backend="nccl")
    with pytest.raises(ValueError, match="at least 2"):
        measure_collectives(1, backend="gloo")
    with pytest.raises(ValueError, match="unknown collective"):
        measure_collectives(2, backend="gloo", ops=("broadcast",))
    assert [_parse_bytes(s) for s in ("4096", "64K", "1M", "256MiB")] == [
        4096, 65536, 1 << 20, 256 << 20]
    with pytest.raises(ValueError, match="K/M/G"):
        _parse_bytes("lots")


def test_measuring_path_needs_no_simpy_and_the_simulator_side_no_torch():
    code = ("import sys\n"
            "import goodput.sim.costmodel.collectives, goodput.sim.costmodel.profiled\n"
            "assert 'torch' not in sys.modules, 'sim side imports torch'\n"
            "import goodput.profiler.collectives, goodput.profiler.cli, goodput.profiler.provenance\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('simpy', 'pulp'))\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


# ---- fit -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("world", [2, 4, 8])
def test_fit_recovers_latency_and_bandwidth_from_the_formula(op, world):
    lat, bw = 7.5e-6, 3.6e11
    times = [formula_s(op, n, world, lat, bw) for n in SIZES]
    got_lat, got_bw = fit_latency_bandwidth(op, world, SIZES, times)
    assert got_lat == pytest.approx(lat, rel=1e-9)
    assert got_bw == pytest.approx(bw, rel=1e-9)


def test_fit_is_relative_and_constrained():
    # +-3% alternating noise: a relative fit still finds the latency that dominates small sizes
    # (a plain least squares would be ruled by the 256 MiB points and could miss it by far)
    lat, bw = 2e-5, 1e11
    times = [formula_s("all_reduce", n, 2, lat, bw) * (1.03 if i % 2 else 0.97)
             for i, n in enumerate(SIZES)]
    got_lat, got_bw = fit_latency_bandwidth("all_reduce", 2, SIZES, times)
    assert got_lat == pytest.approx(lat, rel=0.05) and got_bw == pytest.approx(bw, rel=0.05)
    # pure bandwidth: latency clamps at 0 instead of going negative
    times = [n / 5e10 * (1.0 + 0.01 * (i % 3)) for i, n in enumerate(SIZES)]
    got_lat, got_bw = fit_latency_bandwidth("send_recv", 2, SIZES, times)
    assert got_lat >= 0 and got_bw == pytest.approx(5e10, rel=0.03)
    # flat (latency-bound only): no size term
    got_lat, got_bw = fit_latency_bandwidth("all_gather", 4, [1024, 2048, 4096], [1e-5] * 3)
    assert got_lat == pytest.approx(1e-5) and math.isinf(got_bw)
    assert bus_factor("all_reduce", 8) == pytest.approx(1.75)
    assert bus_factor("all_gather", 8) == pytest.approx(0.875)


# ---- interpolation -------------------------------------------------------------------------------
def _nccl_like(n):
    """Not the formula: a latency plateau with protocol steps, then bandwidth-bound."""
    return (6e-6 if n <= 8192 else 9e-6 if n <= 65536 else 1.2e-5) + n / 3e11


def test_curve_is_exact_at_measured_points_linear_between_and_monotone():
    sizes = SIZES[:12]  # up to 2 MiB; beyond it the fitted bandwidth continues the table
    times = [_nccl_like(n) for n in sizes]
    c = CollectiveCurve("all_reduce", 2, sizes, times)
    assert [c(n) for n in sizes] == times  # exact, not approximately
    assert c(1.5 * sizes[3]) == pytest.approx((times[3] + times[4]) / 2)
    assert c(1) == times[0]  # below the table: the smallest message's time
    beyond = 4 * sizes[-1]
    assert c(beyond) == pytest.approx(times[-1] + (beyond - sizes[-1]) * 1.0 / c.bus_bytes_per_s)
    grid = [1] + [int(1.13 ** k) for k in range(20, 180)]
    vals = [c(n) for n in grid]
    assert all(b >= a for a, b in pairwise(vals))
    # noisy measurements (4 KiB measured faster than 2 KiB) still give a monotone curve
    noisy = list(times)
    noisy[2] = times[1] * 0.9
    c2 = CollectiveCurve("all_reduce", 2, sizes, noisy)
    vals = [c2(n) for n in grid]
    assert all(b >= a for a, b in pairwise(vals))
    assert c2(sizes[6]) == times[6]  # untouched away from the violation
    with pytest.raises(ValueError, match="twice"):
        CollectiveCurve("all_reduce", 2, [1024, 1024], [1e-5, 2e-5])


# ---- the profiled cost model ---------------------------------------------------------------------
SHIPPED_TP2 = PROFILES_ROOT / "h200" / "llama-3.1-70b" / "tp2"


@pytest.fixture
def tp2_root(tmp_path):
    """A profiles root holding one shipped TP2 fit (and no collectives table yet)."""
    if not (SHIPPED_TP2 / "fit.json").exists():
        pytest.skip("shipped h200 llama-3.1-70b tp2 profile not present")
    d = tmp_path / "h200" / "llama-3.1-70b" / "tp2"
    d.mkdir(parents=True)
    shutil.copy(SHIPPED_TP2 / "fit.json", d / "fit.json")
    return tmp_path, d


def _write_table(root, world, rows, date="2026-11-30T10:00:00+00:00"):
    path = collectives_path(root, "h200", world)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for op, n, t in rows:
            w.writerow([op, world, n, t, t * 0.95, t * 1.1])
    path.with_suffix(".provenance.json").write_text(json.dumps({"date_utc": date}))
    return path


def test_profiled_model_uses_the_measured_allreduce_table(tp2_root):
    from goodput.sim.costmodel.base import Batch

    root, d = tp2_root
    est = ProfiledCostModel.from_dir(d)
    assert est.collectives is None
    # issue 16: the fit's old 10 us estimate is replaced by the measured-floor rule, and says so
    assert est.fit["allreduce"]["source"] in est.describe()["allreduce_source"]
    assert "estimated" in est.describe()["allreduce_source"]
    assert est.ar[1] == pytest.approx(est.ar_rule.floor(2)) and est.ar[1] > 25e-6
    L, H = est.layers, est.hidden
    assert est._allreduce(64) == pytest.approx(
        (2 * L + 1) * ring_allreduce_s(64 * H * 2, 2, *est.ar))

    sizes = [H * 2 * k for k in (1, 2, 4, 8, 64, 512, 4096)]  # 1 token .. 4096 tokens
    times = [3e-5 + k * 2e-7 for k in (1, 2, 4, 8, 64, 512, 4096)]  # >> the estimate
    _write_table(root, 2, [("all_reduce", n, t) for n, t in zip(sizes, times, strict=True)]
                 + [("send_recv", 1024, 1e-5)])
    meas = ProfiledCostModel.from_dir(d)
    src = meas.describe()["allreduce_source"]
    assert src.startswith("measured from") and "collectives/tp2.csv" in src and "2026-11-30" in src
    assert "estimated" in src  # the launch-bound small sizes keep the estimate
    # from 512 tokens the messages take >= 2x the table's floor (bandwidth-bound): measured
    assert meas._ar_measured_from == sizes[5]
    for tokens in (1, 3, 64, 500):
        assert meas._allreduce(tokens) == pytest.approx(est._allreduce(tokens), rel=1e-12)
    assert meas._allreduce(512) == pytest.approx((2 * L + 1) * times[5], rel=1e-12)
    assert meas._allreduce(4096) == pytest.approx((2 * L + 1) * times[-1], rel=1e-12)
    assert meas._allreduce(4096) > est._allreduce(4096)
    assert meas._allreduce(8192) > meas._allreduce(4096)  # beyond the table: fitted bandwidth

    # decode linearity holds, and the all-reduce sits in `a` only
    ctx = [100, 2000, 37, 4096]
    a_m, b_m = meas.decode_coefficients(len(ctx))
    a_e, b_e = est.decode_coefficients(len(ctx))
    assert meas.batch_time(Batch.decode(ctx)) == a_m + b_m * sum(ctx)
    assert b_m == b_e
    assert a_m - a_e == pytest.approx(meas._allreduce(4) - est._allreduce(4), rel=1e-9)
    # a long prefill pays the measured all-reduce of its token count
    long = Batch([4096], [0])
    assert meas.batch_time(long) - est.batch_time(long) == pytest.approx(
        meas._allreduce(4096) - est._allreduce(4096), rel=1e-9)


def test_bandwidth_bound_region_starts_above_the_launch_floor():
    from goodput.sim.costmodel.collectives import CollectiveCurve

    sizes = [2 ** k for k in range(10, 29, 2)]
    # eager sweep: a noisy ~30 us floor up to 4 MiB, then bandwidth-bound
    times = [47e-6, 44e-6, 85e-6, 28e-6, 30e-6, 31e-6, 38e-6, 75e-6, 248e-6, 906e-6]
    c = CollectiveCurve("all_reduce", 2, sizes, times)
    assert c.bandwidth_bound_from() == 2 ** 24  # 16 MiB: 75 us >= 2 x 28 us, and all above
    flat = CollectiveCurve("all_reduce", 2, sizes, [30e-6] * len(sizes))
    assert flat.bandwidth_bound_from() == float("inf")  # never bandwidth-bound: never used


def test_profiled_model_falls_back_or_refuses_a_wrong_table(tp2_root, tmp_path_factory):
    root, d = tp2_root
    # a table for another TP degree is not used for tp2
    _write_table(root, 4, [("all_reduce", 1024, 1e-5), ("all_reduce", 4096, 2e-5)])
    assert ProfiledCostModel.from_dir(d).collectives is None
    # a tp2 table without all-reduce rows leaves the estimate
    _write_table(root, 2, [("all_gather", 1024, 1e-5)])
    assert "estimated" in ProfiledCostModel.from_dir(d).describe()["allreduce_source"]
    # explicit root elsewhere
    other = tmp_path_factory.mktemp("other")
    _write_table(other, 2, [("all_reduce", 1024, 1e-5), ("all_reduce", 4096, 2e-5)])
    assert ProfiledCostModel.from_dir(d, collectives_root=other).collectives is not None
    # rows of another world size inside tp2.csv: a clear error, not a silent mix-up
    path = _write_table(root, 2, [("all_reduce", 1024, 1e-5)])
    with path.open("a") as f:
        f.write("all_reduce,4,2048,2e-5,2e-5,2e-5\n")
    with pytest.raises(ValueError, match="world"):
        ProfiledCostModel.from_dir(d)
