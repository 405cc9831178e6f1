"""Exact second-moment operators of linearized SGD and descent-ascent unlearning.

THEORY.md sections 2, 3 and 6. Everything here is NumPy/SciPy and exact.

All sampling schemes and both SGD and unlearning fit one form. With the active
samples of every set stacked into one family ``H_1..H_N`` (retain first),

    T(X) = X - eta (M X + X M) + eta^2 D(X),
    D(X) = M X M + sum_i a_i H_i X H_i - sum_s b_s H_s X H_s,

where ``M = sum_i c_i H_i`` is the mean update matrix (``c_i = (1-alpha)/n_r`` on
retain, ``-alpha/n_f`` on forget), ``H_s`` is the mean Hessian of set ``s`` and,
for a set of ``n`` samples, batch ``B`` and weight ``w`` (``1-alpha`` or ``alpha``),

    ==========  ======================  ==================
    scheme      a_i                     b_s
    ==========  ======================  ==================
    bernoulli   w^2 (n/B - 1) / n^2     0
    with        w^2 / (B n)             w^2 / B
    without     w^2 c / n               w^2 c,  c = (n-B)/(B(n-1))
    ==========  ======================  ==================

This is THEORY section 2's table written out (``C(X) = (1/n) sum H_i X H_i -
H X H``) and section 3's unlearning operator with independent batches.

``T`` is self-adjoint for the Frobenius inner product and maps PSD matrices to
PSD matrices, so its spectral radius is its largest eigenvalue, attained at a
PSD eigenmatrix.
"""

import functools
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import scipy.linalg
import scipy.linalg.blas
import scipy.linalg.lapack

from .._blas import blas_threads
from .._jit import jit
from .._validation import (
    as_float_array,
    check_eta,
    check_linearized,
    check_size,
    check_step,
    sample_curvature,
)
from ..curvature import factor_rank, factor_rows, range_eig

__all__ = [
    "Problem",
    "build_problem",
    "scheme_coefficients",
    "second_moment_operator",
    "second_moment_matrix",
    "gram_operator",
]


def scheme_coefficients(n, batch, scheme):
    """Coefficients ``(a, b)`` of the covariance part for one sampling scheme.

    The covariance of the minibatch Hessian acts as
    ``X -> a * sum_i H_i X H_i - b * H_mean X H_mean`` (THEORY section 2).

    Parameters
    ----------
    n : int
        Number of samples in the set.
    batch : int
        Batch size ``B`` (expected size for ``"bernoulli"``).
    scheme : {"bernoulli", "with", "without"}

    Returns
    -------
    a, b : float

    Examples
    --------
    >>> scheme_coefficients(10, 10, "without")
    (0.0, 0.0)
    """
    if scheme == "bernoulli":
        return (n / batch - 1.0) / n**2, 0.0
    if scheme == "with":
        return 1.0 / (batch * n), 1.0 / batch
    c = 0.0 if n == 1 else (n - batch) / (batch * (n - 1.0))
    return c / n, c


@dataclass(frozen=True)
class Problem:
    """A validated linearized problem, optionally in coordinates of ``U``.

    Attributes
    ----------
    hessians : ndarray, shape (N, r), (N, k, r) or (N, r, r)
        Active per-sample Hessians (retain first, then forget): rank-one
        factors, rank-k factors or dense.
    rank_one : bool
        True for the factor representations (a 3-D ``hessians`` is rank-k
        factors iff this is True).
    mean_coef : ndarray, shape (N,)
        ``M = sum_i mean_coef[i] H_i``.
    noise_coef : ndarray, shape (N,)
        ``a_i`` of the module docstring.
    groups : tuple of (float, ndarray)
        ``(b_s, d_s)`` with ``H_s = sum_i d_s[i] H_i``.
    basis : ndarray, shape (p, r), or None
        Orthonormal basis of ``U = range(sum_i H_i)``; ``None`` when the problem
        is in the original coordinates. Computed on first use (for factors it
        costs a ``p x N k x r`` product that ``rho`` and ``eta*`` never need)
        from ``basis_fn``.
    n_retain : int
        Number of active retain samples (the first rows).
    """

    hessians: np.ndarray
    rank_one: bool
    mean_coef: np.ndarray
    noise_coef: np.ndarray
    groups: tuple
    basis_fn: object
    n_retain: int

    @cached_property
    def basis(self):
        return None if self.basis_fn is None else self.basis_fn()

    @property
    def dim(self):
        """Dimension ``r`` of the space the operator acts on (``r x r`` matrices)."""
        return self.hessians.shape[-1]

    @property
    def rank(self):
        """Factors per sample ``k`` (1 for rank-one); ``None`` for dense."""
        return factor_rank(self.hessians) if self.rank_one else None

    def weighted_sum(self, coef):
        """Return ``sum_i coef[i] H_i`` as a dense ``r x r`` matrix."""
        H = self.hessians
        if self.rank_one:
            F = factor_rows(H)
            with blas_threads(F.shape[1]):
                return _weighted_gram(F, np.repeat(coef, self.rank))
        return np.tensordot(coef, H, axes=1)

    def mean(self):
        """The mean update matrix ``M``."""
        return self.weighted_sum(self.mean_coef)

    def curvature(self):
        """Upper bound on ``lambda_max(H_i)`` over the active samples."""
        return float(sample_curvature(self.hessians, self.rank_one).max())

    def rotated(self, W):
        """The same problem in the orthonormal basis ``W`` (columns)."""
        H = self.hessians @ W if self.rank_one else W.T @ self.hessians @ W
        return replace(self, hessians=np.ascontiguousarray(H))


