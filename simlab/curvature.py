"""Per-sample Hessian families: representations, synthetic families, range basis.

A family is either a dense array ``(n, p, p)`` of PSD matrices or an array
``(n, p)`` of rank-one factors ``g_i`` with ``H_i = g_i g_i^T`` (THEORY section 1).
"""

import numpy as np

from . import config
from ._validation import check_hessians, check_int, check_seed

__all__ = [
    "to_dense",
    "mean_hessian",
    "range_basis",
    "coherence_dial",
    "random_psd",
    "random_rank_one",
]


def to_dense(hessians):
    """Return the family as dense ``(n, p, p)`` Hessians.

    Examples
    --------
    >>> to_dense([[1.0, 2.0]])[0]
    array([[1., 2.],
           [2., 4.]])
    """
    H, rank_one = check_hessians(hessians)
    return np.einsum("ij,ik->ijk", H, H) if rank_one else H


def mean_hessian(hessians):
    """``H = (1/n) sum_i H_i`` as a dense ``(p, p)`` matrix."""
    H, rank_one = check_hessians(hessians)
    return H.T @ H / H.shape[0] if rank_one else H.mean(axis=0)


def range_basis(hessians, rtol=None):
    """Orthonormal basis ``(p, r)`` of ``U = range(sum_i H_i)`` (THEORY section 4).

    Eigenvalues of ``sum_i H_i`` below ``rtol * lambda_max`` (default
    ``config.RANGE_RTOL``) count as zero.
    """
    H, rank_one = check_hessians(hessians)
    rtol = config.RANGE_RTOL if rtol is None else rtol
    if rank_one:
        lam, V = np.linalg.eigh(H @ H.T)
        keep = lam > rtol * max(lam[-1], 0.0)
        return H.T @ (V[:, keep] / np.sqrt(lam[keep]))
    lam, Q = np.linalg.eigh(H.sum(axis=0))
    return Q[:, lam > rtol * max(lam[-1], 0.0)]


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
    p = n - s + 1
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
    rng = np.random.default_rng(check_seed(seed))
    G = rng.standard_normal((n, p))
    if scale is not None:
        G *= np.asarray(scale, dtype=float)[:, None]
    return G


def random_psd(n, p, *, rank=None, seed):
    """Dense PSD Hessians ``A_i A_i^T / rank`` with ``A_i`` Gaussian ``p x rank``."""
    n = check_int(n, "n", low=1)
    p = check_int(p, "p", low=1)
    rank = p if rank is None else check_int(rank, "rank", low=1, high=p)
    rng = np.random.default_rng(check_seed(seed))
    A = rng.standard_normal((n, p, rank))
    return A @ A.transpose(0, 2, 1) / rank
