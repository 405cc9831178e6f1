"""Data coherence: the cross-sample alignment of per-sample Hessians.

THEORY.md section 5. ``S_ij = ||H_i^{1/2} H_j^{1/2}||_F = sqrt(<H_i, H_j>_F)``
(the two are equal because ``||A^{1/2} B^{1/2}||_F^2 = tr(A B)``), which is
``|<g_i, g_j>|`` for rank-one ``H_i = g_i g_i^T`` and ``||G_i G_j^T||_F`` for
rank-k factors ``H_i = G_i^T G_i`` (:class:`simlab.curvature.Factors`, ``G_i`` of
shape ``k x p``).
"""

from dataclasses import dataclass

import numpy as np

from ._validation import check_hessians, check_pair, check_size
from .curvature import factor_rank, factor_rows

__all__ = [
    "coherence_matrix",
    "coherence_measure",
    "block_coherence",
    "BlockCoherence",
]


def _cross(A, a1, B, b1):
    """``S`` between two validated families (same representation)."""
    check_size((A.shape[0], B.shape[0]),
               f"the coherence matrix of {A.shape[0]} x {B.shape[0]} samples")
    if not a1:
        G = A.reshape(A.shape[0], -1) @ B.reshape(B.shape[0], -1).T
        return np.sqrt(np.maximum(G, 0.0))
    ka, kb = factor_rank(A), factor_rank(B)
    check_size((A.shape[0] * ka, B.shape[0] * kb),
               f"the factor Gram matrix of {A.shape[0]} x {B.shape[0]} samples")
    G = factor_rows(A) @ factor_rows(B).T
    if ka == kb == 1:
        return np.abs(G)
    # ||G_i G_j^T||_F over the k x k blocks of the factor Gram matrix
    G = G.reshape(A.shape[0], ka, B.shape[0], kb)
    return np.sqrt(np.einsum("iajb,iajb->ij", G, G))


def _lam_max_each(H, rank_one):
    if rank_one and H.ndim == 2:
        return np.einsum("ij,ij->i", H, H)
    if rank_one:
        return np.linalg.eigvalsh(H @ H.transpose(0, 2, 1))[:, -1]
    return np.linalg.eigvalsh(H)[:, -1]


def coherence_matrix(hessians):
    """Coherence matrix ``S`` of shape ``(n, n)``.

    Parameters
    ----------
    hessians : array_like, shape (n, p, p) or (n, p), or Factors
        Dense PSD Hessians, rank-one factors or rank-k
        :class:`simlab.curvature.Factors` ``(n, k, p)``.

    Examples
    --------
    >>> coherence_matrix([[1.0, 0.0], [1.0, 1.0]])
    array([[1., 1.],
           [1., 2.]])
    """
    H, r1 = check_hessians(hessians, rank_k=True)
    return _cross(H, r1, H, r1)


def _sigma(S, H, r1):
    return float(np.linalg.eigvalsh(S)[-1] / _lam_max_each(H, r1).max())


def coherence_measure(hessians):
    """``sigma = lambda_max(S) / max_i lambda_max(H_i)``.

    For rank-one families ``1 <= sigma <= n``. For higher rank the lower bound
    still holds (``S_ii = ||H_i||_F >= lambda_max(H_i)``) but ``sigma`` can exceed
    ``n`` (``H_i = I_p`` gives ``n sqrt(p)``); the upper bound is
    ``n max_i ||H_i||_F / max_i lambda_max(H_i)``.
    """
    H, r1 = check_hessians(hessians, rank_k=True)
    if not np.any(_lam_max_each(H, r1) > 0):
        raise ValueError("hessians are all zero: coherence is undefined")
    return _sigma(_cross(H, r1, H, r1), H, r1)


@dataclass(frozen=True)
class BlockCoherence:
    """Retain/forget block summary of the coherence matrix (THEORY section 5).

    Attributes
    ----------
    S : ndarray (n_r + n_f, n_r + n_f), samples ordered retain first.
    lam_rr, lam_ff : float
        ``lambda_max`` of ``S_rr`` and ``S_ff``.
    s_rf : float
        Top singular value of the cross block ``S_rf``.
    sigma, sigma_r, sigma_f : float
        Coherence measure of the union, the retain set and the forget set.
    """

    S: np.ndarray
    lam_rr: float
    lam_ff: float
    s_rf: float
    sigma: float
    sigma_r: float
    sigma_f: float


def block_coherence(retain, forget):
    """Coherence blocks ``S_rr``, ``S_ff``, ``S_rf`` and their top values."""
    R, F, r1 = check_pair(retain, forget, rank_k=True)
    if F is None:
        raise ValueError("forget must be given for a block summary")
    for name, H in (("retain", R), ("forget", F)):
        if not np.any(_lam_max_each(H, r1) > 0):
            raise ValueError(f"{name} Hessians are all zero: sigma_{name[0]} is "
                             "undefined")
    both = np.concatenate([R, F])
    S = _cross(both, r1, both, r1)
    n_r = R.shape[0]
    Srr, Sff, Srf = S[:n_r, :n_r], S[n_r:, n_r:], S[:n_r, n_r:]
    return BlockCoherence(
        S=S,
        lam_rr=float(np.linalg.eigvalsh(Srr)[-1]),
        lam_ff=float(np.linalg.eigvalsh(Sff)[-1]),
        s_rf=float(np.linalg.svd(Srf, compute_uv=False)[0]),
        sigma=_sigma(S, both, r1),
        sigma_r=_sigma(Srr, R, r1),
        sigma_f=_sigma(Sff, F, r1),
    )
