"""Per-sample Hessian families: representations, synthetic families, range basis.

A family is a dense array ``(n, p, p)`` of PSD matrices, an array ``(n, p)`` of
rank-one factors ``g_i`` with ``H_i = g_i g_i^T`` (THEORY section 1), or rank-k
factors ``(n, k, p)`` wrapped as :class:`Factors` (``H_i = sum_j g_ij g_ij^T``).
"""

import numpy as np
import scipy.linalg.blas

from . import config
from ._blas import blas_threads
from ._validation import (
    Factors,
    as_float_array,
    check_hessians,
    check_int,
    check_positive,
    check_seed,
    check_size,
)

__all__ = [
    "Factors",
    "to_dense",
    "mean_hessian",
    "range_basis",
    "eigenbasis",
    "coherence_dial",
    "random_psd",
    "random_rank_one",
    "sharpness_ceiling",
]


def to_dense(hessians):
    """Return the family as dense ``(n, p, p)`` Hessians.

    Examples
    --------
    >>> to_dense([[1.0, 2.0]])[0]
    array([[1., 2.],
           [2., 4.]])
    """
    H, rank_one = check_hessians(hessians, rank_k=True)
    if not rank_one:
        return H
    n, p = H.shape[0], H.shape[-1]
    check_size((n, p, p), f"to_dense of {n} factors of dimension p={p}")
    if H.ndim == 3:
        return np.einsum("iaj,iak->ijk", H, H)
    return np.einsum("ij,ik->ijk", H, H)


def factor_rows(H):
    """All factors of a validated factor family stacked as rows ``(n k, p)``.

    ``sum_i c_i H_i = F^T diag(repeat(c, k)) F`` with ``F = factor_rows(H)``;
    the Gram matrix ``F F^T`` (``n k x n k``) is the one of THEORY section 6
    extended to rank-k factors.
    """
    return H.reshape(-1, H.shape[-1])


def factor_rank(H):
    """``k`` of a validated factor family (1 for ``(n, p)``)."""
    return 1 if H.ndim == 2 else H.shape[1]


def mean_hessian(hessians):
    """``H = (1/n) sum_i H_i`` as a dense ``(p, p)`` matrix."""
    H, rank_one = check_hessians(hessians, rank_k=True)
    if rank_one:
        F = factor_rows(H)
        check_size((F.shape[1],) * 2, f"mean_hessian of dimension p={F.shape[1]}")
        return F.T @ F / H.shape[0]
    return H.mean(axis=0)


def sharpness(hessians):
    """``lambda_max(H)`` of the mean Hessian ``H = (1/n) sum_i H_i``.

    For rank-one factors ``G`` (``n x p``) through the ``n x n`` Gram matrix,
    ``lambda_max(G^T G / n) = lambda_max(G G^T) / n``, so ``p`` may be large.

    Examples
    --------
    >>> round(sharpness(coherence_dial(10, 3)), 12)
    2.0
    """
    H, rank_one = check_hessians(hessians, rank_k=True)
    return _sharpness(H, rank_one)


def _sharpness(H, rank_one):
    """:func:`sharpness` of a validated family (factors through the Gram
    matrix, or ``F^T F`` when ``p`` is smaller than ``n k``)."""
    if rank_one:
        F = factor_rows(H)
        A = F @ F.T if F.shape[0] <= F.shape[1] else F.T @ F
        return float(np.linalg.eigvalsh(A)[-1] / H.shape[0])
    return float(np.linalg.eigvalsh(H.mean(axis=0))[-1])


