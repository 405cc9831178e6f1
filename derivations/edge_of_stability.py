"""Sharpness facts behind the edge-of-stability study (THEORY 10.1).

Derivation
----------
1. **Linear model, squared loss.** ``L(w) = (1/2n) sum_i (<w, z_i> - y_i)^2`` has
   ``grad^2 L = Z^T Z / n`` for every ``w`` (:func:`linear_squared_hessian`
   returns ``grad^2 L - Z^T Z/n`` and its ``w``-derivatives, both zero): the
   sharpness is a constant, ``S_t = lambda_max(Z Z^T)/n``. No progressive
   sharpening, no catapult: GD on it is stable iff ``eta S <= 2``.
2. **Logistic loss.** ``l(f) = log(1 + e^{-y f})``, ``y = +-1``, has
   ``l'' = sigma(yf) sigma(-yf) = 1 / (4 cosh^2(f/2)) <= 1/4 = l''(0)``
   (:func:`logistic_curvature`). For the linear model
   ``grad^2 L(w) = (1/n) sum_i l''_i z_i z_i^T <= (1/4) Z^T Z / n = grad^2 L(0)``
   in the Loewner order, so ``S_t <= S(w = 0)`` along any trajectory, in
   particular ``S_t <= S_0`` for GD started from ``w = 0``.
3. **ReLU CNN (q = 1).** On a region of fixed activation pattern
   ``a_{jr,ip} = 1[<w_jr, x_ip> > 0]``, ``f_i = (1/m) sum_{j,r} s_j sum_p a_{jr,ip}
   <w_jr, x_ip>`` is linear in ``W``, so ``grad^2 f_i = 0`` a.e.
   (:func:`relu_region_hessian`) and the loss Hessian is exactly
   ``H = (1/n) sum_i l''_i g_i g_i^T``, ``g_i = grad_W f_i``, with the filter
   blocks ``(s_j/m) sum_p a_{jr,ip} x_ip``. It depends on ``W`` only through the
   pattern (and, for the logistic loss, ``l''_i <= 1/4``). With ``||c|| = 1``,

       c^T (G G^T) c = ||sum_i c_i g_i||^2
                     = (1/m^2) sum_{j,r} ||sum_{i,p} a_{jr,ip} c_i x_ip||^2
                    <= (J m / m^2) Phi,  Phi = max_c max_a ||sum_ip a_ip c_i x_ip||^2,

   so ``S <= l''_max J Phi / (n m)``: the maximum over patterns. ``Phi`` is
   bounded two ways, both computable from the data (:func:`phi_bounds`):
   writing ``v_p = a_p o c`` (``|v_p| <= |c|``, so ``||v_p|| <= 1``) and
   ``G_pq = X_p X_q^T``,
   ``||X_0^T v_0 + X_1^T v_1||^2 <= ||G_00|| + 2 ||G_01|| + ||G_11||`` and
   ``<= |c|^T A |c| <= lambda_max(A)`` with ``A_ik = sum_pq |<x_ip, x_kq>|``.
   Only patterns a filter can realise count (``a_ip = 1[<w, x_ip> > 0]``): when
   the patches of one position are collinear (signal patches ``y_i mu``) a
   filter is active on one side only, and ``||G_pp||`` may be replaced by
   ``max_side sum_{i in side} ||x_ip||^2`` (Cauchy-Schwarz on
   ``(sum_side a_i c_i s_i ||x_ip||)^2``).
   The ceiling is ``S_ceil = l''_max J min(Phi_blocks, Phi_abs) / (n m)``,
   implemented as :func:`simlab.curvature.sharpness_ceiling`.
   *Tightness.* The all-active pattern (``a = 1``, realisable for patches in
   general position with ``2n <= d``) is the linear-model Gram ``Z Z^T``; with
   ``G_01 = 0`` ``lambda_max(G_00 + G_11) >= max(||G_00||, ||G_11||) >=
   Phi_blocks / 2``, so there the ceiling is within a factor 2 of an attained
   sharpness. Random patterns sit lower (each filter sees about half the
   patches); :func:`pattern_max_exact` enumerates the realisable patterns
   (tiny ``n``) and :func:`pattern_max_lower` finds, by coordinate ascent over
   single bits, a lower bound on the unconstrained maximum.
4. **q = 3.** ``act = max(0, z)^3``: ``grad f`` scales like ``|W|^2`` and
   ``grad^2 f`` like ``|W|`` (:func:`power_scaling`): the Gauss-Newton part of
   the Hessian grows like ``|W|^4`` and the exact Hessian has the extra
   ``l' grad^2 f`` term (the cubic term of Damian et al. 2022). No ceiling
   depending on the data alone exists; the squared-loss sharpness is
   unbounded over ``W``.

Run ``python derivations/edge_of_stability.py`` to print the symbolic facts.
"""

