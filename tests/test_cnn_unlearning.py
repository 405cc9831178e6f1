"""Tiny-grid checks of the CNN unlearning heatmaps (THEORY 9.5)."""

import json

import numpy as np
import pytest

from simlab.experiments import cnn_unlearning as cu

# Clear-cut corners of the quick grids: escape times far below / far above the
# horizon (alpha = 0.3 escapes in ~20 steps, alpha = 0.003 needs ~2000; c = 3
# escapes in a few steps, c = 0.02 needs ~4000).
TINY = dict(snr=[0.02, 0.2], alpha=[0.003, 0.3], batch=[4, 16], c=[0.02, 3.0],
            trajectories=3, horizon=100, train_steps=1500)


@pytest.fixture(scope="module")
def tiny():
    return cu.run(quick=True, seed=0, **TINY)


def test_run_and_plot_smoke(tiny):
    ds = tiny
    for panel in cu.PANELS:
        for var in ("escape_fraction", "escapes", "rho", "predicted", "near",
                    "agree", "escape_time", "escape_time_start"):
            assert ds[f"{panel}_{var}"].shape == (2, 2)
        assert np.all(np.isfinite(ds[f"{panel}_rho"].values))
        for part in ("near", "far", "all"):
            assert f"agreement_{panel}_{part}" in ds.attrs
    assert isinstance(ds.attrs["summary"], str) and "agreement" in ds.attrs["summary"]
    assert json.loads(ds.attrs["params"])["horizon"] == 100
    # training reached interpolation: w* is a stationary point (THEORY section 1)
    assert ds.attrs["max_train_loss"] < 1e-12
    fig = cu.plot(ds)
    assert len([a for a in fig.axes if a.get_title()]) == 3


def test_far_from_boundary_agreement(tiny):
    """Every cell of the tiny grids is far from the boundary and both verdicts
    occur, so this is not agreement by a constant answer."""
    ds = tiny
    preds, reals = [], []
    for panel in cu.PANELS:
        near = ds[f"{panel}_near"].values.astype(bool)
        assert not near.any()
        pred = ds[f"{panel}_predicted"].values.astype(bool)
        real = ds[f"{panel}_escapes"].values.astype(bool)
        np.testing.assert_array_equal(pred, real)
        preds.append(pred)
        reals.append(real)
    assert np.concatenate(preds).any() and not np.concatenate(preds).all()
    assert ds.attrs["agreement_far"] == 1.0


def test_prediction_matches_predict_unlearning():
    """The Lanczos rho used here is the operator of predict_unlearning."""
    from simlab.data import signal_noise
    from simlab.dynamics.train import train
    from simlab.models import CNN
    from simlab.predict import predict_unlearning

    data = signal_noise(12, 40, snr=0.1, seed=3)
    model = CNN(40, 4)
    W = train(model, data, eta=0.1, steps=800, loss="squared", sigma0=0.1).W
    kw = dict(alpha=0.05, eta=0.1, batch=4, forget_batch=1)
    ref = predict_unlearning(model, W, data, [0, 1, 2], loss="squared",
                             escape_factor=1e3, horizon=50, **kw)
    rho, kappa, t_esc, pred, _ = cu._predict(model, W, data, [0, 1, 2], 0.05, 0.1,
                                             4, 1, "without", 1e3, 50)
    assert rho == pytest.approx(ref.rho, rel=1e-8)
    assert kappa == pytest.approx(ref.kappa_plus, rel=1e-8, abs=1e-12)
    assert t_esc == pytest.approx(ref.escape_time, rel=1e-6)
    assert pred == ref.escapes
