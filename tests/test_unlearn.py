"""Descent-ascent unlearning (simlab.dynamics.unlearn) and the prediction at W."""

import numpy as np
import numpy.testing as npt
import pytest

from simlab import _streams
from simlab.data import select_forget, signal_noise, signal_noise_pair
from simlab.dynamics.train import batch_weights, train
from simlab.dynamics.unlearn import membership_auc, unlearn
from simlab.models import CNN, Linear
from simlab.predict import NonStationaryWarning, predict_unlearning

import reference


@pytest.fixture(scope="module")
def trained():
    model = CNN(40, 4)
    tr, te = signal_noise_pair(16, 60, 40, mu_norm=2.0, p_flip=0.2, seed=7)
    res = train(model, tr, test=te, eta=0.2, steps=150)
    return model, tr, te, res.W


def _ref_weights(seed, steps, n, retain, forget, alpha, batch, fbatch, scheme):
    rr = np.random.default_rng([seed, _streams.UNLEARN_RETAIN_BATCHES])
    rf = np.random.default_rng([seed, _streams.UNLEARN_FORGET_BATCHES])
    w = np.zeros((steps, n))
    w[:, retain] = (1 - alpha) * batch_weights(rr, steps, retain.size, batch, scheme)
    w[:, forget] = -alpha * batch_weights(rf, steps, forget.size, fbatch, scheme)
    return w


@pytest.mark.parametrize("method", ["gram", "weight"])
@pytest.mark.parametrize("scheme, batch, fbatch", [
    ("without", None, None), ("without", 4, 2), ("with", 3, 2), ("bernoulli", 5, 1)])
def test_matches_numpy_reference(trained, scheme, batch, fbatch, method):
    model, tr, te, W = trained
    retain, forget = select_forget(tr, 4, seed=1)
    res = unlearn(model, W, tr, forget, alpha=0.3, eta=0.2, batch=batch,
                  forget_batch=fbatch, steps=80, scheme=scheme, seed=3, test=te,
                  method=method, record_every=25)
    B = retain.size if batch is None else batch
    Bf = forget.size if fbatch is None else fbatch
    wts = _ref_weights(3, 80, tr.n, retain, forget, 0.3, B, Bf, scheme)
    ref = reference.gd_run(model, W, tr.X, tr.y, 0.2, wts, "logistic")
    npt.assert_allclose(res.W, ref, rtol=0, atol=1e-10 * np.abs(ref).max())
    npt.assert_allclose(res.history.dist.values[-1], np.linalg.norm(ref - W),
                        rtol=1e-9)


def test_alpha_zero_is_training_on_retain(trained):
    model, tr, te, W = trained
    retain, forget = select_forget(tr, rule="mislabeled")
    res = unlearn(model, W, tr, forget, alpha=0.0, eta=0.1, steps=50)
    ref = train(model, tr.subset(retain), W0=W, eta=0.1, steps=50)
    npt.assert_allclose(res.W, ref.W, rtol=0, atol=1e-12 * np.abs(ref.W).max())


def test_history_and_escape_bookkeeping(trained):
    model, tr, te, W = trained
    _, forget = select_forget(tr, rule="mislabeled")
    res = unlearn(model, W, tr, forget, alpha=0.5, eta=0.5, batch=4, forget_batch=1,
                  steps=150, test=te, record_every=1)
    h = res.history
    for var in h.data_vars:
        assert np.all(np.isfinite(h[var].values)), var
    assert h.dist.values[0] == 0.0
    npt.assert_allclose(res.ref_dist, h.dist.values[1], rtol=1e-10)
    assert res.escaped
    first = int(h.step.values[np.argmax(h.growth.values >= 1e3)])
    assert res.escape_step == first
    # the ascent destroys the fit of the forget set and its membership signal
    assert h.forget_acc.values[-1] < h.forget_acc.values[0]
    assert h.mia_auc.values[-1] <= min(0.5, h.mia_auc.values[0])
    stopped = unlearn(model, W, tr, forget, alpha=0.5, eta=0.5, batch=4,
                      forget_batch=1, steps=150, stop_on_escape=True)
    assert stopped.steps == res.escape_step and not stopped.diverged
    npt.assert_allclose(stopped.history.dist.values[-1],
                        h.dist.sel(step=res.escape_step), rtol=1e-9)


