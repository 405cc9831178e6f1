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

from dataclasses import replace

import numpy as np
import scipy  # .optimize, .integrate: loaded on first use (SciPy's lazy submodules)
import scipy.linalg
import scipy.sparse.linalg as spla

from .. import config
from .._blas import blas_threads, serial_blas
from .._validation import (
    as_float_array,
    check_escape_factor,
    check_eta,
    check_int,
    check_perturbation_law,
    check_positive,
    check_step,
    sample_curvature,
)
from ..curvature import factor_rows, range_eig
from .operator import (
    OperatorAction,
    _distinct_rows,
    _rank_one_sum,
    _triangle_forms,
    build_problem,
    operator_matrix,
    quadratic_matrix,
)

__all__ = [
    "spectral_radius",
    "critical_lr",
    "escape_time",
    "asymptotic_escape_time",
    "mean_square_growth",
    "gaussian_span_moment",
    "mean_lower_bound",
    "kappa_plus",
]

_METHODS_RHO = ("auto", "dense", "davidson", "lanczos", "power")
_METHODS_LR = ("auto", "geneig", "geneig-lanczos", "secular", "bisect")
_METHODS_ESC = ("auto", "forward", "spectral")


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
    if method in ("auto", "davidson"):
        diag = act.diagonal(eta)
        eye = act.pack(np.eye(r))
        if _SecularPreconditioner.pays(act):
            solve = _SecularPreconditioner(act, diag, coef=eta**2)
            block, starts = None, [solve.start(-np.inf), eye]
        else:
            J, sub = _dense_block(act, diag)
            solve, block = None, _packed_block(act, J, operator_matrix(sub, eta))
            starts = [eye] + [act.pack(X) for X in _sample_starts(act)]
        return _davidson_top(lambda v: act.operator_packed(eta, v), act.entries(diag),
                             block, starts, solve=solve,
                             matvec_single=_single(
                                 act, lambda v: act.operator_parts(eta, v, True)))
    if r * r <= 2:
        raise ValueError("method='lanczos' needs r >= 2; use 'dense'")
    return _lanczos_top(lambda Y: act.operator(eta, Y), r)


#: Largest search space of :func:`_davidson_top` before a restart, and the
#: Ritz vectors kept at a restart. Mostly the products per solve hardly depend
#: on the basis (unlearning family of ``benchmarks/bench_radius.py``, n =
#: 1000, B = 10, products for eta* / rho at 0.5 / 0.9 eta*: basis 8: 20/26/24,
#: 12: 20/20/24, 20: 20/22/24, 30: 20/22/25), while every pass over the basis
#: reads it all; but some solves need it (n = 200, B = 1, rho at 0.5 eta*: 37
#: products with 20, 206 with 12).
_DAVIDSON_BASIS = 20
_DAVIDSON_KEEP = 4
#: Memory (bytes) for the Davidson basis and its image; caps the basis size
#: for large ``r``.
_DAVIDSON_MEMORY = 640e6
#: Residual tolerance of :func:`_davidson_top`, relative to the eigenvalue:
#: a rigorous bound on its error (Weinstein), so 1e-10 keeps every result
#: within 1e-9 of the ARPACK Lanczos solver (``config.ARPACK_TOL`` = 1e-12),
#: which it replaces; the eigenvalue itself converges quadratically in the
#: residual and ends at rounding level (measured: <= 1e-14 relative).
_DAVIDSON_RTOL = 1e-10
#: Eigenvalue tolerance of :func:`_davidson_top`: it also stops once the
#: quadratic residual bound ``|r|^2 / gap`` (Kato-Temple), with the gap
#: estimated by the distance to the second Ritz value (of a search space of
#: at least ``_DAVIDSON_GAP_BASIS`` vectors), is below ``_DAVIDSON_ETOL
#: |theta|``. The eigenvalue converges like ``|r|^2``, so this stops about 40 %
#: earlier than the residual criterion alone, with an eigenvalue error of the
#: order of ``_DAVIDSON_ETOL`` (ten times below the 1e-9 the tests and
#: ``benchmarks/bench_radius.py --check`` hold it to against ARPACK Lanczos;
#: measured there: at most 3.3e-11, n = 200, 54 calls).
_DAVIDSON_ETOL = 1e-10
#: Smallest search space whose second Ritz value :func:`_davidson_top` takes
#: for the gap of the quadratic bound (fewer vectors: the residual criterion
#: alone, or the gap carried over from the first phase).
_DAVIDSON_GAP_BASIS = 4
#: First phase of :func:`_davidson_top` with single-precision products: it
#: ends at the tolerances of the second, at the rounding floor of its
#: products (``_SINGLE_FLOOR`` single-precision epsilons times the size of
#: their single-precision part; measured on the unlearning family of
#: ``benchmarks/bench_radius.py``: 3.2-3.6), or when the residual has not
#: reached a new low for ``_SINGLE_STALL_STEPS`` steps (four times as many
#: while it is more than 100 times the floor: there a slow iteration is
#: slow, not stuck, and the single-precision products are the cheaper way on).
_SINGLE_FLOOR = 6.0
_SINGLE_STALL_STEPS = 8
#: Size ``k`` of the block of coordinates preconditioned exactly (a dense
#: ``k^2 x k^2`` eigenproblem).
_DAVIDSON_BLOCK = 24


def _shifted(theta, d):
    """``theta - d``, entries within ``1e-8 |theta|`` of zero raised to that
    size: the denominator of a diagonal correction, kept invertible."""
    den = theta - d
    tiny = 1e-8 * max(abs(theta), 1e-300)
    den[np.abs(den) < tiny] = tiny
    return den


