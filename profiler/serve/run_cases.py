"""Serve fidelity cases on the GPU: one model build, a warm-up, then every case in real time.

Why a warm-up: Triton compiles each kernel variant (tile height, split or not) on its first
launch, which takes seconds; the cases must time a warm engine, as a benchmark of vLLM would.
``ModelRunner.warm_up`` runs every variant once, then a small burst of requests is served under
every policy the cases use (the Python side warms up too).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from goodput.profiler.serve import build_loop, make_executor, predicting_cost_model
from goodput.profiler.serve.fidelity import cases_of, load_case, save_real
from goodput.profiler.serve.loop import ServingLoop, WallClock
from goodput.profiler.serve.spec_step import decisions_fingerprint

WARMUP_PROMPTS = (3, 17, 90, 300, 700, 1500, 3000, 6000)


def warmup_trace(max_tokens: int) -> pd.DataFrame:
    prompts = [p for p in WARMUP_PROMPTS if p + 40 <= max_tokens] or [max(1, max_tokens - 40)]
    n = len(prompts) * 2
    return pd.DataFrame({"request_id": np.arange(n), "arrival_s": np.zeros(n),
                         "prompt_tokens": prompts * 2, "output_tokens": [40] * n})


def _max_k(cfg) -> int:
    from goodput.profiler.serve import speculation_of

    sp = speculation_of(cfg)
    return sp[1] if sp else 0


def loop_cost_source(cfg) -> str:
    cm = predicting_cost_model(cfg)
    return cm.source if cm is not None else "none"


def run_cases(model_dir, device: str = "cuda", max_wall_s: float | None = None,
              only: list[str] | None = None, log=print, attention: str = "triton") -> list[Path]:
    """Serve every case under ``model_dir`` (or those named in ``only``); returns the cases.
    ``attention``: the engine's kernel for prompt chunks (``goodput.profiler.serve.attention``)."""
    import torch

    from goodput.profiler import provenance

    cases = [c for c in cases_of(Path(model_dir)) if not only or c.name in only]
    loaded = [load_case(c) for c in cases]
    blocks = {cfg.scheduler.num_gpu_blocks for cfg, _ in loaded}
    models = {cfg.cluster[0].model for cfg, _ in loaded}
    drafts = {cfg.scheduler.section("speculation").draft_model for cfg, _ in loaded}
    if len(blocks) != 1 or len(models) != 1 or len(drafts) != 1:
        raise ValueError(f"cases under '{model_dir}' must share one model, one draft model and "
                         f"one scheduler.num_gpu_blocks; found models {models}, drafts {drafts}, "
                         f"blocks {blocks}")
    # the case that drafts longest sizes the lookahead (and builds the draft) for all of them
    loaded_first = max(loaded, key=lambda ct: _max_k(ct[0]))[0]
    max_tokens = max(int((t.df.prompt_tokens + t.df.output_tokens).max()) for _, t in loaded)
    max_tokens = max(max_tokens, max(WARMUP_PROMPTS) + 40)
    t0 = time.perf_counter()
    first = build_loop(loaded_first, max_tokens, device, attention=attention)
    runner, draft = first.executor.runner, first.executor.draft
    build_s = time.perf_counter() - t0
    log(f"model {runner.spec.name}: built and {len(runner.sizes)} graph sizes captured in "
        f"{build_s:.1f} s (capture {runner.capture_s:.1f} s)")

    def loop_for(cfg):
        return ServingLoop(cfg, first.inst.capacity, runner.spec.max_context,
                           make_executor(loaded_first, runner, max_tokens, 0, draft), WallClock(),
                           predicting_cost_model(cfg))

    t1 = time.perf_counter()
    runner.warm_up()
    if draft is not None:
        draft.warm_up()
    seen = set()
    for cfg, _ in loaded:
        key = (cfg.scheduler.policy, cfg.scheduler.section("speculation").method)
        if key not in seen:
            seen.add(key)
            loop_for(cfg).run(warmup_trace(max_tokens))
    log(f"warm-up ({', '.join('/'.join(k) for k in sorted(seen))}) "
        f"{time.perf_counter() - t1:.1f} s")
    dev = torch.device(device)
    info = provenance.collect(dev)
    for case, (cfg, trace) in zip(cases, loaded, strict=True):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        res = loop_for(cfg).run(trace, max_wall_s=max_wall_s)
        done = int((res.requests.outcome == "completed").sum())
        it = res.iterations
        log(f"{case.name}: {done}/{len(res.requests)} completed in {res.wall_s:.1f} s, "
            f"{len(it)} iterations, {res.instance['preemptions']} preemptions, median "
            f"iteration {1e3 * (it.end_s - it.start_s).median():.2f} ms "
            f"(predicted {1e3 * it.predicted_s.median():.2f} ms, GPU {1e3 * it.gpu_s.median():.2f} ms)")
        save_real(case, res, {"provenance": info, "wall_s": round(res.wall_s, 2),
                              "cost_model": loop_cost_source(cfg),
                              "build_s": round(build_s, 1), "capture_s": round(runner.capture_s, 1),
                              "graph_sizes": runner.sizes, "instance": res.instance,
                              "device": device, "attention": attention,
                              "spec_decisions": decisions_fingerprint(),
                              "draft_model": draft.spec.name if draft is not None else None})
    return cases
