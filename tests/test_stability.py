"""Exact operators, spectral radius and critical learning rate (THEORY 2-6, 11).

Tolerances: quantities computed two exact ways (closed form vs enumeration, dense
vs matrix-free) agree to 1e-9 relative, a few hundred ulps of accumulated
rounding in r^2 x r^2 eigenproblems; bisection is asked for 1e-13 relative.
"""

import numpy as np
import numpy.testing as npt
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from simlab import config
from simlab.curvature import (
    Factors,
    coherence_dial,
    random_psd,
    random_rank_one,
    to_dense,
)
from simlab.stability import (
    build_problem,
    critical_lr,
    escape_time,
    gram_operator,
    kappa_plus,
    mean_lower_bound,
    second_moment_matrix,
    second_moment_operator,
    spectral_radius,
)

import reference
from strategies import SCHEMES, families, unlearning_problems

RTOL = 1e-9


def _n_outcomes(n, B, scheme):
    return {"bernoulli": 2**n, "with": n**B, "without": 1}[scheme] or 1


def _sym(rng, p):
    A = rng.standard_normal((p, p))
    return A + A.T


# ---------------------------------------------------------------- operator


@given(families(), SCHEMES, st.data())
def test_operator_matches_enumeration_sgd(fam, scheme, data):
    H, _ = fam
    n, p = H.shape[0], H.shape[1]
    B = data.draw(st.integers(1, n))
    assume(_n_outcomes(n, B, scheme) <= 5000)
    eta = data.draw(st.floats(0.01, 2.0))
    X = _sym(np.random.default_rng(0), p)
    ref_T = reference.second_moment(H, eta, B, scheme, X)
    comp_T = second_moment_operator(H, eta, B, scheme=scheme)(X)
    npt.assert_allclose(comp_T, ref_T, rtol=RTOL, atol=RTOL * np.abs(ref_T).max())


@given(unlearning_problems(), SCHEMES, st.floats(0.01, 1.0))
def test_operator_matches_enumeration_unlearning(prob, scheme, eta):
    R, F, B_r, B_f, alpha, _ = prob
    assume(_n_outcomes(len(R), B_r, scheme) * _n_outcomes(len(F), B_f, scheme) <= 5000)
    X = _sym(np.random.default_rng(1), R.shape[1])
    ref_T = reference.second_moment(R, eta, B_r, scheme, X, F, B_f, alpha)
    comp_T = second_moment_operator(R, eta, B_r, scheme=scheme, forget=F,
                                    forget_batch=B_f, alpha=alpha)(X)
    npt.assert_allclose(comp_T, ref_T, rtol=RTOL, atol=RTOL * np.abs(ref_T).max())


@given(families(), SCHEMES, st.data())
def test_operator_maps_psd_to_psd(fam, scheme, data):
    H, _ = fam
    n, p = H.shape[0], H.shape[1]
    B = data.draw(st.integers(1, n))
    eta = data.draw(st.floats(0.01, 5.0))
    A = np.random.default_rng(2).standard_normal((p, p))
    Y = second_moment_operator(H, eta, B, scheme=scheme)(A @ A.T)
    lam = np.linalg.eigvalsh(Y)
    assert lam[0] >= -1e-10 * max(lam[-1], 1.0)


@given(unlearning_problems(rank_one=True), SCHEMES, st.floats(0.01, 1.0))
def test_gram_operator_equals_full(prob, scheme, eta):
    R, F, B_r, B_f, alpha, _ = prob
    R_op, K = gram_operator(R, eta, B_r, scheme=scheme, forget=F, forget_batch=B_f,
                            alpha=alpha)
    act = build_problem(R, B_r, scheme=scheme, forget=F, forget_batch=B_f,
                        alpha=alpha, restrict=False)
    G = act.hessians.T
    C = _sym(np.random.default_rng(3), K.shape[0])
    T = second_moment_operator(R, eta, B_r, scheme=scheme, forget=F,
                               forget_batch=B_f, alpha=alpha)
    ref = T(G @ C @ G.T)
    npt.assert_allclose(G @ R_op(C) @ G.T, ref, rtol=RTOL,
                        atol=RTOL * np.abs(ref).max())


def test_gram_operator_theory_form_bernoulli():
    """THEORY 6: C -> P C P + c diag(k_i^T C k_i), P = I - (eta/n) K."""
    G = random_rank_one(5, 8, seed=4)
    eta, B, n = 0.3, 2, 5
    R_op, K = gram_operator(G, eta, B, scheme="bernoulli")
    C = _sym(np.random.default_rng(5), n)
    P = np.eye(n) - eta / n * K
    c = eta**2 * (n / B - 1) / n**2
    ref = P @ C @ P + c * np.diag(np.diag(K @ C @ K))
    npt.assert_allclose(R_op(C), ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())


def test_gram_singular_spurious_eigenvalue_and_restriction():
    """THEORY 6 caveat: singular K gives a spurious eigenvalue 1 in the reduced
    operator; on the row space of K the spectrum equals rho(T)."""
    rng = np.random.default_rng(6)
    G = rng.standard_normal((6, 3))            # n = 6 > p = 3: K has rank 3
    eta, B = 0.05, 2
    R_op, K = gram_operator(G, eta, B)
    n = K.shape[0]
    full = np.array([R_op(E.reshape(n, n)).ravel() for E in np.eye(n * n)]).T
    lam_full = np.abs(np.linalg.eigvals(full))
    rho = spectral_radius(G, eta, B)
    assert rho < 1 - 1e-3
    assert np.any(np.isclose(lam_full, 1.0, atol=1e-10))   # the spurious 1
    lam_K, V = np.linalg.eigh(K)
    Vp = V[:, lam_K > 1e-10 * lam_K[-1]]
    r = Vp.shape[1]
    red = np.array([(Vp.T @ R_op(Vp @ E.reshape(r, r) @ Vp.T) @ Vp).ravel()
                    for E in np.eye(r * r)]).T
    npt.assert_allclose(np.max(np.abs(np.linalg.eigvals(red))), rho, rtol=RTOL)


# ------------------------------------------------------------------ radius


@given(families(n_max=5, p_max=3), SCHEMES, st.data())
def test_radius_matches_enumeration(fam, scheme, data):
    H, _ = fam
    n = H.shape[0]
    B = data.draw(st.integers(1, n))
    assume(_n_outcomes(n, B, scheme) <= 2000)
    eta = data.draw(st.floats(0.01, 2.0))
    ref_rho = reference.radius(H, eta, B, scheme)
    npt.assert_allclose(spectral_radius(H, eta, B, scheme=scheme), ref_rho, rtol=RTOL)


