"""An unlearning analogue of the SGD coherence bound (THEORY 5, 9.2).

Setting
-------
Bernoulli sampling; retain set ``R`` (``n_r`` samples, batch ``B_r``), forget
set ``F`` (``n_f``, ``B_f``), weight ``alpha``; everything restricted to the
invariant subspace ``U`` of THEORY 4. With ``c_r = (1-alpha)^2 (n_r/B_r - 1) /
n_r^2`` and ``c_f = alpha^2 (n_f/B_f - 1) / n_f^2``,

    T_u(X) = (I - eta M) X (I - eta M)
             + eta^2 [c_r sum_{i in R} H_i X H_i + c_f sum_{j in F} H_j X H_j],
    M = (1 - alpha) H_r - alpha H_f.

For a set ``s`` put ``w_r = 1 - alpha``, ``w_f = alpha``,
``L_s = max_{i in s} lambda_max(H_i)``, ``lambda_s = lambda_max(H_s)`` and the
block coherence ``sigma_s = lambda_max(S_ss) / L_s`` (THEORY 5).

Theorem
-------
(a) If ``kappa_+ = lambda_max(-M) > 0``, ``rho(T_u) > 1`` for every ``eta > 0``.

(b) If ``eta w_s lambda_s sqrt(n_s/B_s - 1) >= sigma_s`` for ``s = r`` or
    ``s = f``, then ``rho(T_u) >= 1``, with strict inequality for every larger
    ``eta``. Hence the exact threshold satisfies

        eta* <= eta_u = min( sigma_r / ((1-alpha) lambda_r sqrt(n_r/B_r - 1)),
                             sigma_f / (alpha lambda_f sqrt(n_f/B_f - 1)) ),

    (``eta_u = 0`` under (a)), and at ``alpha = 0`` ``eta_u`` is the bound of
    Dexter et al., ``sigma / (lambda_max(H) sqrt(n/B - 1))``.

(c) (Direction form.) For every unit ``v`` in ``U`` with ``m = v^T M v > 0``
    and ``q = c_r sum_R (v^T H_i v)^2 + c_f sum_F (v^T H_j v)^2``,
    ``eta* <= 2 m / (m^2 + q)``. Minimising over the eigenvectors of ``M`` and
    the top eigenvectors of all ``H_i`` gives ``eta_dir <= eta_u``. For
    rank-one ``H_i = g_i g_i^T`` and ``v = g_j / |g_j|`` everything is read off
    the coherence matrix: ``m_j = [(1-alpha)/n_r sum_R S_ij^2 - alpha/n_f
    sum_F S_ij^2] / L_j`` and ``q_j = [c_r sum_R S_ij^4 + c_f sum_F S_ij^4] /
    L_j^2`` (:func:`rank_one_direction_bound`).

Proof sketch
------------
1. ``T_u`` is self-adjoint for the Frobenius product (each term is
   ``X -> A X A`` with ``A`` symmetric), so ``rho(T_u) >= lambda_max(T_u) >=
   <X, T_u X> / <X, X>`` for every symmetric ``X != 0``.
2. With ``X = v v^T``, ``|v| = 1``: ``<X, (I - eta M) X (I - eta M)> =
   (1 - eta m)^2`` and ``<X, H X H> = (v^T H v)^2``, so
   ``rho(T_u) >= (1 - eta m)^2 + eta^2 q`` (:func:`test_matrix_form`).
3. (a): ``v`` the bottom eigenvector of ``M`` has ``m = -kappa_+ < 0`` and
   ``(1 + eta kappa_+)^2 > 1``.
4. (c): ``(1 - eta m)^2 + eta^2 q > 1`` iff ``eta (m^2 + q) > 2 m``
   (:func:`direction_threshold`). By AM-GM, ``2m/(m^2 + q) <= 1/sqrt(q)``
   (:func:`am_gm_gap`), so the direction form always beats dropping the mean.
5. (b): keep only the own term of the sample ``i*`` with ``L_{i*} = L_s``
   along its top eigenvector: ``rho >= eta^2 c_s L_s^2``, i.e. ``rho >= 1``
   once ``eta >= 1 / (sqrt(c_s) L_s) = n_s / (w_s L_s sqrt(n_s/B_s - 1))``
   (:func:`single_sample_threshold`). Finally ``n_s lambda_s =
   lambda_max(sum_{i in s} H_i) <= lambda_max(S_ss) = sigma_s L_s``: write
   ``sum_i H_i = A A^T`` with ``A = [H_1^{1/2} ... H_N^{1/2}]``; the blocks of
   ``A^T A`` are ``H_i^{1/2} H_j^{1/2}``, the spectral norm of a block matrix
   is at most that of the matrix of its block norms, and
   ``||H_i^{1/2} H_j^{1/2}||_2 <= ||.||_F = S_ij``; Perron monotonicity
   finishes it. So ``1/(sqrt(c_s) L_s) <= sigma_s / (w_s lambda_s
   sqrt(n_s/B_s - 1))`` (:func:`coherence_relaxation`). Strictness: just above
   the threshold ``eta^2 c_s L_s^2 > 1``.
6. At ``alpha = 0`` the forget term is infinite (``w_f = 0``) and the retain
   term is Dexter's (:func:`alpha_zero_reduction`). As a by-product, Dexter's
   bound itself follows from step 5 and is never sharper than the
   single-sample bound ``n / (L sqrt(n/B - 1))``.

Where it is weak
----------------
(b) sees ``M`` only through ``kappa_+``: when ascent nearly cancels descent
(``kappa_+`` slightly negative) ``eta* -> 0`` while ``eta_u`` stays finite, so
``eta*/eta_u`` can be tiny; it is also vacuous at full batch. Measured
(``python derivations/unlearning_bound.py``, 400 seeded families with
``n <= 8``, ``p <= 5``, 80 % with the forget set inside ``range(retain)``):
no violation of either form; 167 families have ``kappa_+ > 0`` (both bounds
and ``eta*`` are 0); over the 189 where ``eta_u`` is finite and positive,
``eta*/eta_u`` has min 0.010, median 0.76, max 1.00 (at ``alpha = 0``, i.e.
Dexter's bound: 0.42 / 0.79 / 1.00); ``eta*/eta_dir`` over 233 families has
min 0.72, median 1.00. On 150 larger families (``n <= 30``, ``p <= 20``):
``eta*/eta_u`` 0.003 / 0.47 / 0.99 and ``eta*/eta_dir`` 0.42 / 0.996 / 1.00.
On linear-model data (THEORY 11, SGD) Dexter's bound gives 0.04 / 0.30 / 0.72
and the direction form 0.70 / 0.98 / 1.00. (c) is loose when the top
eigenmatrix of ``T_u`` is far from rank one (many comparable, mutually
incoherent directions).

Run ``python derivations/unlearning_bound.py`` to print the algebra and the
tightness distribution over 400 random families (``--families N`` to change).
"""