def test_divergence_is_reported_not_nan():
    model = Linear(20)
    tr, te = signal_noise_pair(12, 20, 20, snr=1.0, seed=0)
    res = unlearn(model, np.zeros(20), tr, [0, 1], alpha=0.5, eta=20.0, steps=3000,
                  loss="squared", test=te, record_every=50)
    assert res.diverged and res.diverge_step == res.steps < 3000
    assert res.escaped
    for var in res.history.data_vars:
        assert np.all(np.isfinite(res.history[var].values)), var
    assert np.all(np.isfinite(res.W))
    assert len(np.unique(res.history.step)) == res.history.step.size


def test_twin_separation_is_the_linearized_dynamics():
    """Linear model + squared loss: W' - W evolves exactly by (I - eta M_t)."""
    model = Linear(25)
    tr = signal_noise(10, 25, snr=0.5, seed=2)
    W = np.zeros(25)
    retain, forget = np.arange(3, 10), np.arange(3)
    res = unlearn(model, W, tr, forget, alpha=0.2, eta=0.01, batch=3,
                  forget_batch=1, steps=40, loss="squared", perturbation=1e-3,
                  seed=4, record_every=10)
    Xp = tr.X.reshape(20, 25)
    rng = np.random.default_rng([4, _streams.UNLEARN_PERTURBATION])
    delta = rng.standard_normal((1, 20)) @ Xp
    delta = delta.ravel()
    delta0 = delta.copy()
    x = tr.X.sum(axis=1)
    wts = _ref_weights(4, 40, 10, retain, forget, 0.2, 3, 1, "without")
    growth = []
    for t, w in enumerate(wts, start=1):
        delta = delta - 0.01 * (x.T * w) @ (x @ delta)
        if t % 10 == 0:
            growth.append(delta @ delta / (delta0 @ delta0))
    npt.assert_allclose(res.history.growth.values[1:], growth, rtol=1e-8)
    assert res.history.attrs["criterion"] == "twin"


def test_membership_auc():
    assert membership_auc([0.1, 0.2], [0.3, 0.4]) == 1.0
    assert membership_auc([0.3, 0.4], [0.1, 0.2]) == 0.0
    assert membership_auc([1.0, 1.0], [1.0]) == 0.5
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(50), rng.standard_normal(70) + 0.5
    npt.assert_allclose(membership_auc(a, b), np.mean(b[:, None] > a[None, :]))
    with pytest.raises(ValueError, match="member"):
        membership_auc([], [1.0])


@pytest.fixture(scope="module")
def interpolated():
    """A small CNN trained to an interpolating squared-loss minimum (p > n)."""
    model = CNN(6, 2)
    data = signal_noise(8, 6, snr=0.3, p_flip=0.25, seed=3)
    res = train(model, data, eta=0.5, steps=4000, loss="squared", sigma0=0.3)
    assert res.history.train_loss.values[-1] < 1e-20
    return model, data, res.W


def test_prediction_against_dense_enumeration(interpolated):
    """rho, kappa_+ and eta* of the prediction equal an independent reference:
    exact dense per-sample Hessians of the model (not its rank-one factors) and
    the operator built by enumerating every minibatch (tests/reference.py)."""
    model, data, W = interpolated
    forget = np.array([0, 5])
    retain = np.setdiff1d(np.arange(data.n), forget)
    H = model.per_sample_hessians(W, data.X, data.y, "squared")
    H = H.reshape(data.n, model.n_params, model.n_params)
    for alpha, eta, B, Bf, scheme in [(0.2, 0.3, 2, 1, "without"),
                                      (0.05, 0.8, 3, 2, "with"),
                                      (0.0, 1.5, 2, 1, "bernoulli")]:
        pred = predict_unlearning(model, W, data, forget, alpha=alpha, eta=eta,
                                  batch=B, forget_batch=Bf, scheme=scheme,
                                  loss="squared", horizon=50, trajectories=8)
        ref = reference.radius(H[retain], eta, B, scheme, H[forget], Bf, alpha)
        npt.assert_allclose(pred.rho, ref, rtol=1e-7)
        M = (1 - alpha) * H[retain].mean(0) - alpha * H[forget].mean(0)
        active = H if alpha > 0 else H[retain]
        lam, V = np.linalg.eigh(active.sum(0))
        Q = V[:, lam > 1e-10 * lam[-1]]     # U = range of the active H_i
        npt.assert_allclose(pred.kappa_plus, -np.linalg.eigvalsh(Q.T @ M @ Q)[0],
                            rtol=1e-7, atol=1e-10)
        assert pred.stationary and pred.grad_norm < 1e-9
        if np.isfinite(pred.critical_lr) and pred.critical_lr > 0:
            at = [reference.radius(H[retain], pred.critical_lr * f, B, scheme,
                                   H[forget], Bf, alpha) for f in (0.999, 1.001)]
            assert at[0] <= 1 + 1e-9 < at[1]


