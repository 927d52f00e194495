"""Where a profile and its companions are found: fit.json, the measured collectives table,
the TP all-reduce rule, and the calibrated roofline for GPUs without a profile.

Split from goodput.sim.costmodel.profiled (which re-exports ``find_profile`` and
``calibrated_roofline``) so that module stays about the model itself.
"""
from __future__ import annotations

import json
from pathlib import Path

from goodput.sim.costmodel.collectives import CollectivesTable, find_table
from goodput.sim.costmodel.engine import engine_for
from goodput.sim.costmodel.profile_store import PROFILES_ROOT

FIT_FILE = "fit.json"


def _display_path(path) -> str:
    """The table's path relative to the repository (or the working directory) when under it."""
    if path is None:
        return "in memory"
    p = Path(path).resolve()
    for base in (PROFILES_ROOT.parents[1], Path.cwd()):
        try:
            return str(p.relative_to(base.resolve()))
        except ValueError:
            continue
    return str(p)


def _measured_collectives(fit: dict, profile_dir: Path, root=None) -> CollectivesTable | None:
    """The measured table for this profile's GPU and TP degree, or None (see ``from_dir``); the
    graph-captured ``tp<k>.graph.csv`` when present, else the eager ``tp<k>.csv``."""
    tp = int(fit["tp"])
    if tp <= 1:
        return None
    if root is None:
        parents = Path(profile_dir).resolve().parents
        if len(parents) < 3:
            return None
        root = parents[2]  # <root>/<gpu>/<model>/tp<k>
    return find_table(root, fit["gpu"], tp)


def _floor_rule(fit: dict, tp: int):
    """The TP all-reduce rule for this profile's GPU, or None (tp=1, an unknown GPU, or a
    fit.json whose all-reduce is not the old estimate)."""
    ar = fit.get("allreduce") or {}
    if tp <= 1 or "estimated" not in str(ar.get("source", "estimated")):
        return None
    from goodput.sim.catalog import get_gpu
    from goodput.sim.costmodel.tp_estimate import tp_allreduce

    try:
        gpu = get_gpu(str(fit.get("gpu", "")))
    except ValueError:
        return None
    return tp_allreduce(gpu)


def _canonical(kind: str, name: str) -> str:
    from goodput.sim.catalog import get_gpu, get_model

    try:
        return (get_gpu(name) if kind == "gpu" else get_model(name)).name.lower()
    except ValueError:
        return name.strip().lower()


def find_profile(gpu: str, model: str, tp: int, root: Path | None = None) -> Path | None:
    """The fitted profile directory for (gpu, model, tp), or None when none is shipped."""
    root = Path(root) if root else PROFILES_ROOT
    path = root / _canonical("gpu", gpu) / _canonical("model", model) / f"tp{int(tp)}"
    return path if (path / FIT_FILE).exists() else None


def calibrated_roofline(model, gpu, tp: int, root: Path | None = None, engine: str = "auto",
                        expert_parallel: bool = False):
    """Roofline with efficiencies fitted on the profiled GPUs, for GPUs without a profile; the
    engine term is ``engine_for(engine)``: the GPU's own fit, else carried from a fitted GPU.

    Returns None when no calibration has been made (``goodput profile calibrate``).
    """
    from goodput.sim.costmodel.roofline import RooflineCostModel, RooflineParams

    root = Path(root) if root else PROFILES_ROOT
    path = root / "calibration.json"
    if not path.exists():
        return None
    cal = json.loads(path.read_text())
    eng = engine_for(engine, root, gpu.name)
    cm = RooflineCostModel(model, gpu, tp, RooflineParams(**cal["params"]), engine=eng,
                           expert_parallel=expert_parallel)
    cm.source = (f"roofline(calibrated from {','.join(cal['gpus'])})"
                 + (f"+engine:{eng.name}" if eng is not None else ""))
    cm.calibration = cal
    return cm
