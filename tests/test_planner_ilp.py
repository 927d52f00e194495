"""The Mélange ILP on instances small enough to solve by hand."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from goodput.planner.baselines import best_single_type, savings, single_type_table
from goodput.planner.errors import PlannerError
from goodput.planner.ilp import InstanceType, single_type_counts, solve

# A: $1/h, 100 W, serves only small requests (10 req/s); B: $3/h, 400 W, 30 small or 10 big req/s
A = InstanceType("a", 1, 1.0, 100.0)
B = InstanceType("b", 1, 3.0, 400.0)
RATES = {"small": 25.0, "big": 5.0}
CAP = {"small": {"a-tp1": 10.0, "b-tp1": 30.0}, "big": {"a-tp1": 0.0, "b-tp1": 10.0}}


def test_mix_beats_single_type_by_hand():
    # big needs half a B. B alone: 25/30 + 5/10 = 1.33 -> 2 B = $6. Mixed: the B's free half
    # carries 15 small req/s, one A the other 10 -> 1 A + 1 B = $4.
    sol = solve([A, B], RATES, CAP)
    assert sol.counts == {"a-tp1": 1, "b-tp1": 1}
    assert sol.cost_per_hour == pytest.approx(4.0)
    assert sol.shares["big"] == {"b-tp1": pytest.approx(1.0)}
    assert sol.shares["small"]["a-tp1"] == pytest.approx(0.4)
    assert sol.shares["small"]["b-tp1"] == pytest.approx(0.6)
    assert sol.load == {"a-tp1": pytest.approx(1.0), "b-tp1": pytest.approx(1.0)}
    assert sol.power_w == pytest.approx(500.0)
    t, single = best_single_type([A, B], RATES, CAP)
    assert t is B and single.counts == {"b-tp1": 2}
    assert savings(sol.cost_per_hour, single.cost_per_hour) == pytest.approx(1 / 3)
    table = single_type_table([A, B], RATES, CAP)
    assert "no GPU configuration meets the SLO for slice big" in table.loc[0, "why_not"]
    assert single_type_counts(B, RATES, CAP) == 2 and single_type_counts(A, RATES, CAP) is None


def test_whole_assignment_needs_slice_factor():
    # slices assigned whole: small on A (3 A) + big on B (1 B), or all on B (2 B): both $6.
    assert solve([A, B], RATES, CAP, assignment="whole").cost_per_hour == pytest.approx(6.0)
    # split small into 5 slices of 5 req/s: 3 fit the B's free half, 2 fill one A -> $4 again
    rates = {"big": 5.0, **{f"small#{k}": 5.0 for k in range(5)}}
    cap = {"big": CAP["big"], **{f"small#{k}": CAP["small"] for k in range(5)}}
    sol = solve([A, B], rates, cap, assignment="whole")
    assert sol.cost_per_hour == pytest.approx(4.0)
    assert all(len(sh) == 1 for sh in sol.shares.values())


def test_availability_and_power_limits():
    sol = solve([A, B], RATES, CAP, availability={"a": 0})
    assert sol.counts == {"b-tp1": 2}
    # 450 W: 1 A + 1 B draws 500 W, 2 B 800 W -> infeasible, and the power budget is named
    with pytest.raises(PlannerError, match=r"power budget of 450 W binds.*500 W"):
        solve([A, B], RATES, CAP, power_budget_w=450)
    assert solve([A, B], RATES, CAP, power_budget_w=500).cost_per_hour == pytest.approx(4.0)
    # only B serves 'big'; with no B GPUs the availability is what binds
    with pytest.raises(PlannerError, match=r"availability binds.*b: 1 GPUs wanted, 0 available"):
        solve([A, B], RATES, CAP, availability={"b": 0})
    with pytest.raises(PlannerError, match="availability names GPU 'h100'"):
        solve([A, B], RATES, CAP, availability={"h100": 3})


def test_tp_degrees_are_separate_types_sharing_availability():
    # rates small 25, big 15. B-tp2 ($6, 2 GPUs) serves 3x B-tp1: 25/90 + 15/30 < 1 -> 1 = $6;
    # B-tp1 alone needs 25/30 + 15/10 = 2.33 -> 3 = $9; 2 B-tp1 + 1 A (big 1.5 B, the free
    # half carries 15 small, A the other 10) = $7. So TP-2 wins at $6.
    b2 = InstanceType("b", 2, 3.0, 400.0)
    rates = {"small": 25.0, "big": 15.0}
    cap = {s: {**c, "b-tp2": 3 * c["b-tp1"]} for s, c in CAP.items()}
    sol = solve([A, B, b2], rates, cap)
    assert sol.counts == {"b-tp2": 1} and sol.cost_per_hour == pytest.approx(6.0)
    # availability counts GPUs: 3 B GPUs fit one TP-2 instance; 1 does not, and 1 B-tp1 plus
    # any number of A cannot carry 15 big req/s
    assert solve([A, B, b2], rates, cap, availability={"b": 3}).counts == {"b-tp2": 1}
    with pytest.raises(PlannerError, match=r"availability binds.*b: 2 GPUs wanted, 1 available"):
        solve([A, B, b2], rates, cap, availability={"b": 1})


def test_infeasible_slice_and_zero_rate_errors():
    cap = {"small": CAP["small"], "big": {"a-tp1": 0.0, "b-tp1": 0.0}}
    reasons = {"big": {"a-tp1": "TTFT p90 at zero load 900 ms > SLO 500 ms",
                       "b-tp1": "TPOT p90 at zero load 60 ms > SLO 40 ms"}}
    with pytest.raises(PlannerError, match=r"slice big \(5 req/s\): a-tp1: TTFT p90.*b-tp1: TPOT"):
        solve([A, B], RATES, cap, reasons=reasons)
    with pytest.raises(PlannerError, match="zero-rate workload"):
        solve([A, B], {"small": 0.0}, CAP)
    with pytest.raises(PlannerError, match="solver='gurobi'"):
        solve([A, B], RATES, CAP, solver="gurobi")


def test_highs_when_available_else_clear_error():
    import pulp
    if pulp.HiGHS(msg=False).available():
        assert solve([A, B], RATES, CAP, solver="highs").cost_per_hour == pytest.approx(4.0)
    else:
        with pytest.raises(PlannerError, match="highspy"):
            solve([A, B], RATES, CAP, solver="highs")
        assert solve([A, B], RATES, CAP, solver="auto").solver == "cbc"


def test_benchmark_instance_solves():
    """The 8 x 64 instance of benchmarks/plan_speed.py is feasible and solved to optimality."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "plan_speed.py"
    spec = importlib.util.spec_from_file_location("plan_speed", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["plan_speed"] = mod
    spec.loader.exec_module(mod)
    types, rates, cap = mod.ilp_instance()
    assert len(types) == 8 and len(rates) == 64
    sol = solve(types, rates, cap)
    assert sol.status == "Optimal"
    for sh in sol.shares.values():
        assert sum(sh.values()) == pytest.approx(1.0)
    for g, n in sol.counts.items():
        assert sol.load[g] <= n + 1e-6
