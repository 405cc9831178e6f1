"""simlab.curvature.sharpness_ceiling: the data-dependent sharpness ceiling of
the ReLU CNN and the linear model (THEORY 10.1, derivations/edge_of_stability.py).

The sharpness is computed by the model's own dense Hessian (exact HVPs, ``p <=
400``) and compared with the ceiling; the bound chain is checked against the
exact maximum over activation patterns, enumerated by brute force for tiny
``n`` (an independent reference: it uses neither the model code nor the
ceiling's matrix-norm bounds).
"""

import edge_of_stability as D
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from simlab.curvature import LOSS_CURVATURE_MAX, sharpness_ceiling
from simlab.data import SignalNoise, signal_noise
from simlab.models import CNN, Linear

#: Relative slack for "S <= ceiling": both sides are eigenvalues of matrices
#: built from the same float64 data (round-off ~1e-15 relative).
RTOL = 1e-9


def _state(kind, n, d, m, scale, bias, seed):
    """Data (signal-plus-noise or arbitrary Gaussian patches) and weights
    ``W = scale * (g + bias * u)``: ``bias`` pushes every filter towards the
    mean patch direction ``u`` (all pre-activations positive for large bias)."""
    rng = np.random.default_rng(seed)
    if kind == "signal_noise":
        data = signal_noise(n, d, mu_norm=float(rng.uniform(0.2, 5.0)), seed=seed)
    else:
        X = rng.standard_normal((n, 2, d)) * rng.uniform(0.3, 3.0, (n, 2, 1))
        data = SignalNoise(X=X, y=rng.choice([-1.0, 1.0], n))
    model = CNN(d, m)
    u = data.X.reshape(2 * n, d).mean(axis=0)
    u /= np.linalg.norm(u) + 1e-300
    W = scale * (rng.standard_normal(model.shape) + bias * u * np.sqrt(d))
    return model, data, W


@given(kind=st.sampled_from(["signal_noise", "gaussian"]),
       n=st.integers(2, 8), d=st.integers(2, 12), m=st.integers(1, 4),
       scale=st.floats(1e-3, 10.0), bias=st.floats(0.0, 5.0),
       loss=st.sampled_from(["squared", "logistic"]), seed=st.integers(0, 10**6))
def test_ceiling_never_violated(kind, n, d, m, scale, bias, loss, seed):
    model, data, W = _state(kind, n, d, m, scale, bias, seed)
    comp_S = model.sharpness(W, data.X, data.y, loss=loss)
    ceil = sharpness_ceiling(model, data, loss=loss)
    assert comp_S <= ceil * (1 + RTOL)


@pytest.mark.parametrize("seed", range(6))
def test_bound_chain_against_brute_force_pattern_max(seed):
    """S <= (J/(n m)) Phi_exact <= ceiling, Phi_exact enumerated over all 4^n
    patterns (n = 4)."""
    rng = np.random.default_rng(seed)
    n, d, m = 4, 5, 2
    model, data, W = _state("gaussian" if seed % 2 else "signal_noise", n, d, m,
                            1.0, float(rng.uniform(0, 3)), seed)
    ref_phi = D.pattern_max_exact(data.X)                 # realisable patterns
    ref_phi_all = D.pattern_max_exact(data.X, realizable=False)
    exact_max = model.J * ref_phi / (n * m)
    ceil = sharpness_ceiling(model, data, loss="squared")
    assert model.sharpness(W, data.X, data.y, loss="squared") <= exact_max * (1 + RTOL)
    assert exact_max <= ceil * (1 + RTOL)
    assert ref_phi <= ref_phi_all * (1 + RTOL)
    assert D.pattern_max_lower(data.X) <= ref_phi_all * (1 + RTOL)


def test_all_active_state_attains_the_pattern_value():
    """Weights with every pre-activation positive (patches in general position,
    ``2n <= d``): the Hessian is the all-active pattern's,
    ``J lambda_max(Z Z^T) / (n m)`` (dense numpy reference)."""
    rng = np.random.default_rng(3)
    n, d, m = 6, 16, 3
    data = SignalNoise(X=rng.standard_normal((n, 2, d)), y=rng.choice([-1.0, 1.0], n))
    model = CNN(d, m)
    Xp = data.X.reshape(2 * n, d)
    # w = Xp^T (Xp Xp^T)^{-1} 1 gives <w, x_ip> = 1 > 0 for every patch
    w = Xp.T @ np.linalg.solve(Xp @ Xp.T, np.ones(2 * n))
    W = np.broadcast_to(w, model.shape).copy()
    Z = data.X.sum(axis=1)
    ref = 2 * np.linalg.eigvalsh(Z @ Z.T)[-1] / (n * m)
    comp = model.sharpness(W, data.X, data.y, loss="squared")
    np.testing.assert_allclose(comp, ref, rtol=1e-10)
    assert comp <= sharpness_ceiling(model, data) * (1 + RTOL)


