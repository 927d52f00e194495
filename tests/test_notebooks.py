"""Every notebook runs top to bottom, so notebooks never rot."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
#: notebooks whose plots must show inline (an image/png output), not only land in a file
INLINE_PLOTS = {"compare_configurations.ipynb", "fidelity.ipynb", "plan.ipynb", "profile_fit.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("attainment" in "".join(o.get("text", "")) for o in outputs)
    if path.name in INLINE_PLOTS:
        assert any("image/png" in o.get("data", {}) for o in outputs), "no inline plot"


def test_notebooks_are_built_from_source():
    """The .ipynb files match notebooks/build_notebooks.py (edit the builder, then rebuild)."""
    import importlib.util
    builder = NOTEBOOKS[0].parent / "build_notebooks.py"
    spec = importlib.util.spec_from_file_location("build_notebooks", builder)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name, cells in (("compare_configurations.ipynb", mod.COMPARE),
                        ("fidelity.ipynb", mod.FIDELITY)):
        nb = nbformat.read(NOTEBOOKS[0].parent / name, as_version=4)
        assert [c.source for c in nb.cells] == [src for _, src in cells], name


def test_use_notebooks_are_built_from_source():
    """plan.ipynb and profile_fit.ipynb match notebooks/build_use_notebooks.py (sources only:
    the committed copies carry outputs, `make notebooks`)."""
    import importlib.util
    builder = NOTEBOOKS[0].parent / "build_use_notebooks.py"
    spec = importlib.util.spec_from_file_location("build_use_notebooks", builder)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name, cells in (("plan.ipynb", mod.PLAN), ("profile_fit.ipynb", mod.PROFILE)):
        nb = nbformat.read(NOTEBOOKS[0].parent / name, as_version=4)
        assert [c.source for c in nb.cells] == [src for _, src in cells], name
