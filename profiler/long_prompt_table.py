"""Long prompts, long chunks and long-context decode: measured vs predicted, from committed data.

    python -m goodput.profiler.long_prompt_table            # markdown tables for docs/profiling.md
    python -m goodput.profiler.long_prompt_table --new DIR --old DIR

"measured" is the profile's own table composed into one forward pass: layers x the measured
per-layer batch row + the measured embedding and LM-head sweeps (interpolated), i.e. GPU time
without the host term. "predicted" is ``ProfiledCostModel.kernel_time`` of the same batch (no
engine term) from the old profile (Triton paged attention only, prompts to 16,384 tokens) and
the new one (fastest attention per shape, prompts to the context limit). The independent
reference is the plain-torch measurement quoted in issue 16 (cuBLAS GEMMs + torch SDPA flash,
one layer x 32, CUDA events); it is shown for comparison only and is not used by any fit.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from goodput.sim.costmodel.base import Batch
from goodput.sim.costmodel.profile_store import PROFILES_ROOT
from goodput.sim.costmodel.profiled import PiecewiseLinear, ProfiledCostModel, logit_rows

NEW = PROFILES_ROOT / "h200-fastattn" / "llama-3.1-8b" / "tp1"
OLD = PROFILES_ROOT / "h200" / "llama-3.1-8b" / "tp1"
PROMPTS = (1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)
#: issue 16: independent plain-torch H200 reference, seconds for one prompt (32 layers)
REFERENCE_S = {16384: 0.50, 32768: 1.26, 65536: 3.43, 131072: 11.2}
CHUNKS = ((2048, 8192), (2048, 32768), (8192, 32768), (2048, 65536), (8192, 65536),
          (512, 122880), (2048, 122880), (8192, 122880))
DECODES = ((1, 32768), (1, 65536), (1, 131071), (4, 32768), (4, 65536), (4, 131071),
           (8, 32768), (8, 65536), (16, 32768), (16, 49152), (32, 28380))


class Table:
    """One profile's measured rows and sweeps."""

    def __init__(self, profile: Path):
        with (Path(profile) / "measurements.csv").open() as f:
            rows = [r for r in csv.DictReader(f) if r["status"] == "ok"]
        self.batch = {r["code"]: r for r in rows if r["kind"] == "batch"}
        self.sweep = {k: PiecewiseLinear(*zip(*sorted(
            (int(r["code"].split("=")[1]), float(r["median_s"])) for r in rows
            if r["kind"] == k), strict=True)) for k in ("embed", "lmhead")}
        self.layers = int(json.loads((Path(profile) / "provenance.json").read_text())
                          ["model_spec"]["layers"])

    def measured(self, code: str, q_lens: list[int]) -> float | None:
        r = self.batch.get(code)
        if r is None:
            return None
        return (self.layers * float(r["median_s"]) + self.sweep["embed"](sum(q_lens))
                + self.sweep["lmhead"](logit_rows(q_lens)))

    def note(self, code: str) -> str:
        r = self.batch.get(code)
        return r["note"].removeprefix("attn=") if r and r["note"] else ""


def _s(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _pct(p: float, m: float | None) -> str:
    return "" if m is None else f" ({100 * (p / m - 1):+.0f}%)"


def tables(new_dir: Path = NEW, old_dir: Path = OLD) -> str:
    new, old = Table(new_dir), Table(old_dir)
    cm_new = ProfiledCostModel.from_dir(new_dir, engine="none")
    cm_old = ProfiledCostModel.from_dir(old_dir, engine="none")
    out = ["One prompt (seconds, GPU time of the forward pass):", "",
           "| prompt | measured (new) | kernel | old table (Triton) | predicted, old profile "
           "| predicted, new profile | independent reference |",
           "| ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    for t in PROMPTS:
        code, b = f"1x{t}@0", Batch(new_tokens=[t], context_tokens=[0])
        m = new.measured(code, [t])
        po, pn = cm_old.kernel_time(b), cm_new.kernel_time(b)
        ref = REFERENCE_S.get(t)
        out.append(f"| {t:,} | {_s(m)} | {new.note(code)} | {_s(old.measured(code, [t]))} "
                   f"| {po:.3f}{_pct(po, m)} | {pn:.3f}{_pct(pn, m)} "
                   f"| {_s(ref, 2)}{_pct(ref, m) if ref else ''} |")
    out += ["", "One chunk over a cached prefix (milliseconds):", "",
            "| chunk @ prefix | measured (new) | kernel | predicted, old profile "
            "| predicted, new profile |", "| --- | ---: | --- | ---: | ---: |"]
    for q, c in CHUNKS:
        code, b = f"1x{q}@{c}", Batch(new_tokens=[q], context_tokens=[c])
        m = new.measured(code, [q])
        po, pn = cm_old.kernel_time(b) * 1e3, cm_new.kernel_time(b) * 1e3
        mm = None if m is None else m * 1e3
        out.append(f"| {q:,} @ {c:,} | {_s(mm, 1)} | {new.note(code)} | {po:.1f}{_pct(po, mm)} "
                   f"| {pn:.1f}{_pct(pn, mm)} |")
    out += ["", "Decode at long contexts (milliseconds per iteration):", "",
            "| batch x context | measured (new) | kernel | predicted, old profile "
            "| predicted, new profile |", "| --- | ---: | --- | ---: | ---: |"]
    for bs, c in DECODES:
        code, b = f"{bs}x1@{c}", Batch(new_tokens=[1] * bs, context_tokens=[c] * bs)
        m = new.measured(code, [1] * bs)
        po, pn = cm_old.kernel_time(b) * 1e3, cm_new.kernel_time(b) * 1e3
        mm = None if m is None else m * 1e3
        out.append(f"| {bs} x {c:,} | {_s(mm, 2)} | {new.note(code)} | {po:.2f}{_pct(po, mm)} "
                   f"| {pn:.2f}{_pct(pn, mm)} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new", default=str(NEW), help="profile measured with the fastest kernel")
    ap.add_argument("--old", default=str(OLD), help="profile measured with Triton attention")
    args = ap.parse_args(argv)
    print(tables(Path(args.new), Path(args.old)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
