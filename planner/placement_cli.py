"""``goodput plan --disaggregated``: the DistServe placement search from the command line.

``add_disagg_arguments(parser)`` adds the options to ``plan``; ``cmd_plan_disagg(args)`` runs
goodput.planner.placement.search_placement on the trace's lengths for the trace's mean rate (or
``--rate``), or for the best per-GPU rate within ``--max-gpus``, prints the per-phase capacity
table and the verified design, and writes ``placement.yaml``: a config ``goodput simulate``
runs as it is (cluster with prefill and decode pools, network, SLO).
"""
from __future__ import annotations

import time
from pathlib import Path

from goodput.planner.errors import PlannerError

KV_MODES = ("after_prefill", "layer_by_layer", "pull")


def add_disagg_arguments(p) -> None:
    g = p.add_argument_group("disaggregated prefill/decode (DistServe placement)")
    g.add_argument("--disaggregated", action="store_true",
                   help="plan prefill and decode pools apart: per-phase TP search by simulation "
                        "(--gpus PREFILL[,DECODE]; --tp is ignored: every divisor of the heads "
                        "up to 8 is tried)")
    g.add_argument("--max-gpus", type=int,
                   help="with --disaggregated: best per-GPU rate within this many GPUs instead "
                        "of the fewest GPUs for the trace's rate")
    g.add_argument("--max-pp", type=int, default=1,
                   help="with --disaggregated: also try pipeline-parallel stages up to this many "
                        "per phase (divisors of the layers; default 1)")
    g.add_argument("--kv-transfer", choices=KV_MODES, default="layer_by_layer",
                   help="with --disaggregated: how KV moves (default layer_by_layer)")


def design_yaml(task, design, rate: float) -> dict:
    """A runnable config for ``design`` at ``rate`` (synthetic arrivals of the task's policy)."""
    groups = [("prefill", design.prefill, design.n_prefill), ("decode", design.decode,
                                                               design.n_decode)]
    return {"cluster": [{"model": task.model, "gpu": c.gpu, "tp": c.tp, "pp": c.pp, "count": n, "role": role,
                         "name": f"{role}-pool", "policy": task.policy} for role, c, n in groups],
            "router": {"name": "least_outstanding_tokens"},
            "network": {"kv_transfer": task.kv_transfer, "decode_dispatch": "least_loaded"},
            "cost_model": {"kind": task.cost_model},
            "slo": {"ttft_s": task.ttft_s, "tpot_s": task.tpot_s,
                    "attainment_target": task.attainment}}


def cmd_plan_disagg(args, gpus: list[str], load_planning_trace) -> int:
    """``gpus``: the parsed --gpus list; ``load_planning_trace``: goodput.planner.cli's trace loader
    (passed in, so this module does not import goodput.planner.cli, which imports it)."""
    from goodput.planner.placement import PlacementTask, search_placement

    t0 = time.perf_counter()
    if len(gpus) not in (1, 2):
        raise PlannerError(f"--disaggregated --gpus takes PREFILL_GPU[,DECODE_GPU], got {args.gpus!r}")
    from goodput.sim.catalog import get_gpu
    try:
        gpus = [get_gpu(g).name for g in gpus]
    except ValueError as exc:
        raise PlannerError(f"--gpus: {exc}") from None
    if args.max_gpus is not None and args.max_gpus < 2:
        raise PlannerError(f"--max-gpus={args.max_gpus}: a prefill and a decode instance need >= 2")
    trace = load_planning_trace(args.trace, args.trace_format, args.rate, args.max_requests,
                                args.seed)
    if len(trace) < 2 or trace.duration_s <= 0:
        raise PlannerError(f"--trace {args.trace}: needs >= 2 requests spread over time to have "
                           "a rate (or give --rate)")
    rate = len(trace) / trace.duration_s
    task = PlacementTask(
        model=args.model, prefill_gpu=gpus[0], decode_gpu=gpus[-1],
        lengths=trace.df[["prompt_tokens", "output_tokens"]].to_numpy(),
        ttft_s=args.ttft_slo, tpot_s=args.tpot_slo, attainment=args.attainment,
        policy=args.policy, cost_model=args.cost_model, kv_transfer=args.kv_transfer,
        min_requests=min(args.min_probe_requests, args.max_probe_requests),
        max_requests=args.max_probe_requests, rel_tol=args.rel_tol, seed=args.seed,
        max_pp=args.max_pp)
    log = lambda s: print(f"[placement] {s}", flush=True)  # noqa: E731
    target = None if args.max_gpus is not None else rate
    res = search_placement(task, target_rate=target, max_gpus=args.max_gpus,
                           verify_rounds=0 if args.no_verify else args.verify_rounds, log=log)
    print("\nper-phase capacity (one instance):")
    print(res.table().to_string(index=False))
    d, c = res.design, res.check
    want = target if target is not None else d.rate
    print(f"\ndesign: {d.text()}; per-phase capacities sustain {d.rate:.3f} req/s "
          f"= {d.per_gpu:.3f} req/s per GPU")
    if c is not None:
        print(f"verified at {want:.3f} req/s: attainment {c.attainment:.1%} (TTFT "
              f"{c.ttft_attainment:.1%}, TPOT {c.tpot_attainment:.1%}; p90 TTFT "
              f"{c.ttft_p90 * 1e3:.0f} ms, TPOT {c.tpot_p90 * 1e3:.1f} ms)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    head = (f"# goodput plan --disaggregated: {d.text()}, designed for {want:.4g} req/s\n"
            f"# run it: goodput simulate --config placement.yaml --trace {args.trace}\n")
    import yaml  # here, not at the top: `goodput plan --help` stays light

    (out / "placement.yaml").write_text(head + yaml.safe_dump(design_yaml(task, d, want),
                                                              sort_keys=False))
    res.table().to_csv(out / "phase_capacity.csv", index=False)
    print(f"\nplacement written to {(out / 'placement.yaml').resolve()} "
          f"({time.perf_counter() - t0:.1f} s end to end)")
    return 0 if c is None or c.meets(task.attainment) else 1