import itertools

import numpy as np
import sympy as sp

f, y = sp.symbols("f y", real=True)
cscale = sp.symbols("c", positive=True)


def linear_squared_hessian(n=3, d=3):
    """``(grad^2 L - Z^T Z/n, d grad^2 L / d w)`` for symbolic ``Z (n x d)``,
    ``y``, ``w``: both zero (the constant Hessian of the squared loss)."""
    Z = sp.Matrix(n, d, lambda i, k: sp.Symbol(f"z{i}{k}", real=True))
    w = sp.Matrix(d, 1, lambda k, _: sp.Symbol(f"w{k}", real=True))
    yv = [sp.Symbol(f"y{i}", real=True) for i in range(n)]
    L = sum(((Z[i, :] * w)[0] - yv[i]) ** 2 for i in range(n)) / (2 * n)
    H = sp.hessian(L, list(w))
    resid = sp.simplify(H - Z.T * Z / n)
    dH = [sp.simplify(sp.diff(H, wk)) for wk in w]
    return resid, dH


def logistic_curvature():
    """``(l''(f) for y = +-1, l''(0), l'' - 1/(4 cosh^2(f/2)))``."""
    out = []
    for ys in (1, -1):
        loss = sp.log(1 + sp.exp(-ys * f))
        d2 = sp.simplify(sp.diff(loss, f, 2))
        gap = sp.simplify((d2 - 1 / (4 * sp.cosh(f / 2) ** 2)).rewrite(sp.exp))
        out.append((d2, sp.simplify(d2.subs(f, 0)), gap))
    return out


def relu_region_hessian(m=2, d=2):
    """Hessian of ``f`` over one region of fixed activation pattern (symbolic
    patterns ``a`` in {0, 1}): the zero matrix."""
    W = sp.Matrix(2 * m, d, lambda r, k: sp.Symbol(f"w{r}{k}", real=True))
    X = sp.Matrix(2, d, lambda p, k: sp.Symbol(f"x{p}{k}", real=True))
    a = sp.Matrix(2 * m, 2, lambda r, p: sp.Symbol(f"a{r}{p}"))
    fval = sum((1 if r < m else -1) * a[r, p] * (W[r, :] * X[p, :].T)[0]
               for r in range(2 * m) for p in range(2)) / m
    return sp.simplify(sp.hessian(fval, list(W)))


def power_scaling(q=3):
    """Degrees in the weight scale ``c`` of ``act'(c z)`` and ``act''(c z)``
    for ``act = z^q`` (``z > 0``): ``(q - 1, q - 2)``."""
    z = sp.symbols("z", positive=True)
    act = z**q
    d1 = sp.diff(act, z).subs(z, cscale * z)
    d2 = sp.diff(act, z, 2).subs(z, cscale * z)
    return sp.degree(d1, cscale), sp.degree(d2, cscale)


def ceiling_constant():
    """``S_ceil = l''_max J Phi / (n m)`` as a sympy expression."""
    l2, J, Phi, n, m = sp.symbols("l2max J Phi n m", positive=True)
    return l2 * J * Phi / (n * m)


def phi_bounds(X):
    """``(Phi_blocks, Phi_abs)`` of patches ``X (n, 2, d)`` (item 3), written
    out independently of :func:`simlab.curvature.sharpness_ceiling`."""
    X = np.asarray(X, dtype=float)
    n = X.shape[0]
    Xp = X.reshape(2 * n, -1)
    B = (Xp @ Xp.T).reshape(n, 2, n, 2)
    nrm = [np.linalg.norm(B[:, p, :, q], 2) for p, q in ((0, 0), (0, 1), (1, 1))]
    for k, p in ((0, 0), (2, 1)):
        if np.linalg.matrix_rank(X[:, p]) == 1:       # collinear: one side only
            side = X[:, p] @ X[np.argmax(np.linalg.norm(X[:, p], axis=1)), p]
            sq = (X[:, p] ** 2).sum(axis=1)
            nrm[k] = max(sq[side > 0].sum(), sq[side < 0].sum())
    return nrm[0] + 2 * nrm[1] + nrm[2], np.linalg.eigvalsh(np.abs(B).sum(
        axis=(1, 3)))[-1]


