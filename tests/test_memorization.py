"""simlab.memorization: per-sample curvature scores, K-FAC editing, recitation.

References: the dense per-sample Hessians of ``tests/reference.py`` (assembled
from the analytic gradients and second derivatives written out there, no
simlab kernel), and central finite differences of the per-sample loss
gradients away from ReLU kinks.
"""

import numpy as np
import pytest

from simlab.data import select_forget, signal_noise, signal_noise_pair
from simlab.memorization import (
    DAMPING_RTOL,
    curvature_scores,
    edit,
    edit_metrics,
    kfac,
    predict_recitation_linear,
    recitation,
)
from simlab.models import CNN, Linear, min_norm_interpolator

import reference as ref

CASES = [("cnn", 1, "logistic"), ("cnn", 1, "squared"), ("cnn", 3, "logistic"),
         ("cnn", 3, "squared"), ("linear", 1, "logistic"), ("linear", 1, "squared")]


def _setup(kind, q, seed=0, n=6, d=5, m=2):
    data = signal_noise(n, d, snr=0.6, p_flip=0.3, seed=seed)
    model = CNN(d, m, q=q) if kind == "cnn" else Linear(d)
    W = model.init(0.7, seed=seed + 1)
    return model, W, data


@pytest.mark.parametrize("kind,q,loss", CASES)
def test_scores_match_dense_reference(kind, q, loss):
    """Exact identities: 1e-10 relative (floating point on p <= 20 parameters)."""
    model, W, data = _setup(kind, q)
    s = curvature_scores(model, W, data, loss=loss)
    tr, ray, si = ref.curvature_scores(model, W, data.X, data.y, loss,
                                       s.attrs["damping"])
    for got, want in [(s.trace, tr), (s.rayleigh, ray), (s.self_influence, si)]:
        np.testing.assert_allclose(got.values, want, rtol=1e-10,
                                   atol=1e-10 * np.abs(want).max())
    # the Rayleigh quotients average to the top eigenvalue of H
    np.testing.assert_allclose(s.rayleigh.values.mean(), s.attrs["top_eigenvalue"],
                               rtol=1e-10)


def test_q3_trace_includes_non_gauss_newton_term():
    model, W, data = _setup("cnn", 3)
    s = curvature_scores(model, W, data, loss="logistic")
    assert np.max(np.abs(s.trace - s.trace_gauss_newton)) > 1e-3 * np.max(
        np.abs(s.trace))


def _sample_grad(model, W, data, i, loss):
    return model.loss_grad(W, data.X[i:i + 1], data.y[i:i + 1], loss)[1].ravel()


def _fd_hessian(grad, W, eps):
    """Central differences of a gradient, column by column."""
    p = W.size
    H = np.empty((p, p))
    for a in range(p):
        e = np.zeros(p)
        e[a] = eps
        E = e.reshape(W.shape)
        H[:, a] = (grad(W + E) - grad(W - E)) / (2 * eps)
    return 0.5 * (H + H.T)


@pytest.mark.parametrize("kind,q,loss", CASES)
def test_scores_match_finite_differences(kind, q, loss):
    """Central differences, step 1e-5: truncation ~1e-10 and round-off
    ~1e-16/1e-5, so 1e-6 relative is a bound with margin. The check below
    makes sure no pre-activation is within 100 steps of a ReLU kink."""
    model, W, data = _setup(kind, q, seed=3)
    eps = 1e-5
    if kind == "cnn":
        Z = np.einsum("jrd,ipd->ijrp", W, data.X)
        assert np.abs(Z).min() > 100 * eps * np.abs(data.X).sum(axis=2).max()
    s = curvature_scores(model, W, data, loss=loss)
    Hs = [_fd_hessian(lambda V, i=i: _sample_grad(model, V, data, i, loss), W, eps)
          for i in range(data.n)]
    Hmean = np.mean(Hs, axis=0)
    np.testing.assert_allclose(s.trace.values, [np.trace(H) for H in Hs], rtol=1e-6,
                               atol=1e-6 * max(np.trace(H) for H in Hs))
    v = np.linalg.eigh(Hmean)[1][:, -1]
    ray = np.array([v @ H @ v for H in Hs])
    np.testing.assert_allclose(s.rayleigh.values, ray, rtol=1e-6,
                               atol=1e-6 * np.abs(ray).max())
    if q == 1:
        # Gauss-Newton = Hessian: h_i^T (H + l I)^-1 h_i = tr((H + l I)^-1 H_i)
        inv = np.linalg.inv(Hmean + s.attrs["damping"] * np.eye(W.size))
        si = np.array([np.trace(inv @ H) for H in Hs])
        np.testing.assert_allclose(s.self_influence.values, si, rtol=1e-6)