@given(unlearning_problems(n_max=4, p_max=3), SCHEMES, st.floats(0.01, 1.0))
def test_radius_matches_enumeration_unlearning(prob, scheme, eta):
    R, F, B_r, B_f, alpha, _ = prob
    assume(_n_outcomes(len(R), B_r, scheme) * _n_outcomes(len(F), B_f, scheme) <= 600)
    ref_rho = reference.radius(R, eta, B_r, scheme, F, B_f, alpha)
    comp_rho = spectral_radius(R, eta, B_r, scheme=scheme, forget=F, forget_batch=B_f,
                               alpha=alpha)
    npt.assert_allclose(comp_rho, ref_rho, rtol=RTOL)


@given(unlearning_problems(n_max=6, p_max=5), SCHEMES, st.floats(0.01, 1.0))
def test_radius_methods_agree(prob, scheme, eta):
    """dense = matrix-free Lanczos = power iteration; rank-one = dense input."""
    R, F, B_r, B_f, alpha, r1 = prob
    kw = dict(scheme=scheme, forget=F, forget_batch=B_f, alpha=alpha)
    rho = spectral_radius(R, eta, B_r, method="dense", **kw)
    dim = build_problem(R, B_r, **kw).dim
    if dim >= 2:
        npt.assert_allclose(spectral_radius(R, eta, B_r, method="lanczos", **kw), rho,
                            rtol=RTOL)
    if r1:
        npt.assert_allclose(spectral_radius(to_dense(R), eta, B_r, forget=to_dense(F),
                                            forget_batch=B_f, alpha=alpha,
                                            scheme=scheme), rho, rtol=RTOL)


def test_power_iteration_agrees():
    G = random_rank_one(8, 5, seed=7)
    for eta in (0.02, 0.1):
        npt.assert_allclose(spectral_radius(G, eta, 3, method="power"),
                            spectral_radius(G, eta, 3, method="dense"), rtol=1e-8)


def test_lanczos_large_rank_one_matches_dense_reduction(monkeypatch):
    """Above DENSE_MAX_DIM the automatic path is matrix-free; compare it with the
    dense path on the same (moderately sized) problem."""
    G = random_rank_one(30, 200, seed=8)
    eta = 0.8 / np.linalg.eigvalsh(G @ G.T / 30)[-1]
    lanczos = spectral_radius(G, eta, 5, scheme="without")
    monkeypatch.setattr(config, "DENSE_MAX_DIM", 64)
    npt.assert_allclose(spectral_radius(G, eta, 5, scheme="without"), lanczos,
                        rtol=RTOL)


def test_null_space_excluded():
    """p > n: rho on U is < 1 although the full operator has eigenvalue 1."""
    G = random_rank_one(4, 10, seed=9)
    eta = 0.1 / np.linalg.eigvalsh(G @ G.T / 4)[-1]
    T_full, basis = second_moment_matrix(G, eta, 2, restrict=False)
    assert basis is None
    assert np.isclose(np.max(np.abs(np.linalg.eigvals(T_full))), 1.0)
    assert spectral_radius(G, eta, 2) < 1.0


@given(families(), st.sampled_from(["bernoulli", "without"]), st.floats(0.01, 3.0))
def test_full_batch_is_gd(fam, scheme, c):
    H, _ = fam
    n = H.shape[0]
    lam = np.linalg.eigvalsh(to_dense(H).mean(axis=0))
    lam_pos = lam[lam > 1e-10 * lam[-1]]
    eta = c / lam[-1]
    npt.assert_allclose(spectral_radius(H, eta, n, scheme=scheme),
                        np.max((1 - eta * lam_pos) ** 2), rtol=RTOL, atol=1e-12)
    npt.assert_allclose(critical_lr(H, n, scheme=scheme), 2 / lam[-1], rtol=RTOL)


@given(unlearning_problems(), SCHEMES, st.floats(0.01, 3.0))
def test_mean_lower_bound(prob, scheme, eta):
    R, F, B_r, B_f, alpha, _ = prob
    kw = dict(scheme=scheme, forget=F, forget_batch=B_f, alpha=alpha)
    lower = mean_lower_bound(R, eta, B_r, **kw)
    assert spectral_radius(R, eta, B_r, **kw) >= lower * (1 - RTOL)


# ------------------------------------------------------------ critical lr


@given(families(n_max=6, p_max=4), SCHEMES, st.data())
def test_critical_lr_geneig_equals_bisection(fam, scheme, data):
    H, r1 = fam
    n = H.shape[0]
    B = data.draw(st.integers(1, n))
    eta_g = critical_lr(H, B, scheme=scheme)
    eta_b = critical_lr(H, B, scheme=scheme, method="bisect")
    npt.assert_allclose(eta_g, eta_b, rtol=1e-9)
    if r1 and scheme == "bernoulli":
        npt.assert_allclose(critical_lr(H, B, scheme="bernoulli", method="secular"),
                            eta_g, rtol=1e-9)
    # rho crosses 1 at eta*
    assert spectral_radius(H, eta_g * (1 - 1e-6), B, scheme=scheme) <= 1 + 1e-12
    assert spectral_radius(H, eta_g * (1 + 1e-6), B, scheme=scheme) > 1


@given(unlearning_problems(), SCHEMES)
def test_critical_lr_unlearning(prob, scheme):
    R, F, B_r, B_f, alpha, _ = prob
    kw = dict(scheme=scheme, forget=F, forget_batch=B_f, alpha=alpha)
    eta = critical_lr(R, B_r, **kw)
    kappa = kappa_plus(R, forget=F, alpha=alpha) if alpha > 0 else -np.inf
    scale = np.abs(np.linalg.eigvalsh(to_dense(R).mean(0))).max() + np.abs(
        np.linalg.eigvalsh(to_dense(F).mean(0))).max()
    if kappa > 1e-9 * scale:
        assert eta == 0.0
        assert spectral_radius(R, 1e-6 / scale, B_r, **kw) > 1
        return
    assume(kappa < -1e-6 * scale)   # keep clear of the singular boundary
    npt.assert_allclose(critical_lr(R, B_r, method="bisect", **kw), eta, rtol=1e-9)
    assert spectral_radius(R, eta * (1 - 1e-6), B_r, **kw) <= 1 + 1e-12
    assert spectral_radius(R, eta * (1 + 1e-6), B_r, **kw) > 1