def range_eig(H, *, rank_one, rtol=None):
    """Nonzero eigenpairs that define ``U = range(sum_i H_i)``: the one place
    where ``config.RANGE_RTOL`` cuts the spectrum (THEORY section 4).

    Parameters
    ----------
    H : ndarray
        A validated family (:func:`simlab._validation.check_hessians`): rank-one
        factors ``(n, p)``, rank-k factors ``(n, k, p)`` (with ``rank_one``
        True) or dense ``(n, p, p)``.
    rank_one : bool
    rtol : float, optional
        Eigenvalues below ``rtol * lambda_max`` count as zero (default
        ``config.RANGE_RTOL``).

    Returns
    -------
    lam : ndarray, shape (r,)
        Kept eigenvalues, ascending: of the Gram matrix ``F F^T`` of the factor
        rows ``F = factor_rows(H)`` (the squared singular values of ``F``) or
        of ``sum_i H_i`` (dense).
    V : ndarray, shape (n k, r) or (p, r)
        Their eigenvectors; for factors ``U = F^T V / sqrt(lam)``.
    """
    rtol = config.RANGE_RTOL if rtol is None else rtol
    if rank_one:
        F = factor_rows(H)
        n = F.shape[0]
        check_size((n, n), f"the Gram matrix of {n} factor rows")
        # lower triangle of F F^T by a rank-k update (half the flops of F @ F.T)
        with blas_threads(min(F.shape)):
            K = scipy.linalg.blas.dsyrk(1.0, np.asfortranarray(F.T), trans=1, lower=1)
            lam, V = np.linalg.eigh(K, UPLO="L")
    else:
        lam, V = np.linalg.eigh(H.sum(axis=0))
    keep = lam > rtol * max(lam[-1], 0.0)
    return lam[keep], V[:, keep]


def range_basis(hessians, rtol=None):
    """Orthonormal basis ``(p, r)`` of ``U = range(sum_i H_i)`` (THEORY section 4).

    Eigenvalues of ``sum_i H_i`` below ``rtol * lambda_max`` (default
    ``config.RANGE_RTOL``) count as zero.
    """
    return _range_pairs(hessians, rtol)[2]


def _range_pairs(hessians, rtol):
    """``(n, lam, U)``: the family's size, the kept eigenvalues of ``sum_i H_i``
    (ascending, :func:`range_eig`) and their orthonormal eigenvectors in
    parameter space ``(p, r)``; ``rtol`` validated here."""
    H, rank_one = check_hessians(hessians, rank_k=True)
    rtol = config.RANGE_RTOL if rtol is None else check_positive(rtol, "rtol",
                                                                 allow_zero=True)
    if rtol >= 1.0:
        raise ValueError(f"rtol must be < 1, got {rtol}")
    lam, V = range_eig(H, rank_one=rank_one, rtol=rtol)
    U = factor_rows(H).T @ (V / np.sqrt(lam)) if rank_one else V
    return H.shape[0], lam, U


def eigenbasis(hessians, rtol=None):
    """Eigenpairs of the mean Hessian ``H = (1/n) sum_i H_i`` on its range,
    largest first: the curvature eigenbasis.

    This is the one curvature basis of the package: the memorization study
    orders weight components by it and the label-noise study measures
    subspaces in it. For rank-one factors ``G`` (``n x p``) it comes from the
    ``n x n`` Gram matrix, so ``p`` may be large; for the squared-loss linear
    model (factors ``z_i = x_i^(1) + x_i^(2)``) it is the eigenbasis of
    ``Z^T Z / n``.

    Parameters
    ----------
    hessians : array_like or Factors
        Rank-one factors ``(n, p)``, :class:`Factors` ``(n, k, p)`` or dense
        ``(n, p, p)``.
    rtol : float, optional
        Eigenvalues below ``rtol * lambda_max`` count as zero (default
        ``config.RANGE_RTOL``; see :func:`range_eig`).

    Returns
    -------
    values : ndarray, shape (r,)
        Eigenvalues of ``H``, descending.
    vectors : ndarray, shape (p, r)
        Orthonormal eigenvectors, column ``k`` for ``values[k]``.

    Examples
    --------
    >>> vals, vecs = eigenbasis([[2.0, 0.0], [0.0, 1.0]])
    >>> vals.tolist(), vecs.shape
    ([2.0, 0.5], (2, 2))
    """
    n, lam, U = _range_pairs(hessians, rtol)
    return lam[::-1] / n, np.ascontiguousarray(U[:, ::-1])


