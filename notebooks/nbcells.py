"""Writes a notebook from (kind, source) cells: the one writer every builder here uses, so the
committed .ipynb files differ only in their cells (tests compare those with the builders)."""
from pathlib import Path

import nbformat as nbf


def write_notebook(path: Path, cells) -> None:
    nb = nbf.v4.new_notebook()
    nb.cells = [nbf.v4.new_markdown_cell(s) if kind == "md" else nbf.v4.new_code_cell(s)
                for kind, s in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbf.write(nb, path)