@given(families(n_min=2, n_max=7, p_max=4), SCHEMES)
def test_critical_lr_nondecreasing_in_batch(fam, scheme):
    H, _ = fam
    n = H.shape[0]
    etas = [critical_lr(H, B, scheme=scheme) for B in range(1, n + 1)]
    assert np.all(np.diff(etas) >= -1e-9 * np.max(etas))


def test_critical_lr_secular_large_matrix_free():
    G = random_rank_one(150, 40, seed=10)
    npt.assert_allclose(critical_lr(G, 10, scheme="bernoulli", method="secular"),
                        critical_lr(G, 10, scheme="bernoulli"),
                        rtol=1e-8)


def test_ascent_everywhere_gives_zero_and_no_noise_gives_gd():
    R = random_rank_one(6, 3, seed=11)
    assert critical_lr(R, 2, forget=R[:2], forget_batch=1, alpha=1.0) == 0.0
    lam = np.linalg.eigvalsh(R.T @ R / 6)[-1]
    npt.assert_allclose(critical_lr(R, 6, scheme="without", forget=R, forget_batch=6,
                                    alpha=0.25), 2 / (0.5 * lam), rtol=RTOL)


def test_singular_mean_with_noise_is_zero():
    """alpha = 1/2 with forget = retain: M = 0 but sampling noise is positive."""
    R = random_rank_one(5, 3, seed=12)
    assert critical_lr(R, 2, forget=R, forget_batch=2, alpha=0.5) == 0.0
    with pytest.raises(ValueError, match="singular"):
        critical_lr(R, 5, scheme="without", forget=R, forget_batch=5, alpha=0.5)


@pytest.mark.parametrize("case", ["sgd-with", "unlearn-bernoulli"])
def test_escape_time_is_first_passage_from_top_eigenmatrix(case):
    """Without a perturbation law ``escape_time`` is the mean-square escape time
    from the top eigenmatrix of ``T``. Reference (no simlab code): ``T`` as a dense
    ``p^2 x p^2`` matrix on the full space by enumerating every minibatch
    (``reference.operator_matrix``), its Perron eigenmatrix ``X`` by a dense
    eigensolve, and the first ``t`` with ``tr T^t(X) >= K tr X`` found by iterating
    ``vec(Sigma)``. ``escape_time`` is not rounded to a step, so it must lie in
    ``(t - 1, t]``; the cases keep ``tr T^t(X) / K`` at least 1e-6 away from 1, far
    beyond the ~1e-13 rounding of the iteration, so the step is unambiguous."""
    H = coherence_dial(6, 3)                        # n = 6, p = 4, U = R^4
    if case == "sgd-with":
        eta, kw, ref_args = 0.7, dict(scheme="with"), ("with",)
    else:
        F = random_rank_one(2, 4, seed=5)
        eta = 0.7
        kw = dict(scheme="bernoulli", forget=F, forget_batch=1, alpha=0.3)
        ref_args = ("bernoulli", F, 1, 0.3)
    Tmat = reference.operator_matrix(H, eta, 2, *ref_args)
    lam, V = np.linalg.eig(Tmat)
    top = np.argmax(lam.real)
    X = V[:, top].real.reshape(4, 4)
    X = 0.5 * (X + X.T)
    X *= np.sign(np.trace(X))
    assert np.linalg.eigvalsh(X)[0] > -1e-10 * np.abs(X).max()      # Perron: PSD
    assert 1.05 < lam.real[top] < 1.5                             # a few dozen steps
    for K in (10.0, 1e3, 1e6):
        f = reference.growth_curve(Tmat, X, 400)
        t = int(np.argmax(f >= K))
        assert t > 1 and np.all(np.abs(f[1:t + 1] / K - 1) > 1e-6)
        comp = escape_time(H, eta, 2, escape_factor=K, **kw)
        assert t - 1 < comp <= t, (K, comp, t)
    # stable: the reference's largest |eigenvalue| is < 1, so E||delta_t||^2 only
    # shrinks from any start and never reaches K
    Tmat = reference.operator_matrix(H, 0.1, 6, "without")
    assert np.abs(np.linalg.eigvals(Tmat)).max() < 1
    assert escape_time(H, 0.1, 6, scheme="without") == np.inf


def test_dial_family_facts():
    for n, s in [(10, 1), (10, 4), (12, 12)]:
        H = coherence_dial(n, s)
        assert H.shape == (n, n - s + 1)
        npt.assert_allclose(np.linalg.eigvalsh(H.T @ H / n)[-1], 2.0)
        npt.assert_allclose(critical_lr(H, n, scheme="without"), 1.0, rtol=RTOL)
        npt.assert_allclose(to_dense(coherence_dial(n, s, rank_one=False)),
                            to_dense(H))


def test_dense_full_rank_families():
    H = random_psd(5, 3, seed=13)
    for scheme in ("bernoulli", "with", "without"):
        npt.assert_allclose(spectral_radius(H, 0.2, 2, scheme=scheme),
                            reference.radius(H, 0.2, 2, scheme), rtol=RTOL)