import functools
import sys

import numpy as np
import sympy as sp

eta, m, q, c, L, n, B, w, sigma, lam = sp.symbols(
    "eta m q c L n B w sigma lambda", positive=True)
alpha = sp.Symbol("alpha", nonnegative=True)


def test_matrix_form():
    """``<vv^T, T_u vv^T> = (|v|^2 - eta m)^2 + eta^2 q`` checked on a symbolic
    2x2 example with one rank-one Hessian (returns the zero residual)."""
    v1, v2 = sp.symbols("v1 v2", real=True)
    M11, M12, M22 = sp.symbols("M11 M12 M22", real=True)
    M = sp.Matrix([[M11, M12], [M12, M22]])
    g = sp.Matrix(sp.symbols("g1 g2", real=True))
    a_ = sp.Symbol("a", positive=True)
    v = sp.Matrix([v1, v2])
    X = v * v.T
    A = sp.eye(2) - eta * M
    H = g * g.T
    T = A * X * A + eta**2 * a_ * H * X * H
    lhs = (X.multiply_elementwise(T)).applyfunc(sp.expand)
    lhs = sum(lhs)
    mv = (v.T * M * v)[0]
    qv = a_ * ((v.T * H * v)[0]) ** 2
    norm = v1**2 + v2**2
    rhs = (norm - eta * mv) ** 2 + eta**2 * qv
    return sp.expand(lhs - rhs)


