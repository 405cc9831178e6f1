"""Benign vs harmful overfitting of the two-layer ReLU CNN (external check).

THEORY section 8 and claim 6 of section 9. Kou, Chen, Chen and Gu (ICML 2023)
prove that a two-layer ReLU CNN trained by gradient descent on signal-plus-noise
data with label-flip rate ``p`` overfits benignly (test error ``<= p + eps``)
when ``n ||mu||^4 >= C sigma_p^4 d`` and harmfully (test error ``>= p + c``) when
``n ||mu||^4 <= C' sigma_p^4 d``. At fixed ``n`` and ``sigma_p`` the boundary is
``||mu||* ~ d^{1/4}``.

The experiment trains the CNN of the paper's setting (``n = 20``, ``m = 10``,
``sigma_p = 1``, ``p = 0.1``, ``sigma_0 = 0.01``, ``eta = 0.1``, full-batch GD) over
a ``(d, ||mu||)`` grid and several seeds. Samples of one ``(d, seed)`` are shared
across ``||mu||`` (same labels, flips, noise, initialisation), which makes the
error curves in ``||mu||`` smooth; each such group is trained in parallel by one
:func:`simlab.dynamics.train.train_many` call. The test error is measured
against the clean labels of fresh samples (the error against noisy labels is
``p + (1 - 2p) x`` that, in expectation, and is stored too). For every ``d`` the
critical ``||mu||*`` is where the seed-averaged clean test error crosses
``level`` (log-linear interpolation), and ``log ||mu||* = a + b log d`` is
fitted; ``b`` is reported next to the predicted ``1/4`` with a bootstrap
standard error over seeds.
"""

import numpy as np
import xarray as xr

from .. import _streams
from .._provenance import provenance
from ..dynamics.backends import get_kernel

NAME = "benign-overfitting"
CLAIM = ("THEORY 9.6: the CNN reproduces the benign/harmful overfitting transition "
         "n ||mu||^4 ~ sigma_p^4 d (Kou et al., ICML 2023)")
#: Which question the figure answers (THEORY section 4): mean-square
#: stability, typical behaviour, finite-horizon escape, or none.
TESTED = ("no stability verdict: test error of trained CNNs (generalization) "
          "against the predicted benign/harmful boundary")
DESCRIPTION = ("Clean test error of the two-layer ReLU CNN trained to zero training "
               "error on 10%-label-noise data over (d, ||mu||), with the measured "
               "critical ||mu||* (error = level), the fitted power law and the "
               "predicted ||mu||* ~ d^(1/4) boundary overlaid.")

FULL = dict(n=20, m=10, sigma_p=1.0, p_flip=0.1, sigma0=0.01, eta=0.1, steps=1000,
            n_test=500, d=[100, 160, 250, 400, 630, 1000, 1600, 2500, 4000],
            mu=np.geomspace(0.5, 12.0, 22).round(4).tolist(), seeds=5, level=0.2,
            bootstrap=200)
# quick: ~15 s on 2 shared cores; too few seeds for a meaningful bootstrap
QUICK = dict(FULL, steps=300, n_test=300, d=[100, 200, 400, 800, 1600, 3200],
             mu=np.geomspace(0.6, 10.0, 14).round(4).tolist(), seeds=3, bootstrap=0)


