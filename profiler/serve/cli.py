"""``goodput fidelity design | run | calibrate | compare | plot | report``: sim vs real engine.

    goodput fidelity design --model llama-3.1-8b --gpu h200 --out profiler/fidelity/h200/llama-3.1-8b
    goodput fidelity run profiler/fidelity/h200/llama-3.1-8b          # on the GPU machine
    goodput fidelity compare profiler/fidelity/h200/llama-3.1-8b      # anywhere: writes fidelity.json
    goodput fidelity report profiler/fidelity                         # markdown tables for the docs
"""
from __future__ import annotations

import sys
from pathlib import Path

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / "fidelity"
AZURE_CONV = Path("../shared/traces/AzureLLMInferenceTrace_conv.csv")


def _cmd_design(args) -> int:
    from goodput.profiler.serve.fidelity import design

    if not Path(args.trace).exists():
        raise FileNotFoundError(f"--trace '{args.trace}' not found; pass a trace file with "
                                "prompt and output lengths (e.g. the Azure conversation trace)")
    cases = design(args.model, args.gpu, Path(args.out), args.trace,
                   policies=args.policies.split(","),
                   loads=[float(x) for x in args.loads.split(",")], n=args.requests,
                   seed=args.seed, max_batched_tokens=args.max_batched_tokens,
                   engine=args.engine)
    for c in cases:
        print(c)
    return 0


def _cmd_run(args) -> int:
    from goodput.profiler.serve.run_cases import run_cases

    for d in args.dirs:
        run_cases(d, args.device, max_wall_s=args.max_wall_s,
                  only=args.only.split(",") if args.only else None, attention=args.attention)
    return 0


def _cmd_derive(args) -> int:
    from goodput.profiler.serve.variants import derive, parse_overrides

    for c in derive(args.src, args.out, parse_overrides(args.set or []), args.prefix,
                    args.only.split(",") if args.only else None):
        print(c)
    return 0


def _cmd_compare(args) -> int:
    from goodput.profiler.serve.fidelity import compare
    from goodput.profiler.serve.report import case_table

    for d in args.dirs:
        print(case_table(compare(Path(d), engine=args.engine, tag=args.tag)))
    return 0


def _cmd_calibrate(args) -> int:
    from goodput.profiler.serve.calibrate import calibrate, describe, per_case
    from goodput.profiler.serve.fidelity import cases_of, load_case

    dirs = [Path(d) for d in args.dirs]
    if args.spec:
        from goodput.profiler.serve.spec_calibrate import draft_pass_check, spec_steps, step_host_check
        from goodput.sim.costmodel.engine import resolve_engine
        from goodput.sim.costmodel.profiled import PROFILES_ROOT

        print(spec_steps(dirs))
        gpu = load_case(cases_of(dirs[0])[0])[0].cluster[0].gpu
        engine = resolve_engine(args.engine, PROFILES_ROOT, gpu)
        if engine is not None:
            print(draft_pass_check(dirs, engine))
        if len(dirs) > 1:  # fitted on the first folder, scored on the others
            print(step_host_check(dirs[:1], dirs[1:]))
        return 0
    if args.residuals:
        from goodput.profiler.serve.calibrate import residuals_by_kind
        from goodput.sim.costmodel.engine import resolve_engine
        from goodput.sim.costmodel.profiled import PROFILES_ROOT

        gpu = load_case(cases_of(dirs[0])[0])[0].cluster[0].gpu
        print(residuals_by_kind(dirs, resolve_engine(args.engine, PROFILES_ROOT, gpu)))
        return 0
    if args.per_case:
        from goodput.sim.costmodel.engine import resolve_engine
        from goodput.sim.costmodel.profiled import PROFILES_ROOT

        gpu = load_case(cases_of(dirs[0])[0])[0].cluster[0].gpu
        print(per_case(dirs, resolve_engine(args.engine, PROFILES_ROOT, gpu)))
        return 0
    if not args.out:
        raise ValueError("--out is required (where to write the engine.json), or use --per-case")
    print(describe(calibrate(dirs, Path(args.out), args.name, args.per_chunk,
                             [Path(d) for d in args.holdout])))
    print(f"written to {args.out}")
    return 0


def _cmd_plot(args) -> int:
    import pandas as pd

    from goodput.profiler.serve.fidelity import load_case
    from goodput.sim.plots import plot_comparison
    from goodput.sim.simulator import simulate

    case = Path(args.case)
    cfg, trace = load_case(case)
    cfg.cost_model.engine = args.engine
    real = pd.read_csv(case / "real_requests.csv")
    sim = simulate(cfg, trace).requests
    print(plot_comparison({"real engine": real, "simulated": sim}, args.out))
    return 0


def _cmd_report(args) -> int:
    from goodput.profiler.serve.report import markdown_report

    print(markdown_report(Path(args.root)))
    return 0


