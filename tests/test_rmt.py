"""Random-matrix predictions for the linear model (THEORY 11, simlab.theory.rmt).

Three layers:

1. the sympy derivation (``derivations/rmt_linear.py``) against the numeric
   implementation: limits, roots, branch conditions;
2. internal consistency of the implementation (quadratures, limits);
3. prediction vs simulation with simlab's exact code, on the seeded grid of
   ``derivations/rmt_errors.py``. Each function's docstring states its
   measured worst relative error; :data:`TOL` below holds those statements.
   The simulation is deterministic (seeds ``SEED0 + s``), so every cell
   reproduces the measured errors exactly; the fast suite checks a seeded
   random subset of the cheaper cells, ``slow`` (CI) the ``n <= 100`` part of the
   grid and ``full`` (by hand) the rest.
"""

import itertools

import numpy as np
import pytest
import sympy as sp

from simlab.data import sample_linear_model
from simlab.theory import rmt

import rmt_errors
import rmt_linear as D

# --------------------------------------------------------------------------
# stated tolerances: worst |prediction / simulation - 1| over the grid, as
# written in the docstrings of simlab.theory.rmt ("d=200" / "d>=1000" bands)
# --------------------------------------------------------------------------

TOL = {
    ("sharpness", "d=200"): 0.014, ("sharpness", "d>=1000"): 0.007,
    ("lam_S", "d=200"): 0.011, ("lam_S", "d>=1000"): 0.003,
    ("sigma", "d=200"): 0.025, ("sigma", "d>=1000"): 0.007,
    ("block.lam_rr", "d=200"): 0.012, ("block.lam_rr", "d>=1000"): 0.004,
    ("block.lam_ff", "d=200"): 0.021, ("block.lam_ff", "d>=1000"): 0.025,
    ("block.s_rf", "d=200"): 0.020, ("block.s_rf", "d>=1000"): 0.013,
    ("block.sigma", "d=200"): 0.025, ("block.sigma", "d>=1000"): 0.008,
    ("block.sigma_r", "d=200"): 0.025, ("block.sigma_r", "d>=1000"): 0.008,
    ("block.sigma_f", "d=200"): 0.021, ("block.sigma_f", "d>=1000"): 0.010,
    ("kappa", "d=200"): 0.076, ("kappa", "d>=1000"): 0.035,
    ("rate", "d=200"): 0.076, ("rate", "d>=1000"): 0.035,
    ("critical", "d=200"): 0.071, ("critical", "d>=1000"): 0.048,
}


def _band(d):
    return "d=200" if d == 200 else "d>=1000"


def _check_cell(n, d, snr, sim):
    errs = rmt_errors.relative_errors(n, d, snr, sim)
    bad = {k: round(e, 4) for k, e in errs.items()
           if abs(e) > TOL[(rmt_errors.group(k), _band(d))]}
    assert not bad, f"n={n} d={d} snr={snr}: {bad}"


# --------------------------------------------------------------------------
# 1. derivation vs implementation
# --------------------------------------------------------------------------

def test_wishart_edge_and_tw_scale():
    assert D.wishart_edge_check() == (0, 0)
    t_star, E, scale = D.wishart_edge()
    f = sp.lambdify((D.p, D.N), (t_star, E, scale ** sp.Rational(1, 3)))
    for p, n_f in [(999, 5), (199, 20), (3999, 10)]:
        # forget-only mixture (alpha = 1): A = (1/n_f) sum xi xi^T
        E_c, t_c, s_c = rmt._noise_edge(p, 100, n_f, 1.0)
        t_r, E_r, s_r = f(p, n_f)
        a = 1.0 / n_f
        np.testing.assert_allclose([E_c, t_c * a, s_c], [a * E_r, t_r, a * s_r],
                                   rtol=1e-9)


