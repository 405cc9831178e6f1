"""Model kernels (simlab.models): gradients, rank-one curvature, HVPs, sharpness.

Finite-difference checks use central differences. For the ReLU CNN and the
linear model ``f`` is piecewise linear in ``W``, so the truncation error is zero
away from kinks and the error is roundoff, ``~ eps |f| / h ~ 1e-10`` at
``h = 1e-6``; for ``q = 3`` the truncation term ``h^2 f''' / 6`` adds ``~1e-10``.
The data are checked to keep every pre-activation at least ``1e-3`` from a kink,
far beyond the ``h |x| ~ 1e-5`` a step can move it.
"""

import numpy as np
import numpy.testing as npt
import pytest

from simlab.data import signal_noise
from simlab.models import CNN, Linear

import reference

H_GRAD = 1e-6
H_HESS = 1e-5


def _setup(model, seed=0, n=5, sigma0=0.5):
    data = signal_noise(n, model.d, snr=0.4, p_flip=0.2, seed=seed)
    W = model.init(sigma0, seed=seed + 1)
    if isinstance(model, CNN):
        Z = np.einsum("jrd,ipd->ijrp", W, data.X)
        assert np.abs(Z).min() > 1e-3, "a pre-activation sits on a ReLU kink"
    return data, W


MODELS = [CNN(7, 3), CNN(7, 2, q=3), Linear(7)]
IDS = ["relu", "relu3", "linear"]


def _fd(fun, W, h):
    """Central differences of ``fun`` (array-valued) along every coordinate."""
    out = []
    for a in range(W.size):
        E = np.zeros(W.size)
        E[a] = h
        E = E.reshape(W.shape)
        out.append((fun(W + E) - fun(W - E)) / (2 * h))
    return np.stack(out, axis=-1)


@pytest.mark.parametrize("model", MODELS, ids=IDS)
def test_per_sample_grads_fd(model):
    data, W = _setup(model)
    comp = model.per_sample_grads(W, data.X)
    ref = _fd(lambda V: model.forward(V, data.X), W, H_GRAD)
    npt.assert_allclose(comp, ref, atol=1e-7 * np.abs(ref).max())


@pytest.mark.parametrize("loss", ["logistic", "squared"])
@pytest.mark.parametrize("model", MODELS, ids=IDS)
def test_loss_grad_and_hvp_fd(model, loss):
    data, W = _setup(model)
    val, g = model.loss_grad(W, data.X, data.y, loss)
    npt.assert_allclose(val, model.loss(W, data.X, data.y, loss), rtol=1e-14)
    ref = _fd(lambda V: np.array(model.loss(V, data.X, data.y, loss)), W, H_GRAD)
    npt.assert_allclose(g.ravel(), ref, atol=1e-7 * np.abs(ref).max())
    v = np.random.default_rng(9).standard_normal(W.shape)
    comp = model.hvp(W, data.X, data.y, v, loss)
    ref = (model.loss_grad(W + H_HESS * v, data.X, data.y, loss)[1]
           - model.loss_grad(W - H_HESS * v, data.X, data.y, loss)[1]) / (2 * H_HESS)
    npt.assert_allclose(comp, ref, atol=1e-6 * np.abs(ref).max())


@pytest.mark.parametrize("loss", ["logistic", "squared"])
@pytest.mark.parametrize("model", [MODELS[0], MODELS[2]], ids=["relu", "linear"])
def test_rank_one_hessian_claim(model, loss):
    """THEORY 8: per-sample Hessian = h_i h_i^T, against FD Hessians of l_i."""
    data, W = _setup(model)
    F = model.curvature_factors(W, data.X, data.y, loss)
    for i in range(data.n):
        Xi, yi = data.X[i:i + 1], data.y[i:i + 1]
        ref = _fd(lambda V, Xi=Xi, yi=yi: model.loss_grad(V, Xi, yi, loss)[1].ravel(),
                  W, H_HESS)
        ref = 0.5 * (ref + ref.T)
        npt.assert_allclose(np.outer(F[i], F[i]), ref,
                            atol=1e-6 * max(np.abs(ref).max(), 1e-12))


