"""notebooks/prefix_caching.ipynb and speculation.ipynb match their builders (tests/test_notebooks.py
executes them)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest

NB = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.parametrize("builder, notebook, cells", [
    ("build_prefix_caching", "prefix_caching.ipynb", "PREFIX"),
    ("build_speculation", "speculation.ipynb", "SPEC"),
])
def test_notebook_is_built_from_source(builder, notebook, cells):
    spec = importlib.util.spec_from_file_location(builder, NB / f"{builder}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    nb = nbformat.read(NB / notebook, as_version=4)
    assert [c.source for c in nb.cells] == [src for _, src in getattr(mod, cells)]
