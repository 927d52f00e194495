"""What a serving engine adds to the GPU work a profile measures, fitted on real serving runs.

Why: a profile times kernels (CUDA-graph replays between events) plus a minimal host loop. A
real engine iteration also waits for the scheduler, builds its inputs while the GPU idles,
launches attention eagerly between graph pieces, copies sampled tokens back and does its
bookkeeping. The fidelity runs (goodput.profiler.serve) measured that at ~1 ms per iteration on an
H200, three times the profile's own host term, which made every simulated latency 10-30%
short. ``goodput fidelity calibrate`` fits this form on the runs' iteration logs:

    iteration = (1 + kernel_scale) * kernel_time + per_iteration_s + per_seq_s * n_seqs

``kernel_time`` is the profile's prediction without its host term; ``kernel_scale`` absorbs the
launch gaps between graph pieces and a profile's systematic kernel bias. The term depends on
the batch size only, so pure-decode batches keep the linear form the fast-forward needs.
The file lives at ``profiler/profiles/<gpu>/engine.json``; ``cost_model.engine`` chooses it
(``auto``: that file when present, else the term carried from a GPU that has one -- see
``engine_for``/``carried_engine``; ``own``: only the GPU's own file; ``none``: the profile alone;
or a path).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

ENGINE_FILE = "engine.json"


@dataclass(frozen=True)
class EngineOverhead:
    kernel_scale: float
    per_iteration_s: float
    per_seq_s: float
    name: str = "engine"
    path: str = ""
    info: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if not -0.5 < self.kernel_scale < 2.0 or self.per_iteration_s < 0 or self.per_seq_s < 0:
            raise ValueError(f"engine overhead {self.path or self.name}: kernel_scale "
                             f"{self.kernel_scale} must be in (-0.5, 2) and the host terms >= 0 "
                             f"(got {self.per_iteration_s}, {self.per_seq_s}); refit it with "
                             "`goodput fidelity calibrate`")

    def host_s(self, n_seqs: int) -> float:
        return self.per_iteration_s + self.per_seq_s * n_seqs

    def apply(self, kernel_s: float, n_seqs: int) -> float:
        return (1.0 + self.kernel_scale) * kernel_s + self.host_s(n_seqs)

    @classmethod
    def load(cls, path) -> EngineOverhead:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"cost_model.engine: '{path}' does not exist; give an "
                                    f"{ENGINE_FILE} made by `goodput fidelity calibrate`, "
                                    "'auto' or 'none'")
        d = json.loads(path.read_text())
        try:
            p = d["params"]
            return cls(float(p["kernel_scale"]), float(p["per_iteration_s"]),
                       float(p["per_seq_s"]), d.get("name", path.parent.name), str(path),
                       {k: v for k, v in d.items() if k != "params"})
        except KeyError as exc:
            raise ValueError(f"{path}: missing field {exc}; expected params.kernel_scale, "
                             "params.per_iteration_s, params.per_seq_s") from exc

    def to_dict(self) -> dict:
        d = asdict(self)
        return {"params": {k: d[k] for k in ("kernel_scale", "per_iteration_s", "per_seq_s")},
                "name": self.name, **self.info}


def resolve_engine(setting: str, profiles_root: Path, gpu: str) -> EngineOverhead | None:
    """``cost_model.engine`` -> the overhead to apply (None: the profile's own host term)."""
    s = (setting or "auto").strip()
    if s.lower() == "none":
        return None
    if s.lower() == "auto":
        path = Path(profiles_root) / gpu / ENGINE_FILE
        return EngineOverhead.load(path) if path.exists() else None
    return EngineOverhead.load(s)


def carried_engine(profiles_root: Path, gpu: str) -> EngineOverhead | None:
    """The engine term of a GPU without its own fidelity run, carried from one that has one.

    Rule (docs/costmodel.md): the fitted host terms (``per_iteration_s``, ``per_seq_s``) are
    CPU time of the same engine code -- scheduling, input preparation, the sampled-token copy --
    and do not depend on which GPU runs the kernels, so they carry over unchanged;
    ``kernel_scale`` (launch gaps between graph pieces, relative to kernel time) carries over
    unchanged too. The source is the ``engine.json`` of the reference GPU (h200) when present,
    else the first one under the same profiles root; only that root is searched, so a private
    profiles root never silently borrows the shipped fit.
    """
    root = Path(profiles_root)
    found = sorted(p for p in root.glob(f"*/{ENGINE_FILE}") if p.parent.name != gpu)
    if not found:
        return None
    src = next((p for p in found if p.parent.name == "h200"), found[0])
    eng = EngineOverhead.load(src)
    info = {**eng.info, "carried_from": src.parent.name, "carried_to": gpu,
            "carry_rule": "host terms and kernel_scale unchanged (docs/costmodel.md)"}
    return EngineOverhead(eng.kernel_scale, eng.per_iteration_s, eng.per_seq_s,
                          f"{eng.name}(carried from {src.parent.name})", eng.path, info)


def engine_for(setting: str, profiles_root: Path, gpu: str) -> EngineOverhead | None:
    """``cost_model.engine`` as the cost models apply it: like ``resolve_engine``, except that
    ``auto`` on a GPU without its own ``engine.json`` carries another GPU's (``carried_engine``);
    ``own`` takes only the GPU's own file (the old ``auto``)."""
    s = (setting or "auto").strip().lower()
    if s == "own":
        return resolve_engine("auto", profiles_root, gpu)
    if s == "auto":
        own = resolve_engine("auto", profiles_root, gpu)
        return own if own is not None else carried_engine(profiles_root, gpu)
    return resolve_engine(setting, profiles_root, gpu)