def build_problem(retain, batch, *, scheme="without", forget=None,
                  forget_batch=None, alpha=0.0, restrict=True):
    """Validate inputs and assemble the operator data of THEORY sections 2-4.

    Parameters
    ----------
    retain : array_like, shape (n_r, p, p) or (n_r, p), or Factors
        Retain-set Hessians: dense PSD, rank-one factors, or rank-k factors
        ``simlab.curvature.Factors`` ``(n_r, k, p)``.
    batch : int
        Retain batch size ``B_r`` in ``[1, n_r]``.
    scheme : {"bernoulli", "with", "without"}
    forget : array_like, optional
        Forget-set Hessians: dense with dense retain, factors (rank-one or
        :class:`~simlab.curvature.Factors`, any ``k``) with factor retain.
    forget_batch : int, optional
        Forget batch size ``B_f``; defaults to the retain set's sampling fraction,
        ``max(1, min(n_f, round(batch n_f / n_r)))`` (``batch`` when ``n_f = n_r``).
    alpha : float
        Mixing weight in ``[0, 1]``; ``0`` is plain SGD on ``retain``.
    restrict : bool
        Express everything in an orthonormal basis of the invariant subspace
        ``U = range(sum of active H_i)`` (THEORY section 4).

    Returns
    -------
    Problem

    Notes
    -----
    A set whose weight is zero (retain at ``alpha = 1``, forget at ``alpha = 0``)
    does not move the iterate and is left out, so its directions do not enter
    ``U``. If every active Hessian is zero, ``U`` is empty and a ``ValueError``
    is raised.
    """
    retain, forget, rank_one, batch, forget_batch, scheme, alpha = check_linearized(
        retain, batch, scheme, forget, forget_batch, alpha, rank_k=True)
    n_r = retain.shape[0]
    sets = []
    if alpha < 1.0:
        sets.append((retain, batch, 1.0 - alpha, 1.0))
    if forget is not None and alpha > 0.0:
        sets.append((forget, forget_batch, alpha, -1.0))
    H = np.concatenate([s[0] for s in sets])
    N = H.shape[0]
    mean_coef, noise_coef, groups, start = [], [], [], 0
    for hs, B, w, sign in sets:
        n = hs.shape[0]
        a, b = scheme_coefficients(n, B, scheme)
        mean_coef.append(np.full(n, sign * w / n))
        noise_coef.append(np.full(n, w**2 * a))
        if b != 0.0:
            d = np.zeros(N)
            d[start:start + n] = 1.0 / n
            groups.append((w**2 * b, d))
        start += n
    prob = Problem(hessians=H, rank_one=rank_one,
                   mean_coef=np.concatenate(mean_coef),
                   noise_coef=np.concatenate(noise_coef), groups=tuple(groups),
                   basis_fn=None, n_retain=n_r if alpha < 1.0 else 0)
    return _restrict(prob) if restrict else prob


def _restrict(prob):
    """Express ``prob`` in an orthonormal basis of ``U`` (THEORY sections 4, 6)."""
    H = prob.hessians
    if prob.rank_one and np.ptp(prob.mean_coef) > 0:
        # M is no multiple of the Gram form, so its eigenbasis costs an r x r
        # eigendecomposition whatever the coordinates: a Cholesky basis saves
        # the one of the Gram matrix where it is well conditioned
        coords = _cholesky_coordinates(factor_rows(H))
        if coords is not None:
            X, basis = coords
            return replace(prob, hessians=np.ascontiguousarray(
                X.reshape(H.shape[:-1] + (X.shape[1],))), basis_fn=basis)
    lam, V = range_eig(H, rank_one=prob.rank_one)
    if lam.size == 0 or lam[-1] <= 0:
        raise ValueError("all active Hessians are zero: the invariant subspace "
                         "is empty")
    if prob.rank_one:
        # Gram route: K = F F^T = V L V^T over the factor rows F (n k of them);
        # coordinates V_+ L_+^{1/2} preserve K, one row per factor.
        F = factor_rows(H)
        coords = (V * np.sqrt(lam)).reshape(H.shape[:-1] + (lam.size,))

        def basis():
            return F.T @ (V / np.sqrt(lam))
    else:
        coords = V.T @ H @ V

        def basis():
            return V
    return replace(prob, hessians=np.ascontiguousarray(coords), basis_fn=basis)


#: Smallest ratio ``lambda_min / lambda_max`` of the Gram matrix of the
#: distinct rows (estimated by 20 steps of power and inverse iteration) for
#: which :func:`_restrict` uses Cholesky coordinates: four orders of
#: magnitude from the ``config.RANGE_RTOL`` = 1e-10 cut of
#: :func:`simlab.curvature.range_eig`, which decides every closer case.
_CHOLESKY_RCOND = 1e-6