@pytest.mark.parametrize("seed", range(4))
def test_ceiling_matches_derivation(seed):
    """The implemented ceiling equals the derivation's formula, written out
    separately (``phi_bounds``), to round-off."""
    for kind in ("signal_noise", "gaussian"):
        model, data, _ = _state(kind, 7, 11, 3, 1.0, 0.0, seed)
        ref = model.J * min(D.phi_bounds(data.X)) / (7 * 3)
        np.testing.assert_allclose(sharpness_ceiling(model, data), ref, rtol=1e-12)


def test_tightness_distribution():
    """max S/S_ceil >= 0.5 over a seeded set of states (random and biased
    weights, two data families, both losses); the distribution is printed."""
    ratios = {"random": [], "biased": []}
    for seed in range(40):
        rng = np.random.default_rng(seed)
        kind = "signal_noise" if seed % 2 else "gaussian"
        n, d, m = int(rng.integers(4, 12)), int(rng.integers(6, 30)), int(
            rng.integers(1, 5))
        for group, bias in (("random", 0.0), ("biased", 3.0)):
            model, data, W = _state(kind, n, d, m, 1.0, bias, seed)
            S = model.sharpness(W, data.X, data.y, loss="squared")
            ratios[group].append(S / sharpness_ceiling(model, data))
    allr = np.concatenate([ratios["random"], ratios["biased"]])
    assert allr.max() <= 1 + RTOL
    assert allr.max() >= 0.5
    for group, r in ratios.items():
        print(group, "S/S_ceil quantiles (0, .1, .5, .9, 1):",
              np.round(np.quantile(r, [0, 0.1, 0.5, 0.9, 1]), 3))


@pytest.mark.parametrize("seed", range(3))
def test_linear_model_ceiling_is_exact(seed):
    """Linear model: squared sharpness = lambda_max(Z^T Z)/n at any w; logistic
    sharpness at w = 0 equals the ceiling and bounds it elsewhere (1e-10)."""
    data = signal_noise(7, 9, mu_norm=1.5, seed=seed)
    model = Linear(9)
    Z = data.X.sum(axis=1)
    ref = np.linalg.eigvalsh(Z.T @ Z / 7)[-1]
    w = np.random.default_rng(seed).standard_normal(9)
    np.testing.assert_allclose(sharpness_ceiling(model, data), ref, rtol=1e-10)
    np.testing.assert_allclose(model.sharpness(w, data.X, data.y, loss="squared"),
                               ref, rtol=1e-10)
    ceil = sharpness_ceiling(model, data, loss="logistic")
    np.testing.assert_allclose(ceil, ref / 4, rtol=1e-10)
    np.testing.assert_allclose(model.sharpness(np.zeros(9), data.X, data.y,
                                               loss="logistic"), ceil, rtol=1e-10)
    assert model.sharpness(w, data.X, data.y, loss="logistic") <= ceil * (1 + 1e-10)


def test_logistic_is_quarter_of_squared():
    data = signal_noise(5, 8, mu_norm=1.0, seed=0)
    model = CNN(8, 2)
    assert LOSS_CURVATURE_MAX == {"squared": 1.0, "logistic": 0.25}
    np.testing.assert_allclose(sharpness_ceiling(model, data, loss="logistic"),
                               sharpness_ceiling(model, data) / 4, rtol=1e-15)


def test_bad_input():
    data = signal_noise(5, 8, mu_norm=1.0, seed=0)
    with pytest.raises(ValueError, match="q = 3"):
        sharpness_ceiling(CNN(8, 2, q=3), data)
    with pytest.raises(ValueError, match="loss"):
        sharpness_ceiling(CNN(8, 2), data, loss="hinge")
    with pytest.raises(ValueError, match="model"):
        sharpness_ceiling(None, data)
    with pytest.raises(ValueError, match="d=8"):
        sharpness_ceiling(CNN(9, 2), data)