def run(quick=False, seed=0, train=None, backend="cpu", **overrides):
    """Train the CNN over the ``(d, ||mu||)`` grid and fit the boundary.

    Parameters
    ----------
    quick : bool
        Reduced grid (``QUICK``, well under a minute) instead of ``FULL``.
    seed : int
        Base seed; replicate ``k`` uses data/initialisation seed
        ``10000 * seed + k``.
    train : callable, optional
        Backend with the signature of
        :func:`simlab.dynamics.train.train_many`; overrides ``backend``.
    backend : {"cpu", "cuda"}
        ``train_many`` or ``gpu_train_many`` when ``train`` is not given.
    **overrides
        Replace entries of the parameter dict (``n``, ``m``, ``sigma_p``,
        ``p_flip``, ``sigma0``, ``eta``, ``steps``, ``n_test``, ``d``, ``mu``,
        ``seeds``, ``level``, ``bootstrap``).

    Returns
    -------
    xarray.Dataset
        ``test_error_clean``, ``test_error``, ``train_acc``, ``train_loss``,
        ``gamma_max``, ``rho_max`` over ``(d, mu, replicate)``; the seed mean
        ``mean_test_error_clean`` over ``(d, mu)``; ``critical_mu`` over ``d``.
        ``attrs`` hold ``exponent`` (fitted), ``exponent_se``,
        ``exponent_predicted = 0.25``, ``prefactor`` (of the fitted law) and
        ``boundary_constant`` ``c`` in ``||mu||* = c (sigma_p^4 d / n)^{1/4}``.
    """
    from ..data import rescale_signal, signal_noise_pair
    from ..models import CNN

    params = dict(QUICK if quick else FULL)
    unknown = set(overrides) - set(params)
    if unknown:
        raise ValueError(f"unknown parameters {sorted(unknown)}")
    params.update(overrides)
    train = get_kernel("train_many", backend) if train is None else train
    d_vals = [int(d) for d in params["d"]]
    mu_vals = [float(v) for v in params["mu"]]
    reps = list(range(int(params["seeds"])))
    n = int(params["n"])

    steps = int(params["steps"])
    names = ["test_acc_clean", "test_acc", "train_acc", "train_loss", "gamma_max",
             "rho_max"]
    shape = (len(d_vals), len(reps), len(mu_vals))
    out = {v: np.empty(shape) for v in names}
    for i, d in enumerate(d_vals):
        model = CNN(d, int(params["m"]))
        for k in reps:
            # one (d, seed) group per call: the mu-rescaled copies of a large
            # test set would not all fit in memory at once
            s = 10_000 * seed + k
            tr, te = signal_noise_pair(n, int(params["n_test"]), d, mu_norm=1.0,
                                       sigma_p=params["sigma_p"],
                                       p_flip=params["p_flip"], seed=s)
            results = train(model, [rescale_signal(tr, mu) for mu in mu_vals],
                            tests=[rescale_signal(te, mu) for mu in mu_vals],
                            eta=params["eta"], steps=steps, sigma0=params["sigma0"],
                            seeds=s, record_every=steps)
            for v in names:
                out[v][i, k] = [r.history[v].values[-1] for r in results]

    def final(var):
        return out[var]

    err_clean = 1.0 - final("test_acc_clean")
    dims = ("d", "replicate", "mu")
    ds = xr.Dataset(
        {
            "test_error_clean": (dims, err_clean,
                                 {"long_name": "test error vs clean labels"}),
            "test_error": (dims, 1.0 - final("test_acc"),
                           {"long_name": "test error vs noisy labels"}),
            "train_acc": (dims, final("train_acc"),
                          {"long_name": "training accuracy (noisy labels)"}),
            "train_loss": (dims, final("train_loss")),
            "gamma_max": (dims, final("gamma_max"),
                          {"long_name": "max signal-learning coefficient"}),
            "rho_max": (dims, final("rho_max"),
                        {"long_name": "max noise-memorization coefficient"}),
        },
        coords={"d": np.array(d_vals, dtype=np.int32),
                "mu": np.array(mu_vals), "replicate": np.array(reps, dtype=np.int32)},
    )
    mean_err = err_clean.mean(axis=1)
    ds["mean_test_error_clean"] = (("d", "mu"), mean_err)
    level = float(params["level"])
    crit = _critical_mu(mean_err, mu_vals, level)
    ds["critical_mu"] = ("d", crit, {"long_name": f"||mu|| where the mean clean "
                                              f"test error crosses {level}"})
    slope, intercept = _fit(d_vals, crit)
    se = _bootstrap_se(err_clean, d_vals, mu_vals, level, int(params["bootstrap"]),
                       seed)
    ok = np.isfinite(crit)
    const = (float(np.exp(np.mean(np.log(crit[ok]) - 0.25 * np.log(
        params["sigma_p"] ** 4 * np.array(d_vals)[ok] / n)))) if ok.any()
        else float("nan"))
    ds.attrs.update(provenance(params, seed))
    fitted_all = int(np.all(ds["train_acc"].values == 1.0))
    ds.attrs.update(
        exponent=slope, exponent_se=se, exponent_predicted=0.25, prefactor=intercept,
        boundary_constant=const, level=level, all_fit_training_set=fitted_all,
        fitted_d_points=int(ok.sum()))
    se_txt = f" +- {se:.3f} (bootstrap over seeds)" if np.isfinite(se) else ""
    ds.attrs["summary"] = (
        f"fitted exponent of ||mu||* vs d: {slope:.3f}{se_txt}, predicted 0.25 "
        f"(Kou et al.); boundary ||mu||* = {const:.2f} (sigma_p^4 d/n)^(1/4) at "
        f"clean test error {level}; training set fitted in "
        f"{'all' if fitted_all else 'not all'} runs")
    return ds


