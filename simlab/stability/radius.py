"""Spectral radius, critical learning rate and escape time of the exact operator.

THEORY.md sections 2-4 and 11. The operator ``T = I - eta (M (+) M) + eta^2 D``
of :mod:`simlab.stability.operator` is self-adjoint and PSD-preserving, so
``rho(T) = lambda_max(T)``. For a Frobenius-unit ``X``,
``<X, T X> - 1 = eta (eta <X, D X> - 2 <X, C X>)`` with ``C = (M (+) M) / 2``.
When ``M`` is positive definite on ``U`` this gives, for every scheme and for
unlearning alike,

    rho(T) <= 1   iff   eta <= eta* = 2 / lambda_max(C^{-1} D),

the generalized eigenproblem of Mulayoff & Michaeli (COLT 2024). When ``M`` has a
negative eigenvalue (net ascent curvature ``kappa_+ > 0``), ``C`` has one too and
every ``eta > 0`` diverges.
"""

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.sparse.linalg as spla

from .. import config
from .._validation import check_escape_factor, check_eta
from .operator import (
    OperatorAction,
    build_problem,
    operator_matrix,
    quadratic_matrix,
)

__all__ = [
    "spectral_radius",
    "critical_lr",
    "escape_time",
    "mean_lower_bound",
    "net_ascent_curvature",
]

_METHODS_RHO = ("auto", "dense", "lanczos", "power")
_METHODS_LR = ("auto", "geneig", "secular", "bisect")


def _problem(retain, batch, scheme, forget, forget_batch, alpha):
    return build_problem(retain, batch, scheme=scheme, forget=forget,
                         forget_batch=forget_batch, alpha=alpha, restrict=True)


def _radius(prob, eta, method="auto"):
    r = prob.dim
    if method == "dense" or (method == "auto" and r <= config.DENSE_MAX_DIM):
        return float(scipy.linalg.eigvalsh(operator_matrix(prob, eta))[-1])
    act = OperatorAction(prob)
    if method == "power":
        return _power_radius(act, eta)
    if r * r <= 2:
        raise ValueError("method='lanczos' needs r >= 2; use 'dense'")
    return _lanczos_top(lambda Y: act.operator(eta, Y), r)


def _lanczos_top(matvec, r):
    """Largest eigenvalue of a symmetric operator on ``r x r`` matrices (ARPACK),
    started from the identity (which overlaps every PSD eigenmatrix)."""
    op = spla.LinearOperator((r * r, r * r), dtype=float,
                             matvec=lambda v: matvec(v.reshape(r, r)).ravel())
    lam = spla.eigsh(op, k=1, which="LA", v0=np.eye(r).ravel(), tol=config.ARPACK_TOL,
                     ncv=min(r * r - 1, config.ARPACK_NCV), maxiter=20 * r * r,
                     return_eigenvectors=False)
    return float(lam[0])


def _power_radius(act, eta, maxiter=100_000, rtol=1e-12):
    """Power iteration on PSD matrices from ``X_0 = I`` (THEORY section 4)."""
    r = act.prob.dim
    X = np.eye(r) / np.sqrt(r)
    rho = 0.0
    for _ in range(maxiter):
        Y = act.operator(eta, X)
        new = float(np.sum(X * Y))  # Rayleigh quotient, ||X||_F = 1
        nrm = np.linalg.norm(Y)
        if nrm == 0.0:
            return 0.0
        X = Y / nrm
        if abs(new - rho) <= rtol * abs(new):
            return new
        rho = new
    raise RuntimeError(f"power iteration did not converge in {maxiter} steps "
                       f"(last estimate {rho}); use method='lanczos'")


def spectral_radius(retain, eta, batch, *, scheme="bernoulli", forget=None,
                    forget_batch=None, alpha=0.0, method="auto"):
    """Spectral radius ``rho(T)`` on the invariant subspace ``U``.

    Parameters
    ----------
    retain : array_like, shape (n_r, p, p) or (n_r, p)
        Per-sample Hessians (dense PSD) or rank-one factors ``g_i``.
    eta : float
        Learning rate ``> 0``.
    batch : int
        Retain batch size in ``[1, n_r]``.
    scheme : {"bernoulli", "with", "without"}
    forget : array_like, optional
        Forget-set Hessians; ``None`` gives plain SGD.
    forget_batch : int, optional
        Forget batch size (default ``batch``).
    alpha : float
        Mixing weight in ``[0, 1]``.
    method : {"auto", "dense", "lanczos", "power"}
        ``dense`` builds the ``r^2 x r^2`` matrix; ``lanczos`` is matrix-free
        ARPACK; ``power`` iterates on PSD matrices. ``auto`` picks dense for
        ``r <= config.DENSE_MAX_DIM`` and Lanczos otherwise. Rank-one input is
        always reduced to ``r <= N`` through the Gram matrix (THEORY section 6).

    Returns
    -------
    float
        ``rho(T)``; the linearized dynamics is mean-square stable iff ``<= 1``.

    See Also
    --------
    critical_lr, escape_time, simlab.simulate.linearized

    Notes
    -----
    THEORY sections 2-4. Directions outside ``U = range(sum_i H_i)`` are never
    moved and are excluded (otherwise ``rho`` would always be at least 1).

    Examples
    --------
    >>> import numpy as np
    >>> from simlab.curvature import coherence_dial
    >>> H = coherence_dial(10, 1)          # lambda_max(H) = 2
    >>> round(spectral_radius(H, 0.5, 10, scheme="without"), 12)  # GD: (1-1)^2
    0.0
    """
    eta = check_eta(eta)
    if method not in _METHODS_RHO:
        raise ValueError(f"method must be one of {_METHODS_RHO}, got {method!r}")
    prob = _problem(retain, batch, scheme, forget, forget_batch, alpha)
    return _radius(prob, eta, method)


