"""Writes notebooks/plan.ipynb and notebooks/profile_fit.ipynb from the cell sources below.

One notebook per use (issue 18): *plan* (the planner's Python API on a small trace, its report,
plots, the verified TPOT frontier and a replay of plan.yaml) and *profile -> fit* (the
profiler's CPU path end to end: measure, fit, check the fit on held-out points, simulate with
it). Each runs on 2 CPU cores in well under a minute and
writes only into a temporary folder.

Run: python notebooks/build_use_notebooks.py   (tests execute the notebooks and check they are
in sync with this file: tests/test_notebooks.py; `make notebooks` also executes them in place)
"""
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))  # builders are run as scripts and loaded by path in the tests
from nbcells import write_notebook  # noqa: E402

PLAN = [
    ("md", "# Plan: the cheapest GPU mix that meets the SLOs\n\n"
           "The planner's Python API on the shipped 500-request chat sample sped up 8x (about 32 "
           "req/s): bucket the requests by size, measure each GPU type's SLO capacity per bucket "
           "by simulation, solve the ILP for the cheapest mix, then prove the plan by "
           "re-simulating it (`docs/planner.md`). Coarse buckets and short capacity probes keep "
           "it to seconds; `goodput plan` takes the same options as flags."),
    ("code", "import tempfile\n"
             "from pathlib import Path\n"
             "\n"
             "from IPython.display import Image, display\n"
             "\n"
             "from goodput.planner.assemble import PlanOptions\n"
             "from goodput.planner.pipeline import make_plan\n"
             "from goodput.planner.report import headline, write_outputs\n"
             "from goodput.sim.workload.generators import rescale\n"
             "from goodput.sim.workload.loaders import load_trace\n"
             "\n"
             "trace = rescale(load_trace(Path('../traces/sample_chat.csv')), factor=8.0)\n"
             "print(len(trace), 'requests over', round(trace.duration_s), 's')"),
    ("code", "work = Path(tempfile.mkdtemp(prefix='goodput-plan-'))\n"
             "opts = PlanOptions(model='llama-3.1-8b', ttft_s=1.0, tpot_s=0.1,\n"
             "                   gpus=['l4', 'a10g', 'a100-80gb', 'h100'],\n"
             "                   input_edges=(1024,), output_edges=(256,),\n"
             "                   cost_model={'kind': 'roofline'}, min_probe_requests=100,\n"
             "                   max_probe_requests=1000, rel_tol=0.2, workers=2,\n"
             "                   cache_dir=str(work / 'cache'))\n"
             "out = make_plan(trace, opts)\n"
             "print(headline(out))"),
    ("md", "Where each size bucket went, and what the proof measured per bucket and per type."),
    ("code", "print(out.check.per_slice.to_string(index=False))\n"
             "out.check.per_type"),
    ("md", "The files `goodput plan --out` writes: `plan.yaml` (replay it with `goodput simulate "
           "--plan`), the CSVs, the plots and `report.html`, one self-contained page."),
    ("code", "dest = write_outputs(out, work / 'plan')\n"
             "print(sorted(p.name for p in dest.iterdir()))\n"
             "for name in ('cost.png', 'load_per_type.png', 'attainment_per_slice.png'):\n"
             "    display(Image(filename=str(dest / name)))"),
    ("md", "**The frontier**: how the verified cost moves with the TPOT bound (`goodput plan "
           "--sweep tpot=...`). Every point is its own plan, proved by re-simulation like the "
           "one above (which is reused for its own bound); `ilp_only_cost` is the unproved ILP "
           "figure, shown for comparison, never as a result."),
    ("code", "from goodput.planner.sweep import frontier, frontier_table\n"
             "\n"
             "front = frontier(trace, opts, {'tpot': [0.05, 0.1, 0.2]}, known={('tpot', 0.1): out})\n"
             "print(frontier_table(front))"),
    ("md", "**Replay** the written `plan.yaml` as `goodput simulate --plan plan.yaml --trace ...` "
           "does, here on the same requests arriving twice as fast as planned: the check says "
           "whether the plan still meets the target and which buckets miss first."),
    ("code", "from goodput.planner.plan import Plan\n"
             "from goodput.planner.verify import simulate_plan\n"
             "\n"
             "plan = Plan.load(dest / 'plan.yaml')\n"
             "for name, replay in (('as planned', trace), ('twice as fast', rescale(trace, factor=2.0))):\n"
             "    check = simulate_plan(plan, replay, plan.seed)\n"
             "    print(f'{name}: {check.text()}')"),
]

