"""Writes notebooks/prefix_caching.ipynb from the cell sources below (reviewed as code).

Run: python notebooks/build_prefix_caching.py   (tests execute the notebook and check it is in
sync with this file: tests/test_prefix_notebook.py)
"""
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))  # builders are run as scripts and loaded by path in the tests
from nbcells import write_notebook  # noqa: E402

PREFIX = [
    ("md", "# Prefix caching: hit rate against cache size, and what routing does\n\n"
           "Llama-3.1-8B on 2 H200s (roofline cost model, so it runs anywhere), vLLM batching, the "
           "first 1,500 requests of Mooncake's public trace (`../shared/traces/` when present, else "
           "a generated multi-turn trace of the same form). See `docs/prefix_caching.md`."),
    ("code", "from pathlib import Path\n"
             "\n"
             "import matplotlib.pyplot as plt\n"
             "import numpy as np\n"
             "import pandas as pd\n"
             "\n"
             "from goodput.sim.config import InstanceGroupConfig, SimConfig\n"
             "from goodput.sim.metrics import SLO, request_metrics, slo_met\n"
             "from goodput.sim.simulator import simulate\n"
             "from goodput.sim.workload.loaders import load_trace\n"
             "\n"
             "real = Path('../../shared/traces/mooncake_synthetic_trace.jsonl')\n"
             "if real.exists():\n"
             "    df = load_trace(real).df.iloc[:1500]\n"
             "else:  # turns extend their session's prompt; sessions share 3 system prompts\n"
             "    rng, rows, nid = np.random.default_rng(0), [], 10_000\n"
             "    for s in range(500):\n"
             "        ids, t = [1000 * (s % 3) + u for u in range(8)], s * 0.7\n"
             "        for _ in range(3):\n"
             "            ids = ids + list(range(nid, nid + 6))\n"
             "            nid += 6\n"
             "            rows.append((t, len(ids) * 512 - 100, 150, ' '.join(map(str, ids))))\n"
             "            t += rng.exponential(20.0)\n"
             "    df = pd.DataFrame(rows, columns=['arrival_s', 'prompt_tokens', 'output_tokens',\n"
             "                                     'prefix_blocks']).sort_values('arrival_s')\n"
             "    df.insert(0, 'request_id', range(len(df)))\n"
             "print(len(df), 'requests, prompt mean', round(df.prompt_tokens.mean()), 'tokens')"),
    ("code", "def config(blocks=None, cache=True, router='prefix_aware', host_gb=0.0):\n"
             "    cfg = SimConfig(cluster=[InstanceGroupConfig(model='llama-3.1-8b', gpu='h200', count=2)])\n"
             "    cfg.cost_model.kind = 'roofline'\n"
             "    cfg.router.name = router\n"
             "    cfg.scheduler.num_gpu_blocks = blocks\n"
             "    pc = cfg.scheduler.section('prefix_cache')\n"
             "    pc.enabled, pc.host_gb = cache, host_gb\n"
             "    return cfg\n"
             "\n"
             "slo = SLO(2.0, 0.05)\n"
             "\n"
             "\n"
             "def measure(**kw):\n"
             "    q = request_metrics(simulate(config(**kw), df).requests)\n"
             "    seen = q[q.first_scheduled_s.notna()]\n"
             "    return {'token hit': seen.cached_tokens.sum() / seen.prompt_tokens.sum(),\n"
             "            'ttft p90 s': q.ttft_s.quantile(0.9), 'attainment': slo_met(q, slo).mean()}\n"
             "\n"
             "designs = {'no caching': {'cache': False}, 'round robin': {'router': 'round_robin'},\n"
             "           'cache-aware': {}, 'cache-aware + 256 GB host': {'host_gb': 256.0}}\n"
             "print(pd.DataFrame({k: measure(**v) for k, v in designs.items()}).T.round(3))"),
    ("md", "Hit rate against the GPU KV cache per instance (blocks of 16 tokens), with and "
           "without a host tier."),
    ("code", "sizes = [2048, 8192, 32768]\n"
             "curves = {h: [measure(blocks=b, host_gb=h)['token hit'] for b in sizes]\n"
             "          for h in (0.0, 256.0)}\n"
             "fig, ax = plt.subplots(figsize=(5, 3))\n"
             "for h, ys in curves.items():\n"
             "    ax.plot([b * 16 / 1e3 for b in sizes], ys, marker='o', label=f'host tier {h:g} GB')\n"
             "ax.set_xscale('log')\n"
             "ax.set_xlabel('GPU KV cache per instance (k tokens)')\n"
             "ax.set_ylabel('prompt tokens cached')\n"
             "ax.legend()\n"
             "fig.tight_layout()"),
]


def build(name: str, cells) -> None:
    write_notebook(HERE / name, cells)


if __name__ == "__main__":
    build("prefix_caching.ipynb", PREFIX)
