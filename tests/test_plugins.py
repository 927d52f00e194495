"""Plugins: a policy in one file, registered by name, with its own strict config section."""
from __future__ import annotations

import pandas as pd
import pytest

from goodput.sim.config import ConfigError, load_config
from goodput.sim.simulator import simulate
from tests.conftest import REPO

PLUGIN = str(REPO / "examples/plugins/shortest_prompt_first.py")


def cfg(**over):
    return load_config(overrides={"plugins": [PLUGIN], "cost_model.kind": "roofline",
                                  "scheduler.policy": "shortest_prompt_first", **over})


def test_plugin_policy_admits_the_shorter_prompt_first():
    # R0 starts alone; R1 (long) and R2 (short) arrive during its prefill; the token budget
    # (1600) takes R1 or R2 + nothing else: FCFS runs R1 first, shortest-first runs R2 first
    df = pd.DataFrame({"request_id": [0, 1, 2], "arrival_s": [0.0, 0.001, 0.002],
                       "prompt_tokens": [1500, 1550, 100], "output_tokens": [5, 5, 5]})
    for fast in (True, False):
        c = cfg(**{"scheduler.max_batched_tokens": 1600, "fast_forward": fast})
        r = simulate(c, df).requests.set_index("request_id")
        assert r.first_scheduled_s[2] < r.first_scheduled_s[1]
        c = load_config(overrides={"cost_model.kind": "roofline", "scheduler.max_batched_tokens": 1600})
        fcfs = simulate(c, df).requests.set_index("request_id")
        assert fcfs.first_scheduled_s[1] < fcfs.first_scheduled_s[2]


def test_ageing_bound_puts_a_long_wait_first():
    df = pd.DataFrame({"request_id": [0, 1, 2], "arrival_s": [0.0, 0.001, 0.002],
                       "prompt_tokens": [1500, 1550, 100], "output_tokens": [5, 5, 5]})
    c = cfg(**{"scheduler.max_batched_tokens": 1600, "scheduler.shortest_prompt_first.max_wait_s": 1e-4})
    r = simulate(c, df).requests.set_index("request_id")
    assert r.first_scheduled_s[1] < r.first_scheduled_s[2]  # both waited past the bound: FCFS


def test_plugin_options_are_strict():
    with pytest.raises(ConfigError, match=r"scheduler\.shortest_prompt_first\.max_wait"):
        cfg(**{"scheduler.shortest_prompt_first.max_wait": 1})
    c = cfg(**{"scheduler.shortest_prompt_first.max_wait_s": 0.0})
    with pytest.raises(ConfigError, match="max_wait_s must be > 0"):
        simulate(c, pd.DataFrame({"request_id": [0], "arrival_s": [0.0], "prompt_tokens": [10],
                                  "output_tokens": [2]}))


def test_bad_plugins_are_one_clear_line(tmp_path):
    with pytest.raises(ConfigError, match=r"plugins\[0\]: plugin file .* not found"):
        load_config(overrides={"plugins": ["nope.py"]})
    with pytest.raises(ConfigError, match=r"plugins\[0\]: cannot import plugin 'no_such_mod'"):
        load_config(overrides={"plugins": ["no_such_mod"]})
    bad = tmp_path / "broken.py"
    bad.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ConfigError, match=r"RuntimeError: boom"):
        load_config(overrides={"plugins": [str(bad)]})
