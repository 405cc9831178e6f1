"""Closed-form thresholds of the coherence-dial family (THEORY section 7).

Derivation
----------
Take ``n`` samples, dial ``s``, ``kappa = 2n/s``. Samples ``i < s`` have
``H_i = kappa e_0 e_0^T``; sample ``i >= s`` has ``kappa e_{i-s+1} e_{i-s+1}^T``.
Retain and forget are both this family with weights ``1 - alpha`` and ``alpha``;
the mean update is ``M = (1 - 2 alpha) H = m H``, ``H = diag(2, 2/s, ..., 2/s)``.

For a diagonal ``X = diag(x)`` every term of

    T(X) = (I - eta M) X (I - eta M) + eta^2 [a sum_i H_i X H_i - b' H X H]

is diagonal, because ``H_i X H_i = kappa^2 x_k e_k e_k^T`` on the sample's own
axis ``k``. (``b' H X H`` collects the ``-b_s H_s X H_s`` terms of both sets,
``H_s = H`` for both.) Here ``a = (1-alpha)^2 a_r + alpha^2 a_f`` and
``b' = (1-alpha)^2 b_r + alpha^2 b_f`` with the per-set scheme coefficients.
So the diagonal decouples into one scalar recursion per axis, and since ``T`` is
a positive map whose Perron eigenmatrix is reached by power iteration from
``I`` (diagonal), ``rho(T)`` is the largest of these scalars. Off-diagonal
entries evolve with factors bounded by the diagonal ones.

This script derives the scalar factors and their crossings of 1 with sympy,
prints them in LaTeX, and exposes them as numeric functions that
``tests/test_theory_dial.py`` compares with ``simlab.theory.dial`` and with the
general operator.

Run: ``python derivations/dial_thresholds.py``
"""

import functools

import sympy as sp

import second_moment

n, s, eta, alpha, a, b, B = sp.symbols("n s eta alpha a b B", positive=True)
x = sp.Symbol("x", positive=True)


def scheme_coefficients(scheme):
    """(a, b) for one set of n samples and batch B, derived in second_moment.py."""
    a_, b_ = second_moment.coefficients(scheme)
    return a_.subs(second_moment.n, n).subs(second_moment.B, B), \
        sp.sympify(b_).subs(second_moment.n, n).subs(second_moment.B, B)


@functools.cache
def axis_factors():
    """Per-axis growth factors (rho_0 shared axis, rho_1 private axis)."""
    m = 1 - 2 * alpha
    kappa = 2 * n / s
    lam0, lam1 = s * kappa / n, kappa / n               # eigenvalues of H
    # shared axis: s samples contribute a * kappa^2 x each
    rho0 = (1 - eta * m * lam0) ** 2 + eta**2 * (a * s * kappa**2 - b * lam0**2)
    rho1 = (1 - eta * m * lam1) ** 2 + eta**2 * (a * kappa**2 - b * lam1**2)
    return sp.simplify(rho0), sp.simplify(rho1)


@functools.cache
def thresholds():
    """Positive roots of rho_k(eta) = 1 (the other root is eta = 0)."""
    out = []
    for rho in axis_factors():
        roots = sp.solve(sp.Eq(sp.expand(rho), 1), eta)
        nonzero = [sp.simplify(r) for r in roots if sp.simplify(r) != 0]
        assert len(nonzero) == 1, nonzero
        out.append(nonzero[0])
    return tuple(out)


def numeric_critical_lr(n_, s_, B_, scheme, alpha_=0.0, Bf_=None):
    """Evaluate min(eta_0, eta_1) from the symbolic roots (0 if m <= 0)."""
    Bf_ = B_ if Bf_ is None else Bf_
    if 1 - 2 * alpha_ <= 0:
        return 0.0
    ar, br = (sp.sympify(e).subs({n: n_, B: B_}) for e in scheme_coefficients(scheme))
    af, bf = (sp.sympify(e).subs({n: n_, B: Bf_}) for e in scheme_coefficients(scheme))
    a_ = (1 - alpha_) ** 2 * ar + alpha_**2 * af
    b_ = (1 - alpha_) ** 2 * br + alpha_**2 * bf
    sub = {n: n_, s: s_, alpha: alpha_, a: a_, b: b_}
    e0, e1 = thresholds()
    vals = [float(e0.subs(sub))]
    if s_ < n_:
        vals.append(float(e1.subs(sub)))
    return min(vals)


def gd_check():
    """At a = b = 0 (full batch), eta_0 = 1/m and eta_1 = s/m: GD threshold 1."""
    e0, e1 = thresholds()
    return sp.simplify(e0.subs({a: 0, b: 0})), sp.simplify(e1.subs({a: 0, b: 0}))


if __name__ == "__main__":
    r0, r1 = axis_factors()
    e0, e1 = thresholds()
    print(r"\rho_0 =", sp.latex(r0))
    print(r"\rho_1 =", sp.latex(r1))
    print(r"\eta_0 =", sp.latex(e0))
    print(r"\eta_1 =", sp.latex(e1))
    print("GD limit:", gd_check())
