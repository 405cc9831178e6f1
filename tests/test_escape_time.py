"""Escape time from a perturbation law (THEORY section 4, issue 10 item 1).

``escape_time(..., perturbation_cov=S0 | perturbation_samples=D, horizon=T)`` is
the first ``t <= T`` with ``E||delta_t||^2 >= K E||delta_0||^2``. It is checked
against a reference that builds ``T`` as a dense ``p^2 x p^2`` matrix on the
*full* parameter space (no restriction to ``U``) by enumerating every minibatch
(``tests/reference.py``), and iterates ``vec(Sigma_t)`` directly; directions
outside ``U`` and the cross terms between ``U`` and its complement are carried
by the reference as they are, so the restricted computation is tested, not
restated.

Tolerances. The reference and the package compute the same numbers by
different roundings (enumeration in ``R^p`` vs ``r x r`` coordinates of ``U``),
``<= 1e-12`` relative per step; over the <= 60 steps compared, 1e-8 relative is
a generous bound that still catches any wrong coefficient (those change the
curve at the 1e-2 level). A first passage is accepted when it is a first
passage of the reference curve up to ``1e-9`` relative at the threshold (so a
step where the reference lies within rounding of ``K`` may go either way).
"""

import math

import numpy as np
import numpy.testing as npt
import pytest
from hypothesis import currently_in_test_context, event, given, settings
from hypothesis import strategies as st

import simlab
from simlab.curvature import random_psd, random_rank_one
from simlab.simulate import linearized
from simlab.stability import (
    asymptotic_escape_time,
    escape_time,
    gaussian_span_moment,
    mean_square_growth,
    spectral_radius,
)

import reference
from strategies import SCHEMES, families, unlearning_problems


def uniform(lo, hi):
    """Evenly spread floats (``st.floats`` favours the ends and tiny values)."""
    return st.integers(0, 1000).map(lambda k: lo + (hi - lo) * k / 1000)


TIE = 1e-9          # relative slack at the threshold (rounding only)
CURVE_RTOL = 1e-8   # reference vs package growth curves


def _event(msg):
    """Label a hypothesis example (no-op in a plain parametrized test)."""
    if currently_in_test_context():
        event(msg)


def assert_first_passage(comp, f, K):
    """``comp`` is the first ``t >= 1`` with ``f[t] >= K`` (``f[0] = 1``), or ``inf``
    if there is none, up to rounding (``TIE``) at the threshold."""
    horizon = len(f) - 1
    if comp == np.inf:
        assert np.all(f[1:] < K * (1 + TIE)), (f.max(), K)
        _event("no crossing within the horizon")
        return
    t = int(comp)
    assert comp == t and 1 <= t <= horizon
    assert f[t] >= K * (1 - TIE), (t, f[t], K)
    assert np.all(f[1:t] < K * (1 + TIE)), (t, f[1:t].max(), K)
    _event("crossing at t = 1" if t == 1 else "crossing at t > 1")
    if np.any(np.abs(f[1:t + 1] / K - 1) < TIE):
        _event("reference within rounding of K")


def embed(H, rank_one, extra, rng):
    """The family in ``p + extra`` dimensions under a random rotation, so ``U`` is a
    proper, tilted subspace."""
    p = H.shape[1]
    Q = np.linalg.qr(rng.standard_normal((p + extra, p + extra)))[0][:, :p]
    if rank_one:
        return H @ Q.T
    out = Q @ H @ Q.T
    return 0.5 * (out + out.transpose(0, 2, 1))


def random_law(rng, p, kind):
    """A perturbation law with mass on and off ``U`` and cross terms: a random PSD
    ``(p, p)`` of random rank, or ``k`` rows."""
    k = int(rng.integers(1, p + 2))
    A = rng.standard_normal((k, p)) * np.exp(rng.uniform(-1, 1, (k, 1)))
    if kind == "cov":
        return dict(perturbation_cov=A.T @ A), A.T @ A
    return dict(perturbation_samples=A), A.T @ A / k


def pick_K(f, u):
    """An escape factor that the reference curve crosses for most ``u`` (at a time
    that depends on ``u``) and misses for the others."""
    top = f[1:].max()
    if top > 1.01:
        return 1.0 + (0.02 + 0.98 * u) * (1.2 * top - 1.0)
    return 1.5 + 100 * u


