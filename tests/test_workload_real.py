"""The loaders on the real public traces in ../shared/traces (skipped when that folder is absent).

Expected numbers are the facts measured on these files in /work/shared/traces/README.md.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from goodput.sim.workload import load_trace, trace_stats

REPO = Path(__file__).resolve().parents[1]
TRACES = REPO / ".." / "shared" / "traces"


def real(name: str) -> Path:
    p = TRACES / name
    if not p.exists():
        pytest.skip(f"real trace {p} not present")
    return p


def test_azure_code():
    t = load_trace(real("AzureLLMInferenceTrace_code.csv"))
    s = trace_stats(t)
    assert t.format == "azure" and s["count"] == 8819
    assert s["duration_s"] == pytest.approx(3436, abs=1)
    assert s["rate_rps"] == pytest.approx(2.57, abs=0.01)
    assert s["prompt"]["mean"] == pytest.approx(2048, abs=1)
    assert s["prompt"]["p99"] == pytest.approx(7436, abs=1)
    assert s["output"]["mean"] == pytest.approx(28, abs=0.5)
    assert t.df["arrival_s"].iloc[0] == 0.0 and t.df["arrival_s"].is_monotonic_increasing
    assert t.df["request_id"].tolist() == list(range(8819))


def test_azure_conv_loads():
    """Load time is a benchmark figure (benchmarks/sim_speed.py prints it), not a test."""
    p = real("AzureLLMInferenceTrace_conv.csv")
    t = load_trace(p)
    s = trace_stats(t)
    assert s["count"] == 19366
    assert s["duration_s"] == pytest.approx(3502, abs=1)
    assert s["rate_rps"] == pytest.approx(5.53, abs=0.01)
    assert s["prompt"]["mean"] == pytest.approx(1155, abs=1)
    assert s["output"]["mean"] == pytest.approx(211, abs=1)


@pytest.mark.parametrize("name,rows", [
    ("sharegpt_8k_filtered_stats_llama2_tokenizer.csv", 30731),
    ("arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv", 28257),
])
def test_length_only_with_synthesized_arrivals(name, rows):
    p = real(name)
    t = load_trace(p, rate=10.0, seed=0)
    assert t.format == "lengths" and len(t) == rows
    assert t.rate == pytest.approx(10.0, rel=0.03)
    assert (t.df["prompt_tokens"] >= 1).all() and (t.df["output_tokens"] >= 1).all()
    b = load_trace(p, rate=10.0, arrival="gamma", cv=3.0, seed=0)
    gaps = np.diff(b.df["arrival_s"].to_numpy())
    assert gaps.std() / gaps.mean() == pytest.approx(3.0, rel=0.1)
    assert b.df["prompt_tokens"].equals(t.df["prompt_tokens"])  # lengths keep file order


def test_cli_module_entry_point():
    p = real("AzureLLMInferenceTrace_conv.csv")
    r = subprocess.run([sys.executable, "-m", "goodput.sim.workload.cli", "trace", "stats", str(p)],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "19,366" in r.stdout and "5.530 req/s" in r.stdout
