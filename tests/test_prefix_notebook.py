"""notebooks/prefix_caching.ipynb and speculation.ipynb match their builders (tests/test_notebooks.py
executes them)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat

NB = Path(__file__).resolve().parents[1] / "notebooks"


def test_prefix_caching_notebook_is_built_from_source():
    spec = importlib.util.spec_from_file_location("build_prefix_caching", NB / "build_prefix_caching.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    nb = nbformat.read(NB / "prefix_caching.ipynb", as_version=4)
    assert [c.source for c in nb.cells] == [src for _, src in mod.PREFIX]


def test_speculation_notebook_is_built_from_source():
    spec = importlib.util.spec_from_file_location("build_speculation", NB / "build_speculation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    nb = nbformat.read(NB / "speculation.ipynb", as_version=4)
    assert [c.source for c in nb.cells] == [src for _, src in mod.SPEC]
