import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=40, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "dev", max_examples=200, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
# CI runs derandomized (seeded) so a red build is reproducible.
settings.load_profile(os.environ.get("SIMLAB_HYPOTHESIS_PROFILE", "ci"))
