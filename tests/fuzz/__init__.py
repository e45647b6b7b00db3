"""Fuzzing suite: hypothesis-generated files, configurations and request bodies against the CLI and the server.

Bounded for CI: every test is derandomized (the same examples on every run, so a failure reproduces) with a
fixed number of examples and no deadline; the whole suite takes well under a minute. For a longer, random
hunt locally: AL_FUZZ=long pytest tests/fuzz (20x the examples, a new random seed each run).
"""

import os

from hypothesis import HealthCheck, settings

LONG = os.environ.get("AL_FUZZ") == "long"


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples * (20 if LONG else 1),
        derandomize=not LONG,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
    )
