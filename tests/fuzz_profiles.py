"""Hypothesis profiles of the fuzz suite (tests/test_fuzz_*.py), chosen by GOODPUT_FUZZ.

* ``ci`` (default): few examples per test and a per-example deadline, so the whole fuzz suite
  stays well under a minute on a 2-core CI machine; no example database is written.
* ``long`` (``GOODPUT_FUZZ=long``): many more examples, no deadline, for local runs.

Each case also runs under ``fuzz_cases.time_limit`` (a hang is a failure, not a stuck CI job).
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=25, deadline=10_000, database=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much])
settings.register_profile(
    "long", max_examples=1000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much])
PROFILE = os.environ.get("GOODPUT_FUZZ", "ci")
settings.load_profile(PROFILE)


def examples(ci: int) -> settings:
    """Settings for one test: ``ci`` examples in the ci profile, the profile's count otherwise."""
    if PROFILE == "ci":
        return settings(max_examples=ci)
    return settings()
