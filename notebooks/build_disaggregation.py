"""Writes notebooks/disaggregation.ipynb from the cell sources below (reviewed as code).

Run: python notebooks/build_disaggregation.py   (tests execute the notebook and check it is
in sync with this file: tests/test_placement_notebook.py)
"""
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))  # builders are run as scripts and loaded by path in the tests
from nbcells import write_notebook  # noqa: E402

DISAGG = [
    ("md", "# Colocated vs disaggregated prefill/decode on one trace\n\n"
           "Llama-3.1-8B on 4 H100s (roofline cost model), the Azure conversation trace (its first "
           "5 minutes from `../shared/traces/` when present, else the shipped sample) sped up 10x: "
           "4 mixed vLLM instances against 2 prefill + 2 decode instances with the KV moved "
           "layer by layer over InfiniBand. See `docs/disaggregation.md`."),
    ("code", "from pathlib import Path\n"
             "\n"
             "import pandas as pd\n"
             "\n"
             "from goodput.sim.config import InstanceGroupConfig, SimConfig\n"
             "from goodput.sim.metrics import SLO, request_metrics, slo_met\n"
             "from goodput.sim.simulator import simulate\n"
             "from goodput.sim.workload.generators import rescale, time_slice\n"
             "from goodput.sim.workload.loaders import load_trace\n"
             "\n"
             "real = Path('../../shared/traces/AzureLLMInferenceTrace_conv.csv')\n"
             "path = real if real.exists() else Path('../traces/sample_chat.csv')\n"
             "trace = load_trace(path)\n"
             "if trace.duration_s > 300:\n"
             "    trace = time_slice(trace, 0, 300)\n"
             "trace = rescale(trace, factor=10.0)\n"
             "print(path.name, len(trace), 'requests over', round(trace.duration_s), 's')"),
    ("code", "def group(n, role='mixed'):\n"
             "    return InstanceGroupConfig(model='llama-3.1-8b', gpu='h100', count=n, role=role)\n"
             "\n"
             "\n"
             "def config(design):\n"
             "    g = group\n"
             "    cluster = [g(4)] if design == 'colocated' else [g(2, 'prefill'), g(2, 'decode')]\n"
             "    cfg = SimConfig(cluster=cluster)\n"
             "    cfg.cost_model.kind = 'roofline'\n"
             "    cfg.router.name = 'least_outstanding_tokens'\n"
             "    cfg.network.kv_transfer = 'layer_by_layer'\n"
             "    return cfg\n"
             "\n"
             "slo = SLO(0.2, 0.03)\n"
             "rows, runs = [], {}\n"
             "for design in ('colocated', 'disaggregated'):\n"
             "    res = runs[design] = simulate(config(design), trace)\n"
             "    q = request_metrics(res.requests)\n"
             "    rows.append({'design': design, 'attainment': slo_met(q, slo).mean(),\n"
             "                 'ttft p90 s': q.ttft_s.quantile(0.9), 'tpot p90 s': q.tpot_s.quantile(0.9)})\n"
             "print(pd.DataFrame(rows).to_string(index=False))"),
    ("md", "Where the disaggregated run's time goes: the KV hand-off per request and the busiest "
           "links."),
    ("code", "q = request_metrics(runs['disaggregated'].requests)\n"
             "print('KV hand-off p50 / p99 ms:', round((q.kv_landed_s - q.kv_handoff_s).median() * 1e3, 2),\n"
             "      round((q.kv_landed_s - q.kv_handoff_s).quantile(0.99) * 1e3, 2))\n"
             "print('KV moved GB:', round(q.kv_transfer_bytes.sum() / 1e9, 2))\n"
             "runs['disaggregated'].links.sort_values('bytes', ascending=False).head(4)"),
]


def build(name: str, cells) -> None:
    write_notebook(HERE / name, cells)


if __name__ == "__main__":
    build("disaggregation.ipynb", DISAGG)
