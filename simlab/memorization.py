"""Curvature marks memorization (THEORY 10.2, claim 8 of section 9).

Per-sample curvature scores, the K-FAC curvature basis of the filter layer and
the curvature-basis edit of Merullo et al. (arXiv 2510.24256), the recitation
metric, and the random-matrix prediction of the linear model's recitation after
keeping the top-``k`` curvature directions.

Vocabulary
----------
**recitation**: mean over the flipped (mislabeled, memorized) training points of
``1[sign f(x_i) = y_i]`` with ``y_i`` the observed (flipped) label; ``sign 0``
counts as no recitation. **clean training accuracy**: the same indicator
averaged over the unflipped training points. **test accuracy**: against the
clean test labels ``y_clean``.

What is projected
-----------------
:func:`edit` projects ``W - W0`` when ``W0`` is given and ``W`` otherwise. For
the CNN pass the initialisation: gradient descent only ever moves the filters
inside the span of the training patches, which is the range of the K-FAC input
factor ``A``, so ``W - W0`` lies entirely in the K-FAC basis (``keep = 1`` is
the identity) while the random initialisation ``W0`` has most of its norm in
the ``d - 2n`` directions of zero curvature; projecting ``W`` would delete that
part too, a change unrelated to curvature ranking. For the linear model's
min-norm interpolator (the limit of GD from ``w = 0``) both coincide.
"""

import functools
from dataclasses import dataclass

import numpy as np
import scipy  # scipy.optimize loads on first use (SciPy's lazy submodules)
import scipy.sparse.linalg as spla
import scipy.special

from ._blas import serial_blas
from ._validation import check_int, check_positive, check_real
from .curvature import eigenbasis
from .models import kernels as K
from .models.linear import Linear
from .models.two_patch import _DENSE_SHARPNESS_MAX, check_model_data, loss_code

__all__ = [
    "DAMPING_RTOL",
    "KFAC",
    "curvature_scores",
    "kfac",
    "edit",
    "recitation",
    "edit_metrics",
    "predict_recitation_linear",
]

#: Default damping of the self-influence, relative to ``lambda_max`` of the
#: Gauss-Newton matrix: ``lambda = DAMPING_RTOL * lambda_max(H_GN)``.
DAMPING_RTOL = 1e-2


# --------------------------------------------------------------------------
# per-sample curvature scores
# --------------------------------------------------------------------------

def _second_derivative_terms(model, Wk, Xp):
    """``act''(z)`` per (filter, patch), or ``None`` when ``grad^2 f = 0`` a.e."""
    if model.act_id != K.RELU or model.q == 1:
        return None
    Z = Wk @ Xp.T
    q = model.q
    pos = np.maximum(Z, 0.0)
    return np.where(Z > 0.0, q * (q - 1) * pos ** (q - 2), 0.0)      # (K, 2n)


def _top_eigvec(model, Wk, Xp, y, lid, F, exact_rank_one, seed=0):
    """Top (largest algebraic) eigenpair of the mean-loss Hessian."""
    n, p = F.shape
    if exact_rank_one:
        lam, U = np.linalg.eigh(F @ F.T)
        v = F.T @ U[:, -1]
        nv = np.linalg.norm(v)
        return float(lam[-1] / n), (v / nv if nv > 0 else v)
    kargs = (model.J, model.m, model.act_id, model.q)
    if p <= _DENSE_SHARPNESS_MAX:
        from .models.two_patch import _dense_hessian
        lam, V = np.linalg.eigh(_dense_hessian(Wk, Xp, y, kargs, lid))
        return float(lam[-1]), V[:, -1]
    shape = Wk.shape
    op = spla.LinearOperator(
        (p, p), dtype=float,
        matvec=lambda v: K._hvp(Wk, Xp, y, np.ascontiguousarray(v).reshape(shape),
                                *kargs, lid).ravel())
    v0 = np.random.default_rng(seed).standard_normal(p)
    lam, V = spla.eigsh(op, k=1, which="LA", v0=v0, tol=1e-12, ncv=min(p - 1, 30))
    return float(lam[0]), V[:, 0]