def _davidson_top(matvec, diag, block=None, starts=(), *, rtol=None,
                  etol=None, maxiter=2000, solve=None, matvec_single=None):
    """Largest eigenvalue of a symmetric operator on packed symmetric
    matrices (vectors of length ``r (r + 1) / 2``, see
    :meth:`OperatorAction.pack`) by Davidson's method, preconditioned by its
    diagonal ``diag`` and, optionally, by the exact operator on one ``k x k``
    block.

    In the eigenbasis of ``M`` the operators of this module are a diagonal
    (entrywise) mean part plus a sampling part, so the diagonal correction
    ``t = r / (theta - diag)`` is close to the exact one (Davidson's method
    for diagonally dominant matrices): far fewer applications than Lanczos,
    whose search space must resolve the dense cluster of eigenvalues
    ``(1 - eta lam_k)(1 - eta lam_l)`` below the top. Where the top
    eigenmatrix concentrates on a few directions (unlearning near
    ``kappa_+ = 0``: the directions where ascent nearly cancels descent), the
    sampling part couples those entries strongly; ``block = (pos, Q, L)``
    (:func:`_packed_block`: the eigen-decomposition ``Q diag(L) Q^T`` of the
    operator restricted to symmetric matrices supported on ``J x J``, whose
    entries sit at the packed positions ``pos``) inverts that part exactly
    (with Olsen's correction against stagnation) and gives the first start
    vector (its Perron eigenmatrix, PSD); ``starts`` (packed; the identity,
    which overlaps every PSD eigenmatrix, THEORY section 4, comes first) are
    the others. Stops at ``|T x - theta x| <= rtol |theta|`` (ARPACK's
    criterion; ``rtol`` = ``_DAVIDSON_RTOL``), which bounds the distance of
    ``theta`` to an eigenvalue by ``rtol |theta|``, or once the quadratic
    bound ``|r|^2 / gap`` (Kato-Temple; ``gap`` estimated by the second Ritz
    value) is below ``etol |theta|`` (``_DAVIDSON_ETOL``).

    ``solve(w, theta)``, when given, replaces the diagonal and block
    corrections: :class:`_SecularPreconditioner`, ``(theta - P)^{-1} w`` for
    an approximation ``P`` of the operator that keeps the rank-one sampling
    terms of every sample (the single-sample modes) exactly. (The inverse
    iteration step ``(theta - P)^{-1} x`` alone, one solve instead of
    Olsen's two, stagnated: it converges to the eigenvector of ``P``.)

    ``matvec_single``, when given, returns ``(A v, size)``: the same product
    with its BLAS-3 part in single precision (about half the time) and the
    norm of that part, whose float32 rounding (~3.5 epsilon times ``size``,
    measured) is the floor of the residuals it can reach. The iteration runs
    on it until the tolerances above are met, the residual reaches
    ``_SINGLE_FLOOR`` epsilons times ``size``, or it stops improving
    (``_SINGLE_STALL_STEPS``); then it restarts from its Ritz vector with
    ``matvec`` and stops only on the double-precision residual, so the result
    is as accurate as with ``matvec`` alone (the gap estimate of the
    quadratic bound is carried over from the first phase, whose larger basis
    resolves it better). For ``T`` the floor is ~1e-9 relative (only the
    ``eta^2`` part is rounded), below what the tolerances need, so the first
    phase usually does all the work and one double-precision product checks
    it; for ``eta*`` (~3e-7) it ends near the tolerance. A product that
    leaves float32's range (non-finite) restarts the solve in double
    precision.
    """
    rtol = _DAVIDSON_RTOL if rtol is None else rtol
    etol = _DAVIDSON_ETOL if etol is None else etol
    full = diag.shape[0]
    # basis and its image: 16 bytes per entry and vector pair, within budget
    m_max = int(np.clip(_DAVIDSON_MEMORY // (16 * full), 2 * _DAVIDSON_KEEP,
                        _DAVIDSON_BASIS))
    m_max = min(m_max, full)
    V = np.empty((m_max, full))
    TV = np.empty((m_max, full))
    d = diag
    starts = [np.asarray(x, dtype=float) for x in starts]
    given = list(starts)
    if block is not None:
        pos, Q, L = block
        v0 = np.zeros(full)
        v0[pos] = Q[:, -1]
        starts.insert(0, v0)

    def precondition(w, theta):
        if solve is not None:
            return solve(w, theta)
        out = w / _shifted(theta, d)
        if block is not None:
            out[pos] = Q @ ((Q.T @ w[pos]) / _shifted(theta, L))
        return out

    m = 0
    products = 0
    theta = 0.0
    ritz_at = -1                                    # basis size of the last Ritz step
    small = np.zeros((m_max, m_max))                # V T V^T, kept up to date
    single = matvec_single is not None
    best, stalled = np.inf, 0                       # stagnation of the first phase
    floor = 0.0                                     # its rounding floor
    gap_carried = 0.0                               # from the first phase; 0: none
    # the passes over V and TV are memory-bound: vectors are updated in place,
    # without temporaries (on one BLAS thread: switching the thread count
    # between these and the products slowed the products by up to 2x)
    v = np.array(starts.pop(0))
    for _ in range(maxiter):
        # Gram-Schmidt, repeated only when it cancels most of v
        nv0 = np.linalg.norm(v)
        for _ in range(2):
            v -= V[:m].T @ (V[:m] @ v)
            nv = np.linalg.norm(v)
            if nv > 0.5 * nv0:
                break
            nv0 = nv
        if not nv > 1e-3 * np.finfo(float).eps ** 0.5 or m == full:
            if starts and m < m_max:
                v = np.array(starts.pop(0))
                continue
            if m == 0:
                return 0.0
            if ritz_at == m:
                return theta                        # the space is exhausted
            # a dependent start vector was the last one: Ritz step on what we have
        else:
            np.divide(v, nv, out=V[m])
            if single:
                TV[m], size = matvec_single(V[m])
                if not (np.isfinite(size) and np.all(np.isfinite(TV[m]))):
                    # outside the range of single precision: start over without
                    return _davidson_top(matvec, diag, block, given, rtol=rtol,
                                         etol=etol, maxiter=maxiter, solve=solve)
                floor = max(floor, _SINGLE_FLOOR * np.finfo(np.float32).eps * size)
            else:
                TV[m] = matvec(V[m])
            products += 1
            small[m, :m + 1] = V[:m + 1] @ TV[m]
            small[:m, m] = small[m, :m]
            m += 1
            if starts and m < m_max:
                v = np.array(starts.pop(0))
                continue
        ritz_at = m
        lam, S = np.linalg.eigh(small[:m, :m])
        theta, s = float(lam[-1]), S[:, -1]
        x, res = s @ V[:m], s @ TV[:m]
        res -= theta * x
        nres = np.linalg.norm(res)
        # the second Ritz value estimates the gap only from a few vectors on
        # (from 2 or 3 it can be far below the second eigenvalue: a start
        # close to the top eigenvector and the identity gave 1.9e-10 errors)
        ritz_gap = theta - lam[-2] if m >= _DAVIDSON_GAP_BASIS else None
        if ritz_gap is None:
            gap = 0.0 if single else gap_carried    # 0: none
        else:
            gap = min(ritz_gap, gap_carried) if gap_carried > 0.0 else ritz_gap
        if single:
            stalled = stalled + 1 if nres >= best else 0
            best = min(best, nres)
            if (nres <= max(rtol * abs(theta), floor) or theta == 0.0
                    or nres * nres <= etol * abs(theta) * gap
                    or stalled >= (_SINGLE_STALL_STEPS if best <= 100.0 * floor
                                   else 4 * _SINGLE_STALL_STEPS)):
                # second phase: restart from x with the exact product
                single, gap_carried = False, gap
                V[0] = x / np.linalg.norm(x)
                TV[0] = matvec(V[0])
                products += 1
                m = ritz_at = 1
                theta = small[0, 0] = float(V[0] @ TV[0])
                lam, S = np.array([theta]), np.ones((1, 1))
                x, res = V[0], TV[0] - theta * V[0]
                nres, gap = np.linalg.norm(res), gap_carried
        if not single and (nres <= rtol * abs(theta) or theta == 0.0
                           or nres * nres <= etol * abs(theta) * gap):
            return theta
        v = precondition(res, theta)
        if block is not None or solve is not None:  # Olsen: orthogonal to x
            Px = precondition(x, theta)
            xPx = x @ Px
            if xPx != 0.0:
                v -= ((x @ v) / xPx) * Px
        if m == m_max:                              # restart on the top Ritz vectors
            keep = S[:, -_DAVIDSON_KEEP:]
            V[:_DAVIDSON_KEEP] = keep.T @ V[:m]
            TV[:_DAVIDSON_KEEP] = keep.T @ TV[:m]
            m = _DAVIDSON_KEEP
            small[:m, :m] = np.diag(lam[-m:])
    raise RuntimeError(f"Davidson iteration did not converge in {maxiter} steps "
                       f"(last estimate {theta}); use method='lanczos'")


#: Samples whose curvature ``H_i`` seeds the Davidson search space (one: on
#: the Gaussian families of ``benchmarks/bench_radius.py``, n = 200 and 1000,
#: 15 (problem, eta) cases each, 1 start needed 2-14 % fewer products of ``T``
#: than 4, and none at all needed up to 2.3 times more).
_SAMPLE_STARTS = 1


def _scaled_product(act, Sp, single=False):
    """``v -> S o D(S o v)`` on packed vectors (``Sp``: the packed entries of
    ``S``); with ``single`` its two parts (:func:`_single`), the entrywise
    one in double precision."""
    if not act._fast:
        return lambda v: Sp * act.quadratic_packed(Sp * v)
    ESS = Sp * Sp * act._elementwise

    def parts(v):
        return ESS * v, act._rest_packed(v, single, scale=Sp)

    if single:
        return parts

    def product(v):
        exact, rest = parts(v)
        rest += exact
        return rest

    return product


def _single(act, parts):
    """The product for the first phase of :func:`_davidson_top` where
    single-precision products pay (rank-one factors and ``r >=
    _SINGLE_MIN_DIM``), else ``None``: ``v -> (A v, |B v|)`` from ``parts(v)
    = (B v, C v)``, ``A = B + C`` with ``C`` the part computed in single
    precision, whose size sets the rounding floor."""
    if not (act._fast and act.prob.dim >= _SINGLE_MIN_DIM):
        return None

    def product(v):
        exact, rounded = parts(v)
        size = np.linalg.norm(rounded)
        rounded += exact
        return rounded, size

    return product


#: Smallest ``r`` for single-precision first phases.
_SINGLE_MIN_DIM = 300