# ------------------------------------------------------------- vs reference


@settings(max_examples=100)
@given(fam=families(n_max=5, p_max=3), extra=st.integers(0, 2), scheme=SCHEMES,
       c=uniform(0.3, 4.0), u=uniform(0.0, 1.0), kind=st.sampled_from(["cov",
       "samples"]), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_sgd_first_passage_matches_reference(fam, extra, scheme, c, u, kind, seed,
                                             data):
    H, rank_one = fam
    rng = np.random.default_rng(seed)
    H = embed(H, rank_one, extra, rng)
    n, p = H.shape[0], H.shape[1]
    B = data.draw(st.integers(1, n))
    lam = np.linalg.eigvalsh(reference.dense(H).mean(axis=0))[-1]
    eta = c / lam
    law, S0 = random_law(rng, p, kind)
    horizon = 60
    f = reference.growth_curve(reference.operator_matrix(H, eta, B, scheme), S0,
                               horizon)
    K = pick_K(f, u)
    npt.assert_allclose(mean_square_growth(H, eta, B, scheme=scheme, steps=horizon,
                                           **law), f, rtol=CURVE_RTOL, atol=1e-13)
    for method in ("forward", "spectral", "auto"):
        comp = escape_time(H, eta, B, scheme=scheme, escape_factor=K, horizon=horizon,
                           method=method, **law)
        assert_first_passage(comp, f, K)


@settings(max_examples=100)
@given(prob=unlearning_problems(n_max=4, p_max=3), extra=st.integers(0, 2),
       scheme=SCHEMES, c=uniform(0.1, 2.0), u=uniform(0.0, 1.0),
       kind=st.sampled_from(["cov", "samples"]), seed=st.integers(0, 2**32 - 1))
def test_unlearning_first_passage_matches_reference(prob, extra, scheme, c, u, kind,
                                                    seed):
    retain, forget, B_r, B_f, alpha, rank_one = prob
    rng = np.random.default_rng(seed)
    Q_seed = int(rng.integers(2**32))
    retain = embed(retain, rank_one, extra, np.random.default_rng(Q_seed))
    forget = embed(forget, rank_one, extra, np.random.default_rng(Q_seed))
    p = retain.shape[1]
    lam = np.linalg.eigvalsh(reference.dense(retain).mean(axis=0))[-1]
    eta = c / lam
    law, S0 = random_law(rng, p, kind)
    horizon = 40
    kw = dict(scheme=scheme, forget=forget, forget_batch=B_f, alpha=alpha)
    Tmat = reference.operator_matrix(retain, eta, B_r, scheme, forget, B_f, alpha)
    f = reference.growth_curve(Tmat, S0, horizon)
    K = pick_K(f, u)
    npt.assert_allclose(mean_square_growth(retain, eta, B_r, steps=horizon, **kw,
                                           **law), f, rtol=CURVE_RTOL, atol=1e-13)
    for method in ("forward", "spectral"):
        comp = escape_time(retain, eta, B_r, escape_factor=K, horizon=horizon,
                           method=method, **kw, **law)
        assert_first_passage(comp, f, K)


@pytest.mark.parametrize("scheme", ["bernoulli", "with", "without"])
@pytest.mark.parametrize("rank_one", [True, False])
def test_fixed_cases_escape_and_outside_mass(scheme, rank_one):
    """Deterministic cases with both outcomes: a proper ``U`` (p = 5, rank 3), mass
    outside ``U`` that dilutes the growth, unlearning with ascent."""
    rng = np.random.default_rng(7)
    if rank_one:
        R, F = random_rank_one(4, 3, seed=31), random_rank_one(2, 3, seed=32)
    else:
        R, F = random_psd(4, 3, rank=1, seed=31), random_psd(2, 3, rank=1, seed=32)
    R, F = embed(R, rank_one, 2, np.random.default_rng(5)), embed(
        F, rank_one, 2, np.random.default_rng(5))
    lam = np.linalg.eigvalsh(reference.dense(R).mean(axis=0))[-1]
    eta = 0.5 / lam
    kw = dict(scheme=scheme, forget=F, forget_batch=1, alpha=0.35)
    A = rng.standard_normal((6, 5))
    S0 = A.T @ A
    Tmat = reference.operator_matrix(R, eta, 2, scheme, F, 1, 0.35)
    f = reference.growth_curve(Tmat, S0, 60)
    assert f[-1] > 50, "the case must escape for K = 50"
    comp = escape_time(R, eta, 2, escape_factor=50, horizon=60, perturbation_cov=S0,
                       **kw)
    assert_first_passage(comp, f, 50)
    assert comp < 60
    assert escape_time(R, eta, 2, escape_factor=1.2 * f.max(), horizon=60,
                       perturbation_cov=S0, **kw) == np.inf
    # Mass outside U: the same law in U plus an outside part is slower to escape.
    prob = simlab.stability.build_problem(R, 2, forget=F, forget_batch=1, alpha=0.35,
                                          scheme=scheme)
    Qb = np.linalg.qr(prob.basis)[0]
    P_in = Qb @ Qb.T
    S_in = P_in @ S0 @ P_in
    t_in = escape_time(R, eta, 2, escape_factor=50, horizon=60, perturbation_cov=S_in,
                       **kw)
    assert t_in <= comp


# ------------------------------------------------------------- invariants


def test_cross_terms_do_not_matter():
    """Zeroing the block ``Q^T Sigma_0 Q_perp`` leaves the curve unchanged (and the
    full-space reference, which keeps it, agrees)."""
    rng = np.random.default_rng(3)
    R = embed(random_rank_one(3, 3, seed=41), True, 3, rng)        # p = 6, r = 3
    F = embed(random_rank_one(2, 3, seed=42), True, 3, np.random.default_rng(3))
    eta = 0.7 / np.linalg.eigvalsh(R.T @ R / 3)[-1]
    kw = dict(scheme="without", forget=F, forget_batch=1, alpha=0.3)
    A = rng.standard_normal((7, 6))
    S0 = A.T @ A
    basis = simlab.stability.build_problem(R, 2, forget=F, forget_batch=1,
                                           alpha=0.3).basis
    Q = np.linalg.qr(np.concatenate([basis, rng.standard_normal((6, 3))], axis=1))[0]
    Z = Q.T @ S0 @ Q
    assert np.abs(Z[:3, 3:]).max() > 0.1                       # real cross terms
    Z[:3, 3:] = Z[3:, :3] = 0.0
    S_block = Q @ Z @ Q.T
    g_full = mean_square_growth(R, eta, 2, steps=40, perturbation_cov=S0, **kw)
    g_block = mean_square_growth(R, eta, 2, steps=40, perturbation_cov=S_block, **kw)
    npt.assert_allclose(g_full, g_block, rtol=1e-12)
    Tmat = reference.operator_matrix(R, eta, 2, "without", F, 1, 0.3)
    f = reference.growth_curve(Tmat, S0, 40)
    npt.assert_allclose(g_full, f, rtol=CURVE_RTOL)


def test_samples_equal_their_second_moment():
    rng = np.random.default_rng(4)
    R, F = random_psd(5, 4, rank=2, seed=51), random_psd(2, 4, rank=1, seed=52)
    D = rng.standard_normal((9, 4))
    kw = dict(scheme="with", forget=F, forget_batch=2, alpha=0.2, steps=50)
    npt.assert_allclose(mean_square_growth(R, 0.3, 3, perturbation_samples=D, **kw),
                        mean_square_growth(R, 0.3, 3, perturbation_cov=D.T @ D / 9,
                                           **kw), rtol=1e-12)


@pytest.mark.parametrize("scheme", ["bernoulli", "with", "without"])
def test_top_eigenmatrix_start_gives_asymptotic_time(scheme):
    """From the top (PSD) eigenmatrix of ``T``, ``E||delta_t||^2 = rho^t`` exactly,
    so the first passage is ``ceil(log K / log rho)``: the two predictors meet."""
    R, F = random_rank_one(5, 3, seed=61), random_rank_one(2, 3, seed=62)
    eta = 0.5 / np.linalg.eigvalsh(R.T @ R / 5)[-1]
    kw = dict(scheme=scheme, forget=F, forget_batch=1, alpha=0.5)
    Tmat = reference.operator_matrix(R, eta, 2, scheme, F, 1, 0.5)
    lam, V = np.linalg.eig(Tmat)
    top = np.argmax(lam.real)
    X = V[:, top].real.reshape(3, 3)
    X = 0.5 * (X + X.T)
    X *= np.sign(np.trace(X))
    assert np.linalg.eigvalsh(X)[0] > -1e-10 * np.abs(X).max()    # Perron: PSD
    rho = spectral_radius(R, eta, 2, **kw)
    npt.assert_allclose(lam.real[top], rho, rtol=1e-10)
    assert rho > 1.05
    for K in (10.0, 1e3, 1e6):
        t_asym = asymptotic_escape_time(R, eta, 2, escape_factor=K, **kw)
        npt.assert_allclose(t_asym, math.log(K) / math.log(rho))
        want = math.ceil(t_asym)
        assert abs(want - t_asym) > 1e-6                        # no tie
        for method in ("forward", "spectral"):
            assert escape_time(R, eta, 2, escape_factor=K, horizon=10 * want,
                               perturbation_cov=X, method=method, **kw) == want


def test_long_horizons_spectral_equals_forward():
    """rho just above 1 (crossing after thousands of steps) and rho < 1 with a huge
    horizon: both routes agree; both stop early on the stable case."""
    R = random_rank_one(6, 3, seed=71)
    lam = np.linalg.eigvalsh(R.T @ R / 6)
    eta_star = simlab.stability.critical_lr(R, 1, scheme="without")
    eta = eta_star * (1 + 1e-4)
    rho = spectral_radius(R, eta, 1, scheme="without")
    assert 1 < rho < 1 + 1e-3
    kw = dict(scheme="without", perturbation_cov=np.eye(3), escape_factor=20.0)
    t_fwd = escape_time(R, eta, 1, horizon=100_000, method="forward", **kw)
    t_spec = escape_time(R, eta, 1, horizon=100_000, method="spectral", **kw)
    assert 1_000 < t_fwd < 100_000
    assert t_fwd == t_spec
    g = mean_square_growth(R, eta, 1, steps=int(t_fwd), scheme="without",
                           perturbation_cov=np.eye(3))
    assert g[-1] >= 20.0 > g[:-1].max()
    # the dense 9 x 9 enumeration over the same ~28 000 steps: rounding grows
    # about linearly in t (2.5e-11 relative at the end here), 1e-9 leaves 40x
    ref = reference.growth_curve(reference.operator_matrix(R, eta, 1, "without"),
                                 np.eye(3), int(t_fwd))
    npt.assert_allclose(g, ref, rtol=1e-9)
    assert ref[-1] >= 20.0 > ref[:-1].max()
    eta = 0.5 / lam[-1]                                         # stable
    for method in ("forward", "spectral"):
        assert escape_time(R, eta, 1, horizon=10**12, method=method, **kw) == np.inf


def test_without_law_is_asymptotic():
    R = random_rank_one(5, 3, seed=81)
    eta = 1.9 / np.linalg.eigvalsh(R.T @ R / 5)[-1]
    rho = spectral_radius(R, eta, 2, scheme="without")
    assert rho > 1
    npt.assert_allclose(escape_time(R, eta, 2, scheme="without"),
                        math.log(1e3) / math.log(rho), rtol=1e-12)
    assert escape_time(R, eta, 2, scheme="without", escape_factor=np.inf,
                       perturbation_cov=np.eye(3), horizon=10) == np.inf


# ------------------------------------------------------------- Monte Carlo


def test_monte_carlo_mean_crosses_at_predicted_time():
    """``simulate.linearized`` starts from ``delta_0`` uniform on the unit sphere of
    ``U`` (here ``U = R^4``), whose second moment is ``I / 4``.

    With 20000 trajectories the relative standard error of the mean ``||delta_t||^2``
    is <= 2% up to t = 60 on this mildly noisy case, while the curve grows 24% per
    step near the crossing; the Monte-Carlo crossing is therefore within one step
    of the exact one (one step covers a threshold inside the error bar). Every step
    is also compared at 5 standard errors (false-failure rate < 1e-4 for 60
    correlated Gaussian z's). Teeth: at the asymptotic time ``ceil(log K / log
    rho) = 33`` the Monte-Carlo mean is far below ``K`` (the law matters).
    """
    R, F = random_rank_one(8, 4, seed=21), random_rank_one(2, 4, seed=22)
    eta = 0.3 / np.linalg.eigvalsh(R.T @ R / 8)[-1]
    kw = dict(scheme="without", forget=F, forget_batch=1, alpha=0.3)
    K, steps = 1e3, 60
    t_exact = escape_time(R, eta, 4, escape_factor=K, horizon=steps,
                          perturbation_cov=np.eye(4), **kw)
    f = mean_square_growth(R, eta, 4, steps=steps, perturbation_cov=np.eye(4), **kw)
    res = linearized(R, eta, 4, steps=steps, trajectories=20_000, escape_factor=np.inf,
                     seed=3, **kw)
    X = np.exp(res.log_sq_norm)
    mc = X.mean(axis=0)
    se = X.std(axis=0, ddof=1) / np.sqrt(X.shape[0])
    assert np.all(se[1:] / mc[1:] < 0.02)
    z = (mc[1:] - f[1:]) / se[1:]
    assert np.abs(z).max() < 5, np.abs(z).max()
    # the exact crossing, from the dense enumeration (16 x 16 operator, 140
    # outcomes): 39 steps
    ref = reference.growth_curve(
        reference.operator_matrix(R, eta, 4, "without", F, 1, 0.3), np.eye(4), steps)
    npt.assert_allclose(f, ref, rtol=1e-10)
    t_ref = int(np.flatnonzero(ref >= K)[0])
    assert t_exact == t_ref
    t_mc = int(np.flatnonzero(mc >= K)[0])
    assert abs(t_mc - t_exact) <= 1
    t_asym = math.ceil(asymptotic_escape_time(R, eta, 4, escape_factor=K, **kw))
    assert t_asym < t_ref
    assert (K - mc[t_asym]) / se[t_asym] > 20


# ------------------------------------------------------------- law helper


def test_gaussian_span_moment_monte_carlo():
    """Normalized Gaussian in a row span: 2e5 draws, every entry of E[u u^T] within
    5 standard errors (false-failure rate < 1e-4 over 10 entries). Teeth: the
    unnormalized ``F^T F / tr`` is rejected at > 20 standard errors."""
    rng = np.random.default_rng(9)
    F = np.diag([3.0, 1.0, 0.3]) @ rng.standard_normal((3, 4))
    F = np.concatenate([F, F[:1] + F[1:2]])                 # dependent row: rank 3
    A = gaussian_span_moment(F)
    assert A.shape == (3, 4)
    comp = A.T @ A / len(A)
    npt.assert_allclose(np.trace(comp), 1.0, rtol=1e-12)
    N = 200_000
    D = rng.standard_normal((N, 4)) @ F
    U = D / np.linalg.norm(D, axis=1, keepdims=True)
    outer = np.einsum("ij,ik->ijk", U, U).reshape(N, 16)
    mean, se = outer.mean(axis=0), outer.std(axis=0, ddof=1) / np.sqrt(N)
    iu = np.triu_indices(4)
    z = ((mean - comp.ravel()) / se).reshape(4, 4)[iu]
    assert np.abs(z).max() < 5, z
    naive = (F.T @ F / np.trace(F.T @ F)).ravel()
    assert np.abs((mean - naive) / se).max() > 20


def test_gaussian_span_moment_exact_cases():
    F = np.random.default_rng(1).standard_normal((5, 3))
    A = gaussian_span_moment(F, normalized=False)
    npt.assert_allclose(A.T @ A / len(A), F.T @ F, rtol=1e-12)
    Q = np.linalg.qr(np.random.default_rng(2).standard_normal((6, 3)))[0].T * 2.0
    A = gaussian_span_moment(Q)                             # isotropic in the span
    npt.assert_allclose(A.T @ A / len(A), Q.T @ Q / 12, atol=1e-12)
    A = gaussian_span_moment(np.diag([1.0, 2**-0.5]))        # closed form 2 - sqrt 2
    npt.assert_allclose(np.diag(A.T @ A / 2), [2 - 2**0.5, 2**0.5 - 1], rtol=1e-10)
    A = gaussian_span_moment([[0.0, 3.0, 4.0]])              # rank one: the direction
    npt.assert_allclose(A.T @ A, np.outer([0, 0.6, 0.8], [0, 0.6, 0.8]), atol=1e-15)


def test_gaussian_span_moment_feeds_escape_time():
    """The experiment's use: delta_0 = c @ F with F the curvature factors; the law as
    samples equals the same law as a (p, p) matrix."""
    R = random_rank_one(6, 8, seed=91)                       # p = 8 > n: U proper
    F = random_rank_one(2, 8, seed=92)
    H = np.concatenate([R, F])
    eta = 0.5 / np.linalg.eigvalsh(R @ R.T / 6)[-1]
    kw = dict(scheme="without", forget=F, forget_batch=1, alpha=0.3,
              escape_factor=100.0, horizon=200)
    A = gaussian_span_moment(H)
    t1 = escape_time(R, eta, 2, perturbation_samples=A, **kw)
    t2 = escape_time(R, eta, 2, perturbation_cov=A.T @ A / len(A), **kw)
    assert t1 == t2 < 200


# ------------------------------------------------------------- bad input


_H = np.ones((3, 2)) * [1.0, 0.5]


@pytest.mark.parametrize("kwargs, match", [
    (dict(perturbation_cov=np.eye(3)), "perturbation_cov.*shape"),
    (dict(perturbation_cov=np.ones(2)), "perturbation_cov.*ndim"),
    (dict(perturbation_cov=[[1.0, 0.5], [0.0, 1.0]]), "perturbation_cov.*symmetric"),
    (dict(perturbation_cov=np.diag([1.0, -1.0])), "positive semi-definite"),
    (dict(perturbation_cov=np.eye(2) * 1j), "perturbation_cov.*real"),
    (dict(perturbation_cov=np.eye(2) + 0j), "perturbation_cov.*real"),
    (dict(perturbation_cov=np.full((2, 2), np.nan)), "perturbation_cov.*NaN"),
    (dict(perturbation_cov=np.zeros((2, 2))), "perturbation_cov.*zero"),
    (dict(perturbation_cov=[["a", "b"], ["c", "d"]]), "perturbation_cov"),
    (dict(perturbation_samples=np.ones((4, 3))), "perturbation_samples.*shape"),
    (dict(perturbation_samples=np.zeros((4, 2))), "perturbation_samples.*zero"),
    (dict(perturbation_samples=np.ones((0, 2))), "perturbation_samples.*shape"),
    (dict(perturbation_samples=np.ones((1, 2)) * 1j), "perturbation_samples.*real"),
    (dict(perturbation_samples=np.ones(2)), "perturbation_samples.*ndim"),
    (dict(perturbation_samples=np.ones((1, 2)), perturbation_cov=np.eye(2)),
     "not both"),
    (dict(perturbation_cov=np.eye(2), horizon=None), "horizon"),
    (dict(perturbation_cov=np.eye(2), horizon=0), "horizon"),
    (dict(perturbation_cov=np.eye(2), horizon=2.5), "horizon"),
    (dict(horizon=10), "horizon"),
    (dict(perturbation_cov=np.eye(2), method="krylov"), "method"),
    (dict(perturbation_cov=np.eye(2), escape_factor=1.0), "escape_factor"),
    (dict(perturbation_cov=np.eye(2), eta=-1.0), "eta"),
])
def test_bad_input(kwargs, match):
    args = dict(eta=0.1, horizon=10)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        escape_time(_H, args.pop("eta"), 2, **args)


def test_bad_input_helpers():
    with pytest.raises(ValueError, match="steps"):
        mean_square_growth(_H, 0.1, 2, steps=0, perturbation_cov=np.eye(2))
    with pytest.raises(ValueError, match="perturbation law"):
        mean_square_growth(_H, 0.1, 2, steps=5)
    with pytest.raises(ValueError, match="factors.*real"):
        gaussian_span_moment(np.ones((2, 2)) * 1j)
    with pytest.raises(ValueError, match="factors.*nonzero"):
        gaussian_span_moment(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="factors.*ndim"):
        gaussian_span_moment(np.ones(3))
    with pytest.raises(ValueError, match="factors.*NaN"):
        gaussian_span_moment([[np.inf, 1.0]])