def test_spike_branch_condition():
    assert D.spike_check() == 0
    loc, excess, slope = D.spike()
    assert sp.simplify(slope.subs(D.x, sp.sqrt(D.gamma))) == 0
    for g, th in [(4, 5), (0.5, 3), (20, 9)]:
        assert abs(float(D.spike_secular_residual(g, th))) < 1e-20
    # the implementation's large-theta limit is the spike location
    n, d = 100, 1000
    th = 1.0**2 * d
    ref = float(loc.subs({D.theta: th, D.gamma: (d - 1) / n}))
    assert abs(rmt.sharpness(n, d, 1.0) / ref - 1) < 1e-3


def test_folded_normal():
    assert D.folded_normal_check() == 0
    mean, var = D.folded_normal()
    f = sp.lambdify(D.q, (mean, var), "mpmath")
    for p, th in [(199, 0.0), (999, 10.0), (3999, 400.0), (199, 50.0)]:
        m, V = rmt.folded_normal_moments(p, th)
        mr, vr = f(th / np.sqrt(p))
        np.testing.assert_allclose([m, V], [np.sqrt(p) * float(mr), p * float(vr)],
                                   rtol=1e-10)


def test_outlier_quadratic():
    assert D.outlier_quadratic_check() == (0, 0, 0)
    quad, _ = D.outlier_quadratic()
    for p, n_r, n_f, alpha, th in [(999, 90, 10, 0.3, 20.0), (3999, 195, 5, 0.1, 400.0),
                                   (199, 30, 20, 0.5, 3.0)]:
        sub = {D.p: p, D.theta: th, D.alpha: alpha, D.a: alpha / n_f,
               D.b: (1 - alpha) / n_r}
        roots = sp.Poly(quad.subs(sub), D.lam).nroots()
        ref = max(float(sp.re(r)) for r in roots)
        lam, t = rmt._outlier(p, n_r, n_f, alpha, th)
        np.testing.assert_allclose(lam, ref, rtol=1e-10)
        np.testing.assert_allclose(t, p * th / (th - 1) / lam, rtol=1e-12)


def test_rate_limit_matches_derivation():
    f = D.rate_fn()
    for u, n, n_f, alpha in itertools.product([0.0, 0.3, 5.0, 200.0], [50, 200],
                                              [5, 20], [0.1, 0.5, 0.9]):
        np.testing.assert_allclose(rmt.ascent_rate_limit(u, n, n_f, alpha),
                                   f(u, n, n_f, alpha), rtol=1e-10)


def test_rate_asymptotics():
    out = D.rate_asymptotics()
    assert out["r0_root"] == 0                     # l(0) = alpha / n_f ...
    # ... and the other root, -b = (alpha - 1)/n_r, is negative
    assert [sp.simplify(r - (D.alpha - 1) / D.n_r) for r in out["r0_other"]] == [0]
    n, n_f = 100, 10
    sub = {D.n_f: n_f, D.n_r: n - n_f}
    u = 1e9
    lim_01 = float(out[sp.Rational(1, 10)][0].subs(sub))
    lim_05 = float(out[sp.Rational(1, 2)][1].subs(sub))
    lim_09 = float(out[sp.Rational(9, 10)][2].subs(sub))
    np.testing.assert_allclose(u * rmt.ascent_rate_limit(u, n, n_f, 0.1), lim_01,
                               rtol=1e-6)
    np.testing.assert_allclose(np.sqrt(u) * rmt.ascent_rate_limit(u, n, n_f, 0.5),
                               lim_05, rtol=1e-4)
    np.testing.assert_allclose(rmt.ascent_rate_limit(u, n, n_f, 0.9), lim_09,
                               rtol=1e-6)
    np.testing.assert_allclose(lim_09, 0.8, rtol=1e-12)
    np.testing.assert_allclose(rmt.ascent_rate_limit(0.0, n, n_f, 0.3),
                               0.3 * n / n_f, rtol=1e-12)


def test_crossing_limit():
    S = sp.lambdify((D.alpha, D.n_f), D.crossing_limit())
    for alpha, n_f in itertools.product([0.1, 0.3, 0.5, 0.7], [5, 10, 20]):
        np.testing.assert_allclose(rmt.crossing_snr2_limit(n_f, alpha),
                                   S(alpha, n_f), rtol=1e-12)
        # and the d >> n rate does cross 1 there as n grows
        u = 10_000 * S(alpha, n_f)
        assert abs(rmt.ascent_rate_limit(u, 10_000, n_f, alpha) - 1) < 0.02


