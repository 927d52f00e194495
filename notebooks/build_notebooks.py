"""Writes notebooks/*.ipynb from the cell sources below, so notebooks are reviewed as code.

Run: python notebooks/build_notebooks.py   (tests execute the resulting notebooks; `make
notebooks` rebuilds every notebook and executes it in place, so the committed copies carry
their outputs). Plots are shown inline with IPython.display: goodput.sim.plots draws on the Agg canvas
without pyplot, so it writes a PNG whatever the backend, and the notebook displays that PNG.
"""
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))  # builders are run as scripts and loaded by path in the tests
from nbcells import write_notebook  # noqa: E402

COMPARE = [
    ("md", "# Two serving configurations and two batching policies on a real trace\n\n"
           "Loads the Azure LLM inference conversation trace (from `../shared/traces/` when present, "
           "else the shipped sample), simulates Llama-3.1-8B on 1 and on 4 H100 instances, and plots "
           "how latency and SLO attainment differ; then runs vLLM's and Sarathi's batching on one "
           "instance at three times the load."),
    ("code", "from pathlib import Path\n"
             "\n"
             "from IPython.display import Image, display\n"
             "\n"
             "from goodput.sim.config import InstanceGroupConfig, SimConfig\n"
             "from goodput.sim.metrics import SLO, compare\n"
             "from goodput.sim.plots import plot_comparison\n"
             "from goodput.sim.run import run_and_report\n"
             "from goodput.sim.workload.generators import time_slice\n"
             "from goodput.sim.workload.loaders import load_trace\n"
             "\n"
             "real = Path('../../shared/traces/AzureLLMInferenceTrace_conv.csv')\n"
             "path = real if real.exists() else Path('../traces/sample_chat.csv')\n"
             "trace = load_trace(path)\n"
             "if len(trace) > 3000:\n"
             "    trace = time_slice(trace, 0, 600)  # first 10 minutes keep the notebook quick\n"
             "print(path.name, len(trace), 'requests over', round(trace.duration_s), 's')"),
    ("code", "slo = SLO(ttft_s=0.5, tpot_s=0.03)\n"
             "\n"
             "\n"
             "def config(instances, policy='vllm'):\n"
             "    cfg = SimConfig(cluster=[InstanceGroupConfig(model='llama-3.1-8b', gpu='h100', "
             "count=instances)])\n"
             "    cfg.router.name = 'least_outstanding_tokens'\n"
             "    cfg.scheduler.policy = policy\n"
             "    cfg.slo.ttft_s, cfg.slo.tpot_s = slo.ttft_s, slo.tpot_s\n"
             "    return cfg\n"
             "\n"
             "\n"
             "runs = {f'{n} x H100': run_and_report(config(n), trace) for n in (1, 4)}\n"
             "compare({k: r.summary for k, r in runs.items()})"),
    ("code", "out = plot_comparison({k: r.requests for k, r in runs.items()}, 'compare.png', slo)\n"
             "for k, r in runs.items():\n"
             "    print(k, 'attainment', r.summary['slo']['attainment'],\n"
             "          'cost $/h', r.summary['cost']['cluster_usd_per_hour'])\n"
             "display(Image(filename=str(out)))"),
    ("md", "Two batching policies on the one instance, the trace sped up 3x so that batches "
           "crowd: vLLM (a waiting prefill runs first, stalling every decode) against Sarathi "
           "(prefills cut into chunks that share iterations with decodes, which keeps TPOT flat)."),
    ("code", "from goodput.sim.workload.generators import rescale\n"
             "\n"
             "busy = rescale(trace, factor=3.0)\n"
             "policies = {p: run_and_report(config(1, p), busy) for p in ('vllm', 'sarathi')}\n"
             "out = plot_comparison({k: r.requests for k, r in policies.items()}, 'policies.png', slo)\n"
             "print('attainment', {k: r.summary['slo']['attainment'] for k, r in policies.items()})\n"
             "display(Image(filename=str(out)))"),
]


FIDELITY = [
    ("md", "# How close is the simulator to a real engine?\n\n"
           "Reads the committed fidelity runs (`profiler/fidelity/`: real serving on an H200 with the "
           "simulator's own policies, see `docs/fidelity.md`), simulates one case with the shipped "
           "cost model and with the profile alone, and compares latency CDFs, SLO attainment and "
           "per-iteration times."),
    ("code", "from pathlib import Path\n"
             "\n"
             "import pandas as pd\n"
             "from IPython.display import Image, display\n"
             "\n"
             "from goodput.profiler.serve.fidelity import load_case\n"
             "from goodput.profiler.serve.report import markdown_report\n"
             "from goodput.sim.metrics import SLO, request_metrics, slo_met\n"
             "from goodput.sim.plots import plot_comparison\n"
             "from goodput.sim.simulator import simulate\n"
             "\n"
             "root = Path('../profiler/fidelity')\n"
             "print('\\n'.join(markdown_report(root).splitlines()[:11]))"),
    ("code", "case = root / 'h200' / 'llama-2-7b' / 'vllm-load70'\n"
             "cfg, trace = load_case(case)\n"
             "real = request_metrics(pd.read_csv(case / 'real_requests.csv'))\n"
             "runs = {'real engine': real}\n"
             "for engine in ('auto', 'none'):\n"
             "    cfg.cost_model.engine = engine\n"
             "    runs['simulated, engine ' + engine] = request_metrics(simulate(cfg, trace).requests)\n"
             "slo = SLO(ttft_s=0.1, tpot_s=0.015)\n"
             "rows = {k: {'TTFT p50 ms': 1e3 * df.ttft_s.median(), "
             "'TTFT p99 ms': 1e3 * df.ttft_s.quantile(0.99),\n"
             "            'TPOT p50 ms': 1e3 * df.tpot_s.median(), "
             "'TPOT p99 ms': 1e3 * df.tpot_s.quantile(0.99),\n"
             "            'SLO attainment': slo_met(df, slo).mean()} for k, df in runs.items()}\n"
             "table = pd.DataFrame(rows).T.round(3)\n"
             "print(table.to_string())\n"
             "print('attainment (TTFT <= 100 ms, TPOT <= 15 ms):', table['SLO attainment'].to_dict())"),
    ("code", "display(Image(filename=str(plot_comparison(runs, 'fidelity_cdfs.png', slo))))"),
    ("code", "from goodput.profiler.serve.calibrate import iteration_table\n"
             "from goodput.sim.costmodel.engine import EngineOverhead\n"
             "\n"
             "it = iteration_table([case.parent])\n"
             "engine = EngineOverhead.load('../profiler/profiles/h200/engine.json')\n"
             "it['shipped'] = engine.apply(it.kernel_s, it.n_seqs)\n"
             "it['error %'] = 100 * (it.shipped / it.wall_s - 1)\n"
             "print(it.groupby('kind')['error %']"
             ".describe(percentiles=[0.1, 0.5, 0.9]).round(2).to_string())"),
]


def build(cells, name):
    write_notebook(HERE / name, cells)


if __name__ == "__main__":
    build(COMPARE, "compare_configurations.ipynb")
    build(FIDELITY, "fidelity.ipynb")