def _distinct_rows(F):
    """``(first, inv)``: indices of the distinct rows of ``F`` and, for every
    row, its position among them (``F == F[first][inv]``). Rows are grouped by
    a random projection and a group is merged only if its rows are equal."""
    h = F @ np.random.default_rng(0).standard_normal(F.shape[1])
    order = np.argsort(h, kind="stable")
    start = np.flatnonzero(np.r_[True, h[order][1:] != h[order][:-1]])
    first = order[start]
    inv = np.empty(F.shape[0], dtype=np.intp)
    inv[order] = np.repeat(np.arange(start.size), np.diff(np.r_[start, h.size]))
    dup = np.setdiff1d(np.arange(h.size), first)
    if dup.size and not np.array_equal(F[first[inv[dup]]], F[dup]):
        return np.arange(h.size), np.arange(h.size)           # a hash collision
    return first, inv


def _gram_rcond(L, steps=20):
    """Estimate of ``lambda_min / lambda_max`` of ``K = L L^T`` (``L`` lower
    triangular): power iteration on ``K`` and inverse iteration through ``L``
    (triangular solves), ``O(n^2)`` per step. Each Rayleigh quotient is within
    the spectrum, so the estimate errs only where the extreme eigenvalues are
    not yet resolved, by the ratio to their neighbours."""
    x = y = np.random.default_rng(0).standard_normal(L.shape[0])
    solve = scipy.linalg.blas.dtrsv
    for _ in range(steps):
        x = L @ (L.T @ x)
        x /= np.linalg.norm(x)
        y = solve(L, solve(L, y, lower=1), lower=1, trans=1)
        y /= np.linalg.norm(y)
    lam_max = np.linalg.norm(L.T @ x) ** 2
    lam_min = 1.0 / np.linalg.norm(solve(L, y, lower=1)) ** 2
    return lam_min / lam_max


def _cholesky_coordinates(F):
    """``(X, basis)``: coordinates ``X`` (one row per factor row of ``F``)
    in an orthonormal basis of the row space, ``X X^T = F F^T``, from the
    Cholesky factor of the Gram matrix of the distinct rows (exact duplicates,
    e.g. forget samples that are also retain samples, share their
    coordinates); ``basis()`` gives that basis ``(p, r)``. ``None`` when the
    distinct rows are not far from dependent (then the eigenvalue route
    decides the rank)."""
    first, inv = _distinct_rows(F)
    Fu = F[first]
    with blas_threads(min(Fu.shape)):
        K = scipy.linalg.blas.dsyrk(1.0, np.asfortranarray(Fu.T), trans=1, lower=1)
        L, info = scipy.linalg.lapack.dpotrf(K, lower=1, clean=1, overwrite_a=1)
    if info != 0 or not _gram_rcond(L) >= _CHOLESKY_RCOND:
        return None

    def basis():
        # B = Fu^T L^{-T}: Fu B = L (the coordinates), B^T B = I
        return scipy.linalg.solve_triangular(L, Fu, lower=True).T

    return L[inv], basis


def _weighted_gram(H, w):
    """``H^T diag(w) H`` (symmetric) by two rank-k updates (BLAS ``syrk``, half
    the flops of a general product) for large ``H``."""
    N, r = H.shape
    if N * r * r < 1e7:
        return (H.T * w) @ H
    out = _rank_one_sum(H, w, np.zeros((r, r), dtype=H.dtype, order="F"))
    upper = np.triu(out)
    return upper + np.triu(out, 1).T


def _sandwich(prob, coef, Y):
    """``sum_i coef[i] H_i Y H_i``."""
    H = prob.hessians
    if prob.rank_one and H.ndim == 2:
        q = np.einsum("ij,ij->i", H @ Y, H)
        return _weighted_gram(H, coef * q)
    if prob.rank_one:
        # H_i Y H_i = G_i^T (G_i Y G_i^T) G_i with the k x k core G_i Y G_i^T
        N, k, r = H.shape
        F = factor_rows(H)
        Z = (F @ Y).reshape(N, k, r)
        core = coef[:, None, None] * (Z @ H.transpose(0, 2, 1))
        return F.T @ factor_rows(core @ H)
    N, r, _ = H.shape
    A = (coef[:, None, None] * (H @ Y)).transpose(1, 0, 2).reshape(r, N * r)
    return A @ H.reshape(N * r, r)


