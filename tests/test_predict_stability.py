"""predict_stability: can GD / SGD stay at trained weights (THEORY 10.0)?

Checked against independent references: per-sample Hessians built from the
plain-NumPy network of ``tests/reference.py`` (ReLU: ``g_i g_i^T``; ``q = 3``:
central finite differences of the per-sample loss gradients, which include
the ``l' grad^2 f`` term the package's Gauss-Newton factors omit), the
operator by enumeration of every minibatch (``reference.radius``) and the
dense NumPy linearized Monte Carlo (``reference.linearized``).
"""

import warnings

import numpy as np
import numpy.testing as npt
import pytest

import simlab
from simlab.data import signal_noise
from simlab.dynamics.train import train
from simlab.models import CNN, Linear, min_norm_interpolator
from simlab.predict import NonStationaryWarning, StabilityPrediction, predict_stability

import reference


def _grads(model, W, data):
    """Per-sample ``grad f_i``, ``(n, p)``, from the NumPy reference network."""
    G = reference.model_output_grads(model, W.reshape(model.shape), data.X)
    return G.reshape(data.n, -1)


def _fd_hessians(model, W, data, h=1e-5):
    """Exact per-sample squared-loss Hessians by central differences of the
    reference gradients ``(f_i - y_i) grad f_i`` (error O(h^2))."""
    def g(w):
        f = reference.model_output(model, w.reshape(model.shape), data.X)
        return (f - data.y)[:, None] * _grads(model, w, data)

    w0 = W.ravel()
    p = w0.size
    H = np.empty((data.n, p, p))
    for k in range(p):
        e = np.zeros(p)
        e[k] = h
        H[:, :, k] = (g(w0 + e) - g(w0 - e)) / (2 * h)
    return 0.5 * (H + H.transpose(0, 2, 1))


@pytest.fixture(scope="module")
def relu_min():
    """ReLU CNN at an interpolating squared-loss minimum (p = 24 > n = 8)."""
    model = CNN(6, 2)
    data = signal_noise(8, 6, snr=0.3, p_flip=0.25, seed=3)
    res = train(model, data, eta=0.5, steps=4000, loss="squared", sigma0=0.3)
    assert res.history.train_loss.values[-1] < 1e-20
    G = _grads(model, res.W, data)
    return model, data, res.W, np.einsum("ij,ik->ijk", G, G)


def test_exported_and_one_family():
    """Public from simlab; shares every verdict field with UnlearningPrediction."""
    from simlab.predict import UnlearningPrediction, _LinearStability

    assert simlab.predict_stability is predict_stability
    assert issubclass(StabilityPrediction, _LinearStability)
    assert issubclass(UnlearningPrediction, _LinearStability)


@pytest.mark.parametrize("scheme", ["without", "bernoulli"])
def test_gd_invariants(relu_min, scheme):
    """GD (B = n): rho = max_i (1 - eta lambda_i)^2 over the nonzero eigenvalues
    of the reference Hessian, critical_lr = 2 / sharpness = 2 / lambda_max,
    and lambda_typ = max_i log|1 - eta lambda_i| (deterministic product, a
    Gaussian delta_0 in the range: reached after a horizon long enough that
    the slowest mode dominates; tolerance 2e-3 = O(log(r) / T))."""
    model, data, W, H = relu_min
    lam = np.linalg.eigvalsh(H.mean(0))
    lam = lam[lam > 1e-10 * lam[-1]]
    for eta in (0.3 / lam[-1], 1.5 / lam[-1], 2.4 / lam[-1]):
        pred = predict_stability(model, W, data, eta=eta, scheme=scheme, steps=4000,
                                 trajectories=4)
        assert pred.batch == data.n
        npt.assert_allclose(pred.sharpness, lam[-1], rtol=1e-9)
        npt.assert_allclose(pred.rho, np.max((1 - eta * lam) ** 2), rtol=1e-8)
        npt.assert_allclose(pred.critical_lr, 2 / lam[-1], rtol=1e-8)
        npt.assert_allclose(pred.lyapunov, np.max(np.log(np.abs(1 - eta * lam))),
                            atol=2e-3)
        assert pred.escapes == (pred.lyapunov > 0) == (eta * lam[-1] > 2)
        assert pred.stationary and pred.grad_norm < 1e-9 and not pred.gauss_newton


@pytest.mark.parametrize("eta, B, scheme", [
    (0.4, 2, "without"), (0.9, 2, "with"), (1.3, 5, "bernoulli"), (0.7, 1, "without")])
def test_sgd_rho_against_enumeration(relu_min, eta, B, scheme):
    """rho(T) equals the operator built by enumerating every minibatch with the
    reference Hessians (rtol 1e-7: two exact computations); critical_lr is the
    rho = 1 crossing (rho <= 1 just below, > 1 just above) and for B < n it is
    at most the GD value 2 / lambda_max (THEORY section 2: eta* grows with B)."""
    model, data, W, H = relu_min
    pred = predict_stability(model, W, data, eta=eta, batch=B, scheme=scheme,
                             horizon=50, trajectories=8)
    npt.assert_allclose(pred.rho, reference.radius(H, eta, B, scheme), rtol=1e-7)
    lc = pred.critical_lr
    at = [reference.radius(H, lc * f, B, scheme) for f in (0.999, 1.001)]
    assert at[0] <= 1 + 1e-9 < at[1]
    assert lc <= 2 / pred.sharpness * (1 + 1e-9)


