"""Planner: the cheapest heterogeneous GPU allocation that meets TTFT/TPOT SLOs.

Pipeline (see docs/planner.md): bucket a trace into request-size slices (``slices``), measure
each instance type's maximum SLO-compliant rate per slice by simulation (``capacity``, cached on
disk, run in parallel by ``parallel``), solve the Mélange ILP (``ilp``), and prove the plan by
re-simulating the mixed cluster with a size-aware router (``verify``, ``routing``), searching
cheapest-first for more capacity while the simulated attainment falls short (``prove``).
``pipeline.make_plan`` runs it all; ``cli`` is ``goodput plan``. ``design_search`` searches the
cluster-wide choices beside the GPU mix (batching policy, token budget, speculation,
disaggregated pools: ``design_space``, ``design_disagg``), pruning designs by ILP bounds from
coarse capacities and proving every finalist with ``make_plan``.
"""
from goodput.planner.errors import PlannerError

__all__ = ["PlannerError"]
