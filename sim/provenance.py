"""What made a run: the record stored as ``summary.json["provenance"]`` and printed as the header
of ``goodput simulate``.

* ``goodput_version``: ``goodput.__version__`` (the installed distribution's version).
* ``git_commit``: HEAD of the checkout the code runs from, read from the ``.git`` files (no git
  process is started); ``"unknown"`` outside a checkout or when anything there is unreadable.
  Collecting provenance never fails a run: a part that cannot be read says so instead.
* ``config_sha256``: SHA-256 of the resolved config as canonical JSON (sorted keys) *without* its
  ``output`` section and ``progress`` (where results go and whether a bar is drawn do not change
  them), so the same simulation written to two folders has the same hash.
* ``trace``: the file's resolved path, size, modification time and a content hash: the full
  SHA-256 for files up to ``FULL_HASH_LIMIT`` (64 MiB), else the SHA-256 of the size followed by
  the first and the last MiB (``hash_method`` says which; cheap on multi-GB traces, and any edit
  that changes the size or either end changes it). A synthetic workload records its generator.
* ``cost_models``: per cluster group, the cost model's ``source``, and its ``provenance`` and
  ``error_estimate`` from ``describe()`` (goodput.sim.costmodel.errors) plus the profile folder if any.
* ``seed``: the run's seed.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

#: files up to this size are hashed whole; larger ones by size + first and last SAMPLE bytes
FULL_HASH_LIMIT = 64 << 20
SAMPLE = 1 << 20
_CODE_ROOT = Path(__file__).resolve().parent.parent


def goodput_version() -> str:
    """``goodput.__version__`` when the goodput package is loaded (the CLI, the public API): it is
    read from sys.modules, not imported, as sim sits below goodput; else the distribution's."""
    top = sys.modules.get("goodput")
    try:
        if top is not None:
            return str(top.__version__)
        from importlib.metadata import version

        return version("goodput-serving")  # goodput.DISTRIBUTION
    except Exception:  # provenance never fails a run
        return "unknown"


def _git_dir(start: Path) -> Path | None:
    for d in (start, *start.parents):
        dot = d / ".git"
        if dot.is_dir():
            return dot
        if dot.is_file():  # a worktree or submodule: "gitdir: PATH"
            text = dot.read_text().strip()
            if text.startswith("gitdir:"):
                return (d / text[len("gitdir:"):].strip()).resolve()
    return None


def _is_sha(text: str) -> bool:
    return len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text)


def git_commit(start: Path | None = None) -> str:
    """The commit HEAD names in the checkout holding ``start`` (default: this code), or 'unknown'."""
    try:
        git = _git_dir(Path(start or _CODE_ROOT).resolve())
        if git is None:
            return "unknown"
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head if _is_sha(head) else "unknown"
        ref = head[len("ref:"):].strip()
        common = git
        if (git / "commondir").is_file():
            common = (git / (git / "commondir").read_text().strip()).resolve()
        for base in (git, common):
            if (base / ref).is_file():
                sha = (base / ref).read_text().strip()
                return sha if _is_sha(sha) else "unknown"
        packed = common / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[1] == ref and _is_sha(parts[0]):
                    return parts[0]
    except (OSError, UnicodeDecodeError):
        pass
    return "unknown"


def config_hash(config: dict) -> str:
    """SHA-256 of ``config`` (a ``to_dict`` of the SimConfig) minus ``output`` and ``progress``."""
    kept = {k: v for k, v in config.items() if k not in ("output", "progress")}
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def file_fingerprint(path: str | os.PathLike) -> dict:
    """Path, size, mtime and content hash of a file (see the module docstring for the method)."""
    p = Path(path)
    st = p.stat()
    h = hashlib.sha256()
    with p.open("rb") as f:
        if st.st_size <= FULL_HASH_LIMIT:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
            method = "full"
        else:
            h.update(str(st.st_size).encode() + b"\n")
            h.update(f.read(SAMPLE))
            f.seek(st.st_size - SAMPLE)
            h.update(f.read(SAMPLE))
            method = "size+first+last MiB"
    return {"path": str(p.resolve()), "bytes": st.st_size,
            "mtime": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(st.st_mtime)),
            "sha256": h.hexdigest(), "hash_method": method}