def coherence_dial(n, s, *, rank_one=True):
    """The coherence-controlled "Hessian test" family of THEORY section 7.

    Samples ``i < s`` share ``H_i = (2n/s) e_0 e_0^T``; each remaining sample
    has its own axis ``e_{i-s+1}`` at the same scale. Dimension ``p = n - s + 1``,
    ``lambda_max(H) = 2`` for every ``s`` (GD threshold ``eta = 1``) and
    coherence ``sigma = s``.

    Parameters
    ----------
    n : int
        Number of samples, ``>= 1``.
    s : int
        Coherence dial in ``[1, n]``.
    rank_one : bool
        Return factors ``(n, p)`` (default) or dense ``(n, p, p)``.

    Examples
    --------
    >>> coherence_dial(3, 2)
    array([[1.73205081, 0.        ],
           [1.73205081, 0.        ],
           [0.        , 1.73205081]])
    """
    n = check_int(n, "n", low=1)
    s = check_int(s, "s", low=1, high=n)
    if not isinstance(rank_one, bool | np.bool_):
        raise ValueError(f"rank_one must be a bool, got {rank_one!r}")
    p = n - s + 1
    check_size((n, p) if rank_one else (n, p, p),
               f"coherence_dial(n={n}, s={s}, rank_one={bool(rank_one)})")
    G = np.zeros((n, p))
    axis = np.maximum(np.arange(n) - s + 1, 0)
    G[np.arange(n), axis] = np.sqrt(2.0 * n / s)
    return G if rank_one else to_dense(G)


def random_rank_one(n, p, *, seed, scale=None):
    """Rank-one factors with i.i.d. Gaussian entries (optionally per-sample scales).

    Parameters
    ----------
    n, p : int
    seed : int
    scale : array_like of shape (n,), optional
        Multiplies row ``i``; default 1.
    """
    n = check_int(n, "n", low=1)
    p = check_int(p, "p", low=1)
    seed = check_seed(seed)
    if scale is not None:
        scale = as_float_array(scale, "scale", ndim=1)
        if scale.shape != (n,):
            raise ValueError(f"scale must have shape ({n},), got {scale.shape}")
    check_size((n, p), f"random_rank_one(n={n}, p={p})")
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((n, p))
    if scale is not None:
        G *= scale[:, None]
    return G


def random_psd(n, p, *, rank=None, seed):
    """Dense PSD Hessians ``A_i A_i^T / rank`` with ``A_i`` Gaussian ``p x rank``."""
    n = check_int(n, "n", low=1)
    p = check_int(p, "p", low=1)
    rank = p if rank is None else check_int(rank, "rank", low=1, high=p)
    seed = check_seed(seed)
    check_size((n, p, max(p, rank)), f"random_psd(n={n}, p={p}, rank={rank})")
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, p, rank))
    return A @ A.transpose(0, 2, 1) / rank


#: Largest second derivative ``l''(f)`` of each loss (THEORY 10.1): squared
#: ``(f - y)^2 / 2`` has ``l'' = 1``; logistic ``log(1 + e^{-y f})`` has
#: ``l'' = sigma(yf) sigma(-yf) <= 1/4``, with equality only at ``f = 0``.
LOSS_CURVATURE_MAX = {"squared": 1.0, "logistic": 0.25}


