"""edge-of-stability figure, its run classifier and the gd-sharpness sweep cell
(THEORY 10.1; derivations/edge_of_stability.py)."""

import edge_of_stability as D
import numpy as np
import pytest
import sympy as sp

from simlab.data import signal_noise
from simlab.experiments import edge_of_stability as E


# ---------------------------------------------------------------- derivation
def test_derivation_linear_squared_hessian_is_constant():
    resid, dH = D.linear_squared_hessian(n=3, d=2)
    assert resid.is_zero_matrix
    assert all(m.is_zero_matrix for m in dH)


def test_derivation_logistic_curvature_at_most_quarter():
    f = D.f
    for d2, at0, gap in D.logistic_curvature():
        assert at0 == sp.Rational(1, 4)
        assert sp.simplify(gap) == 0
        # numeric spot check of l'' <= 1/4 on a grid (closed form above)
        vals = sp.lambdify(f, d2, "math")
        assert max(vals(x) for x in np.linspace(-20, 20, 401)) <= 0.25 + 1e-15


def test_derivation_relu_and_power():
    assert D.relu_region_hessian(m=1, d=2).is_zero_matrix
    assert D.power_scaling(3) == (2, 1)
    assert D.power_scaling(1)[0] == 0             # ReLU: grad f scale-free


# ---------------------------------------------------------------- classifier
def _classify(r, L, loss="squared", diverged=False, eta=2.0):
    steps = np.arange(len(r)) * 10
    return E.classify(eta, steps, np.asarray(r) * 2.0 / eta, np.asarray(L), diverged,
                      loss)[0]


@pytest.mark.parametrize("r, L, loss, diverged, label", [
    ([0.5] * 20, np.geomspace(1, 1e-20, 200), "squared", False, "stable"),
    ([0.5] * 20, [1.0] * 199 + [1e3], "squared", False, "divergence"),
    ([0.5] * 5, [1.0] * 50, "squared", True, "divergence"),
    ([0.5] + [1.0] * 19, np.r_[np.geomspace(1, 1e-3, 100), [1e-3, 2e-3] * 50],
     "squared", False, "edge of stability"),
    # in the band but converged: not the edge (it sharpened, then settled)
    ([0.5] + [1.0] * 19, np.geomspace(1, 1e-30, 200), "squared", False,
     "progressive sharpening"),
    ([3.0] + [0.8] * 19, np.r_[[1.0, 5.0], np.geomspace(1, 1e-20, 198)],
     "squared", False, "catapult"),
    ([0.5, 0.9] + [0.01] * 18, np.geomspace(1, 1e-3, 200), "logistic", False,
     "collapse"),
    (np.linspace(0.3, 0.8, 20), np.geomspace(1, 1e-20, 200), "squared", False,
     "progressive sharpening"),
])
def test_classify(r, L, loss, diverged, label):
    assert _classify(r, L, loss, diverged) == label


# ---------------------------------------------------------------- quick figure
@pytest.fixture(scope="module")
def quick():
    return E.run(quick=True)


def test_quick_run_checks(quick):
    ds = quick
    assert set(ds["label"].values) <= set(E.CLASSES)
    n_runs = len(E.MODELS) * len(E.LOSSES) * len(E.QUICK["eta_factors"])
    assert len(ds.run) == n_runs
    # the ceiling is never exceeded on any recorded state of any run
    assert ds.attrs["ceiling_violations"] == 0
    assert ds.attrs["ceiling_checked_states"] > 100
    # linear model: constant squared-loss sharpness, logistic S_t <= S_0 (from 0)
    assert ds.attrs["linear_squared_max_rel_change"] <= 1e-10
    assert ds.attrs["linear_logistic_max_rel_rise"] <= 1e-10
    assert ds.attrs["linear_S0_vs_ceiling_rel_err"] <= 1e-10
    for key in ("params", "seed", "git_revision", "simlab_version"):
        assert key in ds.attrs


def test_quick_linear_runs_against_dense_reference(quick):
    """The recorded linear squared-loss sharpness is lambda_max(Z^T Z)/n of a
    dense numpy matrix built from the same data, and eta = k 2 / S_0."""
    p = E.QUICK
    data = signal_noise(p["n"], p["d"], mu_norm=p["mu_norm"], sigma_p=p["sigma_p"],
                        seed=0)
    Z = data.X.sum(axis=1)
    ref = np.linalg.eigvalsh(Z.T @ Z / p["n"])[-1]
    sel = (quick["model"] == "linear") & (quick["loss"] == "squared")
    lin = quick.isel(run=np.flatnonzero(sel.values))
    S = lin["sharpness"].values
    np.testing.assert_allclose(S[np.isfinite(S)], ref, rtol=1e-10)
    np.testing.assert_allclose(lin["eta"].values, lin["eta_factor"].values * 2 / ref,
                               rtol=1e-10)
    # GD on a quadratic: stable below the threshold, divergent above it
    for k, label in zip(lin["eta_factor"].values, lin["label"].values, strict=True):
        assert label == ("stable" if k < 1 else "divergence")


def test_quick_plot(quick):
    fig = E.plot(quick)
    assert len(fig.axes) >= 6


def test_run_rejects_unknown_parameter():
    with pytest.raises(ValueError, match="unknown parameters"):
        E.run(quick=True, nonsense=1)
    with pytest.raises(ValueError, match="model must be one of"):
        E.make_model("tanh", 5, 2)


# ---------------------------------------------------------------- sweep cell
SPEC = """
experiment = "gd-sharpness"
seed = 3
[fixed]
model = "linear"
n = 8
d = 12
m = 1
steps = 40
sharpness_every = 10
[axes]
eta_factor = { values = [0.5, 3.0] }
loss = { values = ["squared", "logistic"] }
"""


def test_gd_sharpness_cell_through_sweep(tmp_path):
    from simlab.sweep import run_sweep

    ds = run_sweep(SPEC, tmp_path / "s.zarr", backend="cpu").load().squeeze()
    for loss in ("squared", "logistic"):
        for k, want in ((0.5, "stable"), (3.0, "divergence")):
            c = ds.sel(loss=loss, eta_factor=k)
            data = signal_noise(8, 12, mu_norm=2.0, seed=int(c["seed"]))
            Z = data.X.sum(axis=1)
            lam = np.linalg.eigvalsh(Z.T @ Z / 8)[-1]        # dense reference
            label = E.CLASSES[int(c["classification"])]
            if loss == "squared":
                # the linear squared-loss sharpness is lam at any w
                np.testing.assert_allclose(float(c["S0"]), lam, rtol=1e-10)
                np.testing.assert_allclose(float(c["final_sharpness"]), lam,
                                           rtol=1e-10)
                assert label == want
            else:
                # from w = 0: S_0 = lam/4 and S_t <= S_0
                np.testing.assert_allclose(float(c["S0"]), lam / 4, rtol=1e-10)
                assert float(c["final_sharpness"]) <= lam / 4 * (1 + 1e-10)
                assert float(c["ceiling_ratio_max"]) <= 1 + 1e-10


def test_gd_sharpness_cell_refuses_cuda():
    cell = E.GDSharpness
    p = dict(cell.DEFAULTS, eta_factor=0.5, steps=2)
    with pytest.raises(ValueError, match="backend"):
        cell.evaluate([p], [0], backend="cuda")
    out = cell.evaluate([dict(p, model="relu", n=6, d=8, m=2)], [0])
    assert set(out) == set(cell.METRICS)
    assert np.all(out["ceiling_ratio_max"] <= 1.0)