PROFILE = [
    ("md", "# Profile -> fit -> simulate, on a CPU\n\n"
           "The profiler's whole path without a GPU: measure the `tiny-cpu` model (a small "
           "synthetic transformer) on this CPU, fit the profiled cost model to the measurements, "
           "check it on the 20% of batches held out of the fit, and simulate with it. On a GPU "
           "the same calls with `device='cuda'` and a catalog model write "
           "`profiler/profiles/<gpu>/<model>/tp<k>/` (`docs/profiling.md`). CPU timings vary "
           "with the machine's load, so the errors below are the CPU's, not the GPU profiles'."),
    ("code", "%matplotlib inline\n"
             "import tempfile\n"
             "from pathlib import Path\n"
             "\n"
             "import matplotlib.pyplot as plt\n"
             "import pandas as pd\n"
             "\n"
             "from goodput.profiler.batches import expand\n"
             "from goodput.profiler.fit import fit_profile, load_rows, split_holdout\n"
             "from goodput.profiler.run import RunConfig, run_profile\n"
             "from goodput.sim.costmodel.profiled import ProfiledCostModel\n"
             "\n"
             "root = Path(tempfile.mkdtemp(prefix='goodput-profile-'))\n"
             "profile = run_profile(RunConfig(model='tiny-cpu', device='cpu', out_root=root,\n"
             "                                progress=False))\n"
             "rows = pd.read_csv(profile / 'measurements.csv')\n"
             "print(profile.relative_to(root), len(rows), 'points measured')\n"
             "rows.groupby(['kind', 'status']).size().unstack(fill_value=0)"),
    ("md", "Fit: `fit.json` is what the simulator loads; `fit_report.json` scores it on the "
           "held-out batches."),
    ("code", "report = fit_profile(profile)\n"
             "print('held-out error (per-layer batch time):', report['heldout'])\n"
             "pd.DataFrame(report['by_kind']).T"),
    ("code", "model = ProfiledCostModel.from_dir(profile)\n"
             "batches = [r for r in load_rows(profile) if r['kind'] == 'batch']\n"
             "train, test = split_holdout(batches, 0.2, 0)\n"
             "fig, ax = plt.subplots(figsize=(5, 4))\n"
             "for name, part in (('fitted on', train), ('held out', test)):\n"
             "    measured = [1e3 * float(r['median_s']) for r in part]\n"
             "    predicted = [1e3 * model.layer_time(*expand(r['code'])) for r in part]\n"
             "    ax.scatter(measured, predicted, s=14, label=name)\n"
             "lim = [min(ax.get_xlim()[0], ax.get_ylim()[0]), max(ax.get_xlim()[1], ax.get_ylim()[1])]\n"
             "ax.plot(lim, lim, color='grey', lw=1, label='exact')\n"
             "ax.set(xscale='log', yscale='log', xlabel='measured per-layer time (ms)',\n"
             "       ylabel='fitted model (ms)', title='tiny-cpu on this CPU')\n"
             "ax.legend()\n"
             "fig.tight_layout()"),
    ("md", "Simulate with the fitted profile: a Poisson workload on one instance whose every "
           "batch is priced by the model just fitted."),
    ("code", "from goodput.sim.config import InstanceGroupConfig, SimConfig\n"
             "from goodput.sim.metrics import SLO, request_metrics, slo_met\n"
             "from goodput.sim.simulator import simulate\n"
             "from goodput.sim.workload.generators import synthesize\n"
             "\n"
             "cfg = SimConfig(cluster=[InstanceGroupConfig(model='tinyllama-1.1b', gpu='h100')])\n"
             "cfg.cost_model.kind, cfg.cost_model.profile_dir = 'profiled', str(profile)\n"
             "trace = synthesize(200, 5.0, 'uniform:10:200', 'uniform:1:30', seed=1)\n"
             "result = simulate(cfg, trace)\n"
             "q = request_metrics(result.requests)\n"
             "print('cost model:', sorted(set(result.cost_sources.values())))\n"
             "print('TTFT p50 ms', round(1e3 * q.ttft_s.median(), 2), ' TPOT p50 ms',\n"
             "      round(1e3 * q.tpot_s.median(), 3))\n"
             "print('attainment (TTFT <= 1 s, TPOT <= 50 ms):', slo_met(q, SLO(1.0, 0.05)).mean())"),
]


def build(name: str, cells) -> None:
    write_notebook(HERE / name, cells)


if __name__ == "__main__":
    build("plan.ipynb", PLAN)
    build("profile_fit.ipynb", PROFILE)
