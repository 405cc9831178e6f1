"""Random-matrix laws of the linear model on signal-plus-noise data (THEORY 11).

Derivation
----------
Data ``x_i = y_i mu + xi_i`` with ``xi_i ~ N(0, sigma_p^2 P_perp)`` in ``p = d - 1``
noise dimensions; squared loss gives ``H_i = x_i x_i^T`` and, because
``xi_i`` is orthogonal to ``mu``, the Gram matrix is exactly
``K = s y y^T + Xi Xi^T`` with ``s = ||mu||^2 = sigma_p^2 theta``. Units:
``sigma_p = 1`` below (every eigenvalue scales as ``sigma_p^2``).

1. **Bulk edge and Tracy-Widom scale.** For a Wishart ``Xi Xi^T`` (``N x p``)
   the inverse Stieltjes function is ``z(t) = p/t + N/(1 - t)`` (``t`` = ``p``
   times the companion transform). The edge is ``min_t z`` and the density near
   it is ``(1/pi) sqrt(2 (E - x) / z''(t*))``, which matches the Airy density
   ``(1/pi) sqrt((E - x) / sigma^3)`` for ``sigma = (z''(t*)/2)^{1/3}``. For the
   Wishart this reproduces ``(sqrt p + sqrt N)^2`` and Johnstone's scale
   ``(sqrt p + sqrt N)(1/sqrt p + 1/sqrt N)^{1/3}`` (:func:`wishart_edge`); the
   same formula gives the Tracy-Widom scale of any edge of this type, which is
   how ``simlab.theory.rmt`` shifts the noise edge of ``kappa_+``.

2. **Spike (sharpness).** ``lambda`` is an eigenvalue of ``K/n`` outside the
   bulk iff ``1 = s yhat^T (lambda - W/n)^{-1} yhat``; with the Marchenko-
   Pastur transform this gives ``lambda = theta (1 + gamma / (theta - 1))``,
   ``gamma = p/n``. Writing ``theta = 1 + x``, ``lambda - (1 + sqrt gamma)^2 =
   (x - sqrt gamma)^2 / x`` and ``d lambda / d theta = 1 - gamma / x^2``: the
   root is the physical (increasing, above-edge) branch iff
   ``theta - 1 > sqrt gamma`` (:func:`spike`).

3. **Folded normal** (coherence). ``|K_ij| / sqrt p ~ |N(q, 1)|`` with
   ``q = theta / sqrt p``: mean ``sqrt(2/pi) e^{-q^2/2} + q erf(q / sqrt 2)``,
   second moment ``1 + q^2`` (:func:`folded_normal`).

4. **Signed mixture** (net ascent curvature). For ``A_0 = sum_i c_i xi_i
   xi_i^T`` (``c = a = alpha/n_f`` on forget, ``-b = -(1-alpha)/n_r`` on
   retain), leave-one-out plus Sherman-Morrison gives the deterministic
   equivalent ``xi_i^T (lambda - A_0)^{-1} xi_i ~ t / (1 - c_i t)`` with
   ``lambda = p/t + F(t)``, ``F(t) = sum_i c_i / (1 - c_i t)``. The signal adds
   the direction ``mu``; its Schur complement gives ``lambda = s F(t)``
   (off-diagonal terms have mean zero by the symmetry ``xi_i -> -xi_i``).
   Eliminating ``F``: ``t = tau / lambda`` with ``tau = p theta / (theta - 1)``
   and the quadratic of THEORY 11 (:func:`outlier_quadratic`). The outlier is
   physical iff ``t`` lies on the decreasing branch, ``t < t*``.

5. **``d >> n`` rate.** Dividing the quadratic by ``tau^2`` and using
   ``s / tau -> u / n`` (``u = n SNR^2``) gives ``l^2 + [b - a + (u/n)(1 - 2
   alpha)] l - a b - (u/n) alpha (1-alpha)(1/n_f + 1/n_r) = 0`` and
   ``r = n l / (1 + u)`` since ``lambda_max(H) -> d (SNR^2 + 1/n)``
   (:func:`rate_quadratic`, :func:`rate_asymptotics`). Setting ``r = 1`` with
   ``u = n S`` and keeping the leading order in ``n`` gives the crossing
   ``S* = alpha (2 - alpha) / (2 (1 - alpha) n_f)`` (:func:`crossing_limit`).

6. **Critical learning rate.** The collective test vector gives the Rayleigh
   quotient ``(n/B - 1)(1/n) sum_k eta l_k / (2 - eta l_k)``; the single-sample
   one, for ``d >> n`` where the spectral measure of ``e_i`` is a point mass at
   ``nu = ||x_i||^2``, gives ``(n/B - 1) eta (nu/n) / (2 - eta nu/n) = 1``,
   i.e. ``eta = 2 B / nu`` (:func:`self_mode_limit`). In general the spectral
   measure of ``e_i`` follows from the Schur complement
   ``R_ii(z) = -1 / (z (1 + nu mtilde(z)))``, which tends to ``1/(nu - z)`` as
   ``mtilde -> -1/z`` (:func:`local_resolvent_limit`).

Run ``python derivations/rmt_linear.py`` to print the closed forms;
``tests/test_rmt.py`` checks them against ``simlab.theory.rmt``, and
``derivations/rmt_errors.py`` measures the predictions against simulation.
"""

