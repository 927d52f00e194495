"""The optional compiled build: with ``GOODPUT_COMPILE=1`` the engine modules listed under
``[tool.goodput] compiled`` in pyproject.toml are compiled to C extensions by mypyc (it comes
with mypy; needs a C compiler and the Python headers). Everything else about the package is in
pyproject.toml; without the variable this adds nothing and the package is pure Python.

``make compiled`` uses it for a separate, non-editable install (``.venv-compiled``): compiled
modules are imported in preference to their ``.py`` source, so building them inside the
working tree would leave stale copies behind the next edit."""
from __future__ import annotations

import os
import tomllib
from pathlib import Path

from setuptools import setup

ext_modules = []
if os.environ.get("GOODPUT_COMPILE") == "1":
    from mypyc.build import mypycify

    here = Path(__file__).resolve().parent
    listed = tomllib.loads((here / "pyproject.toml").read_text())["tool"]["goodput"]["compiled"]
    # through the goodput/ links, so each module gets its import name (goodput.sim.engine.x)
    ext_modules = mypycify([f"goodput/{m}" for m in listed], opt_level="3")

setup(ext_modules=ext_modules)
