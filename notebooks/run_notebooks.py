"""Rebuild the notebooks from their builders, then execute each in place, so the committed
copies carry their outputs (tables, printed results, inline plots) and read well on a code host.

    .venv/bin/python notebooks/run_notebooks.py [NAME.ipynb ...]     (or: make notebooks)

With names, only the builders that write those notebooks are run, and every notebook they
write is executed (a rebuilt notebook has no outputs until it runs). The tests compare cell
sources with the builders and execute each notebook themselves (tests/test_notebooks.py), so
outputs never decide a test; this only refreshes what a reader sees. Execution timings are not
recorded, so re-running it changes a notebook only where an output did.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def writes(builder: Path) -> list[str]:
    """The notebooks ``builder`` writes: the ``*.ipynb`` names quoted in its source."""
    import re

    return sorted(set(re.findall(r"[\"']([\w-]+\.ipynb)[\"']", builder.read_text())))


def execute(path: Path, timeout: int = 600) -> float:
    """Run ``path`` top to bottom in its folder and write it back with its outputs."""
    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    nbformat.write(nb, path)
    return time.perf_counter() - t0


def main(names: list[str]) -> int:
    builders = {b: writes(b) for b in sorted(HERE.glob("build_*.py"))}
    made = {n for ns in builders.values() for n in ns}
    unknown = [n for n in names if n not in made]
    if unknown:
        print(f"no builder writes {', '.join(unknown)}; known: {', '.join(sorted(made))}",
              file=sys.stderr)
        return 2
    chosen = [b for b, ns in builders.items() if not names or set(ns) & set(names)]
    for b in chosen:
        subprocess.run([sys.executable, str(b)], check=True, cwd=HERE.parent)
    for name in sorted({n for b in chosen for n in builders[b]}):
        print(f"{name:<32} executed in {execute(HERE / name):5.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