def _sample_weights(act, scale=None):
    """Sampling weight of every sample: ``a_i lambda_max(H_i)^2`` (``T``), or
    ``a_i ||S o H_i||_F^2`` for the scaled operator (``scale = S``)."""
    prob = act.prob
    H, a = prob.hessians, prob.noise_coef
    if scale is None:
        return a * sample_curvature(H, prob.rank_one) ** 2
    if prob.rank_one and H.ndim == 2:
        # a ranking: single precision is plenty
        H2 = (H * H).astype(np.float32)
        with blas_threads(prob.dim):
            HS = H2 @ (scale * scale).astype(np.float32)
        return a * np.einsum("ij,ij->i", HS, H2, dtype=float)
    return a * np.array([np.sum((scale * Hi) ** 2)
                         for Hi in _sample_matrices(prob, range(H.shape[0]))])


def _sample_starts(act, q=_SAMPLE_STARTS, scale=None):
    """Single-sample start matrices (rotated coordinates) for the ``q``
    samples with the largest sampling weight: where the sampling noise
    dominates (small batches, ``eta`` far below ``2 / lambda_max(M)``) the
    top eigenmatrix concentrates on single samples (THEORY section 11's
    single-sample mode). For ``T``: ``H_i``, weight ``a_i lambda_max(H_i)^2``.
    For the scaled operator ``S o D(S o X)`` of :func:`_critical_geneig`
    (``scale = S``) the sampling part is ``sum_i a_i Q_i Q_i^T`` with ``Q_i =
    S o H_i``: start ``Q_i``, weight ``a_i ||Q_i||_F^2`` (``S`` is largest on
    the directions of small curvature, where the top eigenmatrix lives when
    ascent nearly cancels descent)."""
    prob = act.prob
    a = prob.noise_coef
    if not np.any(a > 0):
        return []
    weight = _sample_weights(act, scale)
    top = np.argsort(weight)[::-1]
    top = top[:q][a[top[:q]] > 0]
    starts = list(_sample_matrices(prob, top))
    return starts if scale is None else [scale * X for X in starts]


def _sample_matrices(prob, idx):
    """``H_i`` (``r x r``) of the samples ``idx``, one at a time."""
    H = prob.hessians
    G = H if not prob.rank_one or H.ndim == 3 else H[:, None, :]
    for i in idx:
        yield G[i].T @ G[i] if prob.rank_one else H[i]


def _dense_block(act, weight, k=None):
    """``(J, sub)``: the ``k`` rotated coordinates ``J`` with the largest
    diagonal ``weight[j, j]`` (the operator's diagonal) and the problem
    restricted to them, whose dense matrix (``operator_matrix`` /
    ``quadratic_matrix``) :func:`_packed_block` turns into the exact block
    preconditioner of :func:`_davidson_top`."""
    r = act.prob.dim
    k = min(r, _DAVIDSON_BLOCK if k is None else k)
    J = np.sort(np.argsort(np.diag(weight))[::-1][:k])
    H = act.prob.hessians
    sub = replace(act.prob, hessians=np.ascontiguousarray(
        H[..., J] if act.prob.rank_one else H[:, J][:, :, J]))
    return J, sub


def _packed_block(act, J, A):
    """The dense block for :func:`_davidson_top` in packed coordinates:
    ``(pos, Q, L)``, the packed positions of the entries ``(J_a, J_b)``,
    ``a <= b``, and the eigenpairs of the operator restricted to symmetric
    matrices supported on ``J x J``, from its ``k^2 x k^2`` matrix ``A``
    (row-major ``k x k`` matrices): ``k (k + 1) / 2`` coordinates, not
    ``k^2``."""
    k = J.size
    a, b = np.triu_indices(k)
    P = np.zeros((a.size, k * k))                  # isometry: packed -> vec
    off = a != b
    P[np.arange(a.size), a * k + b] = np.where(off, np.sqrt(0.5), 1.0)
    P[np.arange(a.size)[off], (b * k + a)[off]] = np.sqrt(0.5)
    L, Q = np.linalg.eigh(P @ A @ P.T)
    Q[:, -1] *= np.sign(np.sum(Q[~off, -1]) or 1.0)   # Perron matrix: trace >= 0
    ja, jb = J[a], J[b]                            # J is sorted: ja <= jb
    pos = jb * (jb + 1) // 2 + ja                  # column jb of the upper triangle
    return pos, Q, L


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


@serial_blas
def spectral_radius(retain, eta, batch, *, scheme="without", forget=None,
                    forget_batch=None, alpha=0.0, method="auto"):
    """Spectral radius ``rho(T)`` on the invariant subspace ``U``.

    Parameters
    ----------
    retain : array_like, shape (n_r, p, p) or (n_r, p), or Factors
        Per-sample Hessians (dense PSD), rank-one factors ``g_i``, or rank-k
        factors :class:`simlab.curvature.Factors` ``(n_r, k, p)``.
    eta : float
        Learning rate ``> 0``.
    batch : int
        Retain batch size in ``[1, n_r]``.
    scheme : {"bernoulli", "with", "without"}
    forget : array_like, optional
        Forget-set Hessians; ``None`` gives plain SGD.
    forget_batch : int, optional
        Forget batch size; defaults to the retain set's sampling fraction,
        ``max(1, min(n_f, round(batch n_f / n_r)))`` (``batch`` when ``n_f = n_r``).
    alpha : float
        Mixing weight in ``[0, 1]``.
    method : {"auto", "dense", "davidson", "lanczos", "power"}
        ``dense`` builds the ``r^2 x r^2`` matrix; ``davidson`` is matrix-free
        Davidson with the diagonal of ``T`` in the eigenbasis of ``M`` as
        preconditioner (4-5 times fewer applications of ``T`` than Lanczos on
        rank-one Gaussian families); ``lanczos`` is matrix-free ARPACK;
        ``power`` iterates on PSD matrices. ``auto`` picks dense for
        ``r <= config.DENSE_MAX_DIM`` and Davidson otherwise. Factor input is
        always reduced to ``r <= N k`` through the Gram matrix of the factor
        rows (THEORY section 6).

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


def _parts_scale(prob, lam=None):
    """``lambda_max(sum_i |c_i| H_i)``: the curvature scale of M's parts
    (``lam[-1]``, given the eigenvalues ``lam`` of ``M``, when no part is
    subtracted: then the parts sum to ``M``)."""
    if lam is not None and np.all(prob.mean_coef >= 0):
        return float(lam[-1])
    c = np.abs(prob.mean_coef)
    r = prob.dim
    if prob.rank_one and r > config.DENSE_MAX_DIM:
        # matrix-free: only a scale for tolerances, O(N k r) per product
        F = factor_rows(prob.hessians)
        w = np.repeat(c, prob.rank)
        op = spla.LinearOperator((r, r), dtype=float,
                                 matvec=lambda x: F.T @ (w * (F @ x)))
        return float(spla.eigsh(op, k=1, which="LA", v0=np.ones(r), tol=1e-4,
                                return_eigenvectors=False)[0])
    return float(np.linalg.eigvalsh(prob.weighted_sum(c))[-1])


@serial_blas
def critical_lr(retain, batch, *, scheme="without", forget=None, forget_batch=None,
                alpha=0.0, method="auto"):
    """Smallest learning rate ``eta`` with ``rho(T) > 1``.

    Parameters
    ----------
    retain, batch, scheme, forget, forget_batch, alpha
        As in :func:`spectral_radius`.
    method : {"auto", "geneig", "geneig-lanczos", "secular", "bisect"}
        ``geneig``: ``2 / lambda_max(C^{-1} D)`` (module docstring), solved in
        the eigenbasis of ``M`` where ``C`` is diagonal (dense for
        ``r <= config.DENSE_MAX_DIM``, else matrix-free Davidson);
        ``geneig-lanczos``: the same with ARPACK Lanczos (slower; a
        cross-check). ``secular``: the
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
    act = OperatorAction(prob)              # eigenbasis of M, shared below
    lam, W = act.lam, act.W
    # Singularity is judged against the size of the parts, not of M itself
    # (M = 0 exactly when the descent and ascent parts cancel).
    scale = _parts_scale(prob, lam)
    tol = config.SINGULAR_RTOL * scale
    if lam[0] < -tol:
        return 0.0
    if lam[0] <= tol:
        return _critical_singular(prob, lam, W, tol)
    if method == "bisect":
        return _critical_bisect(prob, lam[-1])
    if method == "secular":
        sgd = prob.n_retain == prob.hessians.shape[0]
        if not (prob.rank == 1 and sgd and scheme == "bernoulli"):
            raise ValueError("method='secular' needs rank-one retain, "
                             "scheme='bernoulli' and plain SGD (alpha=0)")
        return _critical_secular(prob, batch)
    return _critical_geneig(prob, act, lanczos=method == "geneig-lanczos")


