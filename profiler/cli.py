"""``goodput profile ...``: run / fit / report / calibrate / bandwidth / collectives.

Imports of torch and the measuring code happen inside the handlers, so the ``goodput`` command
starts fast and works without torch for everything but ``profile run``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from goodput.sim.costmodel.profile_store import PROFILES_ROOT

#: where profiles are written by default: the directory the cost model reads them from
DEFAULT_ROOT = PROFILES_ROOT


def require_device(device: str, command: str, cpu_hint: str = "--device cpu") -> None:
    """One clear line instead of a traceback deep in torch when ``device`` cannot be used."""
    try:
        import torch
    except ImportError:
        raise ValueError(f"profile {command} measures with torch, which is not installed; "
                         "pip install 'goodput[profiler]' (or torch) first") from None
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"profile {command}: no CUDA GPU is visible to torch (--device "
                         f"defaults to cuda); run it on a GPU machine, or pass {cpu_hint}")


def _cmd_run(args) -> int:
    from goodput.profiler.fit import fit_profile
    from goodput.profiler.run import RunConfig, run_profile

    models = [m.strip() for m in args.model.split(",") if m.strip()]
    if not models:
        raise ValueError("--model: give one model name or a comma-separated list")
    require_device(args.device, "run", "--device cpu --model tiny-cpu --quick for the CPU mode")
    for m in models:
        cfg = RunConfig(model=m, tp=args.tp, gpu_name=args.gpu_name, device=args.device,
                        out_root=Path(args.out), quick=args.quick, depth=args.depth,
                        seed=args.seed, budget_s=args.budget_s,
                        validate_full_depth=args.validate_full_depth,
                        progress=not args.no_progress, attention=args.attention,
                        only=tuple(x for x in args.only.split(',') if x))
        out = run_profile(cfg)
        print(f"profile written to {out}")
        if not args.no_fit:
            rep = fit_profile(out, seed=args.seed)
            h = rep["heldout"]
            print(f"  held-out error: median {h.get('median_pct')}%  P95 {h.get('p95_pct')}% "
                  f"({h.get('n')} points)")
    return 0


def _cmd_bandwidth(args) -> int:
    require_device(args.device, "bandwidth")
    from goodput.profiler.run import run_copy_bandwidth

    print(f"copy bandwidth written to {run_copy_bandwidth(args.device, args.gpu_name, args.out)}")
    return 0


def _parse_bytes(text: str) -> int:
    """'4096', '64K', '1M', '256MiB' -> bytes (binary multiples)."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(t[-1:], 1)
    try:
        n = int(float(t[:-1] if mult > 1 else t) * mult)
    except ValueError:
        raise ValueError(f"message size '{text}': use bytes or a K/M/G suffix, e.g. 64K") from None
    if n < 1:
        raise ValueError(f"message size '{text}' must be at least 1 byte")
    return n