@serial_blas
def curvature_scores(model, W, data, *, loss="logistic", damping=None):
    """Per-sample curvature scores at ``W`` (THEORY 10.2).

    Parameters
    ----------
    model : simlab.models.CNN or simlab.models.Linear
    W : ndarray
        Weights (e.g. ``train(...).W``).
    data : SignalNoise
        The training set.
    loss : {"logistic", "squared"}
        Default ``"logistic"``, the default of :func:`simlab.train` and
        :func:`simlab.predict.predict_unlearning`.
    damping : float, optional
        ``lambda > 0`` of the self-influence; default
        ``DAMPING_RTOL * lambda_max(H_GN)`` (stored in ``attrs["damping"]``).

    Returns
    -------
    xarray.Dataset
        Dimension ``sample`` (``n``), with coordinate ``flipped`` when the data
        carry the flip mask, and fields

        ``trace``
            ``tr H_i`` of the sample's loss Hessian ``H_i = l''_i g_i g_i^T +
            l'_i grad^2 f_i`` (``g_i = grad_W f_i``): ``l''_i ||g_i||^2`` for
            ReLU (``q = 1``) and the linear model, plus the exact
            ``l'_i tr grad^2 f_i = l'_i sum_{j,r} (s_j/m) sum_p act''(z) ||x_p||^2``
            for ``q > 1``.
        ``trace_gauss_newton``
            ``l''_i ||g_i||^2`` alone.
        ``rayleigh``
            ``v^T H_i v`` on the top (largest algebraic) unit eigenvector ``v``
            of the exact mean-loss Hessian ``H = (1/n) sum_i H_i``; the
            ``rayleigh`` values average to ``attrs["top_eigenvalue"]``.
        ``self_influence``
            Damped leave-one-out measure ``h_i^T (H_GN + lambda I)^{-1} h_i``
            with ``h_i = sqrt(l''_i) g_i`` and ``H_GN = (1/n) sum_j h_j h_j^T``
            (the Gauss-Newton matrix, which is ``H`` for ``q = 1``):
            ``n sum_k kappa_k / (kappa_k + n lambda) U_ik^2`` from the Gram
            matrix ``h_i . h_j = sum_k kappa_k U_ik U_jk``. It lies in
            ``[0, n)``; undamped it is ``n`` for every sample whose factor is
            linearly independent of the others (``p >= n``), so the damping is
            what makes it informative: a sample scores low when its own
            curvature direction carries little curvature (``kappa << n lambda``).
        ``loss_d2``
            ``l''_i``.

    Notes
    -----
    ``select_forget(data, n_forget, rule="memorized", scores=...)`` takes any
    of these fields as memorization scores.

    Examples
    --------
    >>> from simlab.data import signal_noise
    >>> from simlab.models import CNN
    >>> data = signal_noise(6, 10, snr=0.5, p_flip=0.2, seed=0)
    >>> model = CNN(10, 2)
    >>> s = curvature_scores(model, model.init(0.1, seed=0), data)
    >>> sorted(s.data_vars)[:3], s.trace.shape
    (['loss_d2', 'rayleigh', 'self_influence'], (6,))
    """
    import xarray as xr

    check_model_data(model, data)
    lid = loss_code(loss)
    Wk = model.kernel_weights(W)
    n, d = data.n, model.d
    Xp = data.X.reshape(2 * n, d)
    y = data.y
    kargs = model.kernel_args
    f = K._forward(Wk, Xp, *kargs)
    terms = np.array([K.loss_terms(fi, yi, lid) for fi, yi in zip(f, y, strict=True)])
    d1, d2 = terms[:, 1], terms[:, 2]
    G = K._per_sample_grads(Wk, Xp, *kargs, np.ones(n)).reshape(n, -1)
    F = np.sqrt(d2)[:, None] * G
    trace_gn = d2 * np.einsum("ij,ij->i", G, G)
    D2 = _second_derivative_terms(model, Wk, Xp)
    signs = np.repeat([1.0, -1.0][: model.J], model.m) / model.m      # s_j / m
    if D2 is None:
        trace = trace_gn.copy()
    else:
        sq = np.einsum("ij,ij->i", Xp, Xp)
        tr2 = (signs[:, None] * D2 * sq[None, :]).sum(axis=0)
        trace = trace_gn + d1 * tr2.reshape(n, 2).sum(axis=1)
    top, v = _top_eigvec(model, Wk, Xp, y, lid, F, D2 is None)
    rayleigh = d2 * (G @ v) ** 2
    if D2 is not None:
        proj = v.reshape(Wk.shape) @ Xp.T                              # (K, 2n)
        rayleigh = rayleigh + d1 * (signs[:, None] * D2 * proj**2).sum(
            axis=0).reshape(n, 2).sum(axis=1)
    kappa, U = np.linalg.eigh(F @ F.T)
    kappa = np.maximum(kappa, 0.0)
    lam_gn = float(kappa[-1] / n)
    if damping is None:
        lam = DAMPING_RTOL * lam_gn
        if lam <= 0.0:
            raise ValueError("the Gauss-Newton matrix is zero at W: give damping "
                             "explicitly")
    else:
        lam = check_positive(damping, "damping")
    self_inf = n * (U**2 * (kappa / (kappa + n * lam))[None, :]).sum(axis=1)
    coords = {"sample": np.arange(n)}
    if data.flipped is not None:
        coords["flipped"] = ("sample", data.flipped.copy())
    desc = {
        "trace": "trace of the per-sample loss Hessian (exact)",
        "trace_gauss_newton": "l''_i ||grad f_i||^2",
        "rayleigh": "v^T H_i v, v the top eigenvector of the mean-loss Hessian",
        "self_influence": "h_i^T (H_GN + lambda I)^{-1} h_i",
        "loss_d2": "l''_i",
    }
    vals = dict(trace=trace, trace_gauss_newton=trace_gn, rayleigh=rayleigh,
                self_influence=self_inf, loss_d2=d2)
    return xr.Dataset(
        {k: ("sample", np.asarray(v, dtype=float), {"long_name": desc[k]})
         for k, v in vals.items()},
        coords=coords,
        attrs=dict(model=repr(model), loss=loss, damping=lam,
                   damping_rule=("DAMPING_RTOL * lambda_max(H_GN)" if damping is None
                                 else "given"),
                   top_eigenvalue=top, gauss_newton_lambda_max=lam_gn,
                   exact_rank_one=int(D2 is None)))