class OperatorAction:
    """Matrix-free action of ``T`` and ``D`` in the eigenbasis of ``M``.

    Rotating the problem so that ``M = diag(lam)`` turns ``M Y + Y M`` and
    ``M Y M`` into elementwise products; what is left per application is the
    sampling term (two ``r x r`` products for rank-one families) and, for
    unlearning with ``with``/``without`` sampling, the per-set mean terms.

    Parameters
    ----------
    prob : Problem

    Attributes
    ----------
    lam : ndarray (r,)
        Eigenvalues of ``M`` (ascending).
    W : ndarray (r, r)
        Eigenvectors of ``M``; ``Y_rot = W^T Y W``.
    prob : Problem
        The problem in the rotated basis.
    """

    def __init__(self, prob):
        self._curvature = prob.curvature()
        M = prob.mean()
        d = np.diag(M)
        off = np.abs(M - np.diag(d)).max() if M.size else 0.0
        scale = max(np.abs(d).max(initial=0.0), np.finfo(float).tiny)
        if off <= _DIAGONAL_RTOL * scale:
            # already diagonal (SGD in Gram coordinates: M = c diag(lam)): a
            # permutation instead of an O(r^3) eigendecomposition and rotation
            perm = np.argsort(d, kind="stable")
            self.lam = d[perm]
            self.W = np.eye(d.size)[:, perm]
            H = prob.hessians
            H = H[..., perm] if prob.rank_one else H[:, perm][:, :, perm]
            self.prob = replace(prob, hessians=np.ascontiguousarray(H))
        else:
            with blas_threads(M.shape[0]):
                self.lam, self.W = np.linalg.eigh(M)
                self.prob = prob.rotated(self.W)
        self._qdiag = None
        self._f32 = {}              # single-precision copies, by id of the array
        self._buffers = {}          # see _upper_half
        self._groups = []
        self._lowrank = {}          # one factor form per set, shared by the groups
        c = prob.mean_coef
        for b, d in self.prob.groups:
            if np.all(d > 0) and np.all(c == c[0]):
                # a single active set: H_s = M / (n c_0), diagonal here
                self._groups.append((b, "diag", self.lam * (d[0] / c[0])))
            else:
                self._groups.append((b,) + self._group_form(d))

    def _group_form(self, d):
        """How to apply ``Y -> H_s Y H_s`` for the set mean ``H_s = sum d_i H_i``
        of one of two active sets (unlearning, ``with``/``without``): through
        its factor rows when the set is small (``n_s k <= r / 2``: ``O(n_s k
        r^2)`` instead of ``O(r^3)``), through ``H_s = (M - w_o H_o) / w_s``
        when the *other* set is small (``M`` is diagonal here), else dense."""
        prob = self.prob
        r = prob.dim
        if not prob.rank_one:
            return "dense", prob.weighted_sum(d)
        k = prob.rank

        def lowrank(mask):
            key = mask.tobytes()
            if key not in self._lowrank:
                n_s = int(mask.sum())
                self._lowrank[key] = (factor_rows(prob.hessians[mask]),
                                      np.full(n_s * k, 1.0 / n_s), mask)
            return self._lowrank[key]

        mine = d > 0
        if mine.sum() * k <= r / 2 and np.ptp(d[mine]) == 0:
            return "lowrank", lowrank(mine)
        other = ~mine
        n_o = int(other.sum())
        c = prob.mean_coef
        if 0 < n_o and n_o * k <= r / 2:
            w_s = c[mine] / d[mine]                       # signed set weights
            w_o = c[other] * n_o
            if np.ptp(w_s) == 0 and np.ptp(w_o) == 0:
                return "complement", (w_s[0], w_o[0], lowrank(other))
        return "dense", prob.weighted_sum(d)

    @staticmethod
    def _lowrank_sandwich(lowrank, Y):
        """``Z = Y H_s`` and ``H_s Y H_s`` for ``H_s = F^T diag(w) F``."""
        F, w, _ = lowrank
        Z = ((Y @ F.T) * w) @ F
        return Z, F.T @ (w[:, None] * (F @ Z))

    def quadratic(self, Y):
        """``D(Y)`` for ``Y`` in the rotated basis."""
        lam = self.lam
        LYL = lam[:, None] * Y * lam[None, :]
        out = LYL + _sandwich(self.prob, self.prob.noise_coef, Y)
        done = {}                   # Y H_s and H_s Y H_s, once per factor form

        def lowrank(form):
            if id(form) not in done:
                done[id(form)] = self._lowrank_sandwich(form, Y)
            return done[id(form)]

        for b, kind, data in self._groups:
            if kind == "diag":
                out -= b * (data[:, None] * Y * data[None, :])
            elif kind == "dense":
                out -= b * (data @ Y @ data)
            elif kind == "lowrank":
                out -= b * lowrank(data)[1]
            else:
                # H_s Y H_s = (L Y L - w_o (L Z + Z^T L) + w_o^2 H_o Y H_o) / w_s^2
                w_s, w_o, form = data
                Z, HYH = lowrank(form)
                LZ = lam[:, None] * Z
                out -= (b / w_s**2) * (LYL - w_o * (LZ + LZ.T) + w_o**2 * HYH)
        return out

    def operator(self, eta, Y):
        """``T(Y)`` for ``Y`` in the rotated basis."""
        check_step(eta, self._curvature)
        return (Y - eta * (self.lam[:, None] + self.lam[None, :]) * Y
                + eta**2 * self.quadratic(Y))

    def quadratic_diagonal(self):
        """``<E_kl, D(E_kl)>`` for every ``(k, l)`` (rotated basis), ``r x r``:
        the diagonal that preconditions the eigensolvers of ``radius.py``."""
        if self._qdiag is None:
            H = self.prob.hessians
            if self.prob.rank_one:
                dH = H**2 if H.ndim == 2 else np.sum(H**2, axis=1)   # (H_i)_kk
            else:
                dH = np.einsum("ikk->ik", H)
            lam = self.lam
            out = lam[:, None] * lam[None, :]
            with blas_threads(lam.size):
                self._sampling = _weighted_gram(dH, self.prob.noise_coef)
            out += self._sampling
            for b, kind, data in self._groups:
                if kind == "diag":
                    hs = data
                elif kind == "dense":
                    hs = np.diag(data)
                elif kind == "lowrank":
                    hs = data[1] @ data[0] ** 2
                else:
                    w_s, w_o, (F, w, _) = data
                    hs = (self.lam - w_o * (w @ F**2)) / w_s
                out -= b * (hs[:, None] * hs[None, :])
            self._qdiag = out
        return self._qdiag

    @property
    def sampling_diagonal(self):
        """``sum_i a_i (H_i)_kk (H_i)_ll`` (rotated basis, ``r x r``): the
        diagonal of the sampling part ``sum_i a_i H_i Y H_i`` of ``D``
        (``a`` = ``prob.noise_coef``), a term of :meth:`quadratic_diagonal`."""
        self.quadratic_diagonal()
        return self._sampling

    def diagonal(self, eta):
        """``<E_kl, T(E_kl)>`` for every ``(k, l)`` (rotated basis), ``r x r``."""
        return (1.0 - eta * (self.lam[:, None] + self.lam[None, :])
                + eta**2 * self.quadratic_diagonal())

    # ---------------------------------------------------------------- packed
    # Symmetric r x r matrices as packed upper triangles, column by column
    # (length r (r + 1) / 2, off-diagonal entries times sqrt 2, so the
    # Euclidean inner product of two packed vectors is the Frobenius one of
    # the matrices): half the memory traffic of the eigensolver's basis, and
    # one contiguous run per column of the Fortran-order triangles the BLAS
    # kernels read and write. For rank-one factors the sampling
    # and set-mean terms are applied on triangles with BLAS-3 (``trmm``,
    # ``syrk``, ``syr2k``): ``g^T Y g = 2 g^T L g`` with ``L`` the lower
    # triangle of ``Y`` (halved diagonal), so ``N r^2`` flops per product
    # instead of ``2 N r^2`` for ``G Y``, and every output term is a symmetric
    # rank-``2k`` update that writes one triangle.

    def pack(self, Y):
        """Packed form of a symmetric ``r x r`` matrix ``Y``."""
        flat, wts, _ = _packing(self.prob.dim)
        return np.ascontiguousarray(Y).ravel()[flat] * wts

    def entries(self, Y):
        """The entries ``Y_kl``, ``k <= l``, in packed order (no weights): for
        elementwise coefficients and diagonals."""
        return np.ascontiguousarray(Y).ravel()[_packing(self.prob.dim)[0]]

    def unpack(self, v):
        """Full symmetric matrix of a packed vector."""
        U = self._upper_half(v)
        return U + U.T

    def _weights(self, scale):
        """``(half, wts)`` of :func:`_packing` times the packed entries
        ``scale`` (``None``: 1), cached for the last scale."""
        _, wts, half = _packing(self.prob.dim)
        if scale is None:
            return half, wts
        if getattr(self, "_scaled_for", None) is not scale:
            self._scaled_weights = (half * scale, wts * scale)
            self._scaled_for = scale
        return self._scaled_weights

    def _upper_half(self, v, dtype=np.float64, buffer=None, scale=None):
        """Upper triangle of the matrix of ``v`` (times the packed entries
        ``scale``, if given) with halved diagonal (Fortran order, for
        ``trmm``, written column by column): ``Y = U + U^T``. With a
        ``buffer`` name the result is written into an array kept for that
        name (its lower triangle stays zero), valid until the next call with
        the same name: no ``r x r`` allocation per product."""
        r = self.prob.dim
        if buffer is None:
            U = np.zeros(r * r, dtype=dtype)
        else:
            key = (buffer, np.dtype(dtype).char)
            if key not in self._buffers:
                self._buffers[key] = np.zeros(r * r, dtype=dtype)
            U = self._buffers[key]
        _scatter_triangle(v, self._weights(scale)[0], U, r)
        return U.reshape(r, r).T

    def _gather(self, A, weights):
        """The packed entries of the symmetric ``r x r`` array ``A`` (C order,
        or Fortran order holding its upper triangle) times ``weights``."""
        out = np.empty(weights.size)
        _gather_triangle(A.ravel(order="K"), weights, out, self.prob.dim)
        return out

    @cached_property
    def _fast(self):
        """True when the packed products run on triangles (rank-one factors)."""
        return self.prob.rank_one and self.prob.hessians.ndim == 2

    @cached_property
    def _elementwise(self):
        """``E`` (packed) with ``D(Y) = E o Y + R(Y)``: ``L Y L`` and the
        set-mean terms that are diagonal in this basis."""
        lam = self.lam
        E = lam[:, None] * lam[None, :]
        if self._fast:
            for b, kind, data in self._groups:
                if kind == "diag":
                    E = E - b * (data[:, None] * data[None, :])
                elif kind == "complement":
                    E = E - (b / data[0] ** 2) * (lam[:, None] * lam[None, :])
        return self.entries(E)

    def _single(self, X):
        """``X`` in single precision, converted once per array."""
        key = id(X)
        if key not in self._f32:
            self._f32[key] = (X, X.astype(np.float32))
        return self._f32[key][1]

    def _rest_packed(self, v, single=False, scale=None):
        """``R(Y) = D(Y) - E o Y`` (packed) for rank-one factors; with
        ``single`` the BLAS-3 products run in single precision (half the
        time; relative error ~1e-7, for the first phase of the eigensolvers);
        with ``scale`` (packed entries of a symmetric ``S``) ``S o R(S o Y)``."""
        prob = self.prob
        dtype = np.float32 if single else np.float64
        cast = self._single if single else (lambda X: X)
        G = cast(prob.hessians)
        r = prob.dim
        trmm, syr2k = scipy.linalg.blas.get_blas_funcs(("trmm", "syr2k"),
                                                       dtype=dtype)
        U = self._upper_half(v, dtype, buffer="rest", scale=scale)
        GL, forms = _triangle_forms(G, U)
        out = np.zeros((r, r), dtype=dtype, order="F")      # upper triangle
        a = prob.noise_coef
        if np.any(a):
            out = _rank_one_sum(G, a * forms, out)         # sum a_i g_i^T Y g_i H_i
        # Every set-mean term of a low-rank form (F, w) is X F + F^T X^T for
        # some r x n_s matrix X: accumulate X per form, then one syr2k each.
        acc = {}

        def add(form, X):
            acc[id(form)] = (form, acc[id(form)][1] + X if id(form) in acc else X)

        sandwiches = {}

        def sandwich_x(form):
            """``X`` with ``X F + F^T X^T = 2 F^T C F``, ``C = diag(w) F Y F^T
            diag(w)`` (the set mean's ``H_s Y H_s``), once per form."""
            if id(form) not in sandwiches:
                F, wf, mask = form
                FYF = GL[mask] @ cast(F).T             # F L F^T; F Y F^T = it + its T
                C = ((wf[:, None] * wf[None, :]) * (FYF + FYF.T)).astype(dtype)
                sandwiches[id(form)] = (C @ cast(F)).T
            return sandwiches[id(form)]

        Y = None
        for b, kind, data in self._groups:
            if kind == "lowrank":
                add(data, -0.5 * b * sandwich_x(data))
            elif kind == "complement":
                # -(b / w_s^2)(- w_o (L Z + Z^T L) + w_o^2 H_o Y H_o); L Y L is in E
                w_s, w_o, form = data
                F, wf, mask = form
                # F Y = F L + (U^T F^T)^T; Lam Z = P F, P = Lam (F Y)^T diag(w)
                with blas_threads(r):
                    FU = trmm(1.0, U, np.array(cast(F).T, order="F"), trans_a=1,
                              overwrite_b=1)
                FY = GL[mask] + FU.T
                add(form, (b * w_o / w_s**2) * (self.lam[:, None] * FY.T * wf)
                    - (0.5 * b * w_o**2 / w_s**2) * sandwich_x(form))
            elif kind == "dense":
                if Y is None:
                    Y = U + U.T
                out -= b * (data @ Y @ data)
        for form, X in acc.values():
            with blas_threads(r):
                out = syr2k(1.0, np.asfortranarray(X, dtype=dtype),
                            cast(form[0]).T, beta=1.0, c=out, overwrite_c=1)
        return self._gather(out, self._weights(scale)[1])

    def quadratic_packed(self, v, single=False):
        """``D(Y)`` on packed vectors (rotated basis); ``single``: see
        :meth:`_rest_packed` (ignored unless the factors are rank-one)."""
        if not self._fast:
            return self.pack(self.quadratic(self.unpack(v)))
        out = self._rest_packed(v, single)
        out += self._elementwise * v
        return out

    def operator_packed(self, eta, v, single=False):
        """``T(Y)`` on packed vectors (rotated basis); ``single`` as in
        :meth:`quadratic_packed`."""
        if not self._fast:
            return self.pack(self.operator(eta, self.unpack(v)))
        mean, out = self.operator_parts(eta, v, single)
        out += mean
        return out

    def operator_parts(self, eta, v, single=False):
        """``T(Y) = A + B`` on packed vectors (rank-one factors): ``(A, B)``
        with ``A`` the entrywise part (in double precision) and ``B`` the
        rest, whose rounding error bounds that of the whole with ``single``."""
        check_step(eta, self._curvature)
        if getattr(self, "_coef_eta", None) != eta:
            lam = self.entries(self.lam[:, None] + self.lam[None, :])
            self._coef = 1.0 - eta * lam + eta**2 * self._elementwise
            self._coef_eta = eta
        out = self._rest_packed(v, single)
        out *= eta**2
        return self._coef * v, out


