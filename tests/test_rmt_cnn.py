"""Coherence predictions for the trained ReLU CNN (simlab.theory.rmt_cnn).

1. the exact decomposition of the curvature Gram and the sympy limits
   (``derivations/rmt_cnn.py``);
2. prediction vs the exact ``coherence_measure`` of trained CNNs on the seeded
   grid of ``derivations/rmt_cnn.py`` (deterministic seeds, so each cell
   reproduces the measured errors): two cells in the fast suite, the whole
   grid (and the figure at its quick size) under ``slow``. :data:`TOL` is the
   measured worst error (over three seed sets, of which the tests replay the
   first) times 1.25, as stated in :func:`simlab.theory.rmt_cnn.cnn_coherence`.
"""

import dataclasses

import numpy as np
import pytest

from simlab.theory import rmt_cnn

import rmt_cnn as D

TOL = {("semi", 200): 0.083, ("semi", 1000): 0.038,
       ("pred", 200): 0.38, ("pred", 1000): 0.363}


def test_tolerances_match_stated_errors():
    for key, err in rmt_cnn.ERRORS.items():
        assert TOL[key] == pytest.approx(1.25 * err, abs=0.002)


# --------------------------------------------------------------------------
# 1. derivation
# --------------------------------------------------------------------------

def test_exact_gram_decomposition():
    for seed in range(3):
        assert D.exact_gram_check(seed) < 1e-12


def test_two_block_and_limits():
    assert D.two_block_check() == 0
    assert D.limits_check() < 1e-12


def test_predictive_limits():
    # signal-learning limit with co -> 0 (no noise overlap), A = m/2
    n, d, m = 20, 4000, 10
    st = dataclasses.replace(rmt_cnn.predictive_stats(n, d, m), co_same=0.0,
                             A=np.full(n, m / 2), xi_sq=np.full(n, d - 1.0))
    for snr in (0.3, 1.0, 3.0):
        hi, _ = rmt_cnn.cnn_coherence_limits(n, d, snr)
        comp = rmt_cnn.cnn_coherence(n, d, snr, m, stats=st)
        assert comp == pytest.approx(hi, rel=2e-3)
    # memorization limit (theta = 0), equal diagonal: the limit omits the
    # second-order (Wigner) correction, here 0.3 % of sigma
    st = dataclasses.replace(st, co_same=m / 4)
    _, lo = rmt_cnn.cnn_coherence_limits(n, d, 0.0)
    comp = rmt_cnn.cnn_coherence(n, d, 0.0, m, stats=st)
    assert lo < comp < lo + 0.005


def test_predictive_shape():
    for n, d, m in [(20, 200, 5), (40, 1000, 10)]:
        s = [rmt_cnn.cnn_coherence(n, d, x, m) for x in np.geomspace(0.01, 3, 12)]
        assert np.all(np.diff(s) >= -1e-12)
        assert 1.0 <= s[0] < 1.1
        assert s[-1] <= n / 2 + 1e-9          # classes never align (<= n/2)


def test_validation():
    with pytest.raises(ValueError):
        rmt_cnn.cnn_coherence(1, 100, 0.1, 5)
    with pytest.raises(ValueError):
        rmt_cnn.cnn_coherence(10, 100, -0.1, 5)
    st = rmt_cnn.predictive_stats(10, 100, 5)
    with pytest.raises(ValueError):
        rmt_cnn.cnn_coherence(12, 100, 0.1, 5, stats=st)


# --------------------------------------------------------------------------
# 2. prediction vs trained CNNs
# --------------------------------------------------------------------------