# --------------------------------------------------------------------------
# K-FAC basis and the curvature-basis edit
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class KFAC:
    """K-FAC factors of the filter layer in their eigenbases (THEORY 10.2).

    Attributes
    ----------
    a_values : ndarray (r,)
        Eigenvalues of the input factor ``A`` on its range, descending. CNN:
        ``A = (1/2n) sum_{i,p} x_ip x_ip^T`` (patch second moments). Linear model:
        ``A = (1/n) sum_i z_i z_i^T`` with ``z_i = x_i^(1) + x_i^(2)``, from
        :func:`simlab.curvature.eigenbasis`.
    a_vectors : ndarray (d, r)
    g_values : ndarray (K,)
        Eigenvalues of the Gauss-Newton output factor, descending. CNN:
        ``G = (1/n) sum_i sum_p l''_i u_ip u_ip^T`` with ``u_ip[row] = (s_j/m)
        act'(<w_row, x_ip>)``, the gradient of ``f_i`` with respect to the
        filter pre-activations at patch ``p`` (not the empirical loss gradient,
        which vanishes at an interpolating squared-loss minimum). Linear model:
        the scalar ``mean_i l''_i``.
    g_vectors : ndarray (K, K)
    """

    a_values: np.ndarray
    a_vectors: np.ndarray
    g_values: np.ndarray
    g_vectors: np.ndarray

    @property
    def mass(self):
        """``lambda_i mu_j`` of every component, shape ``(K, r)``."""
        return self.g_values[:, None] * self.a_values[None, :]


@serial_blas
def kfac(model, W, data, *, loss="logistic"):
    """K-FAC factors of the filter layer at ``W`` (see :class:`KFAC`).

    For the squared-loss linear model K-FAC is exact: ``A (x) G`` is the
    Hessian ``Z^T Z / n``. With logistic loss K-FAC gives ``E[l''] Z^T Z / n``,
    not ``(1/n) sum_i l''_i z_i z_i^T``: the basis is that of ``Z^T Z`` whatever
    the loss, so the ranking ignores which samples are still curved.
    """
    check_model_data(model, data)
    lid = loss_code(loss)
    Wk = model.kernel_weights(W)
    n, d = data.n, model.d
    Xp = data.X.reshape(2 * n, d)
    f = K._forward(Wk, Xp, *model.kernel_args)
    d2 = np.array([K.loss_terms(fi, yi, lid)[2] for fi, yi in zip(f, data.y,
                                                                 strict=True)])
    if isinstance(model, Linear):
        a_val, a_vec = eigenbasis(model.inputs(data.X))
        return KFAC(a_val, a_vec, np.array([d2.mean()]), np.ones((1, 1)))
    a_val, a_vec = eigenbasis(Xp)
    Z = Wk @ Xp.T
    q = model.q
    dact = np.where(Z > 0.0, q * np.maximum(Z, 0.0) ** (q - 1), 0.0)
    signs = np.repeat([1.0, -1.0][: model.J], model.m) / model.m
    Uo = signs[:, None] * dact * np.sqrt(np.repeat(d2, 2))[None, :]   # (K, 2n)
    Gm = Uo @ Uo.T / n
    g_val, g_vec = np.linalg.eigh(Gm)
    return KFAC(a_val, a_vec, g_val[::-1].copy(), g_vec[:, ::-1].copy())


