"""Where measured profiles live: the one owner of the profiles directory's location.

The profiler writes the tables (``goodput profile run | bandwidth | collectives | calibrate``,
``goodput fidelity calibrate``); the cost model reads them. The location belongs to the reader,
so the profiler imports it from here and the simulator never imports the profiler: the tables
are data found by path, not code.

The data stays at ``profiler/profiles/`` in the repository (shipped as package data of the
``profiler`` package, see pyproject.toml), resolved relative to this file, so it is found the
same way from a checkout, an editable install or an installed wheel. Layout under the root::

    <root>/<gpu>/<model>/tp<k>/fit.json         a fitted profile (goodput.sim.costmodel.profiled)
    <root>/<gpu>/collectives/tp<N>.csv          measured TP collectives (goodput.sim.costmodel.collectives)
    <root>/<gpu>/engine.json                    fitted engine overhead (goodput.sim.costmodel.engine)
    <root>/calibration.json                     roofline efficiencies fitted on profiled GPUs

Every function that takes a ``root`` also accepts None for "the shipped profiles".
"""
from __future__ import annotations

from pathlib import Path

#: the shipped profiles (``profiler/profiles`` next to the ``sim`` package)
PROFILES_ROOT = Path(__file__).resolve().parents[2] / "profiler" / "profiles"


def profiles_root(root: str | Path | None = None) -> Path:
    """``root`` as a Path, or the shipped profiles directory when it is None or empty."""
    return Path(root) if root else PROFILES_ROOT