# --------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs, match", [
    (dict(retain=np.full((3, 2), np.nan)), "retain"),
    (dict(retain=np.ones((3, 2, 3))), "retain"),
    (dict(retain=np.array([[[1.0, 2.0], [0.0, 1.0]]])), "symmetric"),
    (dict(retain=np.array([[[1.0, 0.0], [0.0, -1.0]]])), "positive semi-definite"),
    (dict(batch=0), "batch"),
    (dict(batch=4), "batch"),
    (dict(batch=1.5), "batch"),
    (dict(eta=0.0), "eta"),
    (dict(eta=-1.0), "eta"),
    (dict(eta=np.inf), "eta"),
    (dict(alpha=1.5), "alpha"),
    (dict(alpha=0.5), "forget"),
    (dict(scheme="replacement"), "scheme"),
    (dict(forget=np.ones((2, 5)), alpha=0.1), "forget"),
    (dict(forget=np.ones((2, 2)), forget_batch=3, alpha=0.1), "forget_batch"),
    (dict(forget=np.ones((2, 2, 2)), alpha=0.1), "forget"),
    (dict(method="qr"), "method"),
])
def test_bad_input(kwargs, match):
    args = dict(retain=np.ones((3, 2)), eta=0.1, batch=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        spectral_radius(args.pop("retain"), args.pop("eta"), args.pop("batch"),
                        **args)


def test_bad_input_critical_lr():
    with pytest.raises(ValueError, match="secular"):
        critical_lr(np.ones((3, 2)), 2, scheme="with", method="secular")
    with pytest.raises(ValueError, match="empty"):
        critical_lr(np.zeros((3, 2)), 2)
    with pytest.raises(ValueError, match="escape_factor"):
        escape_time(np.ones((3, 2)), 0.1, 2, escape_factor=0.5)


# ------------------------------------------------- rank-k factors (issue 13)
# Factors(G), G of shape (n, k, p), means H_i = sum_j g_ij g_ij^T. Truth: the
# dense family built by reference.dense_from_factors (explicit outer products)
# through the dense routes and the enumeration of reference.py. Tolerance
# 1e-10 relative: both sides are exact and differ by the rounding of r^2 x r^2
# eigenproblems in different (Gram vs eigen-) coordinates.

RK_TOL = 1e-10


def _rank_k_family(seed, n, k, p, n_f=None, k_f=None, inside=True):
    """Gaussian rank-k factors; forget factors are combinations of retain
    factor rows (inside the retain span) unless ``inside=False``."""
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((n, k, p)) * np.exp(rng.uniform(-1, 1, n))[:, None, None]
    if n_f is None:
        return G, None
    if inside:
        Gf = np.einsum("fkm,mp->fkp", rng.standard_normal((n_f, k_f, n * k)),
                       G.reshape(-1, p)) / np.sqrt(n * k)
    else:
        Gf = rng.standard_normal((n_f, k_f, p))
    return G, Gf


@pytest.mark.parametrize("scheme", ["bernoulli", "with", "without"])
@pytest.mark.parametrize("seed", [0, 1])
def test_rank_k_operator_matches_enumeration(scheme, seed):
    from simlab.curvature import Factors

    G, Gf = _rank_k_family(seed, 3, 2, 4, n_f=2, k_f=3)
    X = _sym(np.random.default_rng(seed + 10), 4)
    for alpha, forget in [(0.0, None), (0.3, Gf)]:
        ref = reference.second_moment(
            reference.dense_from_factors(G), 0.2, 2, scheme, X,
            None if forget is None else reference.dense_from_factors(Gf), 1, alpha)
        got = second_moment_operator(
            Factors(G), 0.2, 2, scheme=scheme, alpha=alpha, forget_batch=1,
            forget=None if forget is None else Factors(Gf))(X)
        npt.assert_allclose(got, ref, rtol=RK_TOL, atol=RK_TOL * np.abs(ref).max())


@pytest.mark.parametrize("scheme", ["bernoulli", "with", "without"])
@pytest.mark.parametrize("n, k, p", [(4, 3, 5), (6, 4, 30), (3, 2, 40)])
def test_rank_k_equals_dense(scheme, n, k, p):
    """rho(T), eta*, kappa_+, the mean bound, bounds and the first passage of
    rank-k factors equal the dense form (r = min(n k, p): dense and Lanczos
    routes)."""
    from simlab.curvature import Factors
    from simlab.stability import (
        unlearning_bound_lr,
        unlearning_direction_bound_lr,
    )

    G, Gf = _rank_k_family(n * 100 + p, n, k, p, n_f=2, k_f=2)
    R, F = Factors(G), Factors(Gf)
    Rd, Fd = reference.dense_from_factors(G), reference.dense_from_factors(Gf)
    eta_gd = 2.0 / np.linalg.eigvalsh(Rd.mean(axis=0))[-1]
    for alpha in (0.0, 0.2):
        fk = dict(forget=F, alpha=alpha, forget_batch=1) if alpha else {}
        fd = dict(forget=Fd, alpha=alpha, forget_batch=1) if alpha else {}
        for eta in (0.3 * eta_gd, 0.9 * eta_gd):
            a = spectral_radius(R, eta, 2, scheme=scheme, **fk)
            b = spectral_radius(Rd, eta, 2, scheme=scheme, **fd)
            npt.assert_allclose(a, b, rtol=RK_TOL)
            npt.assert_allclose(mean_lower_bound(R, eta, 2, scheme=scheme, **fk),
                                mean_lower_bound(Rd, eta, 2, scheme=scheme, **fd),
                                rtol=RK_TOL)
        npt.assert_allclose(critical_lr(R, 2, scheme=scheme, **fk),
                            critical_lr(Rd, 2, scheme=scheme, **fd), rtol=RK_TOL)
        npt.assert_allclose(
            unlearning_direction_bound_lr(R, 2, scheme=scheme, **fk),
            unlearning_direction_bound_lr(Rd, 2, scheme=scheme, **fd), rtol=RK_TOL)
        npt.assert_allclose(unlearning_bound_lr(R, 2, **fk),
                            unlearning_bound_lr(Rd, 2, **fd), rtol=RK_TOL)
    npt.assert_allclose(kappa_plus(R, forget=F, alpha=0.6),
                        kappa_plus(Rd, forget=Fd, alpha=0.6), rtol=RK_TOL,
                        atol=RK_TOL * eta_gd**-1)
    law = dict(perturbation_cov=np.eye(p), horizon=500)
    assert (escape_time(R, 1.1 * eta_gd, 2, scheme=scheme, **law)
            == escape_time(Rd, 1.1 * eta_gd, 2, scheme=scheme, **law))


def test_rank_k_is_not_split_into_rank_one_samples():
    """Treating the k outputs of a sample as k rank-one samples drops the cross
    terms g_ia g_ib^T of H_i X H_i: a different operator. Factors keeps them."""
    from simlab.curvature import Factors

    G, _ = _rank_k_family(7, 4, 3, 6)
    Hd = reference.dense_from_factors(G)
    eta = 1.0 / np.linalg.eigvalsh(Hd.mean(0))[-1]
    exact = reference.radius(Hd, eta, 2, "bernoulli")
    npt.assert_allclose(spectral_radius(Factors(G), eta, 2, scheme="bernoulli"),
                        exact, rtol=RK_TOL)
    # the split family (n k rows, mean H / k) at the same mean step 3 eta and
    # the same sampled fraction: same mean dynamics, different noise
    split = G.reshape(-1, 6)
    npt.assert_allclose(mean_lower_bound(split, 3 * eta, 6),
                        mean_lower_bound(Factors(G), eta, 2), rtol=1e-10)
    eta_k = critical_lr(Factors(G), 1, scheme="bernoulli")
    npt.assert_allclose(eta_k, critical_lr(Hd, 1, scheme="bernoulli"), rtol=RK_TOL)
    eta_split = critical_lr(split, 3, scheme="bernoulli") / 3
    assert abs(eta_split - eta_k) > 0.05 * eta_k     # measured: 14 % apart


@pytest.mark.parametrize("scheme", ["bernoulli", "with", "without"])
def test_rank_k_gram_operator(scheme):
    """T(F^T C F) = F^T R(C) F in the n k Gram coordinates (THEORY 6 extended)."""
    from simlab.curvature import Factors

    G, Gf = _rank_k_family(3, 3, 2, 5, n_f=2, k_f=2)
    R_op, K = gram_operator(Factors(G), 0.2, 2, scheme=scheme, forget=Factors(Gf),
                            forget_batch=1, alpha=0.3)
    F = np.concatenate([G, Gf]).reshape(-1, 5)
    npt.assert_allclose(K, F @ F.T, rtol=1e-14)
    C = _sym(np.random.default_rng(8), K.shape[0])
    ref = reference.second_moment(reference.dense_from_factors(G), 0.2, 2, scheme,
                                  F.T @ C @ F, reference.dense_from_factors(Gf), 1,
                                  0.3)
    npt.assert_allclose(F.T @ R_op(C) @ F, ref, rtol=RK_TOL,
                        atol=RK_TOL * np.abs(ref).max())


def test_factors_rank_one_and_mixed():
    """Factors with k = 1 is the rank-one family; rank-one forget factors mix
    with rank-k retain factors (zero-padded rows add nothing)."""
    from simlab.curvature import Factors

    G, Gf = _rank_k_family(4, 5, 3, 7, n_f=3, k_f=1)
    g1 = G[:, 0, :]
    assert spectral_radius(Factors(g1[:, None, :]), 0.1, 2) == spectral_radius(
        g1, 0.1, 2)
    a = spectral_radius(Factors(G), 0.05, 2, forget=Gf[:, 0, :], alpha=0.3)
    b = spectral_radius(reference.dense_from_factors(G), 0.05, 2,
                        forget=reference.dense_from_factors(Gf), alpha=0.3)
    npt.assert_allclose(a, b, rtol=RK_TOL)


@pytest.mark.parametrize("bad, match", [
    (np.full((2, 2, 3), np.nan), "NaN"),
    (np.ones((2, 3, 4, 5)), "ndim"),
    (np.ones((0, 2, 3)), "n, k, p >= 1"),
    (np.ones((2, 2, 3)) * 1j, "real"),
])
def test_factors_bad_input(bad, match):
    from simlab.curvature import Factors

    with pytest.raises(ValueError, match=match):
        spectral_radius(Factors(bad), 0.1, 1)


def test_factors_representation_errors():
    from simlab.curvature import Factors

    G = np.ones((3, 2, 4))
    with pytest.raises(ValueError, match="same representation"):
        spectral_radius(Factors(G), 0.1, 1, forget=np.eye(4)[None], alpha=0.1)
    with pytest.raises(ValueError, match="p=5 but retain has p=4"):
        spectral_radius(Factors(G), 0.1, 1, forget=Factors(np.ones((2, 2, 5))),
                        alpha=0.1)
    with pytest.raises(ValueError, match="Factors"):    # (n, k, p) is not dense
        spectral_radius(G, 0.1, 1)


# --------------------------------------- matrix-free Davidson (issue 13 item 5)
# The Davidson solver (method "auto"/"davidson" above DENSE_MAX_DIM, and the
# matrix-free geneig of critical_lr) against the dense eigenproblems and the
# ARPACK Lanczos solver it replaces: 1e-9 relative (both stop at residual
# 1e-12 |theta|; dense eigvalsh is exact to rounding).


def _davidson_cases():
    rng = np.random.default_rng(11)
    G = rng.standard_normal((12, 9))
    Gk = rng.standard_normal((6, 2, 9))
    D = reference.dense_from_factors(rng.standard_normal((6, 3, 5)))
    return [
        ("rank-one", G, G[:3].copy()),                          # forget = duplicates
        ("rank-k", Factors(Gk), Factors(Gk[:2].copy())),
        ("dense", D, D[:2].copy()),
    ]


@pytest.mark.parametrize("scheme", ["bernoulli", "with", "without"])
@pytest.mark.parametrize("case", [0, 1, 2])
def test_davidson_matches_dense(monkeypatch, scheme, case):
    name, R, F = _davidson_cases()[case]
    kws = [dict(), dict(forget=F, alpha=0.05, forget_batch=1)]
    dense = {}
    for i, kw in enumerate(kws):
        eta = critical_lr(R, 2, scheme=scheme, **kw)
        assert 0 < eta < np.inf
        dense[i] = (eta, [spectral_radius(R, c * eta, 2, scheme=scheme,
                                          method="dense", **kw)
                          for c in (0.5, 0.9, 1.2)])
    monkeypatch.setattr(config, "DENSE_MAX_DIM", 2)       # force matrix-free
    for i, kw in enumerate(kws):
        eta, rhos = dense[i]
        npt.assert_allclose(critical_lr(R, 2, scheme=scheme, **kw), eta, rtol=RTOL)
        for c, rho in zip((0.5, 0.9, 1.2), rhos, strict=True):
            npt.assert_allclose(spectral_radius(R, c * eta, 2, scheme=scheme, **kw),
                                rho, rtol=RTOL)


def test_davidson_matches_lanczos_gaussian_family():
    """The benchmark family of bench_radius.py, small: rank-one Gaussian, SGD
    and unlearning with duplicated forget samples near kappa_+ = 0."""
    G = random_rank_one(60, 600, seed=12) / np.sqrt(600)
    F = G[:6].copy()
    for kw in (dict(), dict(forget=F, alpha=0.05)):
        for scheme, B in (("without", 1), ("with", 10), ("bernoulli", 30)):
            eta = critical_lr(G, B, scheme=scheme, **kw)
            ref = critical_lr(G, B, scheme=scheme, method="geneig-lanczos", **kw)
            npt.assert_allclose(eta, ref, rtol=RTOL)
            for c in (0.5, 0.9):
                npt.assert_allclose(
                    spectral_radius(G, c * eta, B, scheme=scheme, **kw),
                    spectral_radius(G, c * eta, B, scheme=scheme, method="lanczos",
                                    **kw), rtol=RTOL)


@pytest.mark.parametrize("n_f, kinds", [(2, {"lowrank", "complement"}),
                                        (9, {"dense"})])
@pytest.mark.parametrize("scheme", ["with", "without"])
def test_operator_action_group_forms(scheme, n_f, kinds):
    """The factored forms of the set-mean terms H_s Y H_s (small set through
    its factors, the other through M) equal the dense operator matrix."""
    from simlab.stability.operator import (
        OperatorAction,
        operator_matrix,
        quadratic_matrix,
    )

    rng = np.random.default_rng(13)
    G = rng.standard_normal((12, 10))
    prob = build_problem(G, 3, scheme=scheme, forget=G[:n_f].copy(), alpha=0.3,
                         forget_batch=1)
    act = OperatorAction(prob)
    assert {g[1] for g in act._groups} == kinds
    Y = _sym(rng, prob.dim)
    ref = (quadratic_matrix(act.prob) @ Y.ravel()).reshape(Y.shape)
    npt.assert_allclose(act.quadratic(Y), ref, rtol=1e-10,
                        atol=1e-10 * np.abs(ref).max())
    diag = act.quadratic_diagonal()
    npt.assert_allclose(diag.ravel(), np.diag(quadratic_matrix(act.prob)),
                        rtol=1e-10, atol=1e-10 * np.abs(diag).max())
    # packed triangles (trmm/syrk/syr2k kernels) against the same dense matrix
    tol = dict(rtol=1e-10, atol=1e-10 * np.abs(ref).max())
    assert act._fast
    npt.assert_allclose(act.unpack(act.pack(Y)), Y, rtol=1e-15)
    npt.assert_allclose(act.unpack(act.quadratic_packed(act.pack(Y))), ref, **tol)
    eta = 0.05
    ref_t = (operator_matrix(act.prob, eta) @ Y.ravel()).reshape(Y.shape)
    npt.assert_allclose(act.unpack(act.operator_packed(eta, act.pack(Y))), ref_t,
                        **tol)
    # a symmetric entrywise scale on both sides: S o R(S o Y)
    S = _sym(rng, prob.dim)
    Sp, v = act.entries(S), act.pack(Y)
    npt.assert_allclose(act._rest_packed(v, scale=Sp),
                        Sp * act._rest_packed(Sp * v), rtol=1e-12,
                        atol=1e-12 * np.abs(Sp * act._rest_packed(Sp * v)).max())
    # single precision: the BLAS-3 part rounded to float32 (epsilon 6e-8;
    # sums of <= 24 terms of these sizes: 1e-5 of the largest entry leaves a
    # margin of ~10 over the worst case)
    for single_ref, got in (
            (ref, act.quadratic_packed(v, single=True)),
            (ref_t, act.operator_packed(eta, v, single=True))):
        npt.assert_allclose(act.unpack(got), single_ref, rtol=0,
                            atol=1e-5 * np.abs(single_ref).max())


def test_simulate_accepts_factors_through_the_dense_form():
    """simlab.simulate.linearized takes Factors (expanded to dense Hessians,
    the simulator's representation): same seed, same trajectories."""
    from simlab import simulate

    G, _ = _rank_k_family(9, 5, 2, 4)
    a = simulate.linearized(Factors(G), 0.05, 2, steps=30, trajectories=3, seed=1)
    b = simulate.linearized(reference.dense_from_factors(G), 0.05, 2, steps=30,
                            trajectories=3, seed=1)
    npt.assert_allclose(a.log_sq_norm, b.log_sq_norm, rtol=1e-12, atol=1e-12)


def test_blas_threads_policy_and_values(monkeypatch):
    """config.BLAS_THREADS applies from BLAS_THREADS_MIN_DIM on, one thread
    below. Threads only reorder BLAS sums, so both settings give the same
    eigenvalue up to the solver's stopping error (``_DAVIDSON_ETOL`` = 1e-11
    relative each): rtol 1e-10."""
    import os

    from threadpoolctl import threadpool_info

    from simlab._blas import blas_threads

    def blas_threads_now():
        return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}

    want = min(2, os.cpu_count() or 1)
    monkeypatch.setattr(config, "BLAS_THREADS", want)
    monkeypatch.setattr(config, "BLAS_THREADS_MIN_DIM", 40)
    with blas_threads(39):
        assert blas_threads_now() == {1}
    with blas_threads(40):
        assert blas_threads_now() == {want}
    G = random_rank_one(60, 300, seed=5) / np.sqrt(300)
    monkeypatch.setattr(config, "DENSE_MAX_DIM", 2)
    values = []
    for threads in (1, want):
        monkeypatch.setattr(config, "BLAS_THREADS", threads)
        eta = critical_lr(G, 5, forget=G[:6].copy(), alpha=0.05)
        values.append((eta, spectral_radius(G, 0.9 * eta, 5)))
    npt.assert_allclose(values[0], values[1], rtol=1e-10)