def pattern_value(X, a):
    """``max_{||c||=1} ||sum_ip a_ip c_i x_ip||^2`` for one pattern ``a (n, 2)``."""
    V = np.einsum("ip,ipk->ik", np.asarray(a, float), np.asarray(X, float))
    return float(np.linalg.eigvalsh(V @ V.T)[-1])


def pattern_realizable(X, a):
    """Whether some ``w`` has ``<w, x_ip> > 0`` exactly where ``a_ip = 1``
    (linear program: maximise the margin ``t`` with ``|w|_inf <= 1``)."""
    from scipy.optimize import linprog

    Xp = np.asarray(X, float).reshape(-1, np.shape(X)[-1])
    act = np.asarray(a, bool).ravel()
    d = Xp.shape[1]
    # variables (w, t): maximise t; -<w,x> + t <= 0 (active), <w,x> <= 0 (inactive)
    A = np.vstack([np.hstack([-Xp[act], np.ones((act.sum(), 1))]),
                   np.hstack([Xp[~act], np.zeros(((~act).sum(), 1))])])
    res = linprog(np.r_[np.zeros(d), -1.0], A_ub=A, b_ub=np.zeros(len(A)),
                  bounds=[(-1, 1)] * d + [(0, 1)], method="highs")
    return bool(res.status == 0 and -res.fun > 1e-9)


def pattern_max_exact(X, realizable=True):
    """``Phi`` by enumerating all ``4^n`` patterns (tiny ``n`` only), keeping
    only those a filter can realise unless ``realizable=False``."""
    n = X.shape[0]
    best = 0.0
    for bits in itertools.product((0.0, 1.0), repeat=2 * n):
        a = np.reshape(bits, (n, 2))
        if not any(bits):
            continue
        val = pattern_value(X, a)
        if val > best and (not realizable or pattern_realizable(X, a)):
            best = val
    return best


def pattern_max_lower(X, restarts=8, seed=0):
    """A lower bound on ``Phi``: coordinate ascent over single pattern bits
    from the all-active pattern and random starts."""
    X = np.asarray(X, float)
    n = X.shape[0]
    rng = np.random.default_rng(seed)
    starts = [np.ones((n, 2))] + [rng.integers(0, 2, (n, 2)).astype(float)
                                  for _ in range(restarts)]
    best = 0.0
    for a in starts:
        val = pattern_value(X, a)
        improved = True
        while improved:
            improved = False
            for i, p in itertools.product(range(n), range(2)):
                a[i, p] = 1.0 - a[i, p]
                v = pattern_value(X, a)
                if v > val * (1 + 1e-12):
                    val, improved = v, True
                else:
                    a[i, p] = 1.0 - a[i, p]
        best = max(best, val)
    return best


def main():
    resid, dH = linear_squared_hessian()
    print("1. linear, squared: grad^2 L - Z^T Z/n =", resid.tolist(),
          "; d/dw grad^2 L all zero:", all(m.is_zero_matrix for m in dH))
    for ys, (d2, at0, gap) in zip((1, -1), logistic_curvature()):
        print(f"2. logistic, y={ys:+d}: l'' =", sp.latex(d2), "; l''(0) =", at0,
              "; l'' - 1/(4 cosh^2(f/2)) =", gap)
    print("3. ReLU region Hessian of f is zero:",
          relu_region_hessian().is_zero_matrix)
    print("   ceiling: S_ceil =", sp.latex(ceiling_constant()),
          ", Phi = min(||G00|| + 2||G01|| + ||G11||, lambda_max(A))")
    print("4. q=3: degrees of act', act'' in the weight scale:", power_scaling(3),
          "-> Gauss-Newton part ~ c^4, no data-only ceiling")


if __name__ == "__main__":
    main()
