"""Memorization makes forgetting easier: random-matrix theory vs simulation.

THEORY section 9, claim 4, on the linear model of section 11 (squared loss,
rank-one ``H_i = x_i x_i^T``, ``x_i = y_i mu + xi_i``). For several ``(n, d)``
and a sweep of SNR we compute, on seeded draws, the coherence ``sigma``, the
sharpness ``lambda_max(H)`` and the normalized ascent rate
``r = kappa_+ / lambda_max(H)`` with simlab's exact code, and overlay the
predictions of :mod:`simlab.theory.rmt`. At ``eta = c / lambda_max(H)`` the
forget mode of descent-ascent unlearning grows by at least ``(1 + c r)^2`` per
step, so a falling ``r`` with SNR means signal (low memorization) resists
unlearning. The crossing ``r = 1`` is compared with the ``d >> n`` estimate
``SNR*^2 = alpha (2 - alpha) / (2 (1 - alpha) n_f)``.
"""

import numpy as np
import xarray as xr

from .._provenance import provenance
from ..coherence import coherence_measure
from ..data import sample_linear_model
from ..stability import kappa_plus
from ..theory import rmt

NAME = "rmt-coherence"
CLAIM = ("THEORY 9.4: memorization makes forgetting easier (lower SNR -> lower "
         "coherence -> faster ascent escape); linear model, RMT vs simulation")
#: Which question the figure answers (THEORY section 4): mean-square
#: stability, typical behaviour, finite-horizon escape, or none.
TESTED = ("no dynamics: random-matrix predictions of coherence, sharpness and the "
          "normalized ascent rate kappa_+/lambda_max (the deterministic escape "
          "rate, a lower bound on mean-square growth) against exact values on "
          "sampled data")
DESCRIPTION = ("Coherence sigma, sharpness lambda_max(H) and normalized ascent rate "
               "kappa_+/lambda_max(H) of the linear model vs SNR and vs n SNR^2, "
               "for several (n, d): random-matrix predictions (lines) against "
               "seeded simulations with simlab's exact operators (points, mean +- "
               "standard error over seeds).")

FULL = dict(configs=[(50, 200), (50, 1000), (100, 1000), (200, 1000), (100, 4000),
                     (200, 4000)],
            snrs=list(np.geomspace(0.01, 1.0, 13)), alphas=[0.1, 0.3, 0.5],
            n_forget=10, seeds=16, fine=60)
QUICK = dict(configs=[(50, 1000), (100, 1000)],
             snrs=list(np.geomspace(0.01, 1.0, 7)), alphas=[0.3],
             n_forget=10, seeds=3, fine=25)


def _simulate(n, d, snr, seed, n_forget, alphas):
    X, _ = sample_linear_model(n, d, snr, seed=seed)
    ev, V = np.linalg.eigh(X @ X.T)
    sharp = ev[-1] / n
    # isometric factors in span{x_i}: same Hessian family up to a rotation
    Xr = V * np.sqrt(np.maximum(ev, 0.0))
    sigma = coherence_measure(Xr)
    rates = [kappa_plus(Xr[:n - n_forget], forget=Xr[n - n_forget:], alpha=a) / sharp
             for a in alphas]
    return sigma, sharp, rates


def _crossing(snrs, r, level=1.0):
    """Log-linear interpolation of the first downward crossing of ``level``."""
    above = r >= level
    k = np.flatnonzero(above[:-1] & ~above[1:])
    if k.size == 0:
        return np.nan
    i = k[0]
    x0, x1 = np.log(snrs[i]), np.log(snrs[i + 1])
    y0, y1 = np.log(r[i]), np.log(r[i + 1])
    return float(np.exp(x0 + (np.log(level) - y0) * (x1 - x0) / (y1 - y0)))