def _secular_case(n, r, operator, seed):
    """An unlearning problem (rank-one, ``without``, forget = the first two
    retain samples), its action, and for ``operator`` ("T": ``eta`` = 0.02;
    "geneig": the scaled operator of ``critical_lr``) the scale ``S``, the
    diagonal of the operator and the keywords of the preconditioner."""
    from simlab.stability.operator import OperatorAction

    rng = np.random.default_rng(seed)
    G = rng.standard_normal((n, r))
    # alpha < n_f / (n + n_f): kappa_+ < 0 (M positive definite)
    prob = build_problem(G, 3, scheme="without", forget=G[:2].copy(), alpha=0.02,
                         forget_batch=1)
    act = OperatorAction(prob)
    lam = act.lam
    assert lam[0] > 0
    if operator == "T":
        eta = 0.02
        sc, diag = np.ones((lam.size, lam.size)), act.diagonal(eta)
        kw = dict(coef=eta**2)
    else:
        sc = np.sqrt(2.0 / (lam[:, None] + lam[None, :]))
        diag, kw = sc * sc * act.quadratic_diagonal(), dict(scale=sc)
    return act, sc, diag, kw, rng


def _dense_sampling_terms(act, sc, kw):
    """The packed ``q_i = pack(S o H_i)`` and ``c_i`` (``eta^2 a_i`` for T)."""
    Gr = act.prob.hessians
    c = act.prob.noise_coef * kw.get("coef", 1.0)
    q = np.array([act.pack(sc * np.outer(g, g)) for g in Gr])
    return q, c


