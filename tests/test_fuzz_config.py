"""Fuzz config loading: YAML documents (structured and raw text) and ``--set`` overrides.

Invariant: a clean one-line ConfigError, or a config that passes every value check (and, for
small clusters, a tiny simulation in which each request appears exactly once with an outcome);
a plain override that loads holds the value given. Profiles: tests/fuzz_profiles.py.
"""
from __future__ import annotations

from fuzz_cases import KEYS, VALUES, run_config_case, run_yaml_text_case
from fuzz_profiles import examples
from hypothesis import given
from hypothesis import strategies as st

PAIRS = st.lists(st.tuples(KEYS, VALUES), min_size=1, max_size=4)


@examples(40)
@given(PAIRS, st.booleans())
def test_set_overrides_fail_cleanly_or_load(pairs, simulate_it):
    assert run_config_case(pairs, as_yaml=False, simulate_it=simulate_it) in ("ok", "error")


@examples(30)
@given(PAIRS)
def test_yaml_documents_fail_cleanly_or_load(pairs):
    assert run_config_case(pairs, as_yaml=True, simulate_it=False) in ("ok", "error")


YAML_BITS = st.sampled_from(["cluster:", "  - count: 2", "  - {tp: 0}", "scheduler:", "  policy: vllm",
                             "seed: 1", "seed: 1", "router: [", "events:", "  - time_s: .nan",
                             "&a [*a]", "!!python/object:os.system {}", "x: !!binary ???", "\t",
                             "slo: {ttft_s: -1}", "trace: {rate: 1e400}", ": :", "- - -", "'"])


@examples(40)
@given(st.one_of(st.lists(YAML_BITS, max_size=6).map("\n".join), st.text(max_size=60)))
def test_yaml_text_fails_cleanly_or_loads(text):
    assert run_yaml_text_case(text) in ("ok", "error")
