import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=40, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "dev", max_examples=200, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
# CI runs derandomized (seeded) so a red build is reproducible.
settings.load_profile(os.environ.get("SIMLAB_HYPOTHESIS_PROFILE", "ci"))

# derivations/ holds sympy scripts that tests import (STYLE section 5, "Symbolic").
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "derivations"))


@pytest.fixture(scope="module")
def dask_client():
    """A two-process Dask LocalCluster (one per test module), for the sweep tests."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1,
                                       processes=True, dashboard_address=None)
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()