def test_typical_verdict_against_numpy_monte_carlo(interpolated):
    """``lyapunov`` (median per-step growth rate of ||delta_t||) agrees with a
    plain NumPy simulation of the linearized product with the dense Hessians,
    delta_0 Gaussian in the curvature range, independent seeds. Tolerance: 4
    combined standard errors of the two medians (two-sided normal tail 6e-5 per
    configuration: the false-failure rate of this test is below 2e-4)."""
    model, data, W = interpolated
    forget = np.array([0, 5])
    retain = np.setdiff1d(np.arange(data.n), forget)
    H = model.per_sample_hessians(W, data.X, data.y, "squared")
    H = H.reshape(data.n, model.n_params, model.n_params)
    F = model.curvature_factors(W, data.X, data.y, "squared")
    T, traj = 150, 96
    for alpha, eta, B in [(0.1, 0.8, 2), (0.0, 1.2, 1), (0.3, 0.4, 3)]:
        pred = predict_unlearning(model, W, data, forget, alpha=alpha, eta=eta,
                                  batch=B, forget_batch=1, loss="squared",
                                  horizon=T, trajectories=traj, seed=11)
        rng = np.random.default_rng(99)
        lyap = np.empty(traj)
        for k in range(traj):
            d = rng.standard_normal(data.n) @ F
            log0 = np.log(np.linalg.norm(d))
            acc = 0.0
            for _ in range(T):
                br = rng.choice(retain, size=B, replace=False)
                bf = rng.choice(forget, size=1, replace=False)
                step = ((1 - alpha) * H[br].mean(0) - alpha * H[bf].mean(0)) @ d
                d = d - eta * step
                nrm = np.linalg.norm(d)
                acc += np.log(nrm)
                d /= nrm
            lyap[k] = (acc - log0) / T
        se_ref = np.sqrt(np.pi / 2) * lyap.std(ddof=1) / np.sqrt(traj)
        tol = 4 * np.hypot(se_ref, pred.lyapunov_se)
        assert abs(pred.lyapunov - np.median(lyap)) <= tol, (alpha, eta, B)
        assert pred.escapes == (T * pred.lyapunov >= 0.5 * np.log(1e3))
        assert pred.far == (abs(T * pred.lyapunov) > np.log(1e3))


def test_prediction_warns_on_non_stationary_weights(trained):
    """Logistic-loss weights are not stationary: the prediction says so."""
    model, tr, te, W = trained
    _, forget = select_forget(tr, rule="mislabeled")
    with pytest.warns(NonStationaryWarning, match="stationary"):
        pred = predict_unlearning(model, W, tr, forget, alpha=0.2, eta=0.3, batch=4,
                                  forget_batch=1, horizon=100, trajectories=4)
    assert not pred.stationary and pred.grad_norm > 1e-3
    assert pred.coherence.S.shape == (tr.n, tr.n)
    assert 1.0 <= pred.coherence.sigma <= tr.n


@pytest.mark.parametrize("kwargs, match", [
    (dict(forget_idx=[0, 99]), "forget"),
    (dict(forget_idx=[0, 1], retain_idx=[1, 2, 3]), "overlap"),
    (dict(alpha=1.5), "alpha"),
    (dict(forget_batch=5), "forget_batch"),
    (dict(batch=0), "batch"),
    (dict(escape_factor=1.0), "escape_factor"),
    (dict(scheme="shuffle"), "scheme"),
    (dict(eta=-0.1), "eta"),
    (dict(perturbation=0.0), "perturbation"),
    (dict(W=np.zeros((2, 4, 41))), "W"),
])
def test_bad_input(trained, kwargs, match):
    model, tr, te, W = trained
    args = dict(W=W, forget_idx=[0, 1], alpha=0.3, eta=0.1, steps=5, batch=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        unlearn(model, args.pop("W"), tr, args.pop("forget_idx"), **args)


def test_prediction_bad_input(trained):
    model, tr, te, W = trained
    with pytest.raises(ValueError, match="forget"):
        predict_unlearning(model, W, tr, [100], alpha=0.1, eta=0.1)
    with pytest.raises(ValueError, match="alpha"):
        predict_unlearning(model, W, tr, [1], alpha=-0.1, eta=0.1)
    with pytest.raises(ValueError, match="q = 1"):
        predict_unlearning(CNN(40, 4, q=2), W, tr, [1], alpha=0.1, eta=0.1)
