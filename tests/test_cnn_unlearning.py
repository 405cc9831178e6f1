"""Tiny-grid checks of the CNN unlearning heatmaps (THEORY 9.5)."""

import json

import numpy as np
import pytest

from simlab.experiments import cnn_unlearning as cu

# Clear-cut corners of the quick grids: escape times far below / far above the
# horizon (alpha = 0.3 escapes in ~20 steps, alpha = 0.003 needs ~2000; c = 3
# escapes in a few steps, c = 0.02 needs ~4000).
TINY = dict(snr=[0.02, 0.2], alpha=[0.003, 0.3], batch=[4, 16], c=[0.02, 3.0],
            trajectories=3, horizon=100, train_steps=1500,
            dup_alpha=[0.02, 0.4], dup_c=[0.5, 0.9], dup_batch=[10, 20])


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
    # one titled heatmap per panel in the data (PANELS and any extra panel)
    heatmaps = [v for v in ds.data_vars if str(v).endswith("_escape_fraction")]
    assert len(heatmaps) >= len(cu.PANELS)
    assert len([a for a in fig.axes if a.get_title()]) == len(heatmaps)
    # duplicate-forget panels: per-row frontiers and the between-frontier cells
    for panel in cu.DUP_PANELS:
        assert ds[f"{panel}_alpha_rho1"].shape == (2,)
        assert ds[f"{panel}_between"].shape == (2, 2)
        assert f"between_{panel}_cells" in ds.attrs
    assert float(ds["dup_train_loss"]) < 1e-12


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


def test_duplicate_forget_set_is_disjoint_and_in_the_retain_span():
    """The duplicate-forget data: forget rows are appended copies of retain rows
    (disjoint indices, identical x and y), so at the trained weights every
    forget curvature factor equals a retain one, and at alpha = 0.02 (below the
    deterministic threshold n_f / (n_r + n_f)) kappa_+ < 0, while ascent alone
    (alpha -> 1) has kappa_+ > 0: the frontier kappa_+ = 0 exists."""
    from simlab.experiments.cnn_unlearning import _duplicate_minimum, _train_minima
    from simlab.predict import curvature_split, predict_unlearning

    params = dict(cu.QUICK, **TINY)
    model, datasets, trained = _train_minima(params, [0.1], 0)
    data, res, forget = _duplicate_minimum(model, datasets[0], params, 0)
    n, n_f = params["n"], params["n_forget"]
    assert data.n == n + n_f
    np.testing.assert_array_equal(forget, np.arange(n, n + n_f))
    np.testing.assert_array_equal(data.X[forget], data.X[:n_f])
    np.testing.assert_array_equal(data.y[forget], data.y[:n_f])
    G_r, G_f = curvature_split(model, res.W, data, forget, loss="squared")
    np.testing.assert_array_equal(G_f, G_r[:n_f])
    kw = dict(eta=0.1, batch=n, loss="squared", trajectories=4, steps=10)
    assert predict_unlearning(model, res.W, data, forget, alpha=0.02,
                              **kw).kappa_plus < 0
    assert predict_unlearning(model, res.W, data, forget, alpha=0.9,
                              **kw).kappa_plus > 0


def test_duplicate_cells_use_predict_unlearning(tiny):
    """The duplicate-forget panels' predictions are predict_unlearning's at the
    minimum trained on the augmented set (one code path)."""
    from simlab.experiments.cnn_unlearning import _duplicate_minimum, _train_minima
    from simlab.predict import predict_unlearning

    params = dict(cu.QUICK, **TINY)
    snrs = sorted({float(x) for x in params["snr"]} | {float(params["snr0"])})
    model, datasets, _ = _train_minima(params, snrs, 0)
    data, res, forget = _duplicate_minimum(
        model, datasets[snrs.index(params["snr0"])], params, 0)
    sharp = float(tiny["dup_sharpness"])
    alpha, B = 0.4, 20
    ref = predict_unlearning(model, res.W, data, forget, alpha=alpha,
                             eta=params["dup_c0"] / sharp, batch=B, loss="squared",
                             horizon=params["horizon"],
                             trajectories=params["mc_trajectories"], seed=0)
    cell = tiny.sel(dup_batch_alpha_row=B, dup_batch_alpha_col=alpha)
    assert float(cell["dup_batch_alpha_rho"]) == pytest.approx(ref.rho, rel=1e-10)
    assert float(cell["dup_batch_alpha_lyapunov"]) == pytest.approx(ref.lyapunov,
                                                                    rel=1e-10)
    assert bool(cell["dup_batch_alpha_predicted"]) == ref.escapes


# Acceptance (issue 10): on duplicate-forget sets (a genuine rho(T_u) = 1
# frontier), the typical verdict of predict_unlearning equals the majority of
# real runs on every far cell. Three configurations differing in seed, SNR and
# (n, n_f, d); the figure's old panels are shrunk to one cell each.
DUP_CONFIGS = {
    "seed0-snr0.1-n20-d200": dict(seed=0, snr0=0.1),
    "seed1-snr0.3-n20-d200": dict(seed=1, snr0=0.3),
    "seed2-snr0.1-n30-d300": dict(seed=2, snr0=0.1, n=30, n_forget=5, d=300),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(DUP_CONFIGS))
def test_duplicate_forget_far_cells_agree_with_real_majority(name):
    """Every far cell (|T lambda_typ| > log K) of both duplicate-forget panels:
    predicted typical verdict == majority of 6 real twin runs, with at least 6
    far cells and both verdicts among them. A false failure needs 3 of 6 real
    runs to contradict a linearized prediction whose typical growth at the
    horizon is beyond a factor K either way (so over K^2 from the escape
    threshold in ||delta||^2); the real runs start 1e-5 ||w*|| from w*, where
    the network follows its linearization (module docstring)."""
    cfg = dict(DUP_CONFIGS[name])
    seed, snr0 = cfg.pop("seed"), cfg.pop("snr0")
    ds = cu.run(quick=True, seed=seed, snr=[snr0], snr0=snr0, alpha=[0.01],
                batch=[4], c=[0.15], trajectories=6, horizon=300,
                train_steps=3000, dup_alpha=[0.02, 0.06, 0.1, 0.2, 0.3, 0.4],
                dup_c=[0.4, 0.8], dup_batch=[6, 20], **cfg)
    assert float(ds["dup_train_loss"]) < 1e-12
    pred, real, far = (np.concatenate([ds[f"{p}_{v}"].values.astype(bool).ravel()
                                       for p in cu.DUP_PANELS])
                       for v in ("predicted", "escapes", "near"))
    far = ~far
    assert far.sum() >= 6
    assert pred[far].any() and not pred[far].all()
    np.testing.assert_array_equal(pred[far], real[far])
    # the frontier is genuine: rho(T_u) < 1 somewhere on the panels
    assert min(float(ds[f"{p}_rho"].min()) for p in cu.DUP_PANELS) < 1.0
