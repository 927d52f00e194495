"""Issue 19, the planner and the result folders: bad ``goodput plan`` flags are one line before
any search, Ctrl-C / kill stop the worker processes, two runs on one folder do not race, and a
corrupt capacity-cache entry is re-measured, never trusted."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from goodput.cli import main
from goodput.planner.capacity import CapacityCache, CapacityTask, SearchSettings, measure, task_key
from goodput.sim.config import ConfigError
from goodput.sim.outputs import check_replaceable, folder_lock

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "traces" / "sample_tiny.csv")
PLAN = ["plan", "--trace", TINY, "--model", "llama-3.1-8b", "--ttft-slo", "1", "--tpot-slo", "0.1",
        "--gpus", "h100", "--cost-model", "roofline"]


@pytest.mark.parametrize("flags,needle", [
    (["--verify-rounds", "-1"], "--verify-rounds=-1: must be a finite number >= 0"),
    (["--workers", "0"], "--workers=0: must be a finite number >= 1"),
    (["--ttft-slo", "nan"], "--ttft-slo=nan"),
    (["--tpot-slo", "-0.1"], "--tpot-slo=-0.1"),
    (["--attainment", "90"], "--attainment=90.0: must be a fraction in (0, 1]"),
    (["--rate", "nan"], "--rate=nan"),
    (["--max-requests", "-3"], "--max-requests=-3"),
    (["--slice-factor", "0"], "--slice-factor=0"),
    (["--rel-tol", "0"], "--rel-tol=0.0"),
    (["--power-budget", "-5"], "--power-budget=-5.0"),
    (["--max-probe-requests", "100"], "--max-probe-requests=100: must be a finite number >= 300"),
])
def test_bad_plan_flags_are_one_line_before_any_search(capsys, tmp_path, monkeypatch, flags, needle):
    import goodput.planner.pipeline

    monkeypatch.setattr(goodput.planner.pipeline, "make_plan", lambda *a, **k: pytest.fail("planned"))
    rc = main([*PLAN, "--out", str(tmp_path / "p"), *flags])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and needle in err, err


# ------------------------------------------------------------------ signals and worker processes
_POOL_SCRIPT = textwrap.dedent("""
    import sys, time
    from goodput.cli import _exit_on_sigterm
    from goodput.planner.parallel import run_parallel
    _exit_on_sigterm_prev = _exit_on_sigterm()
    print("ready", flush=True)
    try:
        run_parallel(time.sleep, [60.0] * 4, "local", workers=2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr); sys.exit(130)
    except BaseException:
        print("terminated", file=sys.stderr); sys.exit(143)
