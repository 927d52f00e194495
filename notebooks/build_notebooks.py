"""Writes notebooks/*.ipynb from the cell sources below, so notebooks are reviewed as code.

Run: python notebooks/build_notebooks.py   (tests execute the resulting notebooks)
"""
from pathlib import Path

import nbformat as nbf

HERE = Path(__file__).parent

COMPARE = [
    ("md", "# Two serving configurations on a real trace\n\n"
           "Loads the Azure LLM inference conversation trace (from `../shared/traces/` when present, "
           "else the shipped sample), simulates Llama-3.1-8B on 2 and on 4 H100 instances, and plots "
           "how latency and SLO attainment differ."),
    ("code", "from pathlib import Path\n"
             "import matplotlib\n"
             "matplotlib.use('Agg')\n"
             "import matplotlib.pyplot as plt\n"
             "from sim.config import SimConfig, InstanceGroupConfig\n"
             "from sim.run import run_and_report\n"
             "from sim.metrics import compare\n"
             "from sim.workload.loaders import load_trace\n"
             "from sim.workload.generators import time_slice\n"
             "from sim.plots import plot_comparison\n"
             "real = Path('../../shared/traces/AzureLLMInferenceTrace_conv.csv')\n"
             "path = real if real.exists() else Path('../traces/sample_chat.csv')\n"
             "trace = load_trace(path)\n"
             "if len(trace) > 3000:\n"
             "    trace = time_slice(trace, 0, 600)  # first 10 minutes keep the notebook quick\n"
             "print(path.name, len(trace), 'requests over', round(trace.duration_s), 's')"),
    ("code", "def config(instances):\n"
             "    cfg = SimConfig(cluster=[InstanceGroupConfig(model='llama-3.1-8b', gpu='h100', count=instances)])\n"
             "    cfg.router.name = 'least_outstanding_tokens'\n"
             "    cfg.slo.ttft_s, cfg.slo.tpot_s = 0.5, 0.03\n"
             "    return cfg\n"
             "runs = {f'{n} x H100': run_and_report(config(n), trace) for n in (1, 4)}\n"
             "compare({k: r.summary for k, r in runs.items()})"),
    ("code", "out = plot_comparison({k: r.requests for k, r in runs.items()}, 'compare.png')\n"
             "for k, r in runs.items():\n"
             "    print(k, 'attainment', r.summary['slo']['attainment'], 'cost $/h', r.summary['cost']['cluster_usd_per_hour'])"),
]


def build(cells, name):
    nb = nbf.v4.new_notebook()
    nb.cells = [nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src)
                for kind, src in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbf.write(nb, HERE / name)


if __name__ == "__main__":
    build(COMPARE, "compare_configurations.ipynb")