def _keep_mask(mass, keep):
    flat = mass.ravel()
    total = flat.sum()
    mask = np.zeros(flat.size, dtype=bool)
    if keep <= 0.0 or total <= 0.0:
        return mask.reshape(mass.shape)
    order = np.argsort(-flat, kind="stable")
    cum = np.cumsum(flat[order]) / total
    count = int(np.searchsorted(cum, keep * (1.0 - 1e-12)) + 1)
    mask[order[:min(count, flat.size)]] = True
    return mask.reshape(mass.shape)


@serial_blas
def edit(model, W, data, *, keep, loss="logistic", W0=None, basis=None):
    """Curvature-basis edit (Merullo et al.): keep the K-FAC components carrying
    a fraction ``keep`` of the curvature mass.

    Components ``(j, i)`` of the filter matrix in the basis ``U_G (x) U_A`` are
    ranked by ``mu_j lambda_i`` (:func:`kfac`); the top ones whose cumulative
    mass first reaches ``keep`` of the total are kept and the weights are
    projected, ``W - W0 -> U_G P(U_G^T (W - W0) U_A) U_A^T`` (module docstring:
    why ``W - W0``). Components outside the range of ``A`` have zero curvature
    and are always removed.

    Parameters
    ----------
    model : simlab.models.CNN or simlab.models.Linear
    W : ndarray
        Trained weights.
    data : SignalNoise
        Training set (the curvature is measured on it).
    keep : float
        Fraction of the curvature mass kept, in ``[0, 1]``; ``0`` removes every
        component.
    loss : {"logistic", "squared"}
    W0 : ndarray, optional
        Reference (initial) weights; ``None`` projects ``W`` itself.
    basis : KFAC, optional
        Precomputed :func:`kfac` at ``W`` (reused across several ``keep``).

    Returns
    -------
    ndarray
        Edited weights, shaped like ``W``.

    Examples
    --------
    >>> from simlab.data import signal_noise
    >>> from simlab.models import Linear, min_norm_interpolator
    >>> data = signal_noise(5, 40, snr=0.3, seed=0)
    >>> model = Linear(40)
    >>> w = min_norm_interpolator(model.inputs(data.X), data.y)
    >>> bool(np.allclose(edit(model, w, data, keep=1.0), w))
    True
    """
    check_model_data(model, data)
    keep = check_real(keep, "keep")
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"keep must lie in [0, 1], got {keep}")
    Wk = model.kernel_weights(W)
    ref = np.zeros_like(Wk) if W0 is None else model.kernel_weights(W0, "W0")
    if basis is None:
        basis = kfac(model, W, data, loss=loss)
    elif not isinstance(basis, KFAC):
        raise ValueError("basis must be a KFAC instance (simlab.memorization.kfac)")
    M = Wk - ref
    C = basis.g_vectors.T @ M @ basis.a_vectors
    C = np.where(_keep_mask(basis.mass, keep), C, 0.0)
    out = ref + basis.g_vectors @ C @ basis.a_vectors.T
    return out.reshape(model.shape)


# --------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------

def recitation(model, W, data):
    """Share of flipped training points still predicted with their flipped label.

    ``mean_{i flipped} 1[sign f(x_i) = y_i]`` (``sign 0`` counts as no); ``nan``
    when no point is flipped.
    """
    check_model_data(model, data)
    if data.flipped is None:
        raise ValueError("data carries no flip mask: recitation needs data.flipped")
    if not data.flipped.any():
        return float("nan")
    f = model.forward(W, data.X)
    return float(np.mean(np.sign(f[data.flipped]) == data.y[data.flipped]))