def sharpness_ceiling(model, data, loss="squared"):
    """Data-dependent ceiling on the sharpness ``lambda_max(grad^2 L(W))`` over
    every weight ``W`` (THEORY 10.1; derived in ``derivations/edge_of_stability.py``).

    For the ReLU CNN (``q = 1``) ``grad^2 f = 0`` almost everywhere, so
    ``H = (1/n) sum_i l''_i g_i g_i^T`` with
    ``g_i = grad_W f_i``, whose block for filter ``(j, r)`` is
    ``(s_j/m) sum_p a_{jr,ip} x_{i,p}`` with the activation pattern
    ``a_{jr,ip} = 1[<w_jr, x_{i,p}> > 0]``. Hence, with ``l'' <= l''_max``,

        S <= l''_max (J/(n m)) max_{||c|| = 1} max_a ||sum_{i,p} a_ip c_i x_ip||^2
          <= l''_max (J/(n m)) min(Phi_blocks, Phi_abs),

    ``Phi_blocks = ||G_00|| + 2 ||G_01|| + ||G_11||`` (``G_pq = X_p X_q^T``, the
    Gram blocks of the patch matrices ``X_p``, spectral norms) and
    ``Phi_abs = lambda_max(A)``, ``A_ik = sum_{p,q} |<x_{i,p}, x_{k,q}>|``. When
    the patches ``x_{i,p}`` of one position are collinear (the signal patches
    ``y_i mu``), a filter is active on one side only (``<w, x> > 0`` cannot hold
    for ``x`` and ``-x``), and ``||G_pp||`` is replaced by the larger one-sided
    sum of ``||x_{i,p}||^2``. For orthogonal positions (``G_01 = 0``) with
    general-position patches the ceiling is within a factor 2 of the
    all-active pattern.

    For the linear model the value is exact: ``l''_max lambda_max(Z Z^T)/n``
    (``z_i = x_i^(1) + x_i^(2)``), i.e. the constant squared-loss sharpness, and
    for the logistic loss the sharpness at ``w = 0``, which bounds every
    ``S_t`` (``l'' <= 1/4 = l''(0)``).

    Parameters
    ----------
    model : simlab.models.CNN (``q = 1``) or simlab.models.Linear
    data : SignalNoise
    loss : {"squared", "logistic"}

    Returns
    -------
    float

    Raises
    ------
    ValueError
        For the ``max(0, z)^q`` CNN with ``q > 1``: no ceiling that depends on
        the data alone exists (``grad f`` grows like ``|W|^(q-1)`` and the
        exact Hessian has the ``l' grad^2 f`` term), so none is returned.

    Examples
    --------
    >>> from simlab.data import signal_noise
    >>> from simlab.models import CNN
    >>> data = signal_noise(6, 10, mu_norm=1.0, seed=0)
    >>> model = CNN(10, 3)
    >>> W = model.init(1.0, seed=1)
    >>> bool(model.sharpness(W, data.X, data.y, loss="squared")
    ...      <= sharpness_ceiling(model, data, loss="squared"))
    True
    """
    from .models import kernels as K
    from .models.two_patch import check_model_data

    check_model_data(model, data)
    if loss not in LOSS_CURVATURE_MAX:
        raise ValueError(f"loss must be one of {tuple(LOSS_CURVATURE_MAX)}, "
                         f"got {loss!r}")
    l2 = LOSS_CURVATURE_MAX[loss]
    X = data.X
    n = X.shape[0]
    if model.act_id == K.IDENTITY:
        Z = X[:, 0] + X[:, 1]
        return float(l2 * np.linalg.eigvalsh(Z @ Z.T)[-1] / n)
    if model.q != 1:
        raise ValueError(f"sharpness_ceiling: no data-dependent ceiling for q = "
                         f"{model.q} > 1 (the sharpness is unbounded in W); only "
                         "the ReLU CNN (q = 1) and the linear model have one")
    Xp = X.reshape(2 * n, -1)
    G = Xp @ Xp.T
    blocks = G.reshape(n, 2, n, 2)
    diag = [_realizable_block_norm(X[:, p], blocks[:, p, :, p]) for p in (0, 1)]
    phi_blocks = diag[0] + 2.0 * np.linalg.norm(blocks[:, 0, :, 1], 2) + diag[1]
    phi_abs = np.linalg.eigvalsh(np.abs(blocks).sum(axis=(1, 3)))[-1]
    return float(l2 * model.J * min(phi_blocks, phi_abs) / (n * model.m))


def _realizable_block_norm(Xb, Gb):
    """``max ||X_b^T v||^2`` over ``|v_i| <= |c_i|``, ``||c|| = 1`` and patterns a
    ReLU filter can realise: ``||G_bb||``, or the larger one-sided sum of
    ``||x_i||^2`` when the rows of ``X_b`` are collinear (rank one)."""
    lam = np.linalg.eigvalsh(Gb)
    if lam[-1] <= 0.0:
        return 0.0
    if lam.size == 1 or lam[-2] > 1e-12 * lam[-1]:
        return float(lam[-1])
    k = int(np.argmax(np.linalg.norm(Xb, axis=1)))
    side = Xb @ Xb[k]
    sq = np.einsum("ij,ij->i", Xb, Xb)
    return float(max(sq[side > 0].sum(), sq[side < 0].sum()))