import functools

import sympy as sp

p, N, n, t = sp.symbols("p N n t", positive=True)
theta, gamma, lam, s, x = sp.symbols("theta gamma lambda s x", positive=True)
alpha, n_f, n_r, u, q = sp.symbols("alpha n_f n_r u q", positive=True)
a, b, tau, ell, S = sp.symbols("a b tau ell S", positive=True)
eta, B, nu, z = sp.symbols("eta B nu z", positive=True)


@functools.cache
def wishart_edge():
    """``(t*, E, sigma_TW)`` for ``z(t) = p/t + N/(1 - t)``."""
    zt = p / t + N / (1 - t)
    t_star = sp.sqrt(p) / (sp.sqrt(p) + sp.sqrt(N))
    assert sp.simplify(sp.diff(zt, t).subs(t, t_star)) == 0
    E = sp.simplify(zt.subs(t, t_star))
    scale = sp.simplify(sp.diff(zt, t, 2).subs(t, t_star) / 2)
    return t_star, E, scale   # sigma_TW = scale ** (1/3)


def wishart_edge_check():
    """Differences to ``(sqrt p + sqrt N)^2`` and Johnstone's cubed scale (both 0)."""
    _, E, scale = wishart_edge()
    johnstone = (sp.sqrt(p) + sp.sqrt(N)) ** 3 * (1 / sp.sqrt(p) + 1 / sp.sqrt(N))
    return (sp.simplify(E - (sp.sqrt(p) + sp.sqrt(N)) ** 2),
            sp.simplify(scale - johnstone))


@functools.cache
def spike():
    """Spike location, its excess over the edge and its slope in ``theta``."""
    loc = theta * (1 + gamma / (theta - 1))
    excess = sp.factor(sp.simplify((loc - (1 + sp.sqrt(gamma)) ** 2)
                                   .subs(theta, 1 + x)))
    slope = sp.simplify(sp.diff(loc, theta).subs(theta, 1 + x))
    return loc, excess, slope


def spike_check():
    """``excess - (x - sqrt gamma)^2 / x`` (0): the spike is above the edge and
    increasing in ``theta`` exactly when ``x = theta - 1 > sqrt gamma``."""
    _, excess, _ = spike()
    return sp.simplify(excess - (x - sp.sqrt(gamma)) ** 2 / x)


def spike_secular_residual(gamma_val, theta_val):
    """``s G(lambda) - 1`` at the spike, with ``G`` the Marchenko-Pastur
    transform of the bulk of ``K/n`` (``W/n = gamma * MP(1/gamma)``); zero above
    the BBP point."""
    g, th = sp.nsimplify(gamma_val), sp.nsimplify(theta_val)
    c = 1 / g
    lam_ = th * (1 + g / (th - 1))
    zz = lam_ / g                          # argument of MP(c) after rescaling
    lo, hi = (1 - sp.sqrt(c)) ** 2, (1 + sp.sqrt(c)) ** 2
    m = ((1 - c - zz) + sp.sqrt(zz - lo) * sp.sqrt(zz - hi)) / (2 * c * zz)
    G = -m / g                              # (1/n) tr (lambda - W/n)^{-1}
    return sp.N(th * G - 1, 30)