def _cmd_collectives(args) -> int:
    require_device(args.device, "collectives", "--device cpu (gloo)")
    from goodput.profiler.collectives import DEFAULT_SIZES, run_collectives

    if args.sizes:
        sizes = [_parse_bytes(s) for s in args.sizes.split(",") if s.strip()]
    else:
        top = _parse_bytes(args.max_size) if args.max_size else max(DEFAULT_SIZES)
        sizes = [s for s in DEFAULT_SIZES if s <= top]
        if not sizes:
            raise ValueError(f"--max-size {args.max_size} is below the smallest default size "
                             f"({min(DEFAULT_SIZES)} bytes); use --sizes")
    if args.graph:
        from goodput.profiler.collectives_graph import run_graph_collectives
        from goodput.sim.costmodel.collectives import GRAPH_OPS

        ops = tuple(o.strip() for o in (args.ops or ",".join(GRAPH_OPS)).split(",") if o.strip())
        if args.device == "cpu":
            print("note: --graph on --device cpu: CUDA graphs need a GPU, so the gloo calls are "
                  "timed eagerly and labelled timing: eager-cpu", file=sys.stderr)
        cmd = " ".join(["goodput profile collectives --graph", f"--world {args.world}",
                        f"--device {args.device}", f"--gpu-name {args.gpu_name}",
                        f"--out {args.out}", f"--ops {','.join(ops)}"]
                       + [f"--{k.replace('_', '-')} {v}" for k, v in
                          (("sizes", args.sizes), ("max_size", args.max_size),
                           ("rounds", args.rounds)) if v])
        path = run_graph_collectives(args.world, args.device, args.gpu_name, Path(args.out),
                                     sizes, ops, args.rounds, command=cmd)
    else:
        ops = tuple(o.strip() for o in (args.ops or "all_reduce,all_gather,send_recv").split(",")
                    if o.strip())
        path = run_collectives(args.world, args.device, args.gpu_name, Path(args.out), sizes,
                               ops, args.rounds)
    print(f"collectives written to {path}")
    prov = json.loads(path.with_suffix(".provenance.json").read_text())
    for op, f in prov["fit"].items():
        bw = f"{f['bus_bytes_per_s'] / 1e9:8.1f} GB/s" if f["bus_bytes_per_s"] else "(flat)"
        print(f"  {op:<14} latency {f['latency_s'] * 1e6:8.2f} us   bus bandwidth {bw}")
    for op, why in (prov.get("ops_failed") or {}).items():
        print(f"  {op:<14} FAILED: {why}", file=sys.stderr)
    return 0


def _cmd_fit(args) -> int:
    from goodput.profiler.fit import fit_profile

    cmd = "goodput profile fit " + " ".join(sys.argv[3:]) if len(sys.argv) > 3 else None
    for d in args.dirs:
        rep = fit_profile(Path(d), seed=args.seed, command=cmd)
        print(json.dumps({"profile": rep["profile"], "heldout": rep["heldout"],
                          "by_kind": rep["by_kind"]}, indent=1))
    return 0


def _cmd_report(args) -> int:
    from goodput.profiler.report import accuracy_table

    print(accuracy_table(Path(args.root)))
    return 0


def _cmd_calibrate(args) -> int:
    from goodput.profiler.calibrate import calibrate

    cal = calibrate(Path(args.root), gpus=args.gpus.split(",") if args.gpus else None)
    print(json.dumps({k: cal[k] for k in ("gpus", "params", "error")}, indent=1))
    return 0


