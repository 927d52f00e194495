"""Where a profile came from: GPU, driver, CUDA, torch, Triton, date, command and git commit.

Every profile directory carries ``provenance.json`` so a number in the table can always be traced
to the machine and code that measured it; profiles are data and are never edited by hand.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import subprocess
import sys
from typing import Any

import torch

from goodput.sim.catalog import gpus

#: (pattern in torch's device name, catalog GPU name). Checked in order.
_NAME_PATTERNS = (
    (r"H200", "h200"),
    (r"H100.*(PCIe|PCIE)", "h100-pcie"),
    (r"H100", "h100-sxm"),
    (r"A100.*80", "a100-80gb"),
    (r"A100", "a100-40gb"),
    (r"L40S", "l40s"),
    (r"A10G", "a10g"),
    (r"\bL4\b", "l4"),
    (r"B200", "b200"),
)


def gpu_catalog_name(device_name: str) -> str:
    """Catalog name for a torch device name, e.g. 'NVIDIA H100 80GB HBM3' -> 'h100-sxm'."""
    for pat, name in _NAME_PATTERNS:
        if re.search(pat, device_name, re.IGNORECASE):
            if name in gpus():
                return name
            break
    raise ValueError(
        f"cannot map GPU '{device_name}' to a catalog entry (option '--gpu-name'); pass "
        f"--gpu-name with one of {sorted(gpus())} or add the GPU to sim/catalog/gpus.yaml")


def detect_gpu_name(device: torch.device) -> str:
    if device.type != "cuda":
        return "cpu"
    return gpu_catalog_name(torch.cuda.get_device_name(device))


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def git_commit() -> str:
    """HEAD of the checkout, or $GOODPUT_GIT_COMMIT when the tree was copied without .git."""
    env = os.environ.get("GOODPUT_GIT_COMMIT")
    if env:
        return env
    head = _run(["git", "rev-parse", "HEAD"])
    if not head:
        return "unknown (no git metadata where the profile ran)"
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"])
    return head + ("+dirty" if dirty else "")


def code_hash() -> str:
    """SHA-256 (first 12 hex) of the profiler's own sources: identifies the measuring code even
    where the tree ran without git metadata (a copied working tree on a GPU box)."""
    import hashlib
    from pathlib import Path

    h = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for path in sorted(root.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def collect(device: torch.device) -> dict:
    info: dict[str, Any] = {
        "profiler_code_sha256": code_hash(),
        "date_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "host": platform.machine(),
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update({
            "device_name": props.name,
            "sm_count": props.multi_processor_count,
            "memory_bytes": props.total_memory,
            "cuda": torch.version.cuda,
            "driver": _run(["nvidia-smi", "--query-gpu=driver_version",
                            "--format=csv,noheader"]).splitlines()[:1] or ["unknown"],
        })
        info["driver"] = info["driver"][0]
    else:
        info.update({"device_name": platform.processor() or platform.machine(),
                     "cuda": None, "driver": None, "sm_count": os.cpu_count()})
    return info