@functools.cache
def direction_threshold():
    """Positive root of ``(1 - eta m)^2 + eta^2 q = 1``."""
    roots = sp.solve(sp.Eq((1 - eta * m) ** 2 + eta**2 * q, 1), eta)
    nonzero = [r for r in roots if sp.simplify(r) != 0]
    assert len(nonzero) == 1
    return sp.simplify(nonzero[0])


def am_gm_gap():
    """``1/sqrt(q) - 2m/(m^2+q)`` written as a manifestly non-negative square."""
    gap = 1 / sp.sqrt(q) - direction_threshold()
    target = (m - sp.sqrt(q)) ** 2 / (sp.sqrt(q) * (m**2 + q))
    return sp.simplify(gap - target)


def single_sample_threshold():
    """``1 / (sqrt(c_s) L_s)`` with ``c_s = w^2 (n/B - 1) / n^2``, minus the
    closed form ``n / (w L sqrt(n/B - 1))`` (0)."""
    c_s = w**2 * (n / B - 1) / n**2
    return sp.simplify(1 / (sp.sqrt(c_s) * L) - n / (w * L * sp.sqrt(n / B - 1)))


def coherence_relaxation():
    """Ratio of the coherence form to the single-sample form,
    ``sigma L / (n lambda)``; it is ``>= 1`` because ``n lambda <= sigma L``."""
    single = n / (w * L * sp.sqrt(n / B - 1))
    coh = sigma / (w * lam * sp.sqrt(n / B - 1))
    return sp.simplify(coh / single)


def alpha_zero_reduction():
    """``(retain term at alpha = 0) - Dexter`` (0) and ``lim_{alpha->0+}`` of the
    reciprocal forget term (0: the forget term is infinite, i.e. inactive)."""
    nr, Br, nf, Bf, lr, lf, sr, sf = sp.symbols(
        "n_r B_r n_f B_f lambda_r lambda_f sigma_r sigma_f", positive=True)
    term_r = sr / ((1 - alpha) * lr * sp.sqrt(nr / Br - 1))
    term_f = sf / (alpha * lf * sp.sqrt(nf / Bf - 1))
    dexter = sr / (lr * sp.sqrt(nr / Br - 1))
    return (sp.simplify(term_r.subs(alpha, 0) - dexter),
            sp.limit(1 / term_f, alpha, 0, "+"))


# ----------------------------------------------------------------------------
# numeric companions (tests import these)
# ----------------------------------------------------------------------------

def rank_one_direction_bound(retain, forget, alpha_, batch, forget_batch):
    """Direction bound (c) over the sample directions only, computed from the
    coherence matrix ``S`` alone (rank-one families, Bernoulli sampling).

    ``simlab.stability.unlearning_direction_bound_lr`` also tries the
    eigenvectors of ``M``, so it is never larger than this.
    """
    G = np.concatenate([retain, forget]) if alpha_ > 0 else np.asarray(retain)
    n_r, n_f = retain.shape[0], forget.shape[0]
    S = np.abs(G @ G.T)
    Lj = np.diag(S)
    k = np.zeros(G.shape[0])           # mean coefficient
    cc = np.zeros(G.shape[0])          # sampling coefficient
    k[:n_r] = (1 - alpha_) / n_r
    cc[:n_r] = (1 - alpha_) ** 2 * (n_r / batch - 1) / n_r**2
    if alpha_ > 0:
        k[n_r:] = -alpha_ / n_f
        cc[n_r:] = alpha_**2 * (n_f / forget_batch - 1) / n_f**2
    mj = (S**2 @ k) / Lj
    qj = (S**4 @ cc) / Lj**2
    if np.any(mj < 0):
        return 0.0
    return float(np.min(2 * mj / (mj**2 + qj)))