@pytest.mark.parametrize("loss", ["logistic", "squared"])
def test_polynomial_relu_extra_term(loss):
    """q > 1: the exact per-sample Hessian has the l' grad^2 f term."""
    model = MODELS[1]
    data, W = _setup(model)
    H = model.per_sample_hessians(W, data.X, data.y, loss)
    F = model.curvature_factors(W, data.X, data.y, loss, gauss_newton=True)
    extra_seen = 0.0
    for i in range(data.n):
        Xi, yi = data.X[i:i + 1], data.y[i:i + 1]
        ref = _fd(lambda V, Xi=Xi, yi=yi: model.loss_grad(V, Xi, yi, loss)[1].ravel(),
                  W, H_HESS)
        ref = 0.5 * (ref + ref.T)
        npt.assert_allclose(H[i], ref, atol=1e-6 * np.abs(ref).max())
        extra_seen = max(extra_seen, np.abs(H[i] - np.outer(F[i], F[i])).max())
    assert extra_seen > 1e-3          # the Gauss-Newton part alone is not exact
    npt.assert_allclose(H.mean(axis=0), model.hessian(W, data.X, data.y, loss),
                        atol=1e-12 * np.abs(H).max())
    with pytest.raises(ValueError, match="q = 1"):
        model.curvature_factors(W, data.X, data.y, loss)


def _ref_hessian(model, W, X, y, loss):
    """Mean-loss Hessian, independent of simlab: central differences (``H_HESS``)
    of the plain NumPy gradient ``mean_i l'(f_i) grad f_i`` of ``reference.py``."""
    def grad(V):
        f = reference.model_output(model, V, X)
        w = reference.loss_derivative(f, y, loss) / len(y)
        return np.einsum("i,i...->...", w, reference.model_output_grads(model, V, X))

    H = _fd(grad, W, H_HESS).reshape(W.size, W.size)
    return 0.5 * (H + H.T)


@pytest.mark.parametrize("loss", ["logistic", "squared"])
@pytest.mark.parametrize("model", MODELS, ids=IDS)
def test_sharpness_dense_path(model, loss):
    """p <= 400: the dense branch against the top eigenvalue of the independent
    finite-difference Hessian. Its entries err by ~1e-10 of the largest (module
    docstring), so by Weyl lambda_max errs by at most ``p`` times that,
    42 x 1e-10 ~ 4e-9 (measured: <= 1e-10): rtol 1e-8."""
    data, W = _setup(model)
    ref = np.linalg.eigvalsh(_ref_hessian(model, W, data.X, data.y, loss))[-1]
    assert ref > 0
    npt.assert_allclose(model.sharpness(W, data.X, data.y, loss), ref, rtol=1e-8)


def test_sharpness_lanczos_path():
    """p = 480 > 400 takes the ARPACK branch. ReLU (q = 1): the mean Hessian is
    ``(1/n) sum_i l''_i g_i g_i^T`` exactly (f is piecewise linear in W), so its
    top eigenvalue is that of the ``n x n`` Gram matrix ``(1/n) D G G^T D`` with
    ``D = diag(sqrt(l''_i))``, built here in plain NumPy from ``reference.py``."""
    model = CNN(60, 4)
    data, W = _setup(model, n=8, sigma0=0.3)
    G = reference.model_output_grads(model, W, data.X).reshape(data.n, -1)
    f = reference.model_output(model, W, data.X)
    p = 1.0 / (1.0 + np.exp(data.y * f))                 # sigmoid(-y f)
    a = np.sqrt(p * (1 - p) / data.n)[:, None] * G       # l'' = p (1 - p), y^2 = 1
    ref = np.linalg.eigvalsh(a @ a.T)[-1]
    npt.assert_allclose(model.sharpness(W, data.X, data.y), ref, rtol=1e-8)


def test_decompose_recovers_coefficients():
    model = CNN(30, 3)
    data = signal_noise(6, 30, mu_norm=2.0, seed=3)
    rng = np.random.default_rng(0)
    gamma = rng.standard_normal((2, 3))
    rho = rng.standard_normal((2, 3, 6))
    W0 = model.init(0.1, seed=1)
    xi = data.noise
    W = W0 + (np.array([1.0, -1.0])[:, None, None] * gamma[..., None]
              * data.mu / (data.mu @ data.mu))
    W = W + np.einsum("jri,id->jrd", rho, xi / np.sum(xi**2, axis=1)[:, None])
    g, r = model.decompose(W, W0, data)
    npt.assert_allclose(g, gamma, atol=1e-10)
    npt.assert_allclose(r, rho, atol=1e-10)