@functools.cache
def folded_normal():
    """Mean and variance of ``|Z|``, ``Z ~ N(q, 1)``."""
    w = sp.Symbol("w", real=True)
    dens = sp.exp(-(w - q) ** 2 / 2) / sp.sqrt(2 * sp.pi)
    mean = sp.simplify(sp.integrate(w * dens, (w, 0, sp.oo))
                       - sp.integrate(w * dens, (w, -sp.oo, 0)))
    second = sp.simplify(sp.integrate(w**2 * dens, (w, -sp.oo, sp.oo)))
    return mean, sp.simplify(second - mean**2)


def folded_normal_check():
    """Difference to THEORY 11's ``mbar`` (0)."""
    mean, _ = folded_normal()
    mbar = sp.sqrt(2 / sp.pi) * sp.exp(-q**2 / 2) + q * sp.erf(q / sp.sqrt(2))
    return sp.simplify((mean - mbar).rewrite(sp.erf))


@functools.cache
def outlier_quadratic():
    """Eliminate ``t`` from ``lambda = s F(t)`` and ``lambda = p/t + F(t)``.

    Returns the quadratic in ``lambda`` (as a polynomial expression set to 0)
    with ``F(t) = n_f a / (1 - a t) - n_r b / (1 + b t)``, ``a n_f = alpha``,
    ``b n_r = 1 - alpha``, ``s = theta`` (unit ``sigma_p``), and the value of
    ``t`` at the outlier.
    """
    F = alpha / (1 - a * t) - (1 - alpha) / (1 + b * t)
    # subtracting the two equations: F (s - 1) = p / t
    t_sol = sp.solve(sp.Eq(F * (theta - 1), p / t).subs(F, lam / theta), t)[0]
    t_out = sp.simplify(t_sol)
    # lambda = theta F(t_out); divide by lambda (the outlier is not 0)
    eq = sp.numer(sp.together(sp.cancel((lam - theta * F.subs(t, t_out)) / lam)))
    poly = sp.Poly(sp.expand(eq), lam)
    assert poly.degree() == 2, poly
    quad = sp.expand(sp.simplify(eq / poly.LC()))
    return quad, t_out


def outlier_quadratic_check():
    """Difference to THEORY 11's quadratic (0) with ``tau = p theta/(theta-1)``."""
    quad, t_out = outlier_quadratic()
    tau_ = p * theta / (theta - 1)
    theory = (lam**2 + (tau_ * (b - a) + theta * (1 - 2 * alpha)) * lam
              - tau_**2 * a * b
              - theta * tau_ * (alpha * b + (1 - alpha) * a))
    diff = sp.simplify(quad - sp.expand(theory))
    # alpha b + (1 - alpha) a = alpha (1 - alpha)(1/n_r + 1/n_f)
    ident = sp.simplify((alpha * b + (1 - alpha) * a).subs(
        {a: alpha / n_f, b: (1 - alpha) / n_r})
        - alpha * (1 - alpha) * (1 / n_f + 1 / n_r))
    return diff, sp.simplify(t_out - tau_ / lam), ident


@functools.cache
def rate_quadratic():
    """``d >> n`` quadratic in ``ell = kappa_+ / tau`` (set to 0)."""
    quad, _ = outlier_quadratic()
    tau_ = p * theta / (theta - 1)
    scaled = sp.expand(quad.subs(lam, ell * tau_) / tau_**2)
    # theta = u d / n = u (p + 1) / n;  p -> infinity
    lim = sp.limit(scaled.subs(theta, u * (p + 1) / n), p, sp.oo)
    lim = sp.expand(lim.subs({a: alpha / n_f, b: (1 - alpha) / n_r}))
    return sp.collect(lim, ell)


def rate_fn():
    """Lambdified ``r(u; n, n_f, alpha)`` from the positive root."""
    lim = rate_quadratic()
    A, Bc, C = (sp.Poly(lim, ell).all_coeffs())
    root = (-Bc + sp.sqrt(Bc**2 - 4 * A * C)) / (2 * A)
    r = n * root / (1 + u)
    return sp.lambdify((u, n, n_f, alpha), r.subs(n_r, n - n_f), "math")