def _triangle_forms(G, U):
    """``(G L, f)`` for rank-one rows ``g_i`` (``G``, ``N x r``) and the
    halved-diagonal upper triangle ``U`` of ``Y = U + U^T``
    (:meth:`OperatorAction._upper_half`): the rows ``g_i^T L`` (``L = U^T``)
    and the forms ``f_i = g_i^T Y g_i = 2 g_i^T L g_i``, by one ``trmm``
    (``N r^2`` flops, half of ``G Y``), in the precision of ``G``."""
    trmm = scipy.linalg.blas.get_blas_funcs("trmm", dtype=G.dtype)
    # rows g_i^T L from (U G^T), in place of a copy of G^T
    with blas_threads(U.shape[0]):
        GL = trmm(1.0, U, np.array(G.T, order="F"), overwrite_b=1).T
    return GL, 2.0 * np.einsum("ij,ij->i", GL, G)


def _rank_one_sum(G, w, out):
    """``out + sum_i w_i g_i g_i^T`` (upper triangle of the Fortran-order
    ``out``, updated in place and returned) by ``syrk`` on the rows with
    ``w > 0`` and on those with ``w < 0``: ``N r^2`` flops, in the precision
    of ``G``."""
    syrk = scipy.linalg.blas.get_blas_funcs("syrk", dtype=G.dtype)
    # rows with w > 0 first, then w < 0 (w = 0 dropped): one scaled copy, two
    # syrk on its halves
    pos, neg = w > 0, w < 0
    n_pos, n_neg = int(np.count_nonzero(pos)), int(np.count_nonzero(neg))
    sw = np.sqrt(np.abs(w)).astype(G.dtype)[:, None]
    if n_pos + n_neg < w.size or 0 < n_pos < w.size:
        order = np.concatenate([np.flatnonzero(pos), np.flatnonzero(neg)])
        A = np.take(G, order, axis=0)
        A *= sw[order]
    else:
        A = G * sw
    A = A.T                                             # Fortran order
    with blas_threads(G.shape[1]):
        if n_pos:
            out = syrk(1.0, A[:, :n_pos], beta=1.0, c=out, overwrite_c=1)
        if n_neg:
            out = syrk(-1.0, A[:, n_pos:], beta=1.0, c=out, overwrite_c=1)
    return out


