"""Choose the cost model for an instance: a measured profile when one matches, else a roofline.

``kind``: ``auto`` (profile if ``<profiles root>/<gpu>/<model>/tp<k>`` exists, else the roofline
calibrated on profiled GPUs, else the plain roofline), ``profiled`` (a profile is required) or
``roofline``. The chosen model's ``source`` is stored with every result. The profiles root is
``goodput.sim.costmodel.profile_store.PROFILES_ROOT`` (the shipped ``profiler/profiles`` data).
"""
from __future__ import annotations

from pathlib import Path

from goodput.sim.catalog import GPUSpec, ModelSpec
from goodput.sim.config import ConfigError, CostModelConfig
from goodput.sim.costmodel.base import CostModel
from goodput.sim.costmodel.profile_store import profiles_root
from goodput.sim.costmodel.roofline import RooflineCostModel

KINDS = ("auto", "profiled", "roofline")


def _profiled_module():
    try:
        from goodput.sim.costmodel import profiled
    except ImportError:  # the profiled model is optional until profiles ship
        return None
    return profiled


def make_cost_model(model: ModelSpec, gpu: GPUSpec, tp: int, cfg: CostModelConfig) -> CostModel:
    kind = cfg.kind.lower()
    if kind not in KINDS:
        raise ConfigError(f"unknown cost_model.kind '{cfg.kind}'; choose one of {list(KINDS)}")
    if tp < 1:
        raise ConfigError("cluster[].tp must be >= 1")
    #: MoE expert parallelism (ep = tp); a config field the lead wires in (cost_model or cluster)
    ep = bool(getattr(cfg, "expert_parallel", False))
    if kind == "roofline":
        return RooflineCostModel(model, gpu, tp, expert_parallel=ep)
    prof = _profiled_module()
    path = Path(cfg.profile_dir) if cfg.profile_dir else None
    if path is None and prof is not None:
        path = prof.find_profile(gpu.name, model.name, tp, root=profiles_root())
    if path is not None and prof is not None:
        return prof.ProfiledCostModel.from_dir(path, engine=cfg.engine)
    if kind == "profiled":
        raise ConfigError(
            f"cost_model.kind=profiled but no profile exists for {model.name} on {gpu.name} tp={tp}; "
            "run `goodput profile run` on that GPU, set cost_model.profile_dir, or use kind=auto")
    if prof is not None and hasattr(prof, "calibrated_roofline"):
        calibrated = prof.calibrated_roofline(model, gpu, tp, root=profiles_root(),
                                              engine=cfg.engine, expert_parallel=ep)
        if calibrated is not None:
            return calibrated
    return RooflineCostModel(model, gpu, tp, expert_parallel=ep)