def run(quick=False, seed=0, **overrides):
    """Simulate and predict; returns a Dataset (see module docstring)."""
    params = dict(QUICK if quick else FULL)
    params.update(overrides)
    configs = [tuple(c) for c in params["configs"]]
    snrs = np.asarray(params["snrs"], dtype=float)
    alphas = np.asarray(params["alphas"], dtype=float)
    n_f, S = int(params["n_forget"]), int(params["seeds"])
    fine = np.geomspace(snrs.min(), snrs.max(), int(params["fine"]))
    C, K, A = len(configs), len(snrs), len(alphas)
    sim_sigma = np.empty((C, K, S))
    sim_sharp = np.empty((C, K, S))
    sim_rate = np.empty((C, A, K, S))
    ss = np.random.SeedSequence(seed)
    seeds = ss.generate_state(C * K * S).reshape(C, K, S)
    for c, (n, d) in enumerate(configs):
        for k, snr in enumerate(snrs):
            for s in range(S):
                sg, sh, rates = _simulate(n, d, snr, int(seeds[c, k, s]), n_f, alphas)
                sim_sigma[c, k, s], sim_sharp[c, k, s] = sg, sh
                sim_rate[c, :, k, s] = rates
    pred_sigma = np.array([[rmt.coherence_measure(n, d, x) for x in fine]
                           for n, d in configs])
    pred_sharp = np.array([[rmt.sharpness(n, d, x) for x in fine] for n, d in configs])
    pred_rate = np.array([[[rmt.ascent_rate(n, n_f, d, x, a) for x in fine]
                           for a in alphas] for n, d in configs])
    sim_cross = np.array([[_crossing(snrs, sim_rate[c, a].mean(axis=-1))
                           for a in range(A)] for c in range(C)])
    pred_cross = np.array([[rmt.crossing_snr(n, n_f, d, a) for a in alphas]
                           for n, d in configs])
    limit_cross = np.sqrt([rmt.crossing_snr2_limit(n_f, a) for a in alphas])
    cfg = np.arange(C)
    ds = xr.Dataset(
        {
            "sim_sigma": (("config", "snr", "seed"), sim_sigma),
            "sim_sharpness": (("config", "snr", "seed"), sim_sharp),
            "sim_rate": (("config", "alpha", "snr", "seed"), sim_rate),
            "pred_sigma": (("config", "snr_fine"), pred_sigma),
            "pred_sharpness": (("config", "snr_fine"), pred_sharp),
            "pred_rate": (("config", "alpha", "snr_fine"), pred_rate),
            "sim_crossing_snr": (("config", "alpha"), sim_cross),
            "pred_crossing_snr": (("config", "alpha"), pred_cross),
            "limit_crossing_snr": (("alpha",), limit_cross),
        },
        coords={"config": cfg, "n": ("config", [c[0] for c in configs]),
                "d": ("config", [c[1] for c in configs]), "snr": snrs,
                "snr_fine": fine, "alpha": alphas, "seed": np.arange(S)},
    )
    ds.attrs.update(provenance(params, seed))
    ds.attrs["n_forget"] = n_f
    ds.attrs["summary"] = _summary(ds)
    return ds


def _summary(ds):
    """Verdict on claim 4 with the numbers behind it."""
    lines = []
    rate = ds["sim_rate"].mean("seed")
    falls = bool(np.all(rate.isel(snr=-1) < rate.isel(snr=0)))
    sig = ds["sim_sigma"].mean("seed")
    rises = bool(np.all(sig.isel(snr=-1) > sig.isel(snr=0)))
    lines.append(f"claim 4 {'holds' if falls and rises else 'FAILS'} on every "
                 f"(n, d, alpha): sigma rises with SNR ({rises}), "
                 f"r = kappa_+/lambda_max falls ({falls}).")
    for c in ds.config.values:
        n, d = int(ds.n[c]), int(ds.d[c])
        for a in ds.alpha.values:
            r = rate.sel(config=c, alpha=a).values
            s_sim = float(ds.sim_crossing_snr.sel(config=c, alpha=a))
            s_pred = float(ds.pred_crossing_snr.sel(config=c, alpha=a))
            s_lim = float(ds.limit_crossing_snr.sel(alpha=a))
            lines.append(
                f"n={n} d={d} alpha={a:g}: r {r[0]:.2f} -> {r[-1]:.2f} over SNR "
                f"{ds.snr.values[0]:g}..{ds.snr.values[-1]:g}; r = 1 at SNR^2 = "
                f"{s_sim**2:.4f} (sim), {s_pred**2:.4f} (RMT), {s_lim**2:.4f} "
                f"(d >> n limit)")
    pr = ds["pred_rate"].interp(snr_fine=ds.snr)
    err = float(np.nanmax(np.abs(pr.values / rate.values - 1)))
    ps = ds["pred_sigma"].interp(snr_fine=ds.snr, method="linear")
    err_s = float(np.nanmax(np.abs(ps.values / sig.values - 1)))
    lines.append(f"worst |RMT/sim - 1| on this sweep: r {err:.3f}, sigma {err_s:.3f} "
                 f"(seed-averaged over {ds.sizes['seed']} seeds).")
    return "\n".join(lines)