def _check(n, d, m):
    snrs = D.GRID["snr"]
    sim, semi = D.simulate_cell(n, d, m, snrs, D.GRID["seeds"])
    sim, semi = sim.mean(axis=1), semi.mean(axis=1)
    pred = np.array([rmt_cnn.cnn_coherence(n, d, s, m) for s in snrs])
    e_semi = np.abs(semi / sim - 1)
    e_pred = np.abs(pred / sim - 1)
    assert e_semi.max() <= TOL[("semi", d)], (n, d, m, e_semi.round(3))
    assert e_pred.max() <= TOL[("pred", d)], (n, d, m, e_pred.round(3))
    # qualitative statements that hold for the simulation itself
    assert sim[-1] > 4 * sim[0]                          # rises with SNR
    lin = (1 + n * snrs[-1] ** 2) / (1 + snrs[-1] ** 2)  # linear-model limit
    assert n / 5 < sim[-1] < 0.6 * lin                   # ~ n/2, not ~ n
    assert sim[0] < 1 + 2.5 * (n / 2) / np.sqrt(d)       # memorization: ~ 1


@pytest.mark.parametrize("n,d,m", [(20, 1000, 5), (40, 200, 10)])
def test_trained_cnn_fast(n, d, m):
    _check(n, d, m)


@pytest.mark.slow
@pytest.mark.parametrize("n", D.GRID["n"])
@pytest.mark.parametrize("d", D.GRID["d"])
@pytest.mark.parametrize("m", D.GRID["m"])
def test_trained_cnn_grid(n, d, m):
    _check(n, d, m)


def test_figure_small():
    """The figure's run/plot path at a toy size (one config, two SNRs). The
    claim is robust here: sigma is 1.05 at SNR 0.01 and 1.9 / 3.1 (both seeds)
    at SNR 1; the quick size runs under ``slow`` and in ``simlab reproduce``."""
    from simlab.experiments import cnn_coherence as E

    ds = E.run(quick=True, configs=[(10, 200, 5)], squared_configs=[(10, 200, 5)],
               squared_steps=500, snrs=[0.01, 1.0], seeds=2, fine=5)
    assert "claim 4 (CNN) holds" in ds.attrs["summary"]
    assert ds.sim_sigma.shape == (2, 2, 2)
    assert list(ds.loss.values) == ["logistic", "squared"]
    assert float(ds.sim_sigma.isel(snr=0).max()) < 1.2
    # the ascent rate falls from SNR 0.01 to 1 (measured x0.23 logistic, x0.41
    # squared, both seeds); the semi-empirical form follows it (measured within
    # 6 %; 8 % asserted: this 2-seed, 500-step run is noisier than the stated grid)
    rate = (ds.sim_kappa / ds.sim_sharpness).mean("seed")
    assert np.all(rate.isel(snr=-1) < 0.7 * rate.isel(snr=0))
    semi = (ds.semi_kappa / ds.semi_sharpness).mean("seed")
    assert float(np.max(np.abs(semi / rate - 1))) < 0.08
    rows = E.ascent_claims(ds)
    assert {r["loss"] for r in rows} == {"logistic", "squared"}
    assert E.plot(ds) is not None


@pytest.mark.slow
def test_figure_quick():
    from simlab.experiments import cnn_coherence as E

    ds = E.run(quick=True)
    assert "claim 4 (CNN) holds" in ds.attrs["summary"]
    assert ds.sim_sigma.shape == (3, 5, 2)
    assert E.plot(ds) is not None


# --------------------------------------------------------------------------
# 3. retain/forget blocks, sharpness, kappa_+ and the ascent rate (issue 10.4)
# --------------------------------------------------------------------------

import rmt_cnn_ascent as DA  # noqa: E402

#: 1.25 x the worst measured error (rmt_cnn.ASCENT_ERRORS), per (loss, form,
#: quantity, SNR range); "above": n SNR^2 >= 1
ATOL = {k: round(1.25 * v, 3) for k, v in rmt_cnn.ASCENT_ERRORS.items()}


def test_stated_errors_meet_acceptance():
    """The documented worst errors (ASCENT_ERRORS, quoted in the docstrings) meet
    the acceptance of issue 10.4, 15 % above the crossover. This checks the
    statement; the measurements behind it are re-run by the grid tests below
    (same seeds: regression guards) and validated on fresh seeds by
    test_ascent_fresh_seeds."""
    for loss in ("logistic", "squared"):
        for q in ("kappa", "sharpness", "rate"):
            assert rmt_cnn.ASCENT_ERRORS[(loss, "semi", q, "above")] <= 0.15


