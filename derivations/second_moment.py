"""Second-moment operators of the three sampling schemes (THEORY sections 2-3).

Derivation
----------
A minibatch Hessian is ``H_hat = (1/B) sum_i z_i H_i`` with batch multiplicities
``z_i``. The schemes are exchangeable, so only three moments matter:
``m1 = E z_i``, ``m2 = E z_i^2`` and ``m11 = E z_i z_j`` (``i != j``). Then

    E[H_hat X H_hat] = (1/B^2) [ (m2 - m11) sum_i H_i X H_i + m11 n^2 H X H ],

and with ``m1 = B/n`` (every scheme is unbiased) the operator is

    T(X) = (I - eta H) X (I - eta H) + eta^2 [ a sum_i H_i X H_i - b H X H ],
    a = (m2 - m11) / B^2,      b = 1 - n^2 m11 / B^2.

The moments come from the definitions: ``bernoulli`` has independent
``z_i ~ Bernoulli(B/n)``; ``without`` (uniform ``B``-subset) has
``P(i in batch) = C(n-1, B-1)/C(n, B)`` and ``P(i, j in batch) =
C(n-2, B-2)/C(n, B)``; ``with`` (``B`` i.i.d. uniform draws ``I_b``) has
``z_i = sum_b 1[I_b = i]``, so ``E z_i z_j = sum_{b, b'} P(I_b = i, I_b' = j)``.

For unlearning, ``M_hat = (1-alpha) R_hat - alpha F_hat`` with independent
retain/forget batches; expanding with non-commuting symbols and taking
expectations term by term gives THEORY section 3's
``T_u(X) = (I - eta M) X (I - eta M) + eta^2 [(1-alpha)^2 C_r(X) + alpha^2 C_f(X)]``.

Run: ``python derivations/second_moment.py``. ``tests/test_derivations.py``
compares :func:`coefficients` with ``simlab.stability.scheme_coefficients``.
"""

import functools

import sympy as sp

n, B = sp.symbols("n B", positive=True, integer=True)


@functools.cache
def moments(scheme):
    """``(m1, m2, m11)`` of the batch multiplicities, derived from the scheme."""
    if scheme == "bernoulli":
        q = B / n
        return q, q, q**2           # z^2 = z for an indicator; independence
    if scheme == "without":
        total = sp.binomial(n, B)
        p1 = sp.combsimp(sp.binomial(n - 1, B - 1) / total)
        p2 = sp.combsimp(sp.binomial(n - 2, B - 2) / total)
        return p1, p1, p2           # indicator: E z^2 = E z
    if scheme == "with":
        # z_i = sum_b 1[I_b = i]: B diagonal pairs (b = b') and B(B-1) others
        p_same = sp.Rational(1, 1) / n      # P(I_b = i)
        m2 = B * p_same + B * (B - 1) * p_same**2
        m11 = B * 0 + B * (B - 1) * p_same**2   # P(I_b = i, I_b = j) = 0
        return B * p_same, m2, m11
    raise ValueError(scheme)


@functools.cache
def coefficients(scheme):
    """``(a, b)`` of ``T`` in closed form, simplified."""
    m1, m2, m11 = moments(scheme)
    assert sp.simplify(m1 - B / n) == 0, "scheme must be unbiased"
    a = sp.factor(sp.simplify((m2 - m11) / B**2))
    b = sp.factor(sp.simplify(1 - n**2 * m11 / B**2))
    return a, b


def unlearning_identity():
    """Check THEORY section 3 symbolically; returns the (zero) difference."""
    eta, alpha = sp.symbols("eta alpha", positive=True)
    Rh, Fh, R, F, X, Cr, Cf = sp.symbols("Rh Fh R F X C_r C_f", commutative=False)
    Mh = (1 - alpha) * Rh - alpha * Fh
    expr = sp.expand((1 - eta * Mh) * X * (1 - eta * Mh))
    # expectation, term by term: independence of the two batches
    rules = {Rh * X * Rh: R * X * R + Cr, Fh * X * Fh: F * X * F + Cf,
             Rh * X * Fh: R * X * F, Fh * X * Rh: F * X * R,
             Rh * X: R * X, X * Rh: X * R, Fh * X: F * X, X * Fh: X * F}
    out = sp.expand(expr.subs(rules))
    M = (1 - alpha) * R - alpha * F
    target = sp.expand((1 - eta * M) * X * (1 - eta * M)
                       + eta**2 * ((1 - alpha) ** 2 * Cr + alpha**2 * Cf))
    return sp.simplify(out - target)


if __name__ == "__main__":
    for scheme in ("bernoulli", "with", "without"):
        a, b = coefficients(scheme)
        print(f"{scheme:9s}  a = {sp.latex(a)},  b = {sp.latex(b)}")
    print("unlearning identity residual:", unlearning_identity())