def test_linear_is_sum_of_patches():
    model = Linear(7)
    data, w = _setup(model)
    npt.assert_allclose(model.forward(w, data.X), data.X.sum(axis=1) @ w, rtol=1e-13)
    npt.assert_allclose(model.per_sample_grads(w, data.X), data.X.sum(axis=1))


@pytest.mark.parametrize("call, match", [
    (lambda m, W, X, y: m.forward(W[0], X), "W"),
    (lambda m, W, X, y: m.forward(W, X[:, :, :5]), "X"),
    (lambda m, W, X, y: m.forward(W, X[:, :1]), "X"),
    (lambda m, W, X, y: m.forward(W, np.where(X > 0, np.nan, X)), "X"),
    (lambda m, W, X, y: m.loss(W, X, 2 * y), "y"),
    (lambda m, W, X, y: m.loss(W, X, y[:-1]), "y"),
    (lambda m, W, X, y: m.loss(W, X, y, loss="hinge"), "loss"),
    (lambda m, W, X, y: m.hvp(W, X, y, W[0]), "v"),
    (lambda m, W, X, y: m.init(-1.0), "sigma0"),
])
def test_bad_input(call, match):
    model = CNN(7, 3)
    data, W = _setup(model)
    with pytest.raises(ValueError, match=match):
        call(model, W, data.X, data.y)


@pytest.mark.parametrize("kwargs, match", [
    (dict(d=0, m=2), "d"), (dict(d=3, m=-1), "m"), (dict(d=3, m=2, q=0), "q"),
    (dict(d=3, m=2, activation="tanh"), "activation"),
])
def test_bad_constructor(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CNN(**kwargs)


# --------------------------------------------------------------------------
# autograd cross-check (optional dependency)
# --------------------------------------------------------------------------

def _torch_f(torch, model, W, X):
    Xt = torch.as_tensor(X)
    if isinstance(model, Linear):
        return Xt.sum(dim=1) @ W
    Z = torch.einsum("jrd,ipd->ijrp", W, Xt)
    A = torch.relu(Z) ** model.q
    F = A.sum(dim=(2, 3)) / model.m
    return F[:, 0] - F[:, 1]


def _torch_loss(torch, model, W, X, y, loss):
    f = _torch_f(torch, model, W, X)
    yt = torch.as_tensor(y)
    if loss == "logistic":
        return torch.nn.functional.softplus(-yt * f, threshold=1e6).mean()
    return (0.5 * (f - yt) ** 2).mean()


@pytest.mark.parametrize("loss", ["logistic", "squared"])
@pytest.mark.parametrize("model", MODELS, ids=IDS)
def test_against_torch_autograd(model, loss):
    torch = pytest.importorskip("torch")
    data, W = _setup(model)
    Wt = torch.tensor(W, dtype=torch.float64, requires_grad=True)
    f = _torch_f(torch, model, Wt, data.X)
    npt.assert_allclose(model.forward(W, data.X), f.detach().numpy(), rtol=1e-12)
    G = np.stack([torch.autograd.grad(f[i], Wt, retain_graph=True)[0].numpy().ravel()
                  for i in range(data.n)])
    npt.assert_allclose(model.per_sample_grads(W, data.X), G, rtol=1e-12,
                        atol=1e-14 * np.abs(G).max())
    L = _torch_loss(torch, model, Wt, data.X, data.y, loss)
    (g,) = torch.autograd.grad(L, Wt, create_graph=True)
    npt.assert_allclose(model.loss_grad(W, data.X, data.y, loss)[1],
                        g.detach().numpy(), rtol=1e-11, atol=1e-15)
    v = np.random.default_rng(1).standard_normal(W.shape)
    (hv,) = torch.autograd.grad(g, Wt, grad_outputs=torch.tensor(v))
    npt.assert_allclose(model.hvp(W, data.X, data.y, v, loss), hv.numpy(),
                        rtol=1e-10, atol=1e-13 * np.abs(hv.numpy()).max())
