"""Real serving on a GPU (or the CPU, tiny model) with the simulator's scheduling code.

``serve(cfg, trace)`` builds the full-depth random-weight model, its paged KV pool and the serving
loop for the single instance ``cfg`` describes, replays ``trace`` in real time and returns a
``ServeResult`` (per-request records in the simulator's format, one row per iteration).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from goodput.sim.config import ConfigError, SimConfig

if TYPE_CHECKING:
    from goodput.profiler.serve.loop import ServeResult, ServingLoop

#: names re-exported from ``goodput.profiler.serve.loop``, imported on first use (it loads pandas and
#: the engine): ``goodput fidelity --help`` must not pay for them
_LOOP_NAMES = ("CostModelExecutor", "ServeResult", "ServingLoop", "VirtualClock", "WallClock",
               "check_servable")


def __getattr__(name: str) -> Any:
    if name in _LOOP_NAMES:
        from goodput.profiler.serve import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'goodput.profiler.serve' has no attribute {name!r}")


def instance_capacity(cfg: SimConfig, model):
    """The KV capacity the simulator would give this instance (or scheduler.num_gpu_blocks):
    what fits next to the weights, and next to a draft model's weights and KV when speculating."""
    from goodput.sim.catalog import get_gpu
    from goodput.sim.engine.kvcache import kv_capacity
    from goodput.sim.engine.proposers import speculation_memory

    sched, group = cfg.scheduler, cfg.cluster[0]
    spec_w, spec_kv = speculation_memory(sched.section("speculation"), group.model, group.tp)
    return kv_capacity(model, get_gpu(group.gpu), group.tp, sched.block_size,
                       sched.gpu_memory_utilization, sched.activation_reserve_gb,
                       sched.num_gpu_blocks, spec_w, spec_kv)


def predicting_cost_model(cfg: SimConfig):
    """The cost model ``simulate`` would use for this instance, or None (e.g. the tiny model)."""
    from goodput.sim.catalog import get_gpu, get_model
    from goodput.sim.costmodel.factory import make_cost_model

    group = cfg.cluster[0]
    try:
        return make_cost_model(get_model(group.model), get_gpu(group.gpu), group.tp,
                               cfg.cost_model)
    except (ValueError, ConfigError, FileNotFoundError):
        return None


def speculation_of(cfg: SimConfig):
    """(draft ModelSpec, largest k) when ``cfg`` speculates with a draft model, else None.

    The real engine runs draft + verify passes: other proposers (n-gram, heads), trees and a
    fixed per-pass draft cost are simulated only, and are refused here with the field to change.
    """
    from goodput.profiler.shapes import TINY_CPU_DRAFT, TINY_CPU_MODEL, resolve_model
    from goodput.sim.engine.speculation import SPECULATORS

    spec = cfg.scheduler.section("speculation")
    if spec.method == "none":
        return None
    tiny = cfg.cluster[0].model.strip().lower() == TINY_CPU_MODEL.name
    if spec.proposer != "draft" or spec.tree_width != 1 or not (spec.draft_model or tiny):
        raise ConfigError("scheduler.speculation: the real serving loop runs a draft model "
                          "(proposer: draft, tree_width: 1, draft_model: a catalog model); "
                          f"got proposer={spec.proposer!r}, tree_width={spec.tree_width}, "
                          f"draft_model={spec.draft_model!r}")
    cls = SPECULATORS[spec.method.lower()]
    strategy = cls(spec.section(cls.name) if cls.Options is not None else None)
    # the tiny CPU model drafts with the tiny draft (the simulator prices it by draft_pass_s)
    draft = TINY_CPU_DRAFT if tiny and not spec.draft_model else resolve_model(spec.draft_model)
    return draft, strategy.max_k()