def _critical_geneig(prob, act=None, lanczos=False):
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
        act = OperatorAction(prob) if act is None else act
        S = np.sqrt(2.0 / (act.lam[:, None] + act.lam[None, :]))
        if lanczos:
            mu = _lanczos_top(lambda Y: S * act.quadratic(S * Y), r)
        else:
            diag = S * S * act.quadratic_diagonal()
            Sp = act.entries(S)
            eye = act.pack(np.eye(r))
            if _SecularPreconditioner.pays(act):
                solve = _SecularPreconditioner(act, diag, S)
                block, starts = None, [solve.start(-np.inf), eye]
            else:
                J, sub = _dense_block(act, diag)
                s = S[np.ix_(J, J)].ravel()
                A = s[:, None] * quadratic_matrix(sub) * s[None, :]
                solve, block = None, _packed_block(act, J, A)
                starts = [eye] + [act.pack(X) for X in _sample_starts(act, scale=S)]
            mu = _davidson_top(_scaled_product(act, Sp), act.entries(diag), block,
                               starts, solve=solve,
                               matvec_single=_single(act, _scaled_product(
                                   act, Sp, single=True)))
    # D contains a PSD sampling part and M (x) M scaled by (1 - b) >= 0, so
    # mu > 0 whenever M is positive definite.
    return 2.0 / mu if mu > 0 else np.inf


#: Entrywise accuracy, relative to the largest entry, of the low-rank form of
#: ``S^2 / (theta - d)`` in :class:`_SecularPreconditioner` (the single-precision
#: capacitance matrix is no more accurate; 1e-12 in double precision).
_SECULAR_RTOL = 1e-5
#: Window of :class:`_SecularPreconditioner`: its low-rank basis holds
#: ``S^2 / (theta - d)`` at ``theta = lo + f (lo - max d)`` for these ``f`` and
#: ``theta = inf`` (``S^2``), so it serves every ``theta >= lo`` (the Ritz
#: values of :func:`_davidson_top` only increase); ``lo`` lies 10 % of the gap
#: below the first ``theta``.
_SECULAR_WINDOW = (0.0, 0.25, 1.0, 4.0, 16.0, 64.0, 256.0)
#: Random probes per window point for that basis.
_SECULAR_PROBES = 32
#: The capacitance matrix is formed again once ``theta`` has moved by this
#: fraction of ``theta - max d`` (its entries move by about as much).
_SECULAR_REFACTOR = 1e-3
#: Samples whose single-sample secular roots :meth:`_SecularPreconditioner.start`
#: solves for (after ranking all by their secular weight).
_SECULAR_CANDIDATES = 64
#: Newton's method for the top of ``P`` (:meth:`_SecularPreconditioner._top`,
#: a start vector) stops at steps below this, relative.
_SECULAR_TOP_RTOL = 1e-8
#: Memory (bytes) for the ``k`` matrices ``Z_s`` (``N x N``) of
#: :class:`_SecularPreconditioner`; beyond it the correction is diagonal.
_SECULAR_MEMORY = 640e6


