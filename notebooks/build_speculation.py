"""Writes notebooks/speculation.ipynb from the cell sources below (reviewed as code).

Run: python notebooks/build_speculation.py   (tests execute the notebook and check it is in sync
with this file: tests/test_prefix_notebook.py)
"""
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))  # builders are run as scripts and loaded by path in the tests
from nbcells import write_notebook  # noqa: E402

SPEC = [
    ("md", "# When does speculative decoding help under load?\n\n"
           "Llama-3.1-8B on one H100 (roofline cost model, so it runs anywhere) drafted by "
           "Llama-3.2-1B at acceptance 0.8: no speculation, fixed k = 4 and SmartSpec's adaptive k, "
           "at 10% to 90% of the instance's capacity and in overload. Each request keeps its own "
           "accepted drafts, drawn per step from seeded per-request uniforms; SmartSpec chooses k "
           "from each request's online estimate of its acceptance. SmartSpec's paper reports "
           "speculation cutting latency at low load, fixed k degrading with load and adaptive k "
           "never worse than none (the measured H100 profiles: `docs/speculation.md`, "
           "`python benchmarks/speculation.py`)."),
    ("code", "import matplotlib.pyplot as plt\n"
             "import pandas as pd\n"
             "\n"
             "from goodput.sim.config import load_config\n"
             "from goodput.sim.metrics import SLO, request_metrics, slo_met\n"
             "from goodput.sim.simulator import simulate\n"
             "from goodput.sim.workload.generators import synthesize\n"
             "\n"
             "METHODS = {'none': {'method': 'none'}, 'fixed k=4': {'method': 'fixed', 'fixed.k': 4},\n"
             "           'smartspec': {'method': 'smartspec'}}\n"
             "slo = SLO(1.0, 0.02)\n"
             "\n"
             "\n"
             "def run(rate, method):\n"
             "    over = {'cluster': [{'model': 'llama-3.1-8b', 'gpu': 'h100'}],\n"
             "            'cost_model.kind': 'roofline',\n"
             "            'scheduler.speculation.alpha': 0.8,\n"
             "            'scheduler.speculation.draft_model': 'llama-3.2-1b',\n"
             "            **{f'scheduler.speculation.{k}': v for k, v in method.items()}}\n"
             "    trace = synthesize(400, rate, 'lognormal:mean=512,std=400,min=16,max=4096',\n"
             "                       'lognormal:mean=256,std=200,min=2,max=2048', seed=0)\n"
             "    res = simulate(load_config(overrides=over), trace)\n"
             "    q = request_metrics(res.requests)\n"
             "    done = q[q.outcome == 'completed']\n"
             "    return {'req/s done': len(done) / res.sim_duration_s,\n"
             "            'TPOT ms': 1e3 * done.tpot_s.mean(),\n"
             "            'tok/s': done.generated_tokens.sum() / res.sim_duration_s,\n"
             "            'attainment': slo_met(q, slo).mean()}"),
    ("code", "# capacity: requests completed per second without speculation when overloaded\n"
             "capacity = run(96, METHODS['none'])['req/s done']\n"
             "print(f'capacity without speculation: {capacity:.1f} req/s')"),
    ("code", "rows = [{'load': f, 'req/s': round(f * capacity, 2), 'method': m, **run(f * capacity, spec)}\n"
             "        for f in (0.1, 0.3, 0.5, 0.7, 0.9) for m, spec in METHODS.items()]\n"
             "table = pd.DataFrame(rows).drop(columns='req/s done')\n"
             "print(table.round(3).to_string(index=False))"),
    ("code", "fig, ax = plt.subplots(figsize=(5, 3))\n"
             "for m, g in table.groupby('method', sort=False):\n"
             "    ax.plot(100 * g['load'], g['TPOT ms'], marker='o', label=m)\n"
             "ax.set_xlabel('offered load (% of capacity without speculation)')\n"
             "ax.set_ylabel('mean TPOT (ms)')\n"
             "ax.legend()\n"
             "fig.tight_layout()"),
]


def build(name: str, cells) -> None:
    write_notebook(HERE / name, cells)


if __name__ == "__main__":
    build("speculation.ipynb", SPEC)