def rate_asymptotics():
    """Limits of ``r(u) = n l(u) / (1 + u)`` with ``n = n_r + n_f``.

    Returns ``{"r0_root": residual of l = alpha/n_f at u = 0 (0),
    "r0_other": the other root (negative)}`` and, for ``alpha`` in
    ``{1/10, 1/2, 9/10}``, the triple ``(lim u r, lim sqrt(u) r, lim r)``.
    """
    lim = rate_quadratic()
    at0 = lim.subs(u, 0)
    out = {"r0_root": sp.simplify(at0.subs(ell, alpha / n_f)),
           "r0_other": [sp.simplify(r) for r in sp.solve(at0, ell)
                        if sp.simplify(r - alpha / n_f) != 0]}
    A, Bc, C = sp.Poly(lim, ell).all_coeffs()
    for al in (sp.Rational(1, 10), sp.Rational(1, 2), sp.Rational(9, 10)):
        Ba, Ca = Bc.subs(alpha, al), C.subs(alpha, al)
        root = (-Ba + sp.sqrt(Ba**2 - 4 * A * Ca)) / (2 * A)
        ra = ((n_r + n_f) * root / (1 + u)).subs(n, n_r + n_f)
        out[al] = tuple(sp.simplify(sp.limit(ra * w, u, sp.oo))
                        for w in (u, sp.sqrt(u), 1))
    return out


@functools.cache
def crossing_limit():
    """Leading-order (large ``n``) solution ``S*`` of ``r(n S) = 1``."""
    lim = rate_quadratic()
    # r = 1  <=>  ell = (1 + u)/n
    eq = sp.expand(lim.subs(ell, (1 + u) / n).subs(u, n * S).subs(n_r, n - n_f) * n)
    lead = sp.limit(eq / n, n, sp.oo)
    sols = [r for r in sp.solve(sp.factor(lead), S) if r != 0]
    return sp.simplify(sols[0])


def self_mode_limit():
    """Root of ``(n/B - 1) eta (nu/n) / (2 - eta nu/n) = 1`` (``d >> n``)."""
    e = (n / B - 1) * eta * (nu / n) / (2 - eta * nu / n) - 1
    return sp.simplify(sp.solve(sp.numer(sp.together(e)), eta)[0])


def collective_identity():
    """``eta l / (2 - eta l) = -1 + (2/eta) / (2/eta - l)`` (0 when true)."""
    return sp.simplify(eta * ell / (2 - eta * ell) - (-1 + (2 / eta) / (2 / eta - ell)))


def local_resolvent_limit():
    """``R_ii`` with ``mtilde -> -1/z`` (``d >> n``): should be ``1/(nu - z)``."""
    R = -1 / (z * (1 + nu * (-1 / z)))
    return sp.simplify(R - 1 / (nu - z))


if __name__ == "__main__":
    t_star, E, scale = wishart_edge()
    print("Wishart edge:", sp.latex(E), " TW scale^3:", sp.latex(scale))
    print("  checks:", wishart_edge_check())
    loc, excess, slope = spike()
    print("spike:", sp.latex(loc), " excess (theta = 1 + x):", sp.latex(excess),
          " slope:", sp.latex(slope))
    print("  secular residual at gamma=4, theta=5:", spike_secular_residual(4, 5))
    print("folded normal mean:", sp.latex(folded_normal()[0]),
          " check:", folded_normal_check())
    quad, t_out = outlier_quadratic()
    print("outlier quadratic:", sp.latex(sp.collect(quad, lam)))
    print("  checks (diff, t - tau/lambda, identity):", outlier_quadratic_check())
    print("d >> n rate quadratic:", sp.latex(rate_quadratic()))
    print("asymptotics:", rate_asymptotics())
    print("crossing S* =", sp.latex(crossing_limit()))
    print("self mode (d >> n): eta =", self_mode_limit())
    print("collective identity:", collective_identity(),
          " local resolvent limit:", local_resolvent_limit())