def trace_provenance(cfg, trace=None, load_options: dict | None = None) -> dict:
    """Where the run's requests came from: a file (fingerprinted), or the synthetic generator, or
    a table handed in by a caller."""
    t = cfg.trace
    rows = len(trace) if trace is not None and hasattr(trace, "__len__") else None
    if t.path:
        try:
            out: dict[str, Any] = file_fingerprint(t.path)
        except OSError as exc:
            out = {"path": str(t.path), "error": f"{type(exc).__name__}: {exc}"}
        out["format"] = getattr(trace, "format", t.format)
        if load_options:
            out["load_options"] = load_options
    elif hasattr(trace, "columns"):  # a DataFrame handed in by a caller
        out = {"path": None, "source": "in-memory table (DataFrame)"}
    elif isinstance(getattr(trace, "source", None), str) and trace.source != "synthetic":
        out = {"path": None, "source": trace.source, "format": getattr(trace, "format", None)}
    else:
        out = {"path": None, "synthetic": {"num_requests": t.max_requests or t.num_requests,
                                           "rate": t.rate, "arrival": t.arrival, "cv": t.cv,
                                           "prompt": t.prompt, "output": t.output}}
    for key in ("rate", "start_s", "end_s", "max_requests"):
        if t.path and getattr(t, key) is not None:
            out.setdefault("applied", {})[key] = getattr(t, key)
    out["requests"] = rows
    return out


def _group_name(group, model, gpu) -> str:  # as goodput.sim.simulator names instances' groups
    return group.name or f"{model.name}@{gpu.name}x{group.tp}"


def cost_model_provenance(cfg) -> dict:
    """Per cluster group: the cost model the run will use and what its numbers rest on."""
    out: dict[str, dict] = {}
    try:
        from goodput.sim.catalog import get_gpu, get_model
        from goodput.sim.costmodel.factory import make_cost_model
    except Exception as exc:  # pragma: no cover  (a broken install; say so, do not fail)
        return {"error": f"{type(exc).__name__}: {exc}"}
    for i, group in enumerate(cfg.cluster):
        try:
            model, gpu = get_model(group.model), get_gpu(group.gpu)
            name = _group_name(group, model, gpu)
            d = make_cost_model(model, gpu, group.tp, cfg.cost_model).describe()
            out[name] = {k: d[k] for k in ("source", "provenance", "error_estimate", "profile_dir")
                         if k in d}
        except Exception as exc:  # the run itself reports a bad group; provenance never fails
            out[group.name or f"cluster[{i}]"] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def collect(cfg, trace=None, load_options: dict | None = None) -> dict:
    """The provenance record of a run of ``cfg`` on ``trace`` (see the module docstring)."""
    from goodput.sim.config import to_dict

    config = to_dict(cfg)
    return {
        "goodput_version": goodput_version(),
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "command": " ".join(["goodput", *sys.argv[1:]]) if Path(sys.argv[0]).name == "goodput" else None,
        "config_sha256": config_hash(config),
        "config": config,
        "trace": trace_provenance(cfg, trace, load_options),
        "cost_models": cost_model_provenance(cfg),
        "seed": cfg.seed,
    }


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)  # pragma: no cover


def format_header(prov: dict) -> str:
    """The few lines ``goodput simulate`` prints before simulating."""
    commit = prov.get("git_commit", "unknown")
    lines = [f"{'goodput':<12}{prov.get('goodput_version')}  commit {commit[:12]}  "
             f"config {prov.get('config_sha256', '')[:12]}  seed {prov.get('seed')}"]
    t = prov.get("trace", {})
    if t.get("path") and "sha256" in t:
        lines.append(f"{'trace':<12}{t['path']}  ({t.get('format')}, {t.get('requests')} requests, "
                     f"{_size(t['bytes'])}, sha256 {t['sha256'][:12]} {t['hash_method']})")
    elif t.get("path"):
        lines.append(f"{'trace':<12}{t['path']}  ({t.get('error')})")
    elif "synthetic" in t:
        s = t["synthetic"]
        lines.append(f"{'trace':<12}synthetic: {s['num_requests']} requests at {s['rate']} req/s "
                     f"({s['arrival']}), prompt {s['prompt']}, output {s['output']}")
    else:
        lines.append(f"{'trace':<12}{t.get('source')}  ({t.get('requests')} requests)")
    for name, c in (prov.get("cost_models") or {}).items():
        if not isinstance(c, dict):
            continue
        est = c.get("error_estimate")
        err = est.get("label") if isinstance(est, dict) else None
        what = c.get("error") or c.get("source") or c.get("provenance")
        lines.append(f"{'cost model':<12}{name}: {what}" + (f"  [{err}]" if err else ""))
    return "\n".join(lines)