def edit_metrics(model, W, data, test=None):
    """``dict(recitation, clean_acc, test_acc)`` (module docstring)."""
    rec = recitation(model, W, data)
    f = model.forward(W, data.X)
    clean = ~data.flipped
    clean_acc = (float(np.mean(np.sign(f[clean]) == data.y[clean])) if clean.any()
                 else float("nan"))
    test_acc = float("nan")
    if test is not None:
        check_model_data(model, test, "test")
        yt = test.y if test.y_clean is None else test.y_clean
        test_acc = float(np.mean(np.sign(model.forward(W, test.X)) == yt))
    return dict(recitation=rec, clean_acc=clean_acc, test_acc=test_acc)


# --------------------------------------------------------------------------
# random-matrix prediction: linear model, top-k curvature directions
# --------------------------------------------------------------------------

def _mp(c):
    """Marchenko-Pastur law (ratio ``c = n/p <= 1``, unit variance) helpers."""
    a, b = (1 - np.sqrt(c)) ** 2, (1 + np.sqrt(c)) ** 2

    def density(x):
        return np.sqrt(np.maximum((b - x) * (x - a), 0.0)) / (2 * np.pi * c * x)

    def stieltjes_out(z):      # G(z) = int nu(x)/(z - x) dx, z > b
        return (z - 1 + c - np.sqrt((z - a) * (z - b))) / (2 * c * z)

    def re_stieltjes_in(x):    # principal value inside the bulk
        return (x - 1 + c) / (2 * c * x)

    return a, b, density, stieltjes_out, re_stieltjes_in


def _mp_quantiles(c, probs):
    """Points ``x`` with ``P(nu > x) = probs`` (upper quantiles)."""
    a, b, density, _, _ = _mp(c)
    xs = np.linspace(a, b, 4001)
    dens = density(xs)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1])
                                           * np.diff(xs))])
    cdf /= cdf[-1]
    return np.interp(1.0 - np.asarray(probs), cdf, xs)


#: Tracy-Widom (beta = 1) law as Chiani's (2014) shifted gamma,
#: ``TW1 ~ Gamma(shape, scale) - shift`` (mean -1.2065, sd 1.2680, as TW1).
_TW1_GAMMA = (46.446, 0.186054, 9.84801)
#: Generalized Gauss-Laguerre nodes over the Tracy-Widom law of the top null
#: eigenvalue (the measured predictions agree to 1e-3 with 6 and 12 nodes).
_TW_NODES = 8


def _tw1_nodes(m=_TW_NODES):
    """Nodes and weights (summing to 1) of a quadrature over ``TW1``."""
    shape, scale, shift = _TW1_GAMMA
    x, w = scipy.special.roots_genlaguerre(m, shape - 1.0)
    return x * scale - shift, w / w.sum()


def _secular_overlaps(lam, w, beta, k):
    """Squared overlaps with ``v`` of the top-``k`` eigenvectors of
    ``diag(lam) + beta v v^T`` (``v_j^2 = w_j``, ``lam`` descending, rows of
    ``lam`` and ``w`` are independent instances).

    The eigenvalues ``z`` solve the secular equation ``beta sum_j w_j / (z -
    lam_j) = 1``, one root above ``lam_1`` (below ``lam_1 + beta``) and one in
    each ``(lam_j, lam_{j-1})``; the eigenvector ``(z - diag(lam))^{-1} v``
    has squared overlap ``1 / (beta^2 sum_j w_j / (z - lam_j)^2)``. Roots by
    bisection, vectorized over instances and roots.
    """
    lam = np.atleast_2d(lam)
    w = np.atleast_2d(w)
    lo = lam[:, :k].copy()
    hi = np.concatenate([lam[:, :1] + beta * w.sum(axis=1, keepdims=True),
                         lam[:, :k - 1]], axis=1)
    for _ in range(64):
        mid = 0.5 * (lo + hi)
        h = beta * np.sum(w[:, None, :] / (mid[:, :, None] - lam[:, None, :]),
                          axis=2) - 1.0
        up = h > 0.0
        lo = np.where(up, mid, lo)
        hi = np.where(up, hi, mid)
    z = 0.5 * (lo + hi)
    s2 = np.sum(w[:, None, :] / (z[:, :, None] - lam[:, None, :]) ** 2, axis=2)
    return 1.0 / (beta**2 * s2)