def random_family(rng, *, n_max=8, p_max=5, nf_max=3, inside=None, dense=None):
    """A random unlearning problem ``(retain, forget, alpha, B_r, B_f)``.

    Rank-one or dense (random rank) Gaussian families with log-uniform sample
    scales; the forget set lies inside ``range(retain)`` (non-negative
    combinations of retain Hessians, so small ``alpha`` can be stable) or is
    drawn independently (generically outside the range, so ``kappa_+ > 0`` for
    every ``alpha > 0``).
    """
    n = int(rng.integers(2, n_max + 1))
    p = int(rng.integers(1, p_max + 1))
    n_f = int(rng.integers(1, nf_max + 1))
    dense = bool(rng.integers(2)) if dense is None else dense
    inside = bool(rng.random() < 0.8) if inside is None else inside
    scales = np.exp(rng.uniform(-1.5, 1.5, n))
    if dense:
        k = int(rng.integers(1, p + 1))
        A = rng.standard_normal((n, p, k))
        R = A @ A.transpose(0, 2, 1) * scales[:, None, None] / k
        if inside:
            W = rng.standard_normal((n_f, n)) ** 2
            F = np.einsum("fi,ijk->fjk", W, R) / n
        else:
            A = rng.standard_normal((n_f, p, k))
            F = A @ A.transpose(0, 2, 1) / k
    else:
        R = rng.standard_normal((n, p)) * scales[:, None]
        F = (rng.standard_normal((n_f, n)) @ R if inside
             else rng.standard_normal((n_f, p)))
    alpha_ = float(rng.choice([0.0, 0.01, 0.03, 0.1, 0.2, 0.3, 0.45, 0.6, 1.0]))
    return R, F, alpha_, int(rng.integers(1, n + 1)), int(rng.integers(1, n_f + 1))


def tightness(families=400, seed=0):
    """Exact thresholds and both bounds over random families.

    Returns a dict of arrays: ``eta`` (exact ``critical_lr``), ``bound_u``
    (:func:`unlearning_bound_lr`), ``bound_dir`` (direction form), ``alpha``,
    ``dense``, ``inside`` (forget inside ``range(retain)``). Families whose mean
    update is singular with no noise on its kernel (threshold undefined) are
    skipped.
    """
    from simlab.stability import critical_lr
    from simlab.stability.bounds import (
        unlearning_bound_lr,
        unlearning_direction_bound_lr,
    )

    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(families):
        inside = bool(rng.random() < 0.8)
        R, F, al, Br, Bf = random_family(rng, inside=inside)
        try:
            eta_ = critical_lr(R, Br, scheme="bernoulli", forget=F, forget_batch=Bf,
                               alpha=al)
        except ValueError:
            continue
        kw = dict(forget=F, alpha=al, forget_batch=Bf)
        rows.append((eta_, unlearning_bound_lr(R, Br, **kw),
                     unlearning_direction_bound_lr(R, Br, scheme="bernoulli", **kw), al,
                     R.ndim == 3, inside))
    cols = [np.array(c) for c in zip(*rows)]
    return dict(zip(("eta", "bound_u", "bound_dir", "alpha", "dense", "inside"), cols))


def describe(t):
    """Summary of :func:`tightness`: violations, and the distribution of
    ``eta*/bound`` over the families where the bound is finite and positive."""
    eta_ = t["eta"]
    lines = [f"{eta_.size} families; kappa_+ > 0 (eta* = bound = 0): "
             f"{int(np.sum(t['bound_u'] == 0))}"]
    for key in ("bound_u", "bound_dir"):
        bnd = t[key]
        viol = int(np.sum(eta_ > bnd * (1 + 1e-9)))
        info = (bnd > 0) & np.isfinite(bnd)
        r = eta_[info] / bnd[info]
        vac = int(np.sum(np.isinf(bnd)))
        lines.append(f"{key}: violations {viol}; vacuous (inf) {vac}; "
                     f"eta*/bound over {r.size} informative families: "
                     f"min {r.min():.3f}, median {np.median(r):.3f}, "
                     f"max {r.max():.3f}")
        for al in np.unique(t["alpha"][info]):
            ra = r[t["alpha"][info] == al]
            lines.append(f"    alpha={al:<5}: n={ra.size:3d} min {ra.min():.3f} "
                         f"median {np.median(ra):.3f} max {ra.max():.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    print("test-matrix form residual:", test_matrix_form())
    print("direction threshold: eta =", sp.latex(direction_threshold()))
    print("AM-GM gap minus square:", am_gm_gap())
    print("single-sample threshold residual:", single_sample_threshold())
    print("coherence / single-sample:", coherence_relaxation())
    print("alpha = 0 reduction:", alpha_zero_reduction())
    k = sys.argv.index("--families") + 1 if "--families" in sys.argv else None
    print(describe(tightness(int(sys.argv[k]) if k else 400)))