def add_profile_subcommands(subparsers) -> None:
    p = subparsers.add_parser(
        "profile", help="measure a GPU and fit a profiled cost model",
        description="Measure prefill, decode, verify and mixed batch costs on this GPU, fit the "
                    "profiled cost model, and report its held-out error. See docs/profiling.md.")
    sub = p.add_subparsers(dest="profile_command", required=True)

    r = sub.add_parser("run", help="measure one or more models (resumable)")
    r.add_argument("--model", required=True, help="catalog model name(s), comma-separated; "
                   "'tiny-cpu' is the synthetic model of the CPU mode")
    r.add_argument("--tp", type=int, default=1, help="tensor-parallel degree of the shard to time")
    r.add_argument("--gpu-name", default="auto",
                   help="catalog GPU name for the output folder; 'auto' maps the device's name")
    r.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    r.add_argument("--quick", action="store_true", help="small grid (smoke tests, CPU mode)")
    r.add_argument("--out", default=str(DEFAULT_ROOT),
                   help="root folder; the profile goes to OUT/<gpu>/<model>/tp<k>/")
    r.add_argument("--depth", type=int, default=0,
                   help="distinct layers in the timed stack (0 = auto: 2 to 4, see run.auto_depth)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--budget-s", type=float, default=600.0,
                   help="stop a model after this many seconds (rerun resumes)")
    r.add_argument("--validate-full-depth", action="store_true",
                   help="also time a full-depth forward and compare (small models)")
    r.add_argument("--attention", default="fastest", choices=["fastest", "triton"],
                   help="time each batch with the faster of the Triton paged kernel and torch "
                        "SDPA (fastest), or with the Triton kernel alone")
    r.add_argument("--only", default="",
                   help="comma-separated point subkinds to measure (e.g. 'sarathi': add a new grid "
                        "section to an older profile); others missing are left and the "
                        "provenance says so")
    r.add_argument("--no-fit", action="store_true", help="measure only")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=_cmd_run)

    b = sub.add_parser("bandwidth", help="measure copy bandwidth (device-device, host-device)")
    b.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    b.add_argument("--gpu-name", default="auto")
    b.add_argument("--out", default=str(DEFAULT_ROOT), help="writes OUT/<gpu>/copy_bandwidth.csv")
    b.set_defaults(func=_cmd_bandwidth)

    co = sub.add_parser(
        "collectives", help="measure TP collectives (all-reduce, all-gather, send/recv)",
        description="One process per GPU of this host (NCCL; gloo with --device cpu). Writes "
                    "OUT/<gpu>/collectives/tp<N>.csv (--graph: tp<N>.graph.csv) and its "
                    ".provenance.json; the cost model then uses the measured all-reduce for "
                    "TP<N> of <gpu>, the graph table where both exist.")
    co.add_argument("--world", type=int, required=True,
                    help="GPUs (processes) taking part: the TP degree, e.g. 2, 4 or 8")
    co.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    co.add_argument("--gpu-name", default="auto")
    co.add_argument("--out", default=str(DEFAULT_ROOT),
                    help="writes OUT/<gpu>/collectives/tp<N>.csv")
    co.add_argument("--sizes", help="comma-separated message sizes (bytes or K/M/G), "
                    "default 1K..256M in powers of 2")
    co.add_argument("--max-size", help="largest default size to sweep, e.g. 64M")
    co.add_argument("--ops", default=None, help="comma-separated ops (default: all_reduce,"
                    "all_gather,send_recv; with --graph also reduce_scatter)")
    co.add_argument("--graph", action="store_true",
                    help="capture each size's calls in a CUDA graph and time the replays (GPU "
                         "time per call) next to the eager calls and their host launch cost; "
                         "writes tp<N>.graph.csv, which the cost model prefers. With --device "
                         "cpu the calls are timed eagerly (timing: eager-cpu)")
    co.add_argument("--rounds", type=int, default=None,
                    help="timed rounds per point (default 10 on GPUs, 5 on the CPU)")
    co.set_defaults(func=_cmd_collectives)

    f = sub.add_parser("fit", help="fit the cost model on measured profile folder(s)")
    f.add_argument("dirs", nargs="+", metavar="DIR", help="profile folder(s) with measurements.csv")
    f.add_argument("--seed", type=int, default=0, help="seed of the 20%% hold-out split")
    f.set_defaults(func=_cmd_fit)

    rp = sub.add_parser("report", help="held-out error table of every shipped profile")
    rp.add_argument("--root", default=str(DEFAULT_ROOT))
    rp.set_defaults(func=_cmd_report)

    c = sub.add_parser("calibrate", help="fit roofline efficiencies on the profiled GPUs")
    c.add_argument("--root", default=str(DEFAULT_ROOT))
    c.add_argument("--gpus", help="comma-separated GPU folders to calibrate on (default: all)")
    c.set_defaults(func=_cmd_calibrate)


def standalone(add_subcommands, argv=None) -> int:
    """A ``goodput`` entry with only some subcommands, for machines without the console script
    or without the planner's dependencies (e.g. the GPU box a profile is measured on); errors
    are reported as ``goodput`` reports them."""
    import argparse

    from goodput.sim.config import ConfigError

    parser = argparse.ArgumentParser(prog="goodput")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"goodput: error: {exc}", file=sys.stderr)
        return 2


def main(argv=None) -> int:
    """``python -m goodput.profiler.cli profile run ...`` (see ``standalone``)."""
    return standalone(add_profile_subcommands, argv)


if __name__ == "__main__":
    sys.exit(main())