def test_critical_modes_limits():
    assert sp.simplify(D.self_mode_limit() - 2 * D.B / D.nu) == 0
    assert D.collective_identity() == 0
    assert D.local_resolvent_limit() == 0
    # d >> n: eta* -> 2 B / E max ||x_i||^2
    n, d, B = 50, 200_000, 2
    ref = 2 * B / rmt.expected_max_chi2(n, d - 1)
    assert abs(rmt.critical_lr(n, d, 0.001, B) / ref - 1) < 0.01


# --------------------------------------------------------------------------
# 2. internal consistency
# --------------------------------------------------------------------------

@pytest.mark.parametrize("n,p", [(50, 199), (200, 199), (100, 3999), (300, 100)])
def test_mp_quantiles_mean(n, p):
    w = rmt.mp_quantiles(n, p)
    assert w.shape == (n,) and np.all(np.diff(w) >= 0)
    np.testing.assert_allclose(w.mean(), p / n, rtol=2e-3)      # tr(W/n)/n = p/n
    assert np.sum(w == 0) == max(n - p, 0)


@pytest.mark.parametrize("n,p", [(200, 199), (200, 999), (50, 3999), (50, 199)])
def test_local_measure(n, p):
    nu = rmt.expected_max_chi2(n, p)
    x, w = rmt._local_measure(nu, n - 1, p)
    np.testing.assert_allclose(w.sum(), 1.0, atol=1e-6)        # R_ii ~ -1/z
    np.testing.assert_allclose(w @ x, nu, rtol=1e-5)            # (K)_ii = nu


def test_expected_max_chi2():
    rng = np.random.default_rng(0)
    draws = rng.chisquare(999, size=(4000, 20)).max(axis=1)
    ref = rmt.expected_max_chi2(20, 999)
    assert abs(draws.mean() - ref) < 4 * draws.std() / np.sqrt(draws.size)
    assert rmt.expected_max_chi2(1, 999) == 999.0


def test_full_batch_and_limits():
    assert rmt.critical_lr(100, 1000, 0.1, 100) == 2 / rmt.sharpness(100, 1000, 0.1)
    np.testing.assert_allclose(rmt.sharpness(100, 1000, 0.3, sigma_p=2.0),
                               4 * rmt.sharpness(100, 1000, 0.3), rtol=1e-12)
    np.testing.assert_allclose(rmt.critical_lr(100, 1000, 0.3, 5, sigma_p=2.0),
                               rmt.critical_lr(100, 1000, 0.3, 5) / 4, rtol=1e-12)
    # sigma: [1, n], rises with SNR, high-SNR limit (1 + n SNR^2)/(1 + SNR^2)
    sig = [rmt.coherence_measure(50, 1000, s) for s in (0.01, 0.1, 0.3, 1.0)]
    assert 1 <= sig[0] and np.all(np.diff(sig) > 0) and sig[-1] <= 50
    np.testing.assert_allclose(rmt.coherence_measure(50, 4000, 3.0),
                               (1 + 50 * 9) / (1 + 9), rtol=0.02)
    np.testing.assert_allclose(rmt.coherence_measure(50, 40000, 0.001),
                               1 + np.sqrt(2 / np.pi) * 49 / np.sqrt(40000), rtol=0.02)
    b = rmt.block_coherence(1, 1, 100, 0.1)
    assert b.sigma_r == b.sigma_f == 1.0
    # the exact crossing approaches the d >> n, large-n limit
    s = rmt.crossing_snr(400, 10, 100_000, 0.3)
    assert abs(s**2 / rmt.crossing_snr2_limit(10, 0.3) - 1) < 0.1