@functools.lru_cache(maxsize=4096)
def _overlaps(n, d, snr, k):
    """Squared overlaps ``alpha_j^2`` of the top-``k`` eigenvectors of
    ``K = Z Z^T`` with ``y_clean / sqrt(n)``: the ``n -> infinity``
    deterministic equivalents (reference for :func:`_mean_overlap`)."""
    p = d - 1
    c = n / p
    theta = snr**2 * d                        # ||mu||^2 / sigma_p^2
    beta = theta * n / p                      # spike of K / (sigma_p^2 p)
    a, b, density, g_out, re_g = _mp(c)
    g_edge = g_out(b)
    alphas = []
    outlier = beta * g_edge > 1.0
    if outlier and k >= 1:
        zs = scipy.optimize.brentq(lambda z: g_out(z) - 1.0 / beta, b * (1 + 1e-12),
                             b + 10 * beta + 10)
        h = 1e-6 * zs
        dg = (g_out(zs + h) - g_out(zs - h)) / (2 * h)
        alphas.append(-1.0 / (beta**2 * dg))
    k_bulk = k - len(alphas)
    if k_bulk > 0:
        lam = _mp_quantiles(c, (np.arange(k_bulk) + 0.5) / n)
        w = 1.0 / ((1 - beta * re_g(lam)) ** 2 + (beta * np.pi * density(lam)) ** 2)
        alphas.extend((w / n).tolist())
    return np.clip(np.array(alphas, dtype=float), 0.0, 1.0)


def _tw_center_scale(n, p):
    """Centering and scale of ``lambda_max(Xi Xi^T) / p`` (``Xi`` ``n x p``
    standard Gaussian) for its Tracy-Widom limit: Johnstone (2001) with the
    half-integer corrections of Ma (2012)."""
    a, b = np.sqrt(n - 0.5), np.sqrt(p - 0.5)
    return (a + b) ** 2 / p, (a + b) * (1.0 / a + 1.0 / b) ** (1.0 / 3.0) / p


@functools.lru_cache(maxsize=4096)
def _mean_overlap(n, d, snr, k, nodes=_TW_NODES):
    """``E[A]``, ``A = yhat^T P_k yhat``, in the finite-``n`` spike model.

    The exact finite-``n`` secular equation of the rank-one spike ``beta yhat
    yhat^T`` on ``W = Xi Xi^T / p`` (:func:`_secular_overlaps`) with the null
    eigenvalues at their finite-``n`` classical locations (Marchenko-Pastur
    quantiles ``(j - 1/2)/n``) except the top one, which carries its
    Tracy-Widom fluctuation (``mu + sigma TW1``, :func:`_tw_center_scale`,
    clipped at the second location; ``nodes``-point quadrature), and the
    Haar weights ``w_j = (u_j . yhat)^2`` at their mean ``1/n``.
    """
    p = d - 1
    beta = snr**2 * d * n / p
    if beta <= 1e-12:
        return k / n                      # Haar: E[A] = k/n exactly
    lam = _mp_quantiles(n / p, (np.arange(n) + 0.5) / n)
    mu, sig = _tw_center_scale(n, p)
    t, wt = _tw1_nodes(nodes)
    L = np.tile(lam, (nodes, 1))
    L[:, 0] = np.maximum(mu + sig * t, lam[1] + 1e-6 * sig)
    A = _secular_overlaps(L, np.full_like(L, 1.0 / n), beta, k).sum(axis=1)
    return float(np.clip(wt @ A, 0.0, 1.0))


