"""Real serving on a GPU (or the CPU, tiny model) with the simulator's scheduling code.

``serve(cfg, trace)`` builds the full-depth random-weight model, its paged KV pool and the serving
loop for the single instance ``cfg`` describes, replays ``trace`` in real time and returns a
``ServeResult`` (per-request records in the simulator's format, one row per iteration).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sim.config import ConfigError, SimConfig

if TYPE_CHECKING:
    from profiler.serve.loop import ServeResult, ServingLoop

#: names re-exported from ``profiler.serve.loop``, imported on first use (it loads pandas and
#: the engine): ``goodput fidelity --help`` must not pay for them
_LOOP_NAMES = ("CostModelExecutor", "ServeResult", "ServingLoop", "VirtualClock", "WallClock",
               "check_servable")


def __getattr__(name: str) -> Any:
    if name in _LOOP_NAMES:
        from profiler.serve import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'profiler.serve' has no attribute {name!r}")


def instance_capacity(cfg: SimConfig, model):
    """The KV capacity the simulator would give this instance (or scheduler.num_gpu_blocks)."""
    from sim.catalog import get_gpu
    from sim.engine.kvcache import kv_capacity

    sched, group = cfg.scheduler, cfg.cluster[0]
    return kv_capacity(model, get_gpu(group.gpu), group.tp, sched.block_size,
                       sched.gpu_memory_utilization, sched.activation_reserve_gb,
                       sched.num_gpu_blocks)


def predicting_cost_model(cfg: SimConfig):
    """The cost model ``simulate`` would use for this instance, or None (e.g. the tiny model)."""
    from sim.catalog import get_gpu, get_model
    from sim.costmodel.factory import make_cost_model

    group = cfg.cluster[0]
    try:
        return make_cost_model(get_model(group.model), get_gpu(group.gpu), group.tp,
                               cfg.cost_model)
    except (ValueError, ConfigError, FileNotFoundError):
        return None


def build_loop(cfg: SimConfig, max_tokens: int, device: str = "cuda", seed: int = 0,
               graph_max_tokens: int = 512) -> ServingLoop:
    """Model, KV pool, captured graphs and loop for ``cfg``'s instance (see module docstring).

    ``max_tokens``: the longest prompt + output the trace holds (sizes the token table).
    """
    import torch

    from profiler.serve.executor import ModelExecutor, SequenceStore
    from profiler.serve.loop import ServingLoop, WallClock, check_servable
    from profiler.serve.runner import ModelRunner
    from profiler.shapes import PAGE_SIZE, resolve_model

    check_servable(cfg)
    if cfg.scheduler.block_size != PAGE_SIZE:
        raise ConfigError(f"scheduler.block_size={cfg.scheduler.block_size}: the real model's KV "
                          f"pages hold {PAGE_SIZE} tokens; use block_size: {PAGE_SIZE}")
    model = resolve_model(cfg.cluster[0].model)
    cap = instance_capacity(cfg, model)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but torch sees no GPU on this machine: run on a GPU "
                         "machine, or use --device cpu with the tiny model (model: tiny-cpu)")
    runner = ModelRunner(model, cap.total_blocks, dev, seed=seed,
                         graph_max_tokens=graph_max_tokens,
                         max_position=min(model.max_context, max_tokens + 1))
    runner.capture()
    store = SequenceStore(cap.total_blocks, model.vocab_size, max_tokens, seed)
    return ServingLoop(cfg, cap, model.max_context, ModelExecutor(runner, store), WallClock(),
                       predicting_cost_model(cfg), name=f"{model.name}@{cfg.cluster[0].gpu}")


def serve(cfg: SimConfig, trace, device: str = "cuda", seed: int = 0,
          graph_max_tokens: int = 512, max_wall_s: float | None = None) -> ServeResult:
    df = trace.df if hasattr(trace, "df") else trace
    max_tokens = int((df["prompt_tokens"] + df["output_tokens"]).max()) if len(df) else 1
    loop = build_loop(cfg, max_tokens, device, seed, graph_max_tokens)
    return loop.run(trace, max_wall_s=max_wall_s)


__all__ = [
    "CostModelExecutor",
    "ServeResult",
    "ServingLoop",
    "VirtualClock",
    "WallClock",
    "build_loop",
    "instance_capacity",
    "predicting_cost_model",
    "serve",
]
