"""notebooks/disaggregation.ipynb matches its builder (tests/test_notebooks.py executes it)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat

NB = Path(__file__).resolve().parents[1] / "notebooks"


def test_disaggregation_notebook_is_built_from_source():
    spec = importlib.util.spec_from_file_location("build_disaggregation",
                                                  NB / "build_disaggregation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    nb = nbformat.read(NB / "disaggregation.ipynb", as_version=4)
    assert [c.source for c in nb.cells] == [src for _, src in mod.DISAGG]