@jit
def _scatter_triangle(v, weights, out, r):
    """``out[l r + k] = v[p] weights[p]`` for the packed entries ``p`` of
    ``(k, l)``, ``k <= l`` (:func:`_packing`'s order): one contiguous run per
    column of a Fortran-order upper triangle."""
    p = 0
    for j in range(r):
        base = j * r
        for i in range(j + 1):
            out[base + i] = v[p] * weights[p]
            p += 1


@jit
def _gather_triangle(a, weights, out, r):
    """The inverse of :func:`_scatter_triangle`: ``out[p] = a[l r + k]
    weights[p]``."""
    p = 0
    for j in range(r):
        base = j * r
        for i in range(j + 1):
            out[p] = a[base + i] * weights[p]
            p += 1


@functools.lru_cache(maxsize=4)
def _packing(r):
    """Index maps of the packed triangle of symmetric ``r x r`` matrices:
    ``(flat, wts, half)``. The entries ``(k, l)``, ``k <= l``, are packed
    column by column of the upper triangle (``l`` ascending, then ``k``), so
    ``flat = l r + k`` is increasing and every column is one contiguous run
    of a Fortran-order upper triangle (and of a C-order lower one): packing
    and unpacking stream through memory. ``wts``: 1 on the diagonal, sqrt 2
    off it; ``half``: the factors that map a packed entry to the
    halved-diagonal upper triangle ``U`` with ``Y = U + U^T``."""
    row, col = np.tril_indices(r)
    off = row != col
    wts = np.where(off, np.sqrt(2.0), 1.0)
    half = np.where(off, np.sqrt(0.5), 0.5)
    return row * r + col, wts, half