def _parts_scale(prob):
    """``lambda_max(sum_i |c_i| H_i)``: the curvature scale of M's parts."""
    return float(np.linalg.eigvalsh(prob.weighted_sum(np.abs(prob.mean_coef)))[-1])


def critical_lr(retain, batch, *, scheme="bernoulli", forget=None, forget_batch=None,
                alpha=0.0, method="auto"):
    """Smallest learning rate ``eta`` with ``rho(T) > 1``.

    Parameters
    ----------
    retain, batch, scheme, forget, forget_batch, alpha
        As in :func:`spectral_radius`.
    method : {"auto", "geneig", "secular", "bisect"}
        ``geneig``: ``2 / lambda_max(C^{-1} D)`` (module docstring), solved in
        the eigenbasis of ``M`` where ``C`` is diagonal. ``secular``: the
        ``O(N^3)``-per-matvec secular form of THEORY section 11 (rank-one,
        Bernoulli, plain SGD only). ``bisect``: Brent's method on
        ``rho(T(eta)) - 1`` over the bracket ``[1e-9 eta_gd, eta_gd]`` with
        ``eta_gd = 2 / lambda_max(M)`` (``rho >= 1`` there by the mean bound).
        ``auto`` is ``geneig``.

    Returns
    -------
    float
        ``eta*``. ``0.0`` when every ``eta > 0`` diverges (``M`` has a negative
        eigenvalue on ``U``, i.e. ``kappa_+ > 0``, or ``M`` is singular with
        sampling noise on its kernel); ``inf`` when nothing diverges.

    Notes
    -----
    THEORY sections 2, 3 and 11. ``eta*`` is non-decreasing in the batch size
    for SGD and equals ``2 / lambda_max(H)`` at ``B = n`` for ``bernoulli`` and
    ``without``.

    Examples
    --------
    >>> from simlab.curvature import coherence_dial
    >>> round(critical_lr(coherence_dial(10, 3), 10, scheme="without"), 12)
    1.0
    """
    if method not in _METHODS_LR:
        raise ValueError(f"method must be one of {_METHODS_LR}, got {method!r}")
    prob = _problem(retain, batch, scheme, forget, forget_batch, alpha)
    lam, W = np.linalg.eigh(prob.mean())
    # Singularity is judged against the size of the parts, not of M itself
    # (M = 0 exactly when the descent and ascent parts cancel).
    scale = _parts_scale(prob)
    tol = config.SINGULAR_RTOL * scale
    if lam[0] < -tol:
        return 0.0
    if lam[0] <= tol:
        return _critical_singular(prob, lam, W, tol)
    if method == "bisect":
        return _critical_bisect(prob, lam[-1])
    if method == "secular":
        sgd = prob.n_retain == prob.hessians.shape[0]
        if not (prob.rank_one and sgd and scheme == "bernoulli"):
            raise ValueError("method='secular' needs rank-one retain, "
                             "scheme='bernoulli' and plain SGD (alpha=0)")
        return _critical_secular(prob, batch)
    return _critical_geneig(prob)


def _critical_geneig(prob):
    """``2 / lambda_max(C^{-1} D)`` with ``C = diag((lam_k + lam_l) / 2)`` in the
    eigenbasis of ``M``: the top eigenvalue of ``S o D(S o Y)``,
    ``S_kl = (2 / (lam_k + lam_l))^{1/2}``."""
    r = prob.dim
    if r <= config.DENSE_MAX_DIM:
        lam, W = np.linalg.eigh(prob.mean())
        s = np.sqrt(2.0 / (lam[:, None] + lam[None, :])).ravel()
        A = s[:, None] * quadratic_matrix(prob.rotated(W)) * s[None, :]
        mu = float(scipy.linalg.eigvalsh(A)[-1])
    else:
        act = OperatorAction(prob)
        S = np.sqrt(2.0 / (act.lam[:, None] + act.lam[None, :]))
        mu = _lanczos_top(lambda Y: S * act.quadratic(S * Y), r)
    # D contains a PSD sampling part and M (x) M scaled by (1 - b) >= 0, so
    # mu > 0 whenever M is positive definite.
    return 2.0 / mu if mu > 0 else np.inf