def test_self_influence_undamped_limit_is_n():
    """Independent factors (p >= n): h_i^T H^+ h_i = n, approached as lambda -> 0."""
    model, W, data = _setup("cnn", 1, n=4, d=8)
    s = curvature_scores(model, W, data, damping=1e-12)
    np.testing.assert_allclose(s.self_influence.values, data.n, rtol=1e-6)
    s = curvature_scores(model, W, data)
    assert s.attrs["damping"] == pytest.approx(DAMPING_RTOL
                                               * s.attrs["gauss_newton_lambda_max"])
    assert np.all(s.self_influence.values < data.n)


def test_scores_feed_select_forget():
    model, W, data = _setup("cnn", 1)
    s = curvature_scores(model, W, data)
    _, forget = select_forget(data, 2, rule="memorized", scores=s.trace.values)
    assert set(forget) == set(np.argsort(-s.trace.values)[:2])


def test_bad_input():
    model, W, data = _setup("cnn", 1)
    with pytest.raises(ValueError, match="damping"):
        curvature_scores(model, W, data, damping=-1.0)
    with pytest.raises(ValueError, match="loss"):
        curvature_scores(model, W, data, loss="hinge")
    with pytest.raises(ValueError, match="keep"):
        edit(model, W, data, keep=1.5)
    with pytest.raises(ValueError, match="n_flipped"):
        predict_recitation_linear(20, 200, 0.1, 3, 0)


# --------------------------------------------------------------------------
# K-FAC and the edit
# --------------------------------------------------------------------------

def test_kfac_linear_squared_is_the_exact_hessian():
    data = signal_noise(6, 9, snr=0.5, seed=1)
    model = Linear(9)
    w = model.init(1.0, seed=0)
    B = kfac(model, w, data, loss="squared")
    A = B.a_vectors @ np.diag(B.a_values) @ B.a_vectors.T
    G = B.g_vectors @ np.diag(B.g_values) @ B.g_vectors.T
    np.testing.assert_allclose(np.kron(G, A), model.hessian(w, data.X, data.y,
                                                             "squared"), atol=1e-12)


def test_kfac_cnn_factors_match_definition():
    model, W, data = _setup("cnn", 1, n=5, d=7, m=3)
    B = kfac(model, W, data)
    A = B.a_vectors @ np.diag(B.a_values) @ B.a_vectors.T
    Xp = data.X.reshape(-1, model.d)
    np.testing.assert_allclose(A, Xp.T @ Xp / Xp.shape[0], atol=1e-12)
    f = ref.model_output(model, W, data.X)
    l2 = ref.loss_second_derivative(f, data.y, "logistic")
    G = np.zeros((6, 6))
    for i in range(data.n):
        for p in range(2):
            u = np.array([s / model.m * float(W[j, r] @ data.X[i, p] > 0)
                          for j, s in enumerate((1.0, -1.0)) for r in range(model.m)])
            G += l2[i] * np.outer(u, u) / data.n
    np.testing.assert_allclose(B.g_vectors @ np.diag(B.g_values) @ B.g_vectors.T, G,
                               atol=1e-12)


def test_edit_endpoints_and_linear_top_k():
    tr, te = signal_noise_pair(12, 50, 120, snr=0.2, p_flip=0.25, seed=2)
    model = Linear(120)
    Z = model.inputs(tr.X)
    w = min_norm_interpolator(Z, tr.y)
    np.testing.assert_allclose(edit(model, w, tr, keep=1.0), w, atol=1e-10)
    np.testing.assert_allclose(edit(model, w, tr, keep=0.0), 0.0)
    U, S, _ = np.linalg.svd(Z, full_matrices=False)
    lam = S**2 / tr.n
    for k in (1, 3, 6):
        keep = lam[:k].sum() / lam.sum() - 1e-9
        f = model.forward(edit(model, w, tr, keep=keep), tr.X)
        np.testing.assert_allclose(f, U[:, :k] @ (U[:, :k].T @ tr.y), atol=1e-10)
    assert recitation(model, w, tr) == 1.0
    m = edit_metrics(model, w, tr, te)
    assert m["recitation"] == 1.0 and m["clean_acc"] == 1.0


def test_edit_cnn_with_init_keep_one_is_identity():
    model, _, data = _setup("cnn", 1, n=6, d=20, m=2)
    W0 = model.init(0.1, seed=0)
    W = W0 + np.einsum("jri,id->jrd", np.random.default_rng(0).standard_normal(
        (2, 2, 12)), data.X.reshape(12, 20))
    np.testing.assert_allclose(edit(model, W, data, keep=1.0, W0=W0), W, atol=1e-10)
    np.testing.assert_allclose(edit(model, W, data, keep=0.0, W0=W0), W0)