@pytest.mark.parametrize("operator", ["T", "geneig"])
@pytest.mark.parametrize("shape", [(10, 7), (50, 40)])
def test_secular_preconditioner_is_the_dense_woodbury_solve(operator, shape):
    """_SecularPreconditioner(w, theta) equals the dense solve (theta I -
    P)^{-1} w with P = diag(d - sum_i c_i S^2 g_i^2 g_i^2) + sum_i c_i q_i q_i^T
    over every sample (packed coordinates; d the operator's diagonal, q_i =
    pack(S o H_i); duplicate rows, here the forget samples, merged by the
    solver and not here). At r = 40 the basis of S^2 / (theta - d) has rank
    below r, so the low-rank capacitance matrix is what is tested there.
    theta = 1.5 lambda_max(P) keeps the 28- and 820-dimensional systems
    well conditioned (condition number of theta I - P <= 3). Double
    precision (basis tolerance 1e-12): rtol 1e-9. Single precision (the
    default; basis tolerance 1e-5, Frobenius, and float32 BLAS): within 1e-4
    of the largest entry (1e-5 times the condition number 3, with a margin)."""
    from simlab.stability.radius import _SecularPreconditioner

    act, sc, diag, kw, rng = _secular_case(*shape, operator, seed=21)
    assert _SecularPreconditioner.pays(act)
    q, c = _dense_sampling_terms(act, sc, kw)
    Gr = act.prob.hessians
    d = act.entries(diag) - sum(
        c[i] * act.entries(sc**2 * np.outer(Gr[i]**2, Gr[i]**2)) for i in range(c.size))
    P = np.diag(d) + (q.T * c) @ q
    theta = 1.5 * np.linalg.eigvalsh(P)[-1]
    A = theta * np.eye(P.shape[0]) - P
    assert np.linalg.cond(A) <= 3.0
    w = rng.standard_normal(P.shape[0])
    ref = np.linalg.solve(A, w)
    solve = _SecularPreconditioner(act, diag, single=False, **kw)
    npt.assert_allclose(solve(w, theta), ref, rtol=1e-9, atol=1e-12 * np.abs(ref).max())
    if shape[1] == 40:
        assert solve.U.shape[1] < shape[1]          # a low-rank basis was used
    solve = _SecularPreconditioner(act, diag, **kw)
    npt.assert_allclose(solve(w, theta), ref, rtol=0, atol=1e-4 * np.abs(ref).max())