def plot(ds):
    """Four panels: sigma, sharpness and r vs SNR; r vs n SNR^2."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 7.5), layout="constrained")
    axs = fig.subplots(2, 2)
    colors = [f"C{i}" for i in range(ds.sizes["config"])]
    snr, fine = ds.snr.values, ds.snr_fine.values
    S = ds.sizes["seed"]
    alpha_show = float(ds.alpha.values[len(ds.alpha) // 2])
    markers = ["o", "s", "^", "D", "v"]

    def points(ax, x, da, color, marker="o", label=None):
        m = da.mean("seed").values
        e = da.std("seed", ddof=1).values / np.sqrt(S) if S > 1 else None
        ax.errorbar(x, m, yerr=e, fmt=marker, ms=4, color=color, capsize=2,
                    label=label, lw=1)

    for c, col in zip(ds.config.values, colors):
        n, d = int(ds.n[c]), int(ds.d[c])
        lab = f"n={n}, d={d}"
        sel = dict(config=c)
        axs[0, 0].plot(fine, ds.pred_sigma.sel(**sel), color=col, lw=1.2)
        points(axs[0, 0], snr, ds.sim_sigma.sel(**sel), col, label=lab)
        axs[0, 1].plot(fine, ds.pred_sharpness.sel(**sel) / d, color=col, lw=1.2)
        points(axs[0, 1], snr, ds.sim_sharpness.sel(**sel) / d, col, label=lab)
        for a, mk in zip(ds.alpha.values, markers):
            sel_a = dict(config=c, alpha=a)
            style = "-" if a == alpha_show else ":"
            axs[1, 0].plot(fine, ds.pred_rate.sel(**sel_a), color=col, lw=1.2, ls=style)
            points(axs[1, 0], snr, ds.sim_rate.sel(**sel_a), col, marker=mk)
        sel_a = dict(config=c, alpha=alpha_show)
        u = n * fine**2
        axs[1, 1].plot(u, ds.pred_rate.sel(**sel_a), color=col, lw=1.2)
        axs[1, 1].plot(u, rmt.ascent_rate_limit(u, n, int(ds.attrs["n_forget"]),
                                                alpha_show),
                       color=col, lw=0.8, ls="--")
        points(axs[1, 1], n * snr**2, ds.sim_rate.sel(**sel_a), col, label=lab)
    n_f = int(ds.attrs["n_forget"])
    axs[1, 1].plot([], [], "k--", lw=0.8, label="d >> n limit r(u)")
    s_lim = float(ds.limit_crossing_snr.sel(alpha=alpha_show))
    axs[1, 0].axvline(s_lim, color="k", ls="--", lw=0.8)
    for ax in (axs[1, 0], axs[1, 1]):
        ax.axhline(1.0, color="grey", lw=0.8)
    for ax, ylab in ((axs[0, 0], "coherence sigma"),
                     (axs[0, 1], "lambda_max(H) / d"),
                     (axs[1, 0], "r = kappa_+ / lambda_max(H)"),
                     (axs[1, 1], f"r  (alpha = {alpha_show:g})")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylabel(ylab)
    for ax in (axs[0, 0], axs[0, 1], axs[1, 0]):
        ax.set_xlabel("SNR = ||mu|| / (sigma_p sqrt(d))")
    axs[1, 1].set_xlabel("u = n SNR^2")
    axs[1, 0].set_title(f"n_f = {n_f}; markers: alpha = "
                        + ", ".join(f"{a:g}" for a in ds.alpha.values)
                        + "; dashed: SNR* (d >> n)", fontsize=8)
    axs[0, 0].legend(fontsize=7)
    axs[1, 1].legend(fontsize=7)
    fig.suptitle("Memorization makes forgetting easier: RMT (lines) vs simulation "
                 "(points)", fontsize=10)
    return fig
