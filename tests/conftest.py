from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# "ci" is derandomized, so a run is reproducible; "dev" explores new examples
# each time; "thorough" is for a long local run. Pick with HYPOTHESIS_PROFILE.
settings.register_profile("ci", derandomize=True, max_examples=150, deadline=None)
settings.register_profile("dev", max_examples=150, deadline=None)
settings.register_profile(
    "thorough",
    max_examples=5000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
