"""Run independent jobs (capacity searches) in parallel: a local process pool, or Ray.

``local`` uses concurrent.futures' ProcessPoolExecutor (one process per CPU by default; with one
worker or one job everything runs in-process, which is also what tests rely on). ``ray`` ships the
same module-level function to a Ray cluster: the one ``ray.init`` already connected to, else the
address in ``RAY_ADDRESS``, else a new local instance. Results come back in input order either
way, and every job is seeded by its inputs, so the backend never changes the numbers.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor

from goodput.planner.errors import PlannerError

BACKENDS = ("local", "ray")
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def run_parallel(fn: Callable, items: Sequence, backend: str = "local",
                 workers: int | None = None, progress: str | None = None) -> list:
    """``[fn(x) for x in items]``, computed in parallel on ``backend``; with ``progress`` (a
    label) a tqdm bar on stderr counts finished jobs."""
    if backend not in BACKENDS:
        raise PlannerError(f"backend={backend!r} is not known; choose one of {list(BACKENDS)}")
    if workers is not None and workers < 1:
        raise PlannerError(f"workers must be >= 1, got {workers}")
    items = list(items)
    if not items:
        return []
    if backend == "ray":
        return _run_ray(fn, items)
    n = min(workers or default_workers(), len(items))
    wrap = _bar(progress, len(items))
    if n == 1:
        return list(wrap(fn(x) for x in items))
    pool = ProcessPoolExecutor(max_workers=n, initializer=_worker_init, initargs=(os.getpid(),))
    try:
        results = list(wrap(pool.map(fn, items)))
    except BaseException:  # Ctrl-C, SIGTERM (goodput turns it into SystemExit), a failed job
        _terminate(pool)
        raise
    pool.shutdown(wait=True)
    return results


_LABEL: list[str] = []  # set by ``progress_bars``: a bar for run_parallel calls inside it


@contextlib.contextmanager
def progress_bars(label: str | None):
    """Within the block, run_parallel calls without their own label show a bar named ``label``
    (how the planner gets a bar over capacity.measure without changing its signature)."""
    if label:
        _LABEL.append(label)
    try:
        yield
    finally:
        if label:
            _LABEL.pop()


def _bar(label: str | None, total: int) -> Callable:
    label = label or (_LABEL[-1] if _LABEL else None)
    if not label:
        return lambda it: it
    from tqdm import tqdm

    return lambda it: tqdm(it, total=total, desc=label, unit="job", leave=False, disable=None)


def _worker_init(parent: int) -> None:
    """Workers leave Ctrl-C to the parent (which stops them: one message, not one traceback per
    worker) and die with it, even when it is killed outright (Linux: PR_SET_PDEATHSIG)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forked parent's handler would print a traceback
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Stop every worker now: queued jobs are cancelled and running ones killed."""
    procs = list(getattr(pool, "_processes", {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()


def _run_ray(fn: Callable, items: list) -> list:
    try:
        import ray
    except ImportError:
        raise PlannerError("backend='ray' needs the ray package (pip install ray, or install "
                           "goodput[dev]); use backend='local' for a process pool") from None
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False,
                 ignore_reinit_error=True, log_to_driver=False)
    remote = ray.remote(fn)
    return ray.get([remote.remote(x) for x in items])