""")


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _start_pool(tmp_path) -> tuple[subprocess.Popen, list[int]]:
    script = tmp_path / "pool.py"
    script.write_text(_POOL_SCRIPT)
    p = subprocess.Popen([sys.executable, str(script)], cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    deadline = time.time() + 20
    kids: list[int] = []
    while time.time() < deadline and len(kids) < 2:
        time.sleep(0.1)
        kids = [k for k in _children(p.pid) if _running(k)]
    assert len(kids) >= 2, "the pool did not start its workers"
    time.sleep(0.3)  # let the workers finish their initializer
    return p, kids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and pgrep")
@pytest.mark.parametrize("sig,rc", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGKILL, -9)])
def test_worker_processes_die_with_the_parent(tmp_path, sig, rc):
    p, kids = _start_pool(tmp_path)
    if sig == signal.SIGINT:
        os.killpg(p.pid, sig)  # Ctrl-C reaches the whole foreground group, workers included
    else:
        os.kill(p.pid, sig)
    _, err = p.communicate(timeout=20)
    assert p.returncode == rc, err
    assert "Traceback" not in err, err  # workers ignore SIGINT: no traceback per worker
    deadline = time.time() + 10
    while time.time() < deadline and any(_running(k) for k in kids):
        time.sleep(0.1)
    assert not any(_running(k) for k in kids), "worker processes outlived the parent"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and pgrep")
def test_ctrl_c_on_goodput_plan_is_one_line_and_130(tmp_path):
    cmd = [sys.executable, "-m", "goodput", *PLAN, "--gpus", "h100,a100-80gb,l4", "--no-cache",
           "--workers", "2", "--out", str(tmp_path / "p")]
    cmd[cmd.index(TINY)] = str(REPO / "traces" / "sample_chat.csv")
    p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and len(_children(p.pid)) < 2 and p.poll() is None:
        time.sleep(0.2)
    kids = _children(p.pid)
    if len(kids) < 2:
        p.kill()
        pytest.skip("the plan finished before its worker pool could be interrupted")
    os.killpg(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 130 and err.strip() == "goodput: interrupted", err
    time.sleep(0.5)
    assert not any(_running(k) for k in kids)


# ------------------------------------------------------------------ locks
def test_a_second_run_on_a_locked_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "res"
    with folder_lock(out):
        rc = main(["simulate", "--trace", TINY, "--max-requests", "3", "--out", str(out),
                   "--no-progress", "--no-plots", "--cost-model", "roofline"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and "another goodput run is writing there now" in err, err
        rc = main([*PLAN, "--out", str(out)])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and "another goodput run is writing there now" in err, err
    with folder_lock(out):  # released: taken again
        pass
    # the lock file beside a results folder does not make its parent 'foreign'
    assert check_replaceable(tmp_path) is True
    out.mkdir()
    with pytest.raises(ConfigError, match="holds files a goodput run did not write"):
        check_replaceable(tmp_path)  # 'res' is a folder of the user's, not a run file


def test_a_lock_held_by_another_process_is_seen(tmp_path):
    out = tmp_path / "res"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from goodput.sim.outputs import folder_lock\n"
         f"with folder_lock(Path({str(out)!r})):\n print('held', flush=True); time.sleep(30)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match="another goodput run"), folder_lock(out):
            pass
    finally:
        holder.kill()
        holder.wait()
    with folder_lock(out):  # the OS released it with the process
        pass


# ------------------------------------------------------------------ the capacity cache
SMALL = SearchSettings(min_requests=40, max_requests=300, span_e2e=5, rel_tol=0.2)


def _task():
    return CapacityTask("llama-3.1-8b", "h100", 1, 0.5, 0.05, np.array([[128, 16], [200, 24]]),
                        {"policy": "vllm"}, {"kind": "roofline"}, SMALL, "s")


@pytest.mark.parametrize("mutate", [
    lambda d: {**d, "rate": -1e9}, lambda d: {**d, "rate": float("nan")},
    lambda d: {**d, "rate": "fast"}, lambda d: {**d, "rate": True},
    lambda d: {**d, "zero_load_attainment": 2.0}, lambda d: {k: v for k, v in d.items() if k != "limit"},
    lambda d: {**d, "extra": 1}, lambda d: [d], lambda d: {**d, "probes": 5},
])
def test_corrupt_cache_entries_are_re_measured(tmp_path, mutate):
    cache = CapacityCache(tmp_path)
    first = measure([_task()], cache, workers=1)[0]
    path = tmp_path / "capacity" / f"{task_key(_task())}.json"
    path.write_text(json.dumps(mutate(json.loads(path.read_text()))))
    cache = CapacityCache(tmp_path)
    again = measure([_task()], cache, workers=1)[0]
    assert again.cached is False and again.rate == first.rate
    assert len(cache.corrupt) == 1 and str(path) in cache.corrupt[0]
    assert json.loads(path.read_text())["rate"] == first.rate  # the entry is repaired
    assert measure([_task()], CapacityCache(tmp_path), workers=1)[0].cached is True


def test_a_capacity_another_process_is_measuring_is_waited_for(tmp_path):
    cache = CapacityCache(tmp_path)
    key = task_key(_task())
    first = measure([_task()], CapacityCache(tmp_path / "ref"), workers=1)[0]
    lock = cache.lock(key)
    with lock:  # "another plan" holds the entry and writes it before releasing
        cache.put(key, first)
    from goodput.planner.capacity import _run_and_store

    d = _run_and_store((_task(), key, str(tmp_path), True))
    assert d["cached"] is True and d["rate"] == first.rate


def test_no_lock_file_is_left_beside_the_results(tmp_path):
    out = tmp_path / "res"
    with folder_lock(out):
        assert (tmp_path / ".res.lock").exists()
    assert list(tmp_path.iterdir()) == []