def test_pencil_perturbation():
    d1, d2 = DA.pencil_perturbation()
    assert d1 < 1e-12 and d2 < 1e-12


def test_two_class_branches():
    lam_o, lim0, big = DA.two_class_branches()
    assert DA.sp.simplify(lim0 - DA.a * DA.A * DA.p) == 0
    # theta -> oo at alpha = 3/10, balanced split, against the stated ratio
    ratio = big / (DA.sp.Rational(3, 10) / DA.n_f * DA.A * DA.p)
    for n_, nf_ in [(20, 4), (40, 8), (100, 10)]:
        val = float(ratio.subs({DA.n_f: nf_, DA.n_r: n_ - nf_}))
        assert val == pytest.approx(DA.limit_ratio(n_, nf_, 0.3), rel=1e-12)
    # the implementation on equal statistics (no overlap noise) is the closed form
    assert DA.branches_check() < 1e-10


def test_signed_top_against_monte_carlo():
    """Second-order mean of the top eigenvalue of diag(w)(K + E) against the
    average over 4000 Gaussian draws of E (independent reference). The
    fluctuation is 5 % of the diagonal gaps, so third-order terms are
    ~1e-4 relative; the MC standard error is estimated and the test allows
    4 of them (false-failure rate ~6e-5)."""
    rng = np.random.default_rng(7)
    n = 8
    K = np.diag(rng.uniform(50, 100, n)) + 3.0 * np.ones((n, n))
    w = np.where(np.arange(n) < 3, 0.3 / 3, -0.7 / 5)
    V = np.full((n, n), 2.5**2)
    lam, _ = rmt_cnn._signed_top(K, V, w)
    draws = []
    for _ in range(4000):
        E = rng.normal(0, 2.5, (n, n))
        E = np.triu(E) + np.triu(E, 1).T
        draws.append(np.max(np.linalg.eigvals(w[:, None] * (K + E)).real))
    draws = np.array(draws)
    lam0 = np.max(np.linalg.eigvals(w[:, None] * K).real)
    se = draws.std() / np.sqrt(draws.size)
    assert abs(draws.mean() - lam) < 4 * se + 1e-3 * abs(lam - lam0)
    assert abs(draws.mean() - lam0) > 4 * se      # the correction is visible


def test_ascent_validation():
    st = rmt_cnn.predictive_stats(10, 100, 5)
    with pytest.raises(ValueError, match="alpha"):
        rmt_cnn.cnn_kappa_plus(10, 100, 0.1, 5, alpha=0.0, n_forget=2)
    with pytest.raises(ValueError, match="forget_idx"):
        rmt_cnn.cnn_kappa_plus(10, 100, 0.1, 5, alpha=0.3, stats=st, n_forget=2)
    with pytest.raises(ValueError, match="forget_idx"):
        rmt_cnn.cnn_kappa_plus(10, 100, 0.1, 5, alpha=0.3, forget_idx=[1, 1])
    with pytest.raises(ValueError, match="n_forget"):
        rmt_cnn.cnn_kappa_plus(10, 100, 0.1, 5, alpha=0.3, n_forget=10)
    with pytest.raises(ValueError, match="loss"):
        rmt_cnn.cnn_sharpness(10, 100, 0.1, 5, loss="hinge")
    with pytest.raises(ValueError, match="loss"):
        rmt_cnn.cnn_coherence(10, 100, 0.1, 5, loss="hinge")


