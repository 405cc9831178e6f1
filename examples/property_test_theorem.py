"""Property-test your own theorem with simlab's strategies (simlab.testing).

The theorem checked here: for every per-sample curvature family, batch size and
sampling scheme, SGD's critical learning rate never exceeds gradient descent's,
eta* <= 2 / lambda_max(H), because E[delta_t] follows the GD map and
E||delta_t||^2 >= ||E delta_t||^2. Plus the Dexter et al. coherence bound
(Bernoulli SGD diverges above it) and a statistical check of the simulator.

Run it with pytest (``pytest examples/property_test_theorem.py``) or as a
script. Needs hypothesis: ``pip install "simlab[testing]"``.
"""

from hypothesis import given, settings
from hypothesis import strategies as st

from simlab import testing
from simlab.curvature import sharpness
from simlab.stability import coherence_bound_lr, critical_lr


@given(testing.families(min_n=2, max_n=6, max_p=4), testing.schemes(), st.data())
@settings(max_examples=50, deadline=None)
def test_sgd_critical_lr_at_most_gd(family, scheme, data):
    n = family.shape[0]
    batch = data.draw(st.integers(1, n), label="batch")
    testing.assert_bound_holds(critical_lr(family, batch, scheme=scheme),
                               2.0 / sharpness(family), side="upper",
                               name="eta* <= 2 / lambda_max")


@given(testing.families(kind="rank_one", min_n=2, max_n=6), st.data())
@settings(max_examples=50, deadline=None)
def test_coherence_bound(family, data):
    batch = data.draw(st.integers(1, family.shape[0]), label="batch")
    testing.assert_bound_holds(critical_lr(family, batch, scheme="bernoulli"),
                               coherence_bound_lr(family, batch), side="upper",
                               name="coherence bound")


def test_simulator_against_operator():
    """Monte Carlo vs the exact operator, false-failure rate 1e-6."""
    import numpy as np

    G = np.random.default_rng(0).standard_normal((8, 3)) / 2
    testing.assert_simulation_matches_operator(G, 0.5, 2, steps=5,
                                               trajectories=20000, seed=1)


if __name__ == "__main__":
    test_sgd_critical_lr_at_most_gd()
    test_coherence_bound()
    test_simulator_against_operator()
    print("all properties hold")