@pytest.mark.parametrize("eta, B, scheme", [(1.1, 2, "without"), (0.6, 1, "with")])
def test_typical_verdict_against_numpy_monte_carlo(relu_min, eta, B, scheme):
    """lambda_typ agrees with the dense NumPy linearized Monte Carlo of
    tests/reference.py (same isotropic-in-U law of delta_0, passed as
    perturbation_samples; independent seeds). Tolerance: 4 combined standard
    errors of the two medians (two-sided normal tail 6e-5 per case: false-
    failure rate of this test below 2e-4)."""
    model, data, W, H = relu_min
    T, traj = 150, 96
    lam, V = np.linalg.eigh(H.sum(0))
    U = V[:, lam > 1e-10 * lam[-1]]
    pred = predict_stability(model, W, data, eta=eta, batch=B, scheme=scheme,
                             horizon=T, trajectories=traj, seed=5,
                             perturbation_samples=U.T)
    ref = reference.linearized(H, eta, B, scheme=scheme, steps=T, trajectories=traj,
                               seed=1234, record_every=T)
    ly = ref["lyapunov"]
    se_ref = np.sqrt(np.pi / 2) * ly.std(ddof=1) / np.sqrt(traj)
    assert abs(pred.lyapunov - np.median(ly)) <= 4 * np.hypot(se_ref, pred.lyapunov_se)
    # the documented definitions of the verdict fields (THEORY 10.0)
    assert pred.escapes == (T * pred.lyapunov >= 0.5 * np.log(1e3))
    assert pred.far == (abs(T * pred.lyapunov) > np.log(1e3))
    # two independent binomial proportions of 96 trajectories: within 4 combined
    # standard errors plus one trajectory (discreteness); false failures < 1e-4
    p1, p2 = pred.escape_probability, ref["escaped"].mean()
    se = np.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / traj)
    assert abs(p1 - p2) <= 4 * se + 1 / traj


def test_q3_gauss_newton_exact_at_interpolation():
    """The q = 3 CNN: at an interpolating squared-loss minimum the Gauss-Newton
    factors give the exact Hessian: sharpness and rho agree with finite-
    difference Hessians of the reference network (which include l' grad^2 f)
    to the finite-difference error (rtol 1e-6)."""
    model = CNN(8, 2, q=3)
    data = signal_noise(5, 8, snr=0.5, seed=2)
    res = train(model, data, eta=0.1, steps=8000, loss="squared", sigma0=0.3)
    assert res.history.train_loss.values[-1] < 1e-20
    H = _fd_hessians(model, res.W, data)
    pred = predict_stability(model, res.W, data, eta=0.5, batch=2, trajectories=4,
                             steps=20)
    assert pred.gauss_newton and pred.stationary
    npt.assert_allclose(pred.sharpness, np.linalg.eigvalsh(H.mean(0))[-1], rtol=1e-6)
    npt.assert_allclose(pred.rho, reference.radius(H, 0.5, 2, "without"), rtol=1e-6)


def test_warns_on_non_stationary_weights(relu_min):
    """Away from the minimum the prediction says it ignores the drift."""
    model, data, W, _ = relu_min
    with pytest.warns(NonStationaryWarning, match="stationary"):
        pred = predict_stability(model, W * 0.9, data, eta=0.1, trajectories=4,
                                 steps=10)
    assert not pred.stationary
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predict_stability(model, W, data, eta=0.1, trajectories=4, steps=10)


@pytest.mark.parametrize("kw, match", [
    (dict(eta=-0.1), "eta"), (dict(eta=0.1, batch=0), "batch"),
    (dict(eta=0.1, batch=9), "batch"), (dict(eta=0.1, scheme="sometimes"), "scheme"),
    (dict(eta=0.1, horizon=0), "horizon"), (dict(eta=0.1, escape_factor=0.5), "escape"),
    (dict(eta=0.1, trajectories=1), "trajectories"),
    (dict(eta=0.1, perturbation_samples=np.ones((2, 3))), "perturbation_samples"),
])
def test_bad_input(relu_min, kw, match):
    model, data, W, _ = relu_min
    with pytest.raises(ValueError, match=match):
        predict_stability(model, W, data, **kw)


def test_linear_model_at_min_norm_interpolator():
    """The linear model at its min-norm interpolator (squared loss, stationary):
    H = Z^T Z / n exactly, so the sharpness is lambda_max(Z Z^T) / n, GD's
    critical rate 2 / sharpness and rho(GD) = max_k (1 - eta l_k)^2 over the
    nonzero eigenvalues l_k (dense numpy references)."""
    data = signal_noise(12, 40, snr=0.3, p_flip=0.1, seed=3)
    model = Linear(40)
    Z = model.inputs(data.X)
    w = min_norm_interpolator(Z, data.y)
    lam = np.linalg.eigvalsh(Z @ Z.T / 12)
    eta = 1.5 / lam[-1]
    pred = predict_stability(model, w, data, eta=eta, horizon=20, trajectories=4)
    npt.assert_allclose(pred.sharpness, lam[-1], rtol=1e-10)
    npt.assert_allclose(pred.critical_lr, 2 / lam[-1], rtol=1e-8)
    npt.assert_allclose(pred.rho, np.max((1 - eta * lam) ** 2), rtol=1e-8)
    assert pred.stationary
