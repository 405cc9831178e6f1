"""Predictions of derivations/memorization.py against algebra and simulation."""

import memorization as deriv
import numpy as np
import pytest
import sympy as sp

from simlab._blas import serial_blas
from simlab.data import sample_linear_model
from simlab.memorization import predict_recitation_linear, predict_trace_ratio


def test_derivation_identities():
    quad, lead = deriv.mp_stieltjes_check()
    assert quad == 0 and lead == 1
    gamma = sp.symbols("gamma", positive=True)
    theta_c = deriv.threshold()[1]
    for g in (2.0, 10.0, 50.0):      # THEORY 11: spike iff theta - 1 > sqrt(gamma)
        assert float(theta_c.subs(gamma, g)) == pytest.approx(1 + np.sqrt(g),
                                                              rel=1e-12)
    for c, beta in [(0.1, 3.0), (0.1, 0.2), (0.05, 0.5)]:
        # quadrature on 2e5 points of a square-root edge: 1e-6
        assert deriv.overlap_normalisation(c, beta)[2] == pytest.approx(1.0, abs=1e-6)
    assert deriv.late_time_limit() == 1
    assert deriv.full_projection_check() == -1
    assert deriv.secular_check() == (0, 0)
    # bisection to machine precision against a dense eigendecomposition
    s_err, d_err = deriv.secular_sum_check()
    assert s_err < 1e-12 and d_err < 1e-10
    # Chiani's gamma matches TW1's mean and variance to the digits it quotes
    assert all(abs(e) < 1e-4 for e in deriv.tw1_gamma_moments())
    lim = deriv.large_n_limit()          # finite-n model -> deterministic equivalent
    assert lim[400] < lim[40] / 4 and lim[400] < 2e-3


def test_trace_ratio_prediction_properties():
    assert predict_trace_ratio(20, 200, 0.3, 4, loss="squared") == 1.0
    assert predict_trace_ratio(20, 200, 0.0, 4) == pytest.approx(1.0, abs=1e-12)
    r = [predict_trace_ratio(20, 200, s, 4) for s in (0.05, 0.1, 0.2, 0.4)]
    assert np.all(np.diff(r) > 0) and r[-1] > 1.5
    with pytest.raises(ValueError, match="model"):
        predict_trace_ratio(20, 200, 0.1, 4, model="mlp")


@serial_blas
def _simulated_recitation(n, d, snr, k, seeds, p_flip=0.15):
    rng = np.random.default_rng(0)
    sim, pred = [], []
    for s in range(seeds):
        X, yc = sample_linear_model(n, d, snr, seed=s)
        fl = rng.random(n) < p_flip
        if not fl.any():
            continue
        y = np.where(fl, -yc, yc)
        U = np.linalg.svd(X, full_matrices=False)[0][:, :k]
        f = U @ (U.T @ y)
        sim.append(np.mean(np.sign(f[fl]) == y[fl]))
        pr = predict_recitation_linear(n, d, snr, k, int(fl.sum()))
        pred.append(pr["recitation"])
    return np.mean(sim), np.mean(pred)


@pytest.mark.parametrize("n,d,snr,k", [(20, 1000, 0.05, 5), (20, 1000, 0.3, 2),
                                       (20, 200, 0.3, 10), (40, 400, 0.05, 20),
                                       (20, 200, 0.15, 2)])
def test_recitation_prediction_matches_simulation(n, d, snr, k):
    """Fixed seeds (deterministic). The tolerance is the issue's acceptance,
    0.05 absolute; (20, 200, 0.15) sits at the spike threshold
    (theta / (1 + sqrt(gamma)) = 1.08, where the n -> infinity equivalents
    were off by 0.13 at k = 2). Measured worst over the slow test's grid 0.040
    (0.029 in the threshold band). 300 draws give a standard error of about
    0.02 on the simulated share, so with fresh seeds a cell whose true error
    were 0.01 would fail with probability ~5 %: these seeds are fixed, and
    the docstring of predict_recitation_linear states the measured errors."""
    sim, pred = _simulated_recitation(n, d, snr, k, 300)
    assert abs(sim - pred) < 0.05


def test_mean_overlap_limits():
    """E[A] of the finite-n spike model: k/n exactly without signal (Haar),
    1 at k = n (the secular overlaps sum to 1), monotone in k and in SNR."""
    from simlab.memorization import _mean_overlap

    assert _mean_overlap(20, 200, 0.0, 3) == pytest.approx(3 / 20, abs=1e-15)
    assert _mean_overlap(20, 200, 0.15, 20) == pytest.approx(1.0, abs=1e-9)
    ks = [_mean_overlap(20, 200, 0.15, k) for k in range(1, 21)]
    assert np.all(np.diff(ks) > 0)
    snrs = [_mean_overlap(40, 1000, s, 2) for s in (0.02, 0.05, 0.08, 0.1, 0.2)]
    assert np.all(np.diff(snrs) > 0)


@pytest.mark.slow
def test_trace_ratio_prediction_matches_trained_cnn():
    """Four fixed seeds per cell at n = 20, d = 200, against the issue's
    acceptance (within 20 %). The measured worst over the full grid (n in
    {20, 40}, d in {200, 1000}, 8 seeds) is 0.15 for the logistic CNN
    (``derivations/memorization.py --ratio-errors``); 4 seeds add seed noise of
    a few %, which the 0.05 between 0.15 and 0.2 covers at these seeds."""
    from simlab.data import signal_noise
    from simlab.dynamics.train import train_many
    from simlab.memorization import curvature_scores
    from simlab.models import CNN

    model = CNN(200, 10)
    for snr in (0.1, 0.3):
        datas = [signal_noise(20, 200, snr=snr, p_flip=0.2, seed=s) for s in range(4)]
        res = train_many(model, datas, eta=0.1, steps=1000, seeds=list(range(4)),
                         record_every=1000)
        sim, pred = [], []
        for tr, r in zip(datas, res, strict=True):
            fl = tr.flipped
            t = curvature_scores(model, r.W, tr).trace.values
            sim.append(t[fl].mean() / t[~fl].mean())
            pred.append(predict_trace_ratio(20, 200, snr, int(fl.sum()), m=10,
                                            eta=0.1, steps=1000))
        assert abs(np.mean(pred) / np.mean(sim) - 1) < 0.2


@pytest.mark.slow
def test_recitation_prediction_grid():
    """The issue's acceptance on the full grid, the spike threshold included:
    d/n >= 10, k in {1, 2, 5, n/2}, SNR 0.02-0.4 (112 cells, 12 of them with
    theta / (1 + sqrt(gamma)) in [0.9, 1.3]), 300 fixed draws each, within
    0.05 absolute. Measured worst 0.029 inside that band and 0.040 outside;
    the standard error of a cell's simulated share is at most ~0.02, so a
    cell whose true error were 0.01 could fail with fresh seeds (~5 %), not
    with these fixed ones."""
    for n, d in [(20, 200), (40, 400), (20, 1000), (40, 1000)]:
        for snr in (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4):
            for k in sorted({1, 2, 5, n // 2}):
                sim, pred = _simulated_recitation(n, d, snr, k, 300)
                assert abs(sim - pred) < 0.05, (n, d, snr, k, sim, pred)