class _SecularPreconditioner:
    """Davidson correction ``t = (theta - P)^{-1} w`` (packed vectors) that
    inverts the sampling terms of *every* sample, for the scaled operator ``A
    = S o D(S o .)`` of :func:`_critical_geneig`, or for ``T`` (``scale=None``,
    ``coef = eta^2``), of rank-one families with an ascent part.

    The sampling part of ``A`` is ``sum_i c_i q_i q_i^T`` with ``q_i = pack(S o
    H_i)``, ``H_i = g_i g_i^T`` (in ``T``: ``c_i = eta^2 a_i``; duplicate rows,
    e.g. forget samples that are retain samples, are merged by adding their
    ``c_i``). ``P = diag(d) + sum_i c_i q_i q_i^T`` with ``d`` the diagonal of
    ``A`` less that of the sampling part: only the set-mean terms of
    ``with``/``without`` are approximated, by their diagonal. By Woodbury,
    with ``Delta = (theta - d)^{-1}`` (entrywise),

        (theta - P)^{-1} = Delta + Delta Q c^{1/2} (I - K)^{-1} c^{1/2} Q^T Delta,

        K_ij = (c_i c_j)^{1/2} sum_kl D_kl g_ik g_il g_jk g_jl,   D = S^2 / (theta - d),

    an ``N x N`` capacitance matrix (``N`` samples): ``O(N r^2)`` per call (one
    ``trmm`` and one ``syrk``, as a product of ``A``). Formed entry by entry
    ``K`` would cost ``N^2 r^2``; but without the sampling diagonal ``d`` is
    a smooth function of ``(lam_k, lam_l)`` plus rank-one set-mean terms, so
    ``D`` is numerically of low rank (unlearning family of
    ``benchmarks/bench_radius.py``, n = 1000, rho at 0.9 eta*: singular values
    3e-9 relative at rank 8; with the sampling diagonal they stall at 1e-4),
    and one basis ``U`` (``r x k``) holds ``D`` for every ``theta`` of a window
    (``_SECULAR_WINDOW``): ``D ~ U C U^T``, ``C = U^T D U``, and

        K = (c^{1/2} c^{1/2 T}) o sum_st C_st Z_s o Z_t,   Z_s = G diag(u_s) G^T,

    ``k`` symmetric rank-``r`` updates once (``k N^2 r`` flops), then ``k^2
    N^2`` and an LU of ``I - K`` whenever ``theta`` moves
    (``_SECULAR_REFACTOR``).

    Why every sample: where ascent nearly cancels descent, the top eigenmatrix
    belongs to a dense cluster of single-sample modes, one per sample, each
    the root of a secular equation ``1 = c_i q_i^T (theta - d_i)^{-1} q_i``
    (relative gaps at n = 2000: 2e-6 to the next, 1e-5 to the fourth). Modes
    differ by rank-one terms, not in the diagonal, so a diagonal correction
    cannot tell them apart, and inverting the terms of 32 samples (the
    previous version) left the cluster to be resolved by the iteration:
    52 products at n = 2000 against 8 with every sample, and 4 with
    :meth:`start`, the top eigenvector of ``P`` itself (computed in the
    ``N``-dimensional sample space, :meth:`_top`) as the start vector.
    """

    @staticmethod
    def pays(act):
        """Used for rank-one families with an ascent part (unlearning), where
        the cluster appears. (For plain SGD, whose products converge fast
        with the diagonal correction, an earlier version inverting 32
        samples saved 1-2 of 24 products at n = 1000 and cost more than
        them; the SGD calls meet the targets of ``bench_radius.py``
        without it.)"""
        return bool(act._fast and np.any(act.prob.mean_coef < 0))

    def __init__(self, act, diag, scale=None, coef=1.0, single=True):
        prob = act.prob
        first, inv = _distinct_rows(prob.hessians)
        c = np.bincount(inv, weights=prob.noise_coef * coef, minlength=first.size)
        keep = c > 0
        self.act, self.c, self.sc = act, c[keep], np.sqrt(c[keep])
        self.G = np.ascontiguousarray(prob.hessians[first[keep]])
        self.dtype = np.float32 if single else np.float64
        self.Gd = self.G.astype(self.dtype)
        # the Z_s from G / |G|_max and K from sc_z = c^{1/2} |G|_max^2: no
        # overflow in single precision whatever the scale of the family
        gs = float(np.abs(self.G).max(initial=0.0)) or 1.0
        self.Gz, self.sc_z = (self.G / gs).astype(self.dtype), self.sc * gs * gs
        self.rtol = _SECULAR_RTOL if single else 1e-12
        self.S2 = np.ones_like(diag) if scale is None else scale * scale
        self.sp = None if scale is None else act.entries(scale)
        self.full = diag                                   # the diagonal of A
        self.dmat = diag - (coef * self.S2) * act.sampling_diagonal
        self.d = act.entries(self.dmat)
        self.dmax = float(self.dmat.max())
        self.lo = None                  # bottom of the window of the basis
        self.theta = None               # where K was formed
        self.off = False                # no room for the Z_s: diagonal only

    # -- the start vector ---------------------------------------------------
    def _secular_weights(self, theta, idx=None):
        """``c_i q_i^T (theta - d_A)^{-1} q_i`` for the samples ``idx`` (all by
        default), ``d_A`` the whole diagonal: how strongly sample ``i`` alone
        pulls an eigenvalue near ``theta``; single precision (a ranking)."""
        G2 = np.square(self.G if idx is None else self.G[idx], dtype=np.float32)
        W = (self.S2 / _shifted(theta, self.full)).astype(np.float32)
        with blas_threads(W.shape[0]):
            GW = G2 @ W
        c = self.c if idx is None else self.c[idx]
        return c * np.einsum("ij,ij->i", GW, G2, dtype=float)

    def _largest_root(self, theta, idx, diag=None):
        """Largest root ``> theta`` of ``f_i(t) = c_i q_i^T (t - diag)^{-1} q_i
        = 1`` (``diag``: ``d_A`` by default; ``theta > max diag``) over the
        samples ``idx`` and its sample, by Newton's method on
        ``1 / f_i`` (linear for a single pole, so one step from next to the
        pole): ``1 / f_i`` is concave (``2 f'^2 <= f f''`` by Cauchy-Schwarz)
        and increasing, so each step from the left stays left of the root, and
        from the right it goes left of ``t``: the largest estimate over
        ``idx`` increases to the largest root."""
        diag = self.full if diag is None else diag
        G2 = self.G[idx] ** 2
        c = self.c[idx]
        den = np.empty_like(self.full)
        W = np.empty_like(self.full)
        for _ in range(100):
            np.subtract(theta, diag, out=den)               # > 0: theta > max diag
            np.divide(self.S2, den, out=W)
            with blas_threads(W.shape[0]):
                f = c * np.einsum("ij,ij->i", G2 @ W, G2)
                np.divide(W, den, out=den)                  # S^2 / (theta - diag)^2
                df = c * np.einsum("ij,ij->i", G2 @ den, G2)
            est = theta + (f - 1.0) * f / df
            best = int(np.argmax(est))
            if est[best] - theta <= 1e-10 * abs(theta):
                break
            theta = float(est[best])
        return theta, int(idx[best])

    def start(self, theta):
        """Packed unit start vector: the top eigenvector of ``P``
        (:meth:`_top`), else (no room for the basis) the single-sample mode
        of the sample with the largest secular root (:meth:`_single_start`).
        ``theta``: a lower bound of the top eigenvalue (``-inf``: none).
        :meth:`_top` starts from a lower bound of ``P``'s top: its largest
        diagonal entry (``P``'s diagonal is the operator's, ``d_A``), raised
        to the largest single-sample value ``p(e_i)`` (the root of ``c_i q_i^T
        (t - d)^{-1} q_i = 1``) over the ``_SECULAR_CANDIDATES`` samples of
        largest ``c_i |g_i|^4``; it anchors the window of the basis."""
        top = float(self.full.max())
        theta = max(theta, top + 1e-9 * max(abs(top), 1e-300))
        G2 = np.einsum("ij,ij->i", self.G, self.G)
        idx = np.argsort(self.c * G2 * G2)[::-1][:_SECULAR_CANDIDATES]
        theta, _ = self._largest_root(theta, idx, self.dmat)
        self._window(theta)
        if not self.off:
            return self._top(theta)[1]
        return self._single_start(theta)

    def _single_start(self, theta):
        """The single-sample mode ``(theta_i - d_A)^{-1} o q_i`` (the top
        eigenvector of ``diag(d_A) + c_i q_i q_i^T``, for its root
        ``theta_i``) of the sample with the largest root, found among the
        ``_SECULAR_CANDIDATES`` samples of largest secular weight at a first
        root (packed, unit)."""
        top = float(self.full.max())
        theta = max(theta, top + 1e-9 * max(abs(top), 1e-300))
        # a first root (of the sample of largest c_i |g_i|^4, for its size),
        # where the ranking by secular weight is no longer dominated by the
        # largest diagonal entry, then the largest root of the top ranked
        G2 = np.einsum("ij,ij->i", self.G, self.G)
        theta, _ = self._largest_root(theta, np.array([np.argmax(self.c * G2 * G2)]))
        idx = np.argsort(self._secular_weights(theta))[::-1][:_SECULAR_CANDIDATES]
        theta, i = self._largest_root(theta, idx)
        g = self.G[i]
        X = np.sqrt(self.S2) * np.outer(g, g) / _shifted(theta, self.full)
        v = self.act.pack(X)
        return v / np.linalg.norm(v)

    # -- the capacitance matrix ----------------------------------------------
    def _D(self, theta, out=None):
        """``S^2 / (theta - d)`` (``r x r``), into ``out`` if given."""
        out = np.subtract(theta, self.dmat, out=out)
        return np.divide(self.S2, out, out=out)

    def _window(self, theta):
        """Basis ``U`` of ``S^2 / (theta' - d)`` for ``theta' >= lo`` (see
        ``_SECULAR_WINDOW``) and the ``Z_s``; ``off`` when they would not fit
        ``_SECULAR_MEMORY``. ``U`` spans the ranges of the window points'
        matrices on random probes, truncated where the singular values fall
        below ``rtol``; the error ``|(I - U U^T) D|`` is then checked on
        fresh probes at every window point (``rtol``, Frobenius norms), and
        ``U`` grown until it passes."""
        r = self.dmat.shape[0]
        self.lo = lo = self.dmax + 0.9 * (theta - self.dmax)
        gap = lo - self.dmax
        rng = np.random.default_rng(0)
        probes = min(_SECULAR_PROBES, r)
        D = np.empty_like(self.dmat)
        Y, checks = [], []
        with blas_threads(r):
            for f in _SECULAR_WINDOW + (np.inf,):
                A = self.S2 if f == np.inf else self._D(lo + f * gap, out=D)
                Y.append(A @ rng.standard_normal((r, probes)))
                Y[-1] /= np.linalg.norm(Y[-1])
                checks.append(A @ rng.standard_normal((r, 4)))
        Q, sv, _ = np.linalg.svd(np.hstack(Y), full_matrices=False)
        k = int(np.count_nonzero(sv > self.rtol * sv[0]))
        while True:
            U = Q[:, :k]
            err = max(np.linalg.norm(X - U @ (U.T @ X)) / np.linalg.norm(X)
                      for X in checks)
            if err <= self.rtol or k == Q.shape[1]:
                break
            k = min(Q.shape[1], k + max(1, k // 4))
        N = self.c.size
        if k * N * N * np.dtype(self.dtype).itemsize > _SECULAR_MEMORY:
            self.off = True
            return
        self.U = U
        self.Z = np.zeros((k, N, N), dtype=self.dtype)
        Gt = np.ascontiguousarray(self.Gz.T)     # Z_j = G diag(u_j) G^T: columns of G
        for j in range(k):
            # upper triangle (Fortran order) = lower triangle of Z[j]; the rest 0
            out = _rank_one_sum(Gt, U[:, j], self.Z[j].T)
            if not np.shares_memory(out, self.Z[j]):   # pragma: no cover - BLAS copy
                self.Z[j] = out.T

    def _capacitance(self, C):
        """``K = (c^{1/2} c^{1/2 T}) o sum_st C_st Z_s o Z_t`` (``N x N``,
        symmetric, float64) for the ``k x k`` matrix ``C``."""
        N, k = self.c.size, self.U.shape[1]
        K = np.empty((N, N))
        Z, Kf = self.Z.reshape(k, N * N), K.reshape(-1)
        cs = float(np.abs(C).max()) or 1.0
        C = (C / cs).astype(self.dtype)
        step = max(N, int(4e6 // k))
        with blas_threads(N * N):
            for a in range(0, N * N, step):
                z = Z[:, a:a + step]
                Kf[a:a + step] = np.einsum("sn,sn->n", C @ z, z, dtype=float)
        K += K.T                        # the Z_s hold lower triangles, zeros above
        K[np.diag_indices(N)] *= 0.5
        K *= cs * (self.sc_z[:, None] * self.sc_z[None, :])
        return K

    def _factor(self, theta):
        if self.lo is None or theta < self.lo:
            self._window(theta)
            if self.off:
                return
        self.theta = theta
        self.inv = 1.0 / (theta - self.d)
        self.post = self.act._weights(self.sp)[1] * self.inv
        K = self._capacitance(self.U.T @ self._D(theta) @ self.U)
        K *= -1.0
        K[np.diag_indices(K.shape[0])] += 1.0
        self.lu = scipy.linalg.lu_factor(K, overwrite_a=True, check_finite=False)

    def _top(self, theta):
        """Top eigenpair ``(sigma, x)`` of ``P`` (``x`` packed, unit) from a
        lower bound ``theta`` of ``sigma``, by the Rayleigh-functional
        (safeguarded) iteration for the nonlinear eigenproblem ``K(t) u = u``
        whose largest root is ``sigma`` (``K`` decreases with ``t`` in the
        Loewner order): ``u`` = top eigenvector of ``K(theta)`` (the low-rank
        capacitance matrix), then ``theta`` = the root ``p(u)`` of ``phi(t) =
        u^T K(t) u = 1``, computed exactly as ``<S^2 / (t - d), Y_u o Y_u>``
        with ``Y_u = sum_i c_i^{1/2} u_i g_i g_i^T`` (one ``syrk``) by Newton's
        method on ``1 / phi`` (concave, so it stays left of the root). By the
        min-max principle every ``p(u) <= sigma``: ``theta`` increases to
        ``sigma`` (quadratically). Then ``x = (sigma - d)^{-1} o pack(S o
        Y_u)``. Where ``P`` is close to the operator (Bernoulli sampling: only
        the basis differs) this is close to its top eigenmatrix; above all it
        keeps the shifted corrections from settling on a lower eigenvalue
        near the first Ritz value (seen with a single-sample start: rho at
        0.5 eta*, n = 2000, Bernoulli, 1.4e-4 low)."""
        r = self.act.prob.dim
        wts = self.act._weights(self.sp)[1]
        u = None
        for _ in range(30):
            K = self._capacitance(self.U.T @ self._D(theta) @ self.U)
            u = spla.eigsh(K, k=1, which="LA", v0=u, tol=1e-9)[1][:, 0]
            Y = _rank_one_sum(self.Gd, (self.sc * u).astype(self.dtype),
                              np.zeros((r, r), dtype=self.dtype, order="F"))
            # phi(t) = |pack(S o Y)|^2 weighted by 1 / (t - d), packed
            y2 = np.square(self.act._gather(Y, wts))
            new = theta
            for _ in range(100):
                w = 1.0 / (new - self.d)
                yw = y2 * w
                phi = float(np.sum(yw))
                step = (phi - 1.0) * phi / float(yw @ w)
                new += step
                if step <= 1e-12 * abs(new):
                    break
            moved, theta = new - theta, new
            if moved <= _SECULAR_TOP_RTOL * abs(theta):
                break
        x = self.act._gather(Y, wts / (theta - self.d))
        return theta, x / np.linalg.norm(x)

    def __call__(self, w, theta):
        if (not self.off and theta > self.dmax
                and (self.theta is None or theta < self.lo or abs(theta - self.theta)
                     > _SECULAR_REFACTOR * (theta - self.dmax))):
            self._factor(theta)
        if self.off or theta <= self.dmax:
            # outside the Woodbury form (theta below the diagonal): diagonal
            return w / _shifted(theta, self.act.entries(self.full))
        act = self.act
        y = w * self.inv
        U = act._upper_half(y, self.dtype, buffer="precondition", scale=self.sp)
        _, b = _triangle_forms(self.Gd, U)
        z = scipy.linalg.lu_solve(self.lu, self.sc * b, check_finite=False) * self.sc
        r = act.prob.dim
        out = _rank_one_sum(self.Gd, z, np.zeros((r, r), dtype=self.dtype, order="F"))
        y += act._gather(out, self.post)
        return y


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


def secular_weights(ell, eta):
    """``w_kl = l_k l_l / (l_k + l_l - eta l_k l_l)`` of THEORY section 11.

    The weights of the secular form of rank-one Bernoulli SGD over the
    eigenvalues ``l_k`` of ``K / n`` (used by :func:`critical_lr` with
    ``method="secular"`` and by :func:`simlab.theory.rmt.critical_lr`).
    """
    ell = np.asarray(ell, dtype=float)
    prod = np.outer(ell, ell)
    return prod / (ell[:, None] + ell[None, :] - eta * prod)


def _critical_secular(prob, batch):
    """THEORY section 11 secular form for rank-one Bernoulli SGD."""
    F = prob.hessians                       # (n, r) coordinates in U
    n = F.shape[0]
    lam, U = range_eig(F, rank_one=True)
    ell = lam / n
    if batch == n:
        return 2.0 / ell[-1]
    factor = n / batch - 1.0

    def lam_max(eta):
        if eta == 0.0:
            return 0.0
        Wkl = secular_weights(ell, eta)

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


@serial_blas
def asymptotic_escape_time(retain, eta, batch, *, scheme="without", forget=None,
                           forget_batch=None, alpha=0.0, escape_factor=1e3):
    """Asymptotic escape time ``log K / log rho(T)`` (``inf`` when ``rho <= 1``).

    The time at which ``E||delta_t||^2`` reaches ``K E||delta_0||^2`` when
    ``delta_0`` lies in the top (PSD) eigenmatrix of ``T``, where
    ``E||delta_t||^2 = rho^t E||delta_0||^2`` exactly; for a general start it is
    the large-``K`` asymptote of the first passage. For the first passage from
    an actual law of ``delta_0`` use :func:`escape_time` with a perturbation law.

    Parameters
    ----------
    retain, eta, batch, scheme, forget, forget_batch, alpha
        As in :func:`spectral_radius`.
    escape_factor : float
        ``K > 1`` (``inf`` allowed: never escapes).

    Returns
    -------
    float
        ``log K / log rho`` (not rounded up to a step count).

    Notes
    -----
    THEORY section 4, finite horizon.
    """
    K = check_escape_factor(escape_factor)
    rho = spectral_radius(retain, eta, batch, scheme=scheme, forget=forget,
                          forget_batch=forget_batch, alpha=alpha)
    return escape_time_from_rho(rho, K)


def escape_time_from_rho(rho, escape_factor=1e3):
    """``log K / log rho`` for a known ``rho`` (``inf`` when ``rho <= 1``): the one
    place of this formula (see :func:`asymptotic_escape_time`)."""
    K = check_escape_factor(escape_factor)
    rho = check_positive(rho, "rho", allow_zero=True)
    return float(np.log(K) / np.log(rho)) if rho > 1.0 else np.inf


@serial_blas
def escape_time(retain, eta, batch, *, scheme="without", forget=None,
                forget_batch=None, alpha=0.0, escape_factor=1e3,
                perturbation_cov=None, perturbation_samples=None, horizon=None,
                method="auto"):
    """Mean-square escape time: first ``t`` with ``E||delta_t||^2 >= K E||delta_0||^2``.

    With a perturbation law (``perturbation_cov`` or ``perturbation_samples``)
    this is the exact first-passage time

        t_esc = min { 1 <= t <= horizon : E||delta_t||^2 >= K E||delta_0||^2 },

    ``inf`` if there is none, with ``E[delta_t delta_t^T] = T^t(Sigma_0)`` computed
    by applying ``T`` forward from ``Sigma_0 = E[delta_0 delta_0^T]``. Without a
    law it returns the asymptotic predictor ``log K / log rho(T)`` of
    :func:`asymptotic_escape_time` (unchanged behaviour).

    Parameters
    ----------
    retain, eta, batch, scheme, forget, forget_batch, alpha
        As in :func:`spectral_radius`.
    escape_factor : float
        ``K > 1`` (``inf`` allowed: never escapes).
    perturbation_cov : array_like, shape (p, p), optional
        ``Sigma_0 = E[delta_0 delta_0^T]`` in parameter space: real, finite,
        symmetric PSD, nonzero. Only its second moment matters (the dynamics is
        linear and the batches are independent of ``delta_0``); its scale does
        not (the criterion is a ratio).
    perturbation_samples : array_like, shape (k, p), optional
        Rows ``d_j`` defining ``Sigma_0 = (1/k) sum_j d_j d_j^T``: ``k`` sampled
        perturbations (empirical second moment), or any factor of ``Sigma_0``
        such as the output of :func:`gaussian_span_moment`. Cheaper than
        ``perturbation_cov`` for large ``p``. Give at most one of the two.
    horizon : int, optional
        Largest ``t`` searched (``>= 1``); required with a perturbation law,
        refused without one.
    method : {"auto", "forward", "spectral"}
        ``forward`` applies ``T`` matrix-free (``O(N r^2)`` per step for rank-one
        families, ``O(N r^3)`` dense) until the crossing or the horizon, and
        stops early once ``rho(T) <= 1`` and the self-adjoint bound
        ``tr Y_s <= sqrt(r) ||Y_t||_F`` (``s >= t``) rules a crossing out.
        ``spectral`` diagonalizes the dense ``r^2 x r^2`` matrix of ``T`` once
        (``O(r^6)``) and evaluates ``tr T^t(Sigma_U) = sum_j c_j lam_j^t`` in
        blocks of ``t``, skipping the steps where a monotone upper bound stays
        below the threshold: the cheap route for long horizons. ``auto`` takes
        ``spectral`` when ``r <= config.DENSE_MAX_DIM`` and
        ``horizon > 4 r^2``, ``forward`` otherwise.

    Returns
    -------
    float
        With a law: the first-passage step (an integer value) or ``inf``.
        Without: ``log K / log rho`` or ``inf``.

    See Also
    --------
    asymptotic_escape_time : ``log K / log rho(T)``.
    mean_square_growth : the whole curve ``E||delta_t||^2 / E||delta_0||^2``.
    gaussian_span_moment : the law of the Gaussian ``delta_0`` used by the
        experiments.
    simlab.simulate.linearized : Monte-Carlo trajectories of the same dynamics.

    Notes
    -----
    THEORY sections 4 and 6. Which predictor is which: the first passage from
    the law is the *mean-square* finite-horizon criterion for that start; the
    asymptotic ``log K / log rho`` assumes ``delta_0`` in the top eigenmatrix of
    ``T`` and is what the first passage approaches for large ``K`` (a random
    start has only part of its mass there, so it usually escapes later). Both
    are mean-square statements; a typical trajectory can behave differently
    (THEORY section 4, "Mean-square versus typical behaviour").

    Components outside ``U = range(sum_i H_i)``: with ``Q`` an orthonormal
    basis of ``U`` and ``Q_perp`` of its complement, every step acts inside
    ``U`` only, so ``delta_t = Q Phi_t Q^T delta_0 + Q_perp Q_perp^T delta_0``
    and

        E||delta_t||^2 = tr T_U^t(Q^T Sigma_0 Q) + tr(Q_perp^T Sigma_0 Q_perp).

    The outside mass stays constant and counts on both sides of the criterion;
    the cross block ``Q^T Sigma_0 Q_perp`` does not enter the norm. ``T_U`` acts
    on ``r x r`` matrices in the coordinates of
    :func:`simlab.stability.build_problem` (Gram coordinates, ``r <= N``, for
    rank-one families).

    Examples
    --------
    Identical samples make every minibatch the full batch, so ``E||delta_t||^2``
    grows by exactly ``(1 - 1.5 * 2)^2 = 4`` per step: ``4^5 = 1024 >= 10^3``.

    >>> import numpy as np
    >>> from simlab.curvature import coherence_dial
    >>> H = coherence_dial(4, 4)                        # p = 1, lambda = 2
    >>> escape_time(H, 1.5, 2, perturbation_cov=np.eye(1), horizon=100)
    5.0
    >>> round(escape_time(H, 1.5, 2), 4)                # log(1e3) / log(4)
    4.9829
    """
    K = check_escape_factor(escape_factor)
    if method not in _METHODS_ESC:
        raise ValueError(f"method must be one of {_METHODS_ESC}, got {method!r}")
    if perturbation_cov is None and perturbation_samples is None:
        if horizon is not None:
            raise ValueError("horizon applies to the first passage from a "
                             "perturbation law: pass perturbation_cov or "
                             "perturbation_samples (without a law escape_time "
                             "returns log K / log rho)")
        return asymptotic_escape_time(retain, eta, batch, scheme=scheme,
                                      forget=forget, forget_batch=forget_batch,
                                      alpha=alpha, escape_factor=K)
    eta = check_eta(eta)
    if horizon is None:
        raise ValueError("horizon (an int >= 1) is required with a perturbation law")
    horizon = check_int(horizon, "horizon", low=1)
    prob = _problem(retain, batch, scheme, forget, forget_batch, alpha)
    Y0, tr_out = _perturbation_start(prob, perturbation_cov, perturbation_samples)
    if np.isinf(K):
        return np.inf
    r = prob.dim
    if method == "auto":
        method = ("spectral" if r <= config.DENSE_MAX_DIM and horizon > 4 * r * r
                  else "forward")
    run = _first_passage_spectral if method == "spectral" else _first_passage_forward
    return run(prob, eta, Y0, K - tr_out, horizon)


@serial_blas
def mean_square_growth(retain, eta, batch, *, steps, scheme="without", forget=None,
                       forget_batch=None, alpha=0.0, perturbation_cov=None,
                       perturbation_samples=None):
    """``E||delta_t||^2 / E||delta_0||^2`` for ``t = 0, ..., steps``, exactly.

    Parameters
    ----------
    retain, eta, batch, scheme, forget, forget_batch, alpha
        As in :func:`spectral_radius`.
    steps : int
        Last step ``>= 1``.
    perturbation_cov, perturbation_samples
        The law of ``delta_0`` as in :func:`escape_time` (exactly one).

    Returns
    -------
    ndarray, shape (steps + 1,)
        Starts at 1; ``inf`` after an overflow.

    See Also
    --------
    escape_time : the first step at which this reaches ``K``.

    Notes
    -----
    THEORY sections 2-4; the mass of ``delta_0`` outside ``U`` is constant
    (see :func:`escape_time`). Cost ``O(steps N r^2)`` for rank-one families.
    """
    eta = check_eta(eta)
    steps = check_int(steps, "steps", low=1)
    prob = _problem(retain, batch, scheme, forget, forget_batch, alpha)
    Y0, tr_out = _perturbation_start(prob, perturbation_cov, perturbation_samples)
    act = OperatorAction(prob)
    Y = act.W.T @ Y0 @ act.W
    out = np.empty(steps + 1)
    out[0] = np.trace(Y) + tr_out
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(1, steps + 1):
            Y = act.operator(eta, Y)
            out[t] = np.trace(Y) + tr_out
    out[~np.isfinite(out)] = np.inf
    return out


def _perturbation_start(prob, cov, samples):
    """The law of ``delta_0`` split along ``U``, scaled to ``E||delta_0||^2 = 1``.

    Returns ``Y0 = Q^T Sigma_0 Q`` in the coordinates of ``prob`` (basis ``Q``)
    and the constant mass outside ``U``, ``tr_out = 1 - tr Y0``.
    """
    Q = prob.basis
    kind, law = check_perturbation_law(cov, samples, Q.shape[0], required=True)
    law = law / np.abs(law).max()           # squares below stay finite
    if kind == "cov":
        tr0 = float(np.trace(law))
        Y0 = Q.T @ law @ Q
    else:
        k = law.shape[0]
        tr0 = float(np.sum(law * law)) / k
        A = law @ Q
        Y0 = A.T @ A / k
    Y0 = 0.5 * (Y0 + Y0.T) / tr0
    return Y0, max(1.0 - float(np.trace(Y0)), 0.0)


#: Forward steps between the checks of the early stop in ``_first_passage_forward``.
_STOP_CHECK_EVERY = 256
#: Largest block of steps evaluated at once by ``_first_passage_spectral``.
_SPECTRAL_BLOCK = 4096


def _first_passage_forward(prob, eta, Y0, target, horizon):
    """First ``t <= horizon`` with ``tr T^t(Y0) >= target``, applying ``T``."""
    act = OperatorAction(prob)
    Y = act.W.T @ Y0 @ act.W
    contracting = None
    root_r = np.sqrt(prob.dim)
    for t in range(1, horizon + 1):
        Y = act.operator(eta, Y)
        if np.trace(Y) >= target:
            return float(t)
        if t % _STOP_CHECK_EVERY == 0:
            if contracting is None:
                contracting = _radius(prob, eta) <= 1.0
            # T is self-adjoint with ||T^s Y||_F <= rho^s ||Y||_F on symmetric Y,
            # so for s >= t: tr Y_s <= sqrt(r) ||Y_s||_F <= sqrt(r) ||Y_t||_F.
            if contracting and root_r * np.linalg.norm(Y) < target:
                return np.inf
    return np.inf


def _first_passage_spectral(prob, eta, Y0, target, horizon):
    """Same as :func:`_first_passage_forward` from the eigendecomposition of ``T``.

    ``tr T^t(Y0) = sum_j c_j lam_j^t`` with ``c_j = <v_j, I> <v_j, Y0>``. For
    ``s >= t`` it is at most ``g_t(s) = sum_{|lam|>1} |c| |lam|^s +
    sum_{|lam|<=1} |c| |lam|^t``, non-decreasing in ``s``: the steps before
    ``g_t`` reaches ``target`` are skipped, the rest evaluated in blocks.
    """
    r = prob.dim
    lam, V = scipy.linalg.eigh(operator_matrix(prob, eta))
    c = (V.T @ np.eye(r).ravel()) * (V.T @ Y0.ravel())
    lam, c = lam[c != 0.0], c[c != 0.0]
    if c.size == 0:
        return np.inf
    a, ac = np.abs(lam), np.abs(c)
    up = a > 1.0
    log_up = np.log(a[up])
    log_max = float(log_up.max()) if up.any() else 0.0

    def bound(s, t):
        with np.errstate(over="ignore"):
            return float(ac[~up] @ a[~up] ** t + ac[up] @ np.exp(s * log_up))

    t = 1
    while t <= horizon:
        s = t
        if bound(t, t) < target:
            if not up.any() or bound(horizon, t) < target:
                return np.inf
            lo, hi = t, horizon            # bound(lo) < target <= bound(hi)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if bound(mid, t) < target:
                    lo = mid
                else:
                    hi = mid
            s = hi
        # Block small enough that no term can overflow before the crossing.
        room = 600.0 - np.log(max(bound(s, s), 1.0))
        span = _SPECTRAL_BLOCK if log_max == 0.0 else int(
            min(_SPECTRAL_BLOCK, max(1.0, room / log_max)))
        ts = np.arange(s, min(s + span, horizon + 1))
        vals = np.power(lam[None, :], ts[:, None]) @ c
        hit = np.flatnonzero(vals >= target)
        if hit.size:
            return float(ts[hit[0]])
        t = int(ts[-1]) + 1
    return np.inf


def gaussian_span_moment(factors, *, normalized=True):
    """Second moment of a Gaussian perturbation in the span of ``factors``.

    The law used by the experiments: ``delta_0 = sum_j c_j f_j`` with
    ``c ~ N(0, I_k)`` over the rows ``f_j`` of ``factors`` (e.g. the curvature
    factors ``h_i`` of :mod:`simlab.experiments.cnn_unlearning`), then, with
    ``normalized=True``, rescaled to a fixed norm (``||delta_0|| = eps ||w*||``
    there; the scale does not matter for escape).

    Parameters
    ----------
    factors : array_like, shape (k, p)
        Rows spanning the perturbation. For the per-filter law of
        :func:`simlab.dynamics.unlearn.unlearn` (``delta_0 = Z X_p`` with ``Z``
        ``(m, 2n)`` Gaussian, flattened row-major) pass
        ``np.kron(np.eye(m), X_p)``.
    normalized : bool
        ``True``: the law of ``delta_0 / ||delta_0||`` (trace 1). ``False``: the
        unscaled Gaussian, ``Sigma_0 = F^T F``.

    Returns
    -------
    ndarray, shape (r, p)
        Rows ``A`` with ``Sigma_0 = A^T A / r`` (``r`` = numerical rank of
        ``factors``): pass as ``perturbation_samples=A`` to :func:`escape_time`.

    Notes
    -----
    With ``F = U S V^T`` and ``mu_i = s_i^2``, ``delta_0 = V S z`` with
    ``z ~ N(0, I_r)``, so ``E[u u^T] = V diag(w) V^T`` for ``u = delta_0 /
    ||delta_0||``, where (from ``1/q = int_0^inf exp(-x q) dx`` and the Gaussian
    moment generating function)

        w_i = mu_i int_0^inf (1 + 2 x mu_i)^(-1) prod_j (1 + 2 x mu_j)^(-1/2) dx,

    integrated numerically (``sum_i w_i = 1`` exactly; checked to ``1e-9``).
    Normalizing shifts weight from the large-``mu`` directions to the small
    ones compared with ``F^T F / tr(F^T F)``; both coincide when the nonzero
    ``mu_i`` are equal.

    Examples
    --------
    >>> import numpy as np
    >>> A = gaussian_span_moment(np.diag([1.0, 2.0**-0.5]))
    >>> np.round(A.T @ A / len(A), 6)       # w = (2 - sqrt 2, sqrt 2 - 1)
    array([[0.585786, 0.      ],
           [0.      , 0.414214]])
    """
    if np.iscomplexobj(factors):
        raise ValueError("factors must be real, got a complex array")
    F = as_float_array(factors, "factors", ndim=2)
    if F.size == 0 or not np.any(F):
        raise ValueError(f"factors must hold at least one nonzero row, got shape "
                         f"{F.shape}")
    lam, V = range_eig(F, rank_one=True)
    lam, V = lam[::-1], V[:, ::-1]            # descending, like singular values
    s = np.sqrt(lam)
    Vt = (F.T @ (V / s)).T                    # right singular vectors
    r = s.size
    if not normalized:
        w = s**2
    elif r == 1:
        w = np.ones(1)
    else:
        mu = (s / s[0]) ** 2

        def integrand(x):
            log_mgf = -0.5 * np.sum(np.log1p(2.0 * x * mu))
            return mu / (1.0 + 2.0 * x * mu) * np.exp(log_mgf)

        w, _ = scipy.integrate.quad_vec(integrand, 0.0, np.inf, epsabs=0.0,
                                        epsrel=1e-12)
        total = float(w.sum())
        if abs(total - 1.0) > 1e-9:     # pragma: no cover - quadrature failure
            raise RuntimeError(f"quadrature of the normalized weights lost accuracy "
                               f"(sum {total!r} != 1)")
        w = w / total
    return np.sqrt(r * w)[:, None] * Vt


@serial_blas
def mean_lower_bound(retain, eta, batch, *, scheme="without", forget=None,
                     forget_batch=None, alpha=0.0):
    """``max_lambda (1 - eta lambda)^2`` over the eigenvalues of ``M`` on ``U``.

    A lower bound on ``rho(T)`` because the covariance parts are positive maps
    (THEORY section 4).
    """
    eta = check_eta(eta)
    prob = _problem(retain, batch, scheme, forget, forget_batch, alpha)
    check_step(eta, prob.curvature())
    lam = np.linalg.eigvalsh(prob.mean())
    return float(np.max((1.0 - eta * lam) ** 2))


@serial_blas
def kappa_plus(retain, *, forget, alpha):
    """``kappa_+ = lambda_max(alpha H_f - (1 - alpha) H_r)`` on ``U``.

    Positive ``kappa_+`` means unlearning escapes deterministically, at a
    per-step growth of at least ``(1 + eta kappa_+)^2`` (THEORY section 4).
    Computed on the invariant subspace ``U``, so a negative value means the
    net update is restoring in every moved direction.
    """
    prob = build_problem(retain, 1, forget=forget, forget_batch=1, alpha=alpha)
    return float(-np.linalg.eigvalsh(prob.mean())[0])
