"""Shared implementation of the two-patch models of THEORY section 8.

:class:`TwoPatchModel` holds everything :class:`simlab.models.CNN` and
:class:`simlab.models.Linear` have in common: validation, initialisation,
forward pass, per-sample gradients, rank-one curvature factors, exact
Hessian-vector products, sharpness and the signal/noise decomposition. All
numerical work is done by the Numba kernels of :mod:`simlab.models.kernels`.
"""

import numpy as np
import scipy.sparse.linalg as spla

from .. import _streams
from .._validation import (
    as_float_array,
    check_instance,
    check_labels,
    check_patches,
    check_positive,
    check_seed,
)
from ..data import SignalNoise
from . import kernels as K

__all__ = ["LOSSES", "TwoPatchModel", "check_model", "check_model_data",
           "kernel_sharpness", "loss_code"]

#: Loss names understood by every model method.
LOSSES = {"logistic": K.LOGISTIC, "squared": K.SQUARED}


#: Dimension up to which :meth:`TwoPatchModel.sharpness` uses a dense Hessian.
_DENSE_SHARPNESS_MAX = 400


def loss_code(loss):
    """Kernel code of the loss called ``loss`` (``ValueError`` if unknown)."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {tuple(LOSSES)}, got {loss!r}")
    return LOSSES[loss]


class TwoPatchModel:
    """Shared implementation of the two-patch models (see :mod:`.kernels`).

    Subclasses set ``J`` (1 or 2 output classes), ``m`` (filters per class),
    ``q`` (ReLU power), ``act_id`` and ``d``, and define :attr:`shape`.
    """

    J: int
    m: int
    q: int
    act_id: int
    d: int

    # ------------------------------------------------------------------ shape
    @property
    def shape(self):
        """Shape of the weight array ``W``."""
        raise NotImplementedError

    @property
    def n_params(self):
        """Number of parameters ``p``."""
        return int(np.prod(self.shape))

    @property
    def kernel_args(self):
        """``(J, m, act_id, q)``: the model's arguments to the Numba kernels."""
        return self.J, self.m, self.act_id, self.q

    def kernel_weights(self, W, name="W"):
        """Validated weights as a C-contiguous ``(J*m, d)`` array."""
        arr = as_float_array(W, name)
        if arr.shape != self.shape:
            raise ValueError(f"{name} must have shape {self.shape}, got {arr.shape}")
        return arr.reshape(self.J * self.m, self.d)

    def _X(self, X, name="X"):
        """Validated patches as ``(2n, d)``."""
        arr = check_patches(X, name, d=self.d)
        return arr.reshape(2 * arr.shape[0], self.d)

    def _Xy(self, X, y):
        Xp = self._X(X)
        return Xp, check_labels(y, Xp.shape[0] // 2, "y")

    def _out(self, A):
        return np.ascontiguousarray(A).reshape(self.shape)

    # ------------------------------------------------------------------ init
    def init(self, sigma0=0.01, seed=0):
        """Gaussian initialisation ``N(0, sigma0^2)`` of every weight.

        Parameters
        ----------
        sigma0 : float
            Standard deviation ``>= 0``.
        seed : int

        Returns
        -------
        W : ndarray of shape :attr:`shape`
        """
        sigma0 = check_positive(sigma0, "sigma0", allow_zero=True)
        rng = np.random.default_rng([check_seed(seed), _streams.INIT])
        return sigma0 * rng.standard_normal(self.shape)

    # ------------------------------------------------------------------ f
    def forward(self, W, X):
        """Network output ``f(W, x_i)`` for every sample, shape ``(n,)``."""
        return K._forward(self.kernel_weights(W), self._X(X), *self.kernel_args)

    def per_sample_grads(self, W, X):
        """Gradients ``grad_W f(W, x_i)``, shape ``(n, p)`` (C order of ``W``).

        For ReLU the derivative at a kink (``<w, x_p> = 0``) is taken as 0.
        """
        Wk, Xp = self.kernel_weights(W), self._X(X)
        n = Xp.shape[0] // 2
        G = K._per_sample_grads(Wk, Xp, *self.kernel_args, np.ones(n))
        return G.reshape(n, self.n_params)

    def curvature_factors(self, W, X, y, loss="logistic", *, gauss_newton=False):
        """Rank-one factors ``h_i`` with per-sample loss Hessian ``h_i h_i^T``.

        ``h_i = sqrt(l''(f_i)) grad_W f_i`` where ``l''`` is the second
        derivative of the loss in ``f`` (logistic: ``sigma(z) sigma(-z)`` at
        ``z = y_i f_i``; squared: 1).

        Parameters
        ----------
        W : ndarray of shape :attr:`shape`
        X : ndarray (n, 2, d)
        y : ndarray (n,) in ``{-1, +1}``
        loss : {"logistic", "squared"}
        gauss_newton : bool
            Only for ``q > 1``: accept the Gauss-Newton part alone (see Notes).

        Returns
        -------
        ndarray, shape (n, p)

        Notes
        -----
        THEORY section 8. The per-sample Hessian is
        ``l'' grad f grad f^T + l' grad^2 f``. For ReLU (``q = 1``) and the linear
        model ``grad^2 f = 0`` almost everywhere, so the factors are exact. For
        ``q > 1`` the second term, ``l' (s_j/m) sum_p act''(z) x_p x_p^T`` per filter,
        is neither rank one nor sign-definite; the factors then only give the
        Gauss-Newton part and are refused unless ``gauss_newton=True``. Use
        :meth:`per_sample_hessians` (dense, exact) or :meth:`hvp` instead.
        """
        lid = loss_code(loss)
        if self.act_id == K.RELU and self.q > 1 and not gauss_newton:
            raise ValueError("curvature_factors is exact only for q = 1: for q > 1 "
                             "pass gauss_newton=True for the Gauss-Newton part or "
                             "use per_sample_hessians for the exact Hessians")
        Wk, (Xp, yv) = self.kernel_weights(W), self._Xy(X, y)
        f = K._forward(Wk, Xp, *self.kernel_args)
        d2 = np.array([K.loss_terms(fi, yi, lid)[2] for fi, yi in zip(f, yv,
                                                                         strict=True)])
        G = K._per_sample_grads(Wk, Xp, *self.kernel_args, np.sqrt(d2))
        return G.reshape(yv.shape[0], self.n_params)

    # ------------------------------------------------------------------ loss
    def losses(self, W, X, y, loss="logistic"):
        """Per-sample losses, shape ``(n,)``."""
        lid = loss_code(loss)
        Wk, (Xp, yv) = self.kernel_weights(W), self._Xy(X, y)
        return K.losses(K._forward(Wk, Xp, *self.kernel_args), yv, lid)

    def loss(self, W, X, y, loss="logistic"):
        """Mean training loss ``L = (1/n) sum_i l_i``."""
        return float(self.losses(W, X, y, loss).mean())

    def loss_grad(self, W, X, y, loss="logistic"):
        """``(L, grad_W L)`` with the gradient shaped like ``W``."""
        lid = loss_code(loss)
        Wk, (Xp, yv) = self.kernel_weights(W), self._Xy(X, y)
        val, g = K._loss_grad(Wk, Xp, yv, *self.kernel_args, lid)
        return float(val), self._out(g)

    def hvp(self, W, X, y, v, loss="logistic"):
        """Hessian of the mean loss times ``v`` (shaped like ``W``), exact.

        Includes the ``l' grad^2 f`` term, which is nonzero only for ``q > 1``.
        """
        lid = loss_code(loss)
        Wk, (Xp, yv) = self.kernel_weights(W), self._Xy(X, y)
        V = self.kernel_weights(v, "v")
        return self._out(K._hvp(Wk, Xp, yv, V, *self.kernel_args, lid))

    def hessian(self, W, X, y, loss="logistic"):
        """Dense Hessian ``(p, p)`` of the mean loss (for small models)."""
        lid = loss_code(loss)
        Wk, (Xp, yv) = self.kernel_weights(W), self._Xy(X, y)
        return _dense_hessian(Wk, Xp, yv, self.kernel_args, lid)

    def per_sample_hessians(self, W, X, y, loss="logistic"):
        """Exact per-sample loss Hessians ``(n, p, p)`` (for small models).

        ``l''_i g_i g_i^T + l'_i grad^2 f_i``; the second term is block diagonal
        over filters and vanishes for ReLU and the linear model.
        """
        lid = loss_code(loss)
        Wk, (Xp, yv) = self.kernel_weights(W), self._Xy(X, y)
        n = yv.shape[0]
        f = K._forward(Wk, Xp, *self.kernel_args)
        terms = [K.loss_terms(fi, yi, lid) for fi, yi in zip(f, yv, strict=True)]
        G = K._per_sample_grads(Wk, Xp, *self.kernel_args, np.ones(n)).reshape(n, -1)
        H = np.einsum("i,ij,ik->ijk", [t[2] for t in terms], G, G)
        if self.act_id == K.RELU and self.q > 1:
            Z = Wk @ Xp.T
            d2 = np.vectorize(lambda z: K.d2act(z, self.act_id, self.q))(Z)
            p_blk = self.d
            for i in range(n):
                for row in range(Wk.shape[0]):
                    s = 1.0 if row < self.m else -1.0
                    blk = sum(d2[row, 2 * i + p] * np.outer(Xp[2 * i + p],
                                                            Xp[2 * i + p])
                              for p in range(2))
                    sl = slice(row * p_blk, (row + 1) * p_blk)
                    H[i, sl, sl] += terms[i][1] * s / self.m * blk
        return H

    def sharpness(self, W, X, y, loss="logistic", *, tol=1e-10, seed=0):
        """``lambda_max`` of the Hessian of the mean loss.

        ARPACK Lanczos (``scipy.sparse.linalg.eigsh``, largest algebraic) on
        :meth:`hvp`; a dense eigendecomposition for ``p <= 400``.

        Parameters
        ----------
        tol : float
            Relative tolerance passed to ARPACK.
        seed : int
            Seed of the Lanczos start vector.
        """
        lid = loss_code(loss)
        Wk, (Xp, yv) = self.kernel_weights(W), self._Xy(X, y)
        return kernel_sharpness(Wk, Xp, yv, self.kernel_args, lid, tol,
                                check_seed(seed))

    # ------------------------------------------------------------------ theory
    def decompose(self, W, W0, data):
        """Signal/noise decomposition of ``W - W0`` (THEORY section 8).

        Solves ``w_{j,r} - w0_{j,r} = s_j gamma_{j,r} mu/||mu||^2
        + sum_i rho_{j,r,i} xi_i/||xi_i||^2`` in least squares (exact when
        ``mu, xi_1..xi_n`` are linearly independent, e.g. ``n < d``).

        Parameters
        ----------
        W, W0 : ndarray of shape :attr:`shape`
        data : SignalNoise
            Must carry ``mu``.

        Returns
        -------
        gamma : ndarray (J, m)
        rho : ndarray (J, m, n)
        """
        if not isinstance(data, SignalNoise):
            raise ValueError("data must be a SignalNoise instance")
        if data.mu is None:
            raise ValueError("data.mu is unknown: the decomposition needs the "
                             "signal vector")
        if data.d != self.d:
            raise ValueError(f"data has d={data.d} but the model expects "
                             f"d={self.d}")
        delta = self.kernel_weights(W) - self.kernel_weights(W0, "W0")
        xi = data.noise
        basis = np.column_stack([data.mu / (data.mu @ data.mu),
                                 (xi / np.einsum("ij,ij->i", xi, xi)[:, None]).T])
        coef = np.linalg.lstsq(basis, delta.T, rcond=None)[0]      # (n+1, K)
        signs = np.repeat([1.0, -1.0][: self.J], self.m)
        gamma = (signs * coef[0]).reshape(self.J, self.m)
        rho = coef[1:].T.reshape(self.J, self.m, data.n)
        return gamma, rho


def _dense_hessian(Wk, Xp, y, kargs, lid):
    """Mean-loss Hessian ``(p, p)``, column by column from exact HVPs."""
    p = Wk.size
    H = np.empty((p, p))
    E = np.zeros(p)
    for a in range(p):
        E[a] = 1.0
        H[:, a] = K._hvp(Wk, Xp, y, E.reshape(Wk.shape), *kargs, lid).ravel()
        E[a] = 0.0
    return 0.5 * (H + H.T)


class _Overflow(Exception):
    """A Hessian-vector product overflowed (weights of a diverging run)."""


def kernel_sharpness(Wk, Xp, y, kargs, lid, tol, seed):
    """``lambda_max`` of the mean-loss Hessian from kernel arrays (dense eigh
    up to ``_DENSE_SHARPNESS_MAX`` parameters, else Lanczos on exact HVPs).

    ``inf`` when the weights or the Hessian overflow (a diverging run: the
    caller reports the divergence; no NaN and no linear-algebra error)."""
    p = Wk.size
    shape = Wk.shape
    if not np.all(np.isfinite(Wk)):
        return float("inf")
    with np.errstate(over="ignore", invalid="ignore"):
        if p <= _DENSE_SHARPNESS_MAX:
            H = _dense_hessian(Wk, Xp, y, kargs, lid)
            if not np.all(np.isfinite(H)):
                return float("inf")
            return float(np.linalg.eigvalsh(H)[-1])

        def matvec(v):
            out = K._hvp(Wk, Xp, y, np.ascontiguousarray(v).reshape(shape), *kargs,
                         lid).ravel()
            if not np.all(np.isfinite(out)):
                raise _Overflow
            return out

        op = spla.LinearOperator((p, p), dtype=float, matvec=matvec)
        v0 = np.random.default_rng(seed).standard_normal(p)
        try:
            lam = spla.eigsh(op, k=1, which="LA", v0=v0, tol=tol, ncv=min(p - 1, 20),
                             return_eigenvectors=False)
        except _Overflow:
            return float("inf")
    return float(lam[0])


def check_model(model, name="model"):
    """A :class:`TwoPatchModel` (e.g. not ``None``), else a clear error."""
    return check_instance(model, TwoPatchModel, name)


def check_model_data(model, data, name="data"):
    """The one model/data check: a simlab model and a data set of its ``d``."""
    check_model(model)
    check_instance(data, SignalNoise, name)
    if data.d != model.d:
        raise ValueError(f"{name} has d={data.d} but the model expects d={model.d}")
    return model, data