def test_sample_linear_model():
    X, y = sample_linear_model(30, 50, 0.4, seed=3, sigma_p=1.5)
    X2, y2 = sample_linear_model(30, 50, 0.4, seed=3, sigma_p=1.5)
    assert np.array_equal(X, X2) and np.array_equal(y, y2)
    mu_norm = 0.4 * 1.5 * np.sqrt(50)
    np.testing.assert_allclose(X[:, 0], y * mu_norm)          # signal along e_1
    K = X @ X.T
    Xi = X[:, 1:]
    np.testing.assert_allclose(K, mu_norm**2 * np.outer(y, y) + Xi @ Xi.T)


def test_validation():
    with pytest.raises(ValueError, match="alpha"):
        rmt.ascent_rate(100, 10, 1000, 0.1, 0.0)
    with pytest.raises(ValueError, match="n_forget"):
        rmt.kappa_plus(10, 10, 1000, 0.1, 0.3)
    with pytest.raises(ValueError, match="batch"):
        rmt.critical_lr(10, 100, 0.1, 11)
    with pytest.raises(ValueError, match="seed"):
        sample_linear_model(3, 5, 0.1, seed=None)


# --------------------------------------------------------------------------
# 3. prediction vs simulation (simlab's exact code)
# --------------------------------------------------------------------------

def test_experiment_smoke():
    from simlab.experiments import rmt_coherence

    ds = rmt_coherence.run(quick=True, configs=[(40, 400)], snrs=[0.01, 0.1, 1.0],
                           seeds=2, fine=6)
    assert "summary" in ds.attrs and "git_revision" in ds.attrs
    assert ds.sim_rate.shape == (1, 1, 3, 2)
    rate = ds.sim_rate.mean("seed").values[0, 0]
    assert rate[0] > rate[-1]                 # claim 4 on this tiny sweep
    rmt_coherence.plot(ds)


GRID = list(itertools.product(rmt_errors.NS, rmt_errors.DS, rmt_errors.SNRS))


def _fast_cells():
    """A seeded random subset of the grid: one (n, d, snr) cell per quantity
    group, with one random (n_f, alpha) and one random batch size. Cells are
    drawn from ``n <= 100`` (both ``d`` bands of :data:`TOL`): an ``n = 200`` cell
    costs 10-20x more (O(n^3) per seed, 32 seeds) and the slow grid covers it."""
    rng = np.random.default_rng(20261122)
    cheap = [c for c in GRID if c[0] <= 100]
    pick = lambda: cheap[rng.integers(len(cheap))]  # noqa: E731
    cells = []
    for what in ("sharpness", "coherence", "ascent", "ascent", "critical", "critical"):
        n, d, snr = pick()
        cells.append((what, n, d, snr, float(rng.choice(rmt_errors.ALPHAS)),
                      int(rng.choice(rmt_errors.NFS)),
                      int(rng.choice(rmt_errors.batches(n)))))
    return cells


@pytest.mark.parametrize("what,n,d,snr,alpha,n_f,B", _fast_cells())
def test_prediction_vs_simulation_subset(what, n, d, snr, alpha, n_f, B):
    sim = rmt_errors.simulate(n, d, snr, rmt_errors.SEEDS[what], what=(what,),
                              alphas=(alpha,), nfs=(n_f,), batch_sizes=(B,))
    _check_cell(n, d, snr, sim)


@pytest.mark.parametrize("n,d,snr", [
    pytest.param(*c, marks=pytest.mark.slow if c[0] <= 100 else pytest.mark.full)
    for c in GRID])
def test_prediction_vs_simulation_grid(n, d, snr):
    """The whole grid: every function, every (alpha, n_f, B). The 54 ``n <= 100``
    cells (~1 min on 2 cores) are ``slow`` and run in CI; the 27 ``n = 200`` cells
    (~7 s each, ~3.5 min) are ``full``, run by hand (``-m full``), to keep CI near
    10 minutes."""
    for what, seeds in rmt_errors.SEEDS.items():
        _check_cell(n, d, snr, rmt_errors.simulate(n, d, snr, seeds, what=(what,)))