def predict_recitation_linear(n, d, snr, k, n_flipped):
    """Predicted recitation and clean training accuracy of the linear model's
    min-norm interpolator after keeping its top-``k`` curvature directions.

    The edited interpolator predicts ``f = P_k y`` on the training set, with
    ``P_k`` the projector on the top-``k`` eigenvectors of ``K = Z Z^T``
    (:func:`edit` on the eigenbasis of ``Z^T Z / n``). ``K = ||mu||^2 y_c
    y_c^T + Xi Xi^T`` is a rank-one additive spike on an orthogonally
    invariant Wishart matrix (ratio ``n/(d-1)``), and everything depends on
    ``A = yhat^T P_k yhat`` (``yhat = y_c / sqrt(n)``).

    Finite-``n`` spike model for ``E[A]`` (``derivations/memorization.py``,
    step B.3): the exact secular equation of the rank-one spike,
    ``beta sum_j w_j / (z - lambda_j) = 1`` with squared overlap
    ``1 / (beta^2 sum_j w_j / (z - lambda_j)^2)`` at each root, evaluated on a
    deterministic finite-``n`` skeleton: null eigenvalues at their
    Marchenko-Pastur classical locations (quantiles ``(j - 1/2)/n``), the top
    one with its Tracy-Widom fluctuation (Johnstone-Ma centering and scale,
    ``TW1`` as Chiani's shifted gamma, an 8-node Gauss-Laguerre quadrature),
    Haar weights at their mean ``w_j = 1/n``. No matrix is sampled. This
    smooths the BBP transition (``theta = 1 + sqrt(gamma)``, ``theta =
    SNR^2 d``, ``gamma = (d-1)/n``) as a finite sample does, and tends to the
    ``n -> infinity`` deterministic equivalents (outlier above the threshold,
    bulk overlap profile below). Given ``A``, the components of the
    eigenvectors orthogonal to ``yhat`` are taken Haar and ``f_i y_c,i``
    Gaussian with the mean and variance of the derivation.

    Measured accuracy (300 draws per cell, the seeds of
    ``tests/test_memorization_theory.py``, ``p_flip = 0.15``; ``(n, d)`` in
    {(20, 200), (40, 400), (20, 1000), (40, 1000)}, SNR in {0.02, 0.05, 0.1,
    0.15, 0.2, 0.3, 0.4}, ``k`` in {1, 2, 5, n/2}: 112 cells): worst
    ``|prediction - simulation|`` 0.029 over the 12 cells with
    ``theta / (1 + sqrt(gamma))`` in ``[0.9, 1.3]`` (the deterministic
    equivalents alone: 0.19 there) and 0.040 over the other 100 (worst at
    low SNR, ``k = 1``). These include seed noise (standard error of a cell
    up to 0.02): with 3000 draws the error is at most 0.025 on the 13 band
    cells (``k`` in {1, 2, 5, n/4, n/2}; 0.055 with the 400 draws of
    ``derivations/memorization.py --errors`` at ``(20, 200, 0.15)``,
    ``k = 5``, is a 2-s.e. excursion, 0.022 with 3000) and 0.027 on the worst
    cells outside. Off the grid, in the band: ``(n, d, SNR) = (20, 400,
    0.12)``, ``k = 5``, 0.036 with 1000 draws (the Gaussian step alone,
    evaluated at the simulated ``E[A]``, is off by 0.045 there).

    Parameters
    ----------
    n, d : int
        Samples and dimension (``d - 1 >= n``).
    snr : float
    k : int
        Directions kept, ``0 <= k <= n``.
    n_flipped : int
        Number of flipped training points, ``1 <= n_flipped < n``.

    Returns
    -------
    dict
        ``recitation``, ``clean_acc``.
    """
    n = check_int(n, "n", low=2)
    d = check_int(d, "d", low=n + 1)
    snr = check_positive(snr, "snr", allow_zero=True)
    k = check_int(k, "k", low=0, high=n)
    nf = check_int(n_flipped, "n_flipped", low=1, high=n - 1)
    if k == 0:
        return dict(recitation=0.0, clean_acc=0.0)
    rho = nf / n
    tau = 1.0 - 2.0 * rho
    A = _mean_overlap(n, d, float(snr), k)         # E[y_hat^T P_k y_hat]
    N = n - 1
    m1 = (k - A) / N                               # tr(Q P Q) / N
    s2 = (k - 2.0 * A + A * A) / N                 # tr((Q P Q)^2) / N
    r2 = 4.0 * n * rho * (1 - rho)                 # ||y - tau y_c||^2
    spread = max(s2 - m1 * m1, 0.0)

    def var(ri2):
        return (tau**2 * n * A * (1 - A) / N + spread * (r2 + ri2) / N
                + A * (1 - A) * r2 / (n * N))

    sd_f = np.sqrt(max(var(4.0 * (1 - rho) ** 2), 1e-300))
    sd_c = np.sqrt(max(var(4.0 * rho**2), 1e-300))
    mean_f = tau * A - 2.0 * (1.0 - rho) * m1      # E[f_i y_c,i], flipped
    mean_c = tau * A + 2.0 * rho * m1              # clean
    return dict(recitation=float(scipy.special.ndtr(-mean_f / sd_f)),
                clean_acc=float(scipy.special.ndtr(mean_c / sd_c)))


