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
                    "agree", "asymptotic_escape_time", "ms_escape_time",
                    "ms_predicted", "lyapunov", "lyapunov_se", "agree_ms"):
            assert ds[f"{panel}_{var}"].shape == (2, 2)
        assert np.all(np.isfinite(ds[f"{panel}_rho"].values))
        for part in ("near", "far", "all"):
            assert f"agreement_{panel}_{part}" in ds.attrs
            assert f"agreement_ms_{panel}_{part}" in ds.attrs
    assert "typical" in ds.attrs["summary"] and "mean-square" in ds.attrs["summary"]
    assert "typical" in ds.attrs["tested"]
    assert json.loads(ds.attrs["params"])["horizon"] == 100
    # training reached interpolation: w* is a stationary point (THEORY section 1)
    assert ds.attrs["max_train_loss"] < 1e-12
    fig = cu.plot(ds)
    assert len([a for a in fig.axes if a.get_title()]) == 3


def test_clear_cut_cells_agree_with_the_typical_verdict(tiny):
    """On the clear-cut corners of the grids the typical verdict equals the
    majority of real runs in every cell, and both verdicts occur (no agreement
    by a constant answer). The escaping corners are far from the typical
    boundary (T lambda_typ > log K); the resisting ones are not (T lambda_typ
    is about -0.7: the slowest-contracting curvature directions of the delta_0
    law decay by under a factor 2 within T = 100 steps), which is why the
    resisting side is checked cell by cell rather than through far-agreement.
    3 runs per cell: a false failure needs two of three real runs to cross a
    factor-K margin the linear dynamics does not."""
    ds = tiny
    preds, fars = [], []
    for panel in cu.PANELS:
        pred = ds[f"{panel}_predicted"].values.astype(bool)
        real = ds[f"{panel}_escapes"].values.astype(bool)
        far = ~ds[f"{panel}_near"].values.astype(bool)
        np.testing.assert_array_equal(pred, real)
        assert np.all(far[pred])
        preds.append(pred)
        fars.append(far)
    assert np.concatenate(preds).any() and not np.concatenate(preds).all()
    assert ds.attrs["agreement_far"] == 1.0 and ds.attrs["agreement_all"] == 1.0


def test_cells_use_predict_unlearning(tiny):
    """The per-cell predictions are those of simlab.predict_unlearning at the
    same trained weights (one code path, no private copy of the theory)."""
    from simlab.experiments.cnn_unlearning import _train_minima
    from simlab.predict import predict_unlearning

    params = dict(cu.QUICK, **TINY)
    snrs = sorted({float(x) for x in params["snr"]} | {float(params["snr0"])})
    model, datasets, trained = _train_minima(params, snrs, 0)
    k = snrs.index(0.2)
    data, W = datasets[k], trained[k].W
    n, n_f = params["n"], params["n_forget"]
    sharp = float(tiny["sharpness"].sel(snr=0.2))
    alpha, B = 0.3, params["batch0"]
    ref = predict_unlearning(model, W, data, np.arange(n_f), alpha=alpha,
                             eta=params["c0"] / sharp, batch=B, loss="squared",
                             horizon=params["horizon"],
                             trajectories=params["mc_trajectories"], seed=0)
    cell = tiny.sel(snr_alpha_row=0.2, snr_alpha_col=alpha)
    assert float(cell["snr_alpha_rho"]) == pytest.approx(ref.rho, rel=1e-10)
    assert float(cell["snr_alpha_lyapunov"]) == pytest.approx(ref.lyapunov, rel=1e-10)
    assert bool(cell["snr_alpha_predicted"]) == ref.escapes
    assert n - n_f > B