def _critical_mu(mean_err, mu_vals, level):
    """Per row, the ``mu`` where ``mean_err`` first drops to ``level`` (log-interp)."""
    logmu = np.log(np.asarray(mu_vals))
    out = np.full(mean_err.shape[0], np.nan)
    for i, e in enumerate(mean_err):
        below = np.flatnonzero(e <= level)
        if below.size == 0 or below[0] == 0:
            continue
        j = below[0]
        e0, e1 = e[j - 1], e[j]
        w = (e0 - level) / (e0 - e1) if e0 != e1 else 0.0
        out[i] = float(np.exp(logmu[j - 1] + w * (logmu[j] - logmu[j - 1])))
    return out


def _fit(d_vals, crit):
    ok = np.isfinite(crit)
    if ok.sum() < 2:
        return float("nan"), float("nan")
    slope, intercept = np.polyfit(np.log(np.asarray(d_vals)[ok]), np.log(crit[ok]), 1)
    return float(slope), float(intercept)


def _bootstrap_se(err, d_vals, mu_vals, level, n_boot, seed):
    """Standard error of the fitted exponent, resampling replicates."""
    reps = err.shape[1]
    if n_boot < 2 or reps < 2:
        return float("nan")
    rng = np.random.default_rng([seed, _streams.BENIGN_BOOTSTRAP])
    slopes = []
    for _ in range(n_boot):
        pick = rng.integers(0, reps, reps)
        crit = _critical_mu(err[:, pick].mean(axis=1), mu_vals, level)
        s, _ = _fit(d_vals, crit)
        if np.isfinite(s):
            slopes.append(s)
    return float(np.std(slopes, ddof=1)) if len(slopes) > 1 else float("nan")


def plot(ds):
    """Heatmap of the mean clean test error with measured and predicted boundaries."""
    import json

    from matplotlib.figure import Figure

    params = json.loads(ds.attrs["params"])
    d = ds["d"].values.astype(float)
    mu = ds["mu"].values
    fig = Figure(figsize=(7.2, 5.0), layout="constrained")
    ax = fig.subplots()
    im = ax.pcolormesh(d, mu, ds["mean_test_error_clean"].values.T, shading="nearest",
                       cmap="magma", vmin=0.0, vmax=0.5)
    fig.colorbar(im, ax=ax, label="test error (clean labels), mean over seeds")
    crit = ds["critical_mu"].values
    ax.plot(d, crit, "o", color="cyan", ms=6,
            label=f"measured ||mu||* (error = {ds.attrs['level']})")
    grid = np.geomspace(d.min(), d.max(), 50)
    b, a = ds.attrs["exponent"], ds.attrs["prefactor"]
    if np.isfinite(b):
        ax.plot(grid, np.exp(a) * grid**b, "-", color="cyan", lw=1.5,
                label=f"fit: ||mu||* ~ d^{b:.3f}")
    c = ds.attrs["boundary_constant"]
    if np.isfinite(c):
        ax.plot(grid, c * (params["sigma_p"] ** 4 * grid / params["n"]) ** 0.25, "--",
                color="w", lw=1.5,
                label="predicted n||mu||^4 ~ sigma_p^4 d (slope 1/4)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("dimension d")
    ax.set_ylabel("signal strength ||mu||")
    se = ds.attrs.get("exponent_se", float("nan"))
    se_txt = f" +- {se:.3f}" if np.isfinite(se) else ""
    ax.set_title(f"Benign vs harmful overfitting (n={params['n']}, m={params['m']}, "
                 f"p={params['p_flip']}, GD eta={params['eta']}, "
                 f"{params['steps']} steps)"
                 f"\nfitted exponent {b:.3f}{se_txt} vs predicted 0.25", fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    return fig