def lookahead_pages(cfg: SimConfig, max_k: int) -> int:
    """Spare KV pages for a speculative step's lookahead: every running sequence may write
    k + 1 positions beyond what it keeps, at most two pages more each (k + 1 <= 17)."""
    return cfg.scheduler.max_batch_size * (-(-(max_k + 1) // 16) + 1) if max_k else 0


def make_executor(cfg: SimConfig, runner, max_tokens: int, seed: int = 0, draft=None):
    """A ``ModelExecutor`` over a fresh ``SequenceStore`` of the runner's pool (the draft's
    runner, when speculating, shares its page table)."""
    from goodput.profiler.serve.executor import ModelExecutor, SequenceStore

    sp = speculation_of(cfg)
    store = SequenceStore(runner.pool_blocks - 1, runner.spec.vocab_size, max_tokens, seed,
                          lookahead=(sp[1] + 1) if sp else 0)
    return ModelExecutor(runner, store, draft)


def build_runners(cfg: SimConfig, cap, max_tokens: int, device: str = "cuda", seed: int = 0,
                  graph_max_tokens: int = 512, attention: str = "triton"):
    """The target's ``ModelRunner`` (graphs captured) and the draft's when speculating (None
    otherwise), each with ``cap.total_blocks`` KV pages plus the lookahead spares."""
    import torch

    from goodput.profiler.serve.runner import ModelRunner
    from goodput.profiler.shapes import resolve_model

    model = resolve_model(cfg.cluster[0].model)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but torch sees no GPU on this machine: run on a GPU "
                         "machine, or use --device cpu with the tiny model (model: tiny-cpu)")
    sp = speculation_of(cfg)
    pages = cap.total_blocks + (lookahead_pages(cfg, sp[1]) if sp else 0)
    max_position = min(model.max_context, max_tokens + 1 + (sp[1] + 1 if sp else 0))
    runner = ModelRunner(model, pages, dev, seed=seed, graph_max_tokens=graph_max_tokens,
                         max_position=max_position, attention=attention)
    runner.capture()
    draft = None
    if sp is not None:
        draft = ModelRunner(sp[0], pages, dev, seed=seed + 1, graph_max_tokens=graph_max_tokens,
                            max_position=max_position, attention=attention)
        draft.capture()
    return runner, draft


def build_loop(cfg: SimConfig, max_tokens: int, device: str = "cuda", seed: int = 0,
               graph_max_tokens: int = 512, attention: str = "triton") -> ServingLoop:
    """Model (and draft), KV pool, captured graphs and loop for ``cfg``'s instance (see module
    docstring). ``max_tokens``: the longest prompt + output the trace holds (sizes the token
    table); ``attention``: the serving kernel (``goodput.profiler.serve.runner.ATTENTION_BACKENDS``)."""
    from goodput.profiler.serve.loop import ServingLoop, WallClock, check_servable
    from goodput.profiler.shapes import PAGE_SIZE, resolve_model

    check_servable(cfg)
    if cfg.scheduler.block_size != PAGE_SIZE:
        raise ConfigError(f"scheduler.block_size={cfg.scheduler.block_size}: the real model's KV "
                          f"pages hold {PAGE_SIZE} tokens; use block_size: {PAGE_SIZE}")
    model = resolve_model(cfg.cluster[0].model)
    cap = instance_capacity(cfg, model)
    runner, draft = build_runners(cfg, cap, max_tokens, device, seed, graph_max_tokens,
                                  attention)
    return ServingLoop(cfg, cap, model.max_context,
                       make_executor(cfg, runner, max_tokens, seed, draft), WallClock(),
                       predicting_cost_model(cfg), name=f"{model.name}@{cfg.cluster[0].gpu}")


def serve(cfg: SimConfig, trace, device: str = "cuda", seed: int = 0,
          graph_max_tokens: int = 512, max_wall_s: float | None = None,
          attention: str = "triton") -> ServeResult:
    df = trace.df if hasattr(trace, "df") else trace
    max_tokens = int((df["prompt_tokens"] + df["output_tokens"]).max()) if len(df) else 1
    loop = build_loop(cfg, max_tokens, device, seed, graph_max_tokens, attention)
    return loop.run(trace, max_wall_s=max_wall_s)


__all__ = [
    "CostModelExecutor",
    "ServeResult",
    "ServingLoop",
    "VirtualClock",
    "WallClock",
    "build_loop",
    "build_runners",
    "instance_capacity",
    "make_executor",
    "predicting_cost_model",
    "serve",
]