def add_fidelity_subcommands(subparsers) -> None:
    p = subparsers.add_parser("fidelity", help="measure the simulator's error against real "
                                               "serving on a GPU (design / run / compare / report)")
    sub = p.add_subparsers(dest="fidelity_command", required=True)
    d = sub.add_parser("design", help="write cases: config + trace per (policy, load)")
    d.add_argument("--model", required=True)
    d.add_argument("--gpu", required=True, help="catalog GPU whose profiled cost model sets loads")
    d.add_argument("--out", required=True, help="folder for the cases of this (GPU, model)")
    d.add_argument("--trace", default=str(AZURE_CONV), help="where request lengths come from")
    d.add_argument("--policies", default="vllm,sarathi")
    d.add_argument("--loads", default="0.3,0.7,0.9", help="fractions of simulated capacity")
    d.add_argument("--requests", type=int, default=300)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--max-batched-tokens", type=int, default=8192)
    d.add_argument("--engine", default="auto", help="cost_model.engine while estimating "
                   "capacity (the committed H200 cases used 'none': no engine term existed)")
    d.set_defaults(func=_cmd_design)
    r = sub.add_parser("run", help="serve every case in real time on the GPU (writes real_*)")
    r.add_argument("dirs", nargs="+", metavar="DIR")
    r.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    r.add_argument("--only", help="comma-separated case names")
    r.add_argument("--max-wall-s", type=float, default=None,
                   help="stop a case after this long (the rest counts as unfinished)")
    r.add_argument("--attention", default="triton", choices=["triton", "fast", "flash"],
                   help="the engine's attention (profiler/serve/attention.py): triton for every "
                        "row; fast: cuDNN for whole prompts >= 1024 tokens, Triton elsewhere; "
                        "flash: the first rule tried (cuDNN prompts, FlashAttention-2 chunks)")
    r.set_defaults(func=_cmd_run)
    v = sub.add_parser("derive", help="copy cases (same traces) with config fields changed")
    v.add_argument("src", metavar="SRC_DIR", help="a model's folder of cases")
    v.add_argument("--out", required=True, help="folder for the derived cases")
    v.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="e.g. scheduler.speculation.method=fixed (repeatable)")
    v.add_argument("--prefix", default="", help="prepended to each case name")
    v.add_argument("--only", help="comma-separated case names")
    v.set_defaults(func=_cmd_derive)
    c = sub.add_parser("compare", help="simulate every served case and score the errors")
    c.add_argument("dirs", nargs="+", metavar="DIR")
    c.add_argument("--engine", default="auto",
                   help="cost_model.engine for the simulation: auto | none | engine.json path")
    c.add_argument("--tag", default="", help="write fidelity-TAG.json instead of fidelity.json")
    c.set_defaults(func=_cmd_compare)
    k = sub.add_parser("calibrate", help="fit the GPU's engine overhead on served runs' "
                                         "iteration logs (writes an engine.json)")
    k.add_argument("dirs", nargs="+", metavar="DIR")
    k.add_argument("--out", help="e.g. profiler/profiles/h200/engine.json")
    k.add_argument("--per-case", action="store_true",
                   help="print one fit per case instead (writes nothing)")
    k.add_argument("--engine", default="auto", help="with --per-case: the engine term to score "
                   "the slowest iterations against (auto: the GPU's shipped engine.json)")
    k.add_argument("--name", help="label stored in the file and in cost-model sources")
    k.add_argument("--spec", action="store_true",
                   help="print the speculative steps' draft and verify errors per case")
    k.add_argument("--residuals", action="store_true",
                   help="print the engine term's median error per folder and iteration kind")
    k.add_argument("--per-chunk", action="store_true",
                   help="fit one more term: seconds per iteration carrying a prompt chunk "
                        "(the simulator does not apply it yet: see docs/fidelity.md)")
    k.add_argument("--holdout", nargs="+", default=[], metavar="DIR",
                   help="served runs the fit must not see: scored and stored as the term's "
                        "held-out per-iteration error (what describe() quotes)")
    k.set_defaults(func=_cmd_calibrate)
    pl = sub.add_parser("plot", help="TTFT / TPOT / E2E CDFs of one case: real vs simulated")
    pl.add_argument("case", metavar="CASE_DIR")
    pl.add_argument("--out", required=True, help="PNG path")
    pl.add_argument("--engine", default="auto", help="cost_model.engine for the simulation")
    pl.set_defaults(func=_cmd_plot)
    rp = sub.add_parser("report", help="markdown tables of every fidelity.json under ROOT")
    rp.add_argument("root", nargs="?", default=str(DEFAULT_ROOT))
    rp.set_defaults(func=_cmd_report)


def main(argv=None) -> int:
    """``python3 -m goodput.profiler.serve.cli fidelity run DIR`` on a GPU machine (see
    goodput.profiler.cli.standalone)."""
    from goodput.profiler.cli import standalone

    return standalone(add_fidelity_subcommands, argv)


if __name__ == "__main__":
    sys.exit(main())