def _critical_bisect(prob, lam_max):
    hi = 2.0 / lam_max
    f = lambda eta: _radius(prob, eta) - 1.0  # noqa: E731
    if f(hi) <= 0.0:
        # rho(eta_gd) == 1 exactly: no sampling noise along the top direction.
        return hi
    lo = 1e-9 * hi
    if f(lo) >= 0.0:
        raise RuntimeError("rho(T) >= 1 at the bottom of the bracket")
    return float(scipy.optimize.brentq(f, lo, hi, xtol=1e-15, rtol=1e-13))


def _critical_singular(prob, lam, W, tol):
    """``M`` PSD but singular on ``U``: kernel directions are neutral in the mean.

    For ``X`` supported on ``ker M``, ``<X, T X> = |X|^2 + eta^2 <X, D X>``; if
    ``D`` is positive there, every ``eta > 0`` diverges.
    """
    rot = prob.rotated(W[:, lam <= tol])
    mu = scipy.linalg.eigvalsh(quadratic_matrix(rot))[-1]
    if mu > config.SINGULAR_RTOL * _parts_scale(prob) ** 2:
        return 0.0
    raise ValueError("the mean update matrix M is singular on U with no sampling "
                     "noise on its kernel: rho(T) = 1 for every eta and the "
                     "threshold is not defined")


def _critical_secular(prob, batch):
    """THEORY section 11 secular form for rank-one Bernoulli SGD."""
    F = prob.hessians                       # (n, r) coordinates in U
    n = F.shape[0]
    ell, U = np.linalg.eigh(F @ F.T / n)
    keep = ell > config.RANGE_RTOL * ell[-1]
    ell, U = ell[keep], U[:, keep]
    if batch == n:
        return 2.0 / ell[-1]
    factor = n / batch - 1.0

    def lam_max(eta):
        if eta == 0.0:
            return 0.0
        Wkl = np.outer(ell, ell) / (ell[:, None] + ell[None, :]
                                    - eta * np.outer(ell, ell))

        def mv(q):
            return factor * eta * np.einsum("ik,kl,il->i", U, Wkl * (U.T * q @ U), U)

        if n <= 4 * config.DENSE_MAX_DIM:
            Mq = np.stack([mv(e) for e in np.eye(n)], axis=1)
            return scipy.linalg.eigvalsh(Mq)[-1]
        op = spla.LinearOperator((n, n), dtype=float, matvec=mv)
        return spla.eigsh(op, k=1, which="LA", tol=config.ARPACK_TOL,
                          v0=np.ones(n), return_eigenvectors=False)[0]

    hi = 2.0 / ell[-1]
    return float(scipy.optimize.brentq(lambda e: lam_max(e) - 1.0, 0.0,
                                       hi * (1 - 1e-12), xtol=1e-15, rtol=1e-13))


def escape_time(retain, eta, batch, *, scheme="bernoulli", forget=None,
                forget_batch=None, alpha=0.0, escape_factor=1e3):
    """Predicted escape time ``log K / log rho(T)`` (``inf`` when ``rho <= 1``).

    Parameters
    ----------
    escape_factor : float
        ``K > 1``: escape means ``E||delta_t||^2 >= K E||delta_0||^2``.

    Notes
    -----
    THEORY section 4, finite horizon.
    """
    K = check_escape_factor(escape_factor)
    rho = spectral_radius(retain, eta, batch, scheme=scheme, forget=forget,
                          forget_batch=forget_batch, alpha=alpha)
    return float(np.log(K) / np.log(rho)) if rho > 1.0 else np.inf


def mean_lower_bound(retain, eta, batch, *, scheme="bernoulli", forget=None,
                     forget_batch=None, alpha=0.0):
    """``max_lambda (1 - eta lambda)^2`` over the eigenvalues of ``M`` on ``U``.

    A lower bound on ``rho(T)`` because the covariance parts are positive maps
    (THEORY section 4).
    """
    eta = check_eta(eta)
    prob = _problem(retain, batch, scheme, forget, forget_batch, alpha)
    lam = np.linalg.eigvalsh(prob.mean())
    return float(np.max((1.0 - eta * lam) ** 2))


def net_ascent_curvature(retain, forget, alpha):
    """``kappa_+ = lambda_max(alpha H_f - (1 - alpha) H_r)`` on ``U``.

    Positive ``kappa_+`` means unlearning escapes deterministically, at a
    per-step growth of at least ``(1 + eta kappa_+)^2`` (THEORY section 4).
    Computed on the invariant subspace ``U``, so a negative value means the
    net update is restoring in every moved direction.
    """
    prob = build_problem(retain, 1, forget=forget, forget_batch=1, alpha=alpha)
    return float(-np.linalg.eigvalsh(prob.mean())[0])