#: Off-diagonal size (relative to the diagonal) below which ``M`` counts as
#: diagonal in :class:`OperatorAction` (rounding of the Gram coordinates is
#: ~1e-16 relative).
_DIAGONAL_RTOL = 1e-13


def quadratic_matrix(prob):
    """``D`` as a dense ``r^2 x r^2`` matrix (row-major vectorization)."""
    H = prob.hessians
    r = prob.dim
    check_size((r * r, r * r), f"the dense operator on {r} x {r} matrices")
    M = prob.mean()
    D = np.kron(M, M)
    if prob.rank_one:
        # H_i (x) H_i = sum_{a,b} (g_ia (x) g_ib)(g_ia (x) g_ib)^T
        G = H if H.ndim == 3 else H[:, None, :]
        k = G.shape[1]
        V = np.einsum("iaj,ibk->iabjk", G, G).reshape(-1, r * r)
        D += (V.T * np.repeat(prob.noise_coef, k * k)) @ V
    else:
        D += np.einsum("i,ijk,ilm->jlkm", prob.noise_coef, H, H).reshape(r * r, r * r)
    for b, d in prob.groups:
        Hs = prob.weighted_sum(d)
        D -= b * np.kron(Hs, Hs)
    return D


def operator_matrix(prob, eta):
    """``T`` as a dense ``r^2 x r^2`` matrix: ``I - eta (M (+) M) + eta^2 D``."""
    check_step(eta, prob.curvature())
    r = prob.dim
    check_size((r * r, r * r), f"the dense operator on {r} x {r} matrices")
    M = prob.mean()
    eye = np.eye(r)
    return (np.eye(r * r) - eta * (np.kron(M, eye) + np.kron(eye, M))
            + eta**2 * quadratic_matrix(prob))