def _check_ascent(n, d, m, loss="logistic", seed0=DA.SEED0, atol=None):
    """Re-measure one (n, d, m): every stated error within ``atol`` (default
    1.25 x the stated worst: with the seeds of the measurement this is a
    regression guard, not a validation), and the ordering where it is claimed."""
    snrs = list(DA.GRID["snr"])
    out = DA.simulate_cell(n, d, m, snrs, DA.GRID["seeds"], list(DA.GRID["alphas"]),
                           loss=loss, seed0=seed0)
    errs = DA.cell_errors(out, snrs, n)
    atol = {k[1:]: v for k, v in ATOL.items() if k[0] == loss} if atol is None \
        else atol
    bad = {k: round(v, 3) for k, v in errs.items() if k in atol and v > atol[k]}
    assert not bad, (n, d, m, bad)
    # the ordering, where it is claimed: r falls between the SNRs above n SNR^2 = 1
    rate = (out["kappa"] / out["sharp"]).mean(-1)
    above = n * np.asarray(snrs) ** 2 >= 1
    assert np.all(np.diff(rate[:, above], axis=1) < 0)


@pytest.mark.parametrize("n,d,m", [(20, 1000, 5)])
def test_ascent_trained_cnn_fast(n, d, m):
    _check_ascent(n, d, m)


@pytest.mark.slow
@pytest.mark.parametrize("n", DA.GRID["n"])
@pytest.mark.parametrize("d", DA.GRID["d"])
@pytest.mark.parametrize("m", DA.GRID["m"])
def test_ascent_trained_cnn_grid(n, d, m):
    _check_ascent(n, d, m)


@pytest.mark.slow
def test_ascent_squared_loss():
    """The squared-loss protocol of cnn-unlearning (ASCENT_ERRORS' "squared"
    entries), on the cheaper of its two stated configurations."""
    n, d, m = DA.SQUARED_GRID["n"][0], DA.SQUARED_GRID["d"][0], DA.SQUARED_GRID["m"][0]
    _check_ascent(n, d, m, loss="squared")


@pytest.mark.slow
def test_ascent_fresh_seeds():
    """Validation on seeds the errors were not measured on (seed0 = 7000, 3
    seeds): the semi-empirical kappa_+, sharpness and rate above the crossover
    within the 15 % acceptance of issue 10.4 (stated worst 11.8 %; the seed
    means move by a few % between seed sets at n = 20, d = 1000)."""
    acc = {(f, q, "above"): 0.15 for f in ("semi",)
           for q in ("kappa", "sharpness", "rate")}
    _check_ascent(20, 1000, 5, seed0=7000, atol=acc)


def test_block_coherence_trained_cnn():
    """Semi-empirical retain/forget blocks against
    :func:`simlab.coherence.block_coherence` on trained CNNs: the measurement
    stated in :func:`simlab.theory.rmt_cnn.cnn_block_coherence` (same seeds,
    same forget sets) at ``(20, 1000, 5)``, SNR 0.01 and 1; tolerance 1.25 x the
    stated worst."""
    from simlab.coherence import block_coherence
    from simlab.data import signal_noise
    from simlab.dynamics.train import train_many
    from simlab.models import CNN
    from simlab.predict import cnn_summary, curvature_split

    n, d, m = 20, 1000, 5
    model = CNN(d, m)
    tol = {"lam_ff": 0.02, "sigma_f": 0.02, "lam_rr": 0.069, "sigma_r": 0.069,
           "sigma": 0.083, "s_rf": 0.06}                 # d = 1000 band for s_rf
    for snr in (0.01, 1.0):
        data = [signal_noise(n, d, snr=snr, seed=k) for k in (1000, 1001, 1002)]
        res = train_many(model, data, eta=0.1, steps=200, sigma0=0.01,
                         seeds=[1000, 1001, 1002])
        sim, semi = [], []
        for k, dat, r in zip((1000, 1001, 1002), data, res, strict=True):
            fidx = np.sort(np.random.default_rng(k).choice(n, n // 5, replace=False))
            b = block_coherence(*curvature_split(model, r.W, dat, fidx))
            p = rmt_cnn.cnn_block_coherence(n, d, snr, m, forget_idx=fidx,
                                            stats=cnn_summary(model, r.W, dat))
            sim.append([getattr(b, f) for f in tol])
            semi.append([getattr(p, f) for f in tol])
        err = np.abs(np.mean(semi, 0) / np.mean(sim, 0) - 1)
        assert np.all(err <= list(tol.values())), (snr, dict(zip(tol, err.round(3))))