@pytest.mark.parametrize("operator", ["T", "geneig"])
def test_secular_start_is_the_top_eigenvector_of_p(operator):
    """_SecularPreconditioner.start gives the top eigenvector of P = diag(d)
    + sum_i c_i q_i q_i^T (dense here; d the operator's diagonal less the
    sampling one) in double precision (basis tolerance 1e-12; Newton's
    method on 1 / mu stops at steps of 1e-8 relative, so the root is within
    ~1e-16 by quadratic convergence; ARPACK at 1e-9):
    within 1e-6 (ARPACK's error over the gap to the next eigenvalue, >= 2e-4
    here, with a margin). Its fallback (no room for the basis) is the
    single-sample mode: the top eigenvector of diag(d_A) + c_i q_i q_i^T (d_A
    the whole diagonal) for the sample whose top eigenvalue (secular root)
    is the largest, over every sample (all are candidates: N = 50 < 64), to
    1e-6 as well."""
    from simlab.stability import radius

    act, sc, diag, kw, _ = _secular_case(50, 40, operator, seed=5)
    q, c = _dense_sampling_terms(act, sc, kw)
    dA = act.entries(diag)
    Gr = act.prob.hessians
    d = dA - sum(c[i] * act.entries(sc**2 * np.outer(Gr[i]**2, Gr[i]**2))
                 for i in range(c.size))
    lam, V = np.linalg.eigh(np.diag(d) + (q.T * c) @ q)
    assert lam[-1] - lam[-2] >= 2e-4 * lam[-1]
    v = radius._SecularPreconditioner(act, diag, single=False, **kw).start(-np.inf)
    npt.assert_allclose(v, V[:, -1] * np.sign(V[:, -1] @ v), rtol=0, atol=1e-6)

    tops = []
    for i in range(c.size):
        lam, V = np.linalg.eigh(np.diag(dA) + c[i] * np.outer(q[i], q[i]))
        tops.append((lam[-1], V[:, -1]))
    best = max(range(c.size), key=lambda i: tops[i][0])
    assert tops[best][0] > dA.max()
    v = radius._SecularPreconditioner(act, diag, **kw)._single_start(-np.inf)
    ref = tops[best][1] * np.sign(tops[best][1] @ v)
    npt.assert_allclose(v, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("start", ["top", "single"])
@pytest.mark.parametrize("scheme", ["bernoulli", "with", "without"])
def test_davidson_with_secular_preconditioner(monkeypatch, scheme, start):
    """eta* and rho(T) of an unlearning family, where the secular
    preconditioner and its start vector are used, equal the dense values:
    they change the path, never the limit (rtol 1e-9, as above). r = 30 makes
    the solver iterate (DENSE_MAX_DIM = 2). The start is P's top eigenvector
    (the default; so close here that the preconditioner may not be needed)
    or the single-sample mode (its fallback), with which the iteration must
    use the preconditioner: both calls are counted."""
    from simlab.stability import radius

    G = np.random.default_rng(11).standard_normal((36, 30))
    kw = dict(forget=G[:4].copy(), alpha=0.05)
    eta = critical_lr(G, 3, scheme=scheme, **kw)
    dense = [spectral_radius(G, c * eta, 3, scheme=scheme, method="dense", **kw)
             for c in (0.5, 0.9, 1.2)]
    monkeypatch.setattr(config, "DENSE_MAX_DIM", 2)
    calls, starts = [], []
    P = radius._SecularPreconditioner
    solve, begin = P.__call__, P.start if start == "top" else P._single_start
    monkeypatch.setattr(P, "__call__",
                        lambda self, w, theta: calls.append(1) or solve(self, w, theta))
    monkeypatch.setattr(P, "start",
                        lambda self, theta: starts.append(1) or begin(self, theta))
    npt.assert_allclose(critical_lr(G, 3, scheme=scheme, **kw), eta, rtol=RTOL)
    for c, rho in zip((0.5, 0.9, 1.2), dense, strict=True):
        npt.assert_allclose(spectral_radius(G, c * eta, 3, scheme=scheme, **kw), rho,
                            rtol=RTOL)
    assert len(starts) == 4
    assert start == "top" or len(calls) >= 3


@pytest.mark.parametrize("scheme", ["bernoulli", "without"])
def test_davidson_single_precision_phase_gives_the_dense_values(monkeypatch, scheme):
    """With the single-precision first phase switched on for small r
    (``_SINGLE_MIN_DIM = 2``; by default r >= 300), eta* and rho(T) of SGD and
    unlearning families equal the dense values to rtol 1e-9: the first phase
    runs on products rounded to float32 and the answer is accepted only on a
    double-precision residual. Both kinds of product are counted, so the test
    cannot pass with the phase skipped."""
    from simlab.stability import radius
    from simlab.stability.operator import OperatorAction

    G = np.random.default_rng(12).standard_normal((36, 30))
    cases = [dict(), dict(forget=G[:4].copy(), alpha=0.05)]
    dense = []
    for kw in cases:
        eta = critical_lr(G, 3, scheme=scheme, **kw)
        dense.append((eta, [spectral_radius(G, c * eta, 3, scheme=scheme,
                                            method="dense", **kw)
                            for c in (0.5, 0.9, 1.2)]))
    monkeypatch.setattr(config, "DENSE_MAX_DIM", 2)
    monkeypatch.setattr(radius, "_SINGLE_MIN_DIM", 2)
    calls = {True: 0, False: 0}
    rest = OperatorAction._rest_packed

    def counted(self, v, single=False, scale=None):
        calls[bool(single)] += 1
        return rest(self, v, single, scale)

    monkeypatch.setattr(OperatorAction, "_rest_packed", counted)
    for kw, (eta, rhos) in zip(cases, dense, strict=True):
        npt.assert_allclose(critical_lr(G, 3, scheme=scheme, **kw), eta, rtol=RTOL)
        for c, rho in zip((0.5, 0.9, 1.2), rhos, strict=True):
            npt.assert_allclose(spectral_radius(G, c * eta, 3, scheme=scheme, **kw),
                                rho, rtol=RTOL)
    assert calls[True] > 0 and calls[False] >= 8       # >= 1 per solve


def test_davidson_single_precision_phase_cannot_spoil_the_answer():
    """A first-phase product that is wrong by 1e-3 of the operator (far above
    the float32 rounding it stands for) only costs products: the second
    phase, on the exact product and its tolerances, still returns the top
    eigenvalue of the exact operator to 1e-9. A generic symmetric matrix with
    a gap of 5 % at the top; dense eigenvalue as the reference."""
    from simlab.stability.radius import _davidson_top

    rng = np.random.default_rng(5)
    n = 400
    Q = np.linalg.qr(rng.standard_normal((n, n)))[0]
    lam = np.sort(rng.uniform(0.0, 1.0, n))
    lam[-1] = 1.05
    A = (Q * lam) @ Q.T
    E = rng.standard_normal((n, n))
    E = 1e-3 * (E + E.T) / np.linalg.norm(E + E.T, 2)
    exact, wrong = [], []

    def matvec(v):
        exact.append(1)
        return A @ v

    def matvec_single(v):
        wrong.append(1)
        return (A + E) @ v, np.linalg.norm(A @ v)

    top = _davidson_top(matvec, np.diag(A).copy(), starts=[rng.standard_normal(n)],
                        matvec_single=matvec_single)
    npt.assert_allclose(top, np.linalg.eigvalsh(A)[-1], rtol=1e-9)
    assert wrong and len(exact) >= 2         # the exact phase did real work


def test_cholesky_coordinates_are_an_orthonormal_basis_and_change_nothing(monkeypatch):
    """Unlearning families whose distinct factor rows are well conditioned
    (here 40 Gaussian rows in R^200, the forget set duplicating 4 of them) are
    put in Cholesky coordinates instead of the Gram eigenbasis: X X^T equals
    the Gram matrix of all rows (duplicates included), the basis is
    orthonormal and reproduces X, and eta* and rho(T) equal the values of the
    eigenbasis route (forced by an unreachable condition threshold) to 1e-10
    (both are exact; they differ by rounding)."""
    from simlab.stability import operator

    G = random_rank_one(40, 200, seed=4) / np.sqrt(200)
    kw = dict(forget=G[:4].copy(), alpha=0.05)
    F = np.concatenate([G, kw["forget"]])
    X, basis = operator._cholesky_coordinates(F)
    B = basis()
    npt.assert_allclose(X @ X.T, F @ F.T, atol=1e-12)
    npt.assert_allclose(B.T @ B, np.eye(40), atol=1e-12)
    npt.assert_allclose(F @ B, X, atol=1e-12)
    prob = build_problem(G, 5, **kw)
    npt.assert_allclose(prob.hessians, X, atol=0)            # the route taken
    values = [critical_lr(G, 5, **kw)]
    values += [spectral_radius(G, c * values[0], 5, **kw) for c in (0.5, 0.9)]
    monkeypatch.setattr(operator, "_CHOLESKY_RCOND", np.inf)
    assert not np.allclose(build_problem(G, 5, **kw).hessians, X)
    ref = [critical_lr(G, 5, **kw)]
    ref += [spectral_radius(G, c * ref[0], 5, **kw) for c in (0.5, 0.9)]
    npt.assert_allclose(values, ref, rtol=1e-10)
    # dependent rows (more rows than dimensions), and nearly dependent ones
    # (lambda_min / lambda_max ~ 1e-14 here), take the eigenbasis route
    assert operator._cholesky_coordinates(random_rank_one(30, 20, seed=1)) is None
    near = np.concatenate([G, G[:1] + 1e-7 * G[1:2]])
    assert operator._cholesky_coordinates(near) is None
    # the condition estimate (20 power / inverse iteration steps) only has to
    # place lambda_min / lambda_max against a threshold four orders of
    # magnitude from the cut; here it is within 2 % (7-9 % on the benchmark
    # families, n = 200-2000): rtol 0.1
    L = np.linalg.cholesky(F[:40] @ F[:40].T)
    ev = np.linalg.eigvalsh(L @ L.T)
    npt.assert_allclose(operator._gram_rcond(L), ev[0] / ev[-1], rtol=0.1)


def test_davidson_single_precision_phase_out_of_range(monkeypatch):
    """Factors of size 1e12 overflow the single-precision products (the
    sampling term is ~|g|^8 ~ 1e96 > 3e38): the solver notices the non-finite
    product and starts over in double precision, so eta* scales exactly as
    |g|^-2 and rho(T) at the scaled learning rate is unchanged (rtol 1e-9)."""
    from simlab.stability import radius

    monkeypatch.setattr(config, "DENSE_MAX_DIM", 2)
    monkeypatch.setattr(radius, "_SINGLE_MIN_DIM", 2)
    G = np.random.default_rng(13).standard_normal((36, 30))
    kw = dict(forget=G[:4].copy(), alpha=0.05)
    eta = critical_lr(G, 3, **kw)
    rho = spectral_radius(G, 0.9 * eta, 3, **kw)
    big = 1e12 * G
    kw_big = dict(forget=big[:4].copy(), alpha=0.05)
    npt.assert_allclose(critical_lr(big, 3, **kw_big), 1e-24 * eta, rtol=RTOL)
    npt.assert_allclose(spectral_radius(big, 0.9e-24 * eta, 3, **kw_big), rho,
                        rtol=RTOL)
