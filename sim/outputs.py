"""Result folders that a kill never leaves half-written.

A run writes everything into a fresh hidden sibling folder; only when every file is complete is
that folder put in the place of ``output.dir`` (two renames on one filesystem). A run killed while
writing leaves the previous results untouched (and a ``.<name>.partial-*`` folder to delete). A
folder that holds anything other than a goodput run's files is never replaced: that is checked
before the simulation starts, so a typo'd ``--out ~`` costs nothing. ``folder_lock`` keeps two
runs from writing one folder at once: the second is refused before it simulates. An earlier
run's results are replaced only when asked (``goodput simulate --force``; ``holds_results``).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from goodput.sim.config import ConfigError

#: what a run writes (goodput.sim.run, goodput.sim.metrics.save_results, goodput.sim.plots);
#: anything else is the user's
RUN_FILES = frozenset({"requests.parquet", "requests.csv", "timeseries.parquet", "instances.csv", "links.csv",
                       "steps.parquet", "steps.csv",
                       "summary.json", "config.json", "latency_cdfs.png", "timeseries.png",
                       "report.html"})


def is_run_file(name: str) -> bool:
    """A file a run writes into its folder (an event trace there must be named ``*.trace.json``)."""
    return name in RUN_FILES or name.endswith(".trace.json") or (
        name.startswith(".") and name.endswith(".lock"))  # a results folder's lock (folder_lock)


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


def holds_results(out: Path) -> bool:
    """True if ``out`` holds an earlier run's results (any file a run writes; an empty folder or
    one with only a lock does not); ConfigError as check_replaceable for a user's folder."""
    if not check_replaceable(Path(out)):
        return False
    return any(is_run_file(p.name) and not p.name.endswith(".lock") for p in Path(out).iterdir())


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


def lock_path(out: Path) -> Path:
    """The lock file of results folder ``out``: a hidden sibling, as it must outlive a replace."""
    out = Path(out)
    return out.parent / f".{out.name}.lock"


@contextmanager
def folder_lock(out: Path) -> Iterator[None]:
    """Hold the lock of results folder ``out`` for a whole run; a second run asking for the same
    folder gets a one-line ConfigError at once instead of racing the first one's files.

    An OS lock (``flock``; ``filelock`` where there is none), so it is released when its holder
    exits, however it exits. The lock file is removed on release, and a run that locked a file
    removed meanwhile tries again, so no lock file is left beside the results and no two runs
    ever hold the lock at once."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output.dir {out}: is a file; give a folder for the results")
    out.parent.mkdir(parents=True, exist_ok=True)
    path = lock_path(out)
    busy = ConfigError(f"output.dir {out}: another goodput run is writing there now (it holds "
                       f"{path}); wait for it to finish or give another folder")
    if sys.platform == "win32":  # pragma: no cover  (no flock)
        from filelock import FileLock, Timeout

        lock = FileLock(path, thread_local=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise busy from None
        try:
            yield
        finally:
            lock.release()
        return
    import fcntl

    fd = _flock(path)
    if fd is None:
        raise busy
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # before unlocking: a waiter that then locks it sees it is stale
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _flock(path: Path) -> int | None:
    """A descriptor holding an exclusive lock on ``path``, or None if another process holds it."""
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        mine = os.fstat(fd)
        try:
            now = os.stat(path)
        except FileNotFoundError:
            now = None
        if now is not None and (now.st_ino, now.st_dev) == (mine.st_ino, mine.st_dev):
            return fd
        os.close(fd)  # the holder removed this file as we opened it: lock the new one


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
