"""Result folders that a kill never leaves half-written.

A run writes everything into a fresh hidden sibling folder; only when every file is complete is
that folder put in the place of ``output.dir`` (two renames on one filesystem). A run killed while
writing leaves the previous results untouched (and a ``.<name>.partial-*`` folder to delete). A
folder that holds anything other than a goodput run's files is never replaced: that is checked
before the simulation starts, so a typo'd ``--out ~`` costs nothing.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sim.config import ConfigError

#: what a run writes (sim.run, sim.metrics.save_results, sim.plots); anything else is the user's
RUN_FILES = frozenset({"requests.parquet", "requests.csv", "timeseries.parquet", "instances.csv",
                       "summary.json", "config.json", "latency_cdfs.png", "timeseries.png"})


def is_run_file(name: str) -> bool:
    """A file a run writes into its folder (an event trace there must be named ``*.trace.json``)."""
    return name in RUN_FILES or name.endswith(".trace.json")


def check_replaceable(out: Path) -> bool:
    """True if ``out`` holds earlier results (it will be replaced), False if it does not exist;
    ConfigError if it holds anything a run did not write."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise ConfigError(f"output.dir {out}: is a file; give a folder for the results")
    foreign = sorted(p.name for p in out.iterdir() if not is_run_file(p.name))
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise ConfigError(f"output.dir {out}: holds files a goodput run did not write ({shown}); "
                          "give an empty or new folder, so nothing of yours is replaced")
    return True


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """Yield a fresh folder to write into; on success it becomes ``out`` (replacing earlier
    results), on any failure it is removed and ``out`` is left as it was."""
    out = Path(out)
    check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    os.chmod(stage, 0o777 & ~_umask())  # mkdtemp makes it owner-only; results are normal files
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
    os.replace(stage, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