# --------------------------------------------------------------------------
# prediction: flipped/clean mean-trace ratio after training
# --------------------------------------------------------------------------

def _loss_tail(mg, loss):
    """``(-dl/d(margin), l'')`` of the loss at margin ``y f``."""
    if loss == "squared":
        return 1.0 - mg, np.ones_like(mg)
    s = scipy.special.expit(-mg)
    return s, s * (1.0 - s)


def predict_trace_ratio(n, d, snr, n_flipped, *, model="cnn", m=10, eta=0.1,
                        steps=1000, loss="logistic", sigma_p=1.0):
    """Predicted flipped/clean ratio of the mean per-sample Hessian trace after
    ``steps`` of full-batch GD from a small initialisation.

    Reduced signal/noise dynamics (THEORY 8; Kou et al. 2023, derived in
    ``derivations/memorization.py``): every clean sample has margin
    ``y_i f_i = r_C + g`` and every flipped one ``r_F - g``, with the signal
    coefficient ``g`` and the noise-memorization coefficients ``r`` following

        g <- g + eta ||mu||^2 kappa [(1 - p) l_C - p l_F],
        r_s <- r_s + eta sigma_p^2 d / (n m) l_s,

    ``l_s = -dl/d(margin)`` at the group's margin, ``p = n_flipped / n``,
    ``kappa = 1/(2m)`` for the CNN (each class's filters see half the samples)
    and ``1`` for the linear model (``m = 1``). Both groups have the same
    ``||grad f_i||^2`` (CNN: ``(||mu||^2 + ||xi_i||^2)/m`` with each patch
    activating one class's filters; linear: ``||z_i||^2``), so the ratio is
    ``l''(r_F - g) / l''(r_C + g)``. For the squared loss ``l'' = 1``: the
    ratio is 1, the negative control.

    Measured error (``python derivations/memorization.py --ratio-errors``: 8
    seeds per cell, ``n`` in {20, 40}, ``d`` in {200, 1000}, six SNRs in
    [0.02, 0.4], ``p_flip = 0.2``): worst relative error of the seed-mean ratio
    0.15 for the logistic CNN (an underestimate at high SNR), 0.09 for the
    logistic linear model; with squared loss the CNN's measured ratio deviates
    from the predicted 1 by up to 0.17 (the exact Hessian's ``l'`` term and the
    activation counts, which the reduced dynamics ignores) and the linear
    model's by 0.009.

    Parameters
    ----------
    n, d : int
    snr : float
    n_flipped : int
        Flipped training points, ``1 <= n_flipped < n``.
    model : {"cnn", "linear"}
    m : int
        Filters per class (CNN).
    eta : float
    steps : int
    loss : {"logistic", "squared"}
    sigma_p : float

    Returns
    -------
    float
    """
    n = check_int(n, "n", low=2)
    d = check_int(d, "d", low=2)
    snr = check_positive(snr, "snr", allow_zero=True)
    nf = check_int(n_flipped, "n_flipped", low=1, high=n - 1)
    if model not in ("cnn", "linear"):
        raise ValueError(f"model must be 'cnn' or 'linear', got {model!r}")
    loss_code(loss)
    if loss == "squared":
        return 1.0
    m = 1 if model == "linear" else check_int(m, "m", low=1)
    eta = check_positive(eta, "eta")
    steps = check_int(steps, "steps", low=1)
    sigma_p = check_positive(sigma_p, "sigma_p")
    p = nf / n
    mu2 = (snr * sigma_p) ** 2 * d
    c_mu = eta * mu2 * (1.0 / (2 * m) if model == "cnn" else 1.0)
    c_xi = eta * sigma_p**2 * d / (n * m)
    g = r_c = r_f = 0.0
    for _ in range(steps):
        (l_c, l_f), _ = _loss_tail(np.array([r_c + g, r_f - g]), loss)
        g += c_mu * ((1 - p) * l_c - p * l_f)
        r_c += c_xi * l_c
        r_f += c_xi * l_f
    _, (h_c, h_f) = _loss_tail(np.array([r_c + g, r_f - g]), loss)
    return float(h_f / h_c)