def second_moment_operator(retain, eta, batch, *, scheme="without", forget=None,
                           forget_batch=None, alpha=0.0):
    """Return ``X -> T(X) = E[(I - eta M_hat) X (I - eta M_hat)]``.

    The operator acts on ``p x p`` matrices in the original coordinates (no
    restriction to ``U``).

    Parameters
    ----------
    retain, batch, scheme, forget, forget_batch, alpha
        As in :func:`build_problem`.
    eta : float
        Learning rate ``> 0``.

    Returns
    -------
    callable
        ``T(X)`` for ``X`` of shape ``(p, p)``.

    See Also
    --------
    second_moment_matrix : the same operator as a dense matrix.
    gram_operator : the Gram-reduced form for rank-one families.

    Notes
    -----
    THEORY sections 2 and 3.

    Examples
    --------
    >>> import numpy as np
    >>> T = second_moment_operator(np.sqrt(2) * np.eye(2), 0.5, 2)   # H = I
    >>> np.allclose(T(np.eye(2)), 0.25 * np.eye(2))   # B = n is plain GD
    True
    """
    eta = check_eta(eta)
    prob = build_problem(retain, batch, scheme=scheme, forget=forget,
                         forget_batch=forget_batch, alpha=alpha, restrict=False)
    check_step(eta, prob.curvature())
    act = OperatorAction(prob)
    W, p = act.W, prob.dim

    def T(X):
        X = as_float_array(X, "X")
        if X.shape != (p, p):
            raise ValueError(f"X must have shape {(p, p)}, got {X.shape}")
        return W @ act.operator(eta, W.T @ X @ W) @ W.T

    return T


def second_moment_matrix(retain, eta, batch, *, scheme="without", forget=None,
                         forget_batch=None, alpha=0.0, restrict=True):
    """Dense matrix of ``T`` on row-major vectorized matrices.

    With ``restrict=True`` (default) the matrix acts on ``r x r`` matrices in the
    basis ``Problem.basis`` of ``U``; otherwise on ``p x p`` matrices. Memory is
    ``r^4`` (or ``p^4``) floats: meant for small problems and tests.

    Returns
    -------
    T : ndarray, shape (r*r, r*r)
    basis : ndarray, shape (p, r), or None
    """
    eta = check_eta(eta)
    prob = build_problem(retain, batch, scheme=scheme, forget=forget,
                         forget_batch=forget_batch, alpha=alpha, restrict=restrict)
    return operator_matrix(prob, eta), prob.basis


def gram_operator(retain, eta, batch, *, scheme="without", forget=None,
                  forget_batch=None, alpha=0.0):
    """Gram-reduced operator of THEORY section 6 for factor families.

    With ``F`` the factor rows of the active samples (retain first; ``k`` rows
    ``g_i1 .. g_ik`` per sample, ``k = 1`` for rank-one factors), ``K = F F^T``
    (``N k x N k``) and ``X = F^T C F``, the operator becomes ``C -> R(C)``::

        R(C) = P C P^T + eta^2 [ A o (K C K) - sum_s b_s D_s K C K D_s ]

    with ``P = I - eta diag(c) K``, ``A`` block-diagonal with the ``k x k``
    block ``a_i`` for sample ``i`` (``o`` the entrywise product), ``c`` and
    ``d_s`` the per-sample coefficients repeated ``k`` times, so that
    ``T(F^T C F) = F^T R(C) F``. For rank-one Bernoulli SGD this is THEORY's
    ``P C P + c diag(k_i^T C k_i)``; for rank-k factors the blocks keep the
    cross terms ``g_ia g_ib^T`` of ``H_i X H_i`` (the outputs of one sample are
    not independent samples).

    Returns
    -------
    R : callable
        ``C -> R(C)`` for ``C`` of shape ``(N k, N k)``.
    K : ndarray, shape (N k, N k)
        The Gram matrix. Where ``K`` is singular, ``R`` has spurious eigenvalues
        on the kernel of ``C -> F^T C F``: restrict to the row space of ``K``.
    """
    eta = check_eta(eta)
    prob = build_problem(retain, batch, scheme=scheme, forget=forget,
                         forget_batch=forget_batch, alpha=alpha, restrict=False)
    if not prob.rank_one:
        raise ValueError("retain must be factors (rank-one (n, p) or "
                         "simlab.curvature.Factors (n, k, p)) for the "
                         "Gram-reduced operator")
    check_step(eta, prob.curvature())
    F = factor_rows(prob.hessians)
    k = prob.rank
    N = F.shape[0]
    check_size((N, N), f"the Gram matrix of {N} factor rows")
    K = F @ F.T
    P = np.eye(N) - eta * np.repeat(prob.mean_coef, k)[:, None] * K
    sample = np.repeat(np.arange(N // k), k)
    A = np.where(sample[:, None] == sample[None, :],
                 np.repeat(prob.noise_coef, k)[:, None], 0.0)

    def R(C):
        C = as_float_array(C, "C")
        if C.shape != (N, N):
            raise ValueError(f"C must have shape {(N, N)}, got {C.shape}")
        KCK = K @ C @ K
        out = P @ C @ P.T + eta**2 * A * KCK
        for b, d in prob.groups:
            dd = np.repeat(d, k)
            out -= eta**2 * b * (dd[:, None] * KCK * dd[None, :])
        return out

    return R, K
