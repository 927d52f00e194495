"""report.html of a run and of a plan: self-contained, complete, escaped, and it renders.

The pages are parsed with the standard library's html.parser (tables, their headings and cells,
embedded images); where Debian's chromium is installed, a headless browser takes a screenshot
of a run's page and the test checks the picture is not blank (skipped cleanly otherwise).
"""
from __future__ import annotations

import base64
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from goodput.sim.config import InstanceGroupConfig, SimConfig
from goodput.sim.outputs import holds_results
from goodput.sim.report_html import run_report
from goodput.sim.run import run_and_report
from tests.conftest import poisson_requests

PNG = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """Headings, tables (rows of cell texts), images (src) and external references of a page."""

    def __init__(self, text: str):
        super().__init__()
        self.headings: list[str] = []
        self.tables: list[list[list[str]]] = []
        self.images: list[str] = []
        self.external: list[str] = []
        self._tag: str | None = None
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("h1", "h2"):
            self._tag, self.headings = tag, [*self.headings, ""]
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(a.get("src", ""))
        for key in ("src", "href"):
            if tag in ("script", "link", "img", "iframe") and a.get(key, "").startswith(("http", "//")):
                self.external.append(a[key])

    def handle_endtag(self, tag):
        if tag in ("h1", "h2"):
            self._tag = None
        elif tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._tag:
            self.headings[-1] += data
        if self._cell is not None:
            self._cell.append(data)

    def rows(self) -> dict[str, list[str]]:
        """First column -> the other cells, over every table (for lookups by row name)."""
        return {row[0]: row[1:] for t in self.tables for row in t if row}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    cfg = SimConfig(cluster=[InstanceGroupConfig(model="llama-3.1-8b", gpu="h100", count=2,
                                                 name="g<b>&'x")])
    cfg.cost_model.kind = "roofline"
    cfg.slo.ttft_s, cfg.slo.tpot_s = 0.5, 0.05
    cfg.output.dir = str(out)
    run_and_report(cfg, poisson_requests(300, rate=8, seed=3))
    return out


def _decoded(src: str) -> bytes:
    assert src.startswith("data:image/png;base64,")
    return base64.b64decode(src.split(",", 1)[1])


def test_run_folder_has_a_self_contained_report(run_dir):
    page = Page((run_dir / "report.html").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    for heading in ("goodput run", "Cluster", "Requests", "Throughput", "SLO", "Latency",
                    "Load and utilisation", "Cost and energy", "Plots", "Provenance"):
        assert heading in page.headings, heading
    assert len(page.images) == 2 and not page.external  # both plots inline, nothing fetched
    for src in page.images:
        assert _decoded(src).startswith(PNG)
    rows = page.rows()
    p99 = summary["latency"]["ttft_s"]["p99"] * 1e3
    assert float(rows["TTFT"][-1].replace(",", "")) == pytest.approx(p99, rel=1e-3)  # in ms
    assert rows["total"] == [f"{summary['counts']['total']:,}"]
    assert rows["config sha256"] == [summary["provenance"]["config_sha256"]]
    assert rows["commit"] == [summary["provenance"]["git_commit"]]
    assert rows["g<b>&'x"][:2] == ["llama-3.1-8b", "h100"]  # escaped, shown as text
    assert "<b>&" not in (run_dir / "report.html").read_text()


def test_report_is_published_with_the_run_and_replaced_with_it(run_dir):
    assert holds_results(run_dir)  # report.html is a run file: a rerun with --force may replace it
    assert not list(run_dir.parent.glob(".out.partial-*"))


def test_optional_blocks_appear_when_present(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["prefix_cache"] = {"token_hit_rate": 0.42, "tiers": {"gpu": {"hits": 3}}}
    summary["speculation"] = {"accepted_per_step": 2.5}
    page = Page(run_report(summary))
    assert "Prefix cache" in page.headings and "Speculative decoding" in page.headings
    assert "Disaggregated prefill/decode" not in page.headings
    rows = page.rows()
    assert rows["token_hit_rate"] == ["0.42"] and rows["tiers.gpu.hits"] == ["3"]


def test_plan_report(tmp_path):
    from goodput.planner.pipeline import PlanOptions, make_plan
    from goodput.planner.report import write_outputs

    rng = np.random.default_rng(1)
    trace = poisson_requests(150, rate=2.0, prompt=(100, 2000), output=(10, 60), seed=1)
    trace["prompt_tokens"] = np.where(rng.random(len(trace)) < 0.3, 2500, 150)
    opts = PlanOptions(model="llama-3.1-8b", ttft_s=0.5, tpot_s=0.05, gpus=["a10g", "a100-80gb"],
                       input_edges=(1024,), output_edges=(64,), cost_model={"kind": "roofline"},
                       min_probe_requests=40, max_probe_requests=400, rel_tol=0.2, workers=1,
                       cache_dir=str(tmp_path / "cache"))
    out = make_plan(trace, opts)
    dest = write_outputs(out, tmp_path / "plan")
    assert (dest / "cost.png").read_bytes().startswith(PNG)  # no sweep: labelled bars
    page = Page((dest / "report.html").read_text())
    for heading in ("goodput plan", "Plan", "Cost", "Verification rounds", "Attainment per slice",
                    "Measured capacities (req/s per instance)", "Plots", "Provenance"):
        assert heading in page.headings, heading
    assert len(page.images) == 3 and not page.external
    rows = page.rows()
    assert rows["total"][4] == f"{out.plan.cost_per_hour:.4g}"
    assert len(rows["planning inputs sha256"][0]) == 64


def _browser() -> str | None:
    return next((b for b in ("chromium", "chromium-browser") if shutil.which(b)), None)


@pytest.mark.skipif(_browser() is None, reason="no chromium on this machine (Debian: apt-get "
                                               "install chromium)")
def test_run_report_renders_in_a_headless_browser(run_dir, tmp_path):
    shot = tmp_path / "shot.png"
    cmd = [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600",
           f"--screenshot={shot}", (run_dir / "report.html").resolve().as_uri()]
    try:
        subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        pytest.skip("chromium did not finish in 120 s")
    if not shot.exists():
        pytest.skip("chromium wrote no screenshot (headless mode unavailable here)")
    from matplotlib.image import imread

    img = imread(shot)
    assert img.shape[0] >= 1000 and img.shape[1] >= 1000
    gray = img[..., :3].mean(axis=2)
    assert gray.std() > 0.05  # text, tables and plots: far from one flat colour
    assert (gray < 0.5).mean() > 0.005  # dark pixels (text) on the page
    assert len(np.unique((img[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50
    assert Path(shot).stat().st_size > 20_000
