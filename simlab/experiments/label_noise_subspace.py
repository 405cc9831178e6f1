"""Label noise lives in the minor components (THEORY 10.3, claim 9).

Two-layer ReLU CNNs are trained by full-batch GD (logistic loss, the
benign-overfitting setting of Kou et al.: ``n = 20``, ``m = 10``,
``sigma_p = 1``, ``sigma_0 = 0.01``, ``eta = 0.1``) from the *same*
initialisation ``W0`` on the *same* inputs, once with clean labels
(``p_flip = 0``) and once per flip rate (flips nested across ``p_flip``:
common random numbers), over an ``(SNR, p_flip)`` grid straddling the Kou et al.
boundary ``||mu||* = c (sigma_p^4 d / n)^{1/4}`` (``c = 0.83`` measured by the
``benign-overfitting`` figure at clean test error 0.2, ``p = 0.1``). For every
noisy run, with ``Delta W = W - W0`` reshaped ``(2m, d)``
(:mod:`simlab.spectral`):

- the largest principal angle between the clean and noisy top-``k`` right
  singular subspaces, ``k = 1..2m`` (``k = 1``: the "top-subspace angle");
- the tail energy: share of ``||Delta W_noisy - Delta W_clean||^2`` outside the
  clean top-``k`` right subspace;
- Wedin's ``sin Theta`` bound at every ``k`` (never violated; tightness and the
  share of non-vacuous bounds reported);
- clean test error of the noisy network, of LIP (keep top-``k`` components of
  ``Delta W`` and refit inside their right subspace, :func:`simlab.spectral.lip`;
  with ``lip_steps`` refit steps and without, ``steps = 0``) and of the
  clean-label network (retraining on clean labels).

The linear model is measured on the same training inputs: the angle between
the min-norm interpolators with clean and noisy labels and the share of their
difference on the top curvature direction, against
:func:`simlab.theory.rmt.label_noise_angle` / ``label_noise_split``. The
reported noise level is the ``p_flip`` at which the seed-mean top-subspace
angle first exceeds ``level`` degrees (linear interpolation), per SNR, next to
the linear-model prediction :func:`simlab.theory.rmt.label_noise_critical_flip`.
"""

import numpy as np
import xarray as xr

from .._provenance import provenance
from ..dynamics.backends import get_kernel

NAME = "label-noise-subspace"
CLAIM = ("THEORY 9.9: label noise lives in the minor singular components; "
         "principal angles between clean- and noisy-label weights, tail energy, "
         "Wedin's bound and the LIP plug-in (Si et al., arXiv 2505.16159)")
TESTED = ("no stability verdict: singular-subspace alignment and test error of "
          "trained CNNs (clean vs noisy labels, same init), against linear-model "
          "(min-norm interpolator) predictions")
DESCRIPTION = ("Top-subspace angle between clean- and noisy-label CNN updates over "
               "(SNR, p_flip) with the Kou et al. boundary; angle and tail energy vs "
               "p_flip with the linear-model predictions; clean test error of the "
               "noisy net, LIP and clean retraining.")

FULL = dict(n=20, d=400, m=10, sigma_p=1.0, sigma0=0.01, eta=0.1, steps=500,
            n_test=500, snr=np.geomspace(0.03, 0.6, 8).round(4).tolist(),
            p_flip=[0.0, 0.05, 0.1, 0.2, 0.3, 0.4], seeds=3, level=45.0,
            lip_k=1, lip_steps=100, boundary_constant=0.83)
# quick: well under 30 s on 2 shared cores
QUICK = dict(FULL, d=200, steps=200, n_test=200, snr=[0.05, 0.15, 0.45],
             p_flip=[0.0, 0.1, 0.3], seeds=1, lip_steps=20)


def _check_params(params):
    if params["p_flip"][0] != 0.0:
        raise ValueError("p_flip must start with 0.0 (the clean-label run)")
    if list(params["p_flip"]) != sorted(params["p_flip"]):
        raise ValueError("p_flip must be increasing")


def run(quick=False, seed=0, backend="cpu", **overrides):
    """Train clean/noisy CNN pairs over ``(snr, p_flip, replicate)`` and measure.

    Parameters
    ----------
    quick : bool
        Reduced grid (``QUICK``).
    seed : int
        Replicate ``r`` uses data/initialisation seed ``10000 * seed + r``.
    backend : {"cpu", "cuda"}
        ``train_many`` or ``gpu_train_many``.
    **overrides
        Entries of the parameter dict.

    Returns
    -------
    xarray.Dataset
        Over ``(snr, p_flip, replicate, k)``: ``angle`` (largest principal
        angle, degrees), ``tail_energy``, ``wedin_sin``, ``wedin_bound``; over
        ``(snr, p_flip, replicate)``: ``test_error_clean`` (noisy net),
        ``test_error_lip``, ``test_error_lip_trunc``, ``test_error_retrain``
        (clean labels), ``flip_fraction``, ``train_acc``, ``linear_angle``,
        ``linear_split``; over ``(snr, p_flip)``: ``linear_angle_pred``,
        ``linear_split_pred``; over ``snr``: ``critical_flip`` (measured, CNN,
        k = 1) and ``critical_flip_pred`` (linear model). ``attrs`` carry the
        Wedin summary, the LIP table and ``summary``.
    """
    from ..data import rescale_signal, signal_noise_pair
    from ..models import CNN, Linear
    from ..spectral import (
        lip,
        min_norm_angle,
        min_norm_split,
        principal_angles,
        tail_energy,
        wedin,
    )
    from ..theory.rmt import (
        label_noise_angle,
        label_noise_critical_flip,
        label_noise_split,
    )

    params = dict(QUICK if quick else FULL)
    unknown = set(overrides) - set(params)
    if unknown:
        raise ValueError(f"unknown parameters {sorted(unknown)}")
    params.update(overrides)
    _check_params(params)
    train = get_kernel("train_many", backend)
    n, d, m = int(params["n"]), int(params["d"]), int(params["m"])
    snrs = [float(s) for s in params["snr"]]
    pfs = [float(p) for p in params["p_flip"]]
    reps = list(range(int(params["seeds"])))
    ks = np.arange(1, 2 * m + 1)
    model, lin = CNN(d, m), Linear(d)
    S, P, R, Kn = len(snrs), len(pfs), len(reps), len(ks)
    full4 = {v: np.full((S, P, R, Kn), np.nan)
             for v in ("angle", "tail_energy", "wedin_sin", "wedin_bound")}
    names3 = ("test_error_clean", "test_error_lip", "test_error_lip_trunc",
              "test_error_retrain", "flip_fraction", "train_acc", "linear_angle",
              "linear_split")
    full3 = {v: np.full((S, P, R), np.nan) for v in names3}
    k_lip = int(params["lip_k"])

    def clean_error(W, te):
        return float(np.mean(np.sign(model.forward(W, te.X)) != te.y_clean))

    for r in reps:
        s = 10_000 * seed + r
        pairs = [signal_noise_pair(n, int(params["n_test"]), d, mu_norm=1.0,
                                   sigma_p=params["sigma_p"], p_flip=p, seed=s)
                 for p in pfs]
        trains, tests = [], []
        for tr, te in pairs:
            for snr in snrs:
                mu = snr * params["sigma_p"] * np.sqrt(d)
                trains.append(rescale_signal(tr, mu))
                tests.append(rescale_signal(te, mu))
        res = train(model, trains, tests=tests, eta=params["eta"],
                    steps=int(params["steps"]), sigma0=params["sigma0"], seeds=s,
                    record_every=int(params["steps"]))
        for j in range(P):
            for i in range(S):
                c, z = res[i], res[j * S + i]
                tr, te = trains[j * S + i], tests[j * S + i]
                full3["flip_fraction"][i, j, r] = tr.flipped.mean()
                full3["train_acc"][i, j, r] = z.history["train_acc"].values[-1]
                full3["test_error_clean"][i, j, r] = clean_error(z.W, te)
                full3["test_error_retrain"][i, j, r] = clean_error(c.W, te)
                Z = lin.inputs(tr.X)
                if j == 0 or not tr.flipped.any():
                    full3["linear_angle"][i, j, r] = 0.0
                    for v in ("test_error_lip", "test_error_lip_trunc"):
                        full3[v][i, j, r] = full3["test_error_clean"][i, j, r]
                    full4["angle"][i, j, r] = 0.0
                    full4["tail_energy"][i, j, r] = 0.0
                    continue
                full3["linear_angle"][i, j, r] = min_norm_angle(Z, tr.y_clean, tr.y)
                full3["linear_split"][i, j, r] = min_norm_split(Z, tr.y_clean, tr.y)
                for kk, k in enumerate(ks):
                    full4["angle"][i, j, r, kk] = principal_angles(c.W, z.W, c.W0,
                                                                   k)[0]
                    full4["tail_energy"][i, j, r, kk] = tail_energy(c.W, z.W, c.W0,
                                                                    k)
                    b = wedin(c.W, z.W, c.W0, k)
                    full4["wedin_sin"][i, j, r, kk] = b.sin_theta
                    full4["wedin_bound"][i, j, r, kk] = b.bound
                full3["test_error_lip_trunc"][i, j, r] = clean_error(
                    lip(model, z.W, tr, k_lip, W0=z.W0, steps=0), te)
                full3["test_error_lip"][i, j, r] = clean_error(
                    lip(model, z.W, tr, k_lip, W0=z.W0, eta=params["eta"],
                        steps=int(params["lip_steps"])), te)

    dims4, dims3 = ("snr", "p_flip", "replicate", "k"), ("snr", "p_flip", "replicate")
    ds = xr.Dataset(
        {**{v: (dims4, a) for v, a in full4.items()},
         **{v: (dims3, a) for v, a in full3.items()}},
        coords={"snr": np.array(snrs), "p_flip": np.array(pfs),
                "replicate": np.array(reps, dtype=np.int32),
                "k": ks.astype(np.int32)})
    ds["angle"].attrs["long_name"] = "largest principal angle, top-k right subspaces"
    ds["tail_energy"].attrs["long_name"] = (
        "share of ||dW_noisy - dW_clean||^2 outside the clean top-k right subspace")
    ds["linear_angle_pred"] = (("snr", "p_flip"), np.array(
        [[label_noise_angle(n, d, snr, p) for p in pfs] for snr in snrs]))
    ds["linear_split_pred"] = (("snr", "p_flip"), np.array(
        [[label_noise_split(n, d, snr, p) for p in pfs] for snr in snrs]))

    level = float(params["level"])
    top = ds["angle"].sel(k=1).mean("replicate").values            # (snr, p_flip)
    ds["critical_flip"] = ("snr", _crossing(top, pfs, level))
    ds["critical_flip_pred"] = ("snr", np.array(
        [label_noise_critical_flip(n, d, snr, level) for snr in snrs]))
    snr_star = (params["boundary_constant"] * (params["sigma_p"] ** 4 * d / n) ** 0.25
                / (params["sigma_p"] * np.sqrt(d)))

    ds.attrs.update(provenance(params, seed))
    ds.attrs.update(_summaries(ds, snr_star, level, k_lip))
    return ds


def _crossing(curves, pfs, level):
    """Per row, the first ``p_flip`` where the curve reaches ``level`` (linear)."""
    out = np.full(curves.shape[0], np.nan)
    for i, a in enumerate(curves):
        above = np.flatnonzero(a >= level)
        if above.size == 0 or above[0] == 0:
            continue
        j = above[0]
        w = (level - a[j - 1]) / (a[j] - a[j - 1])
        out[i] = pfs[j - 1] + w * (pfs[j] - pfs[j - 1])
    return out


def _summaries(ds, snr_star, level, k_lip):
    noisy = ds["p_flip"].values > 0
    sin = ds["wedin_sin"].values[:, noisy]
    bound = ds["wedin_bound"].values[:, noisy]
    fin = np.isfinite(bound)
    violations = int(np.sum(sin[fin] > bound[fin] * (1 + 1e-9) + 1e-12))
    nonvac_all = float(np.mean(bound < 1.0))
    nonvac_k1 = float(np.mean(bound[..., 0] < 1.0))
    tight = sin[fin] / bound[fin]
    tight_k1 = (sin[..., 0] / bound[..., 0])[np.isfinite(bound[..., 0])]

    snr = ds["snr"].values
    regime = np.where(snr >= snr_star * np.sqrt(2), "benign",
                      np.where(snr <= snr_star / np.sqrt(2), "harmful", "boundary"))
    methods = ("test_error_clean", "test_error_lip_trunc", "test_error_lip",
               "test_error_retrain")
    rows, table = [], {}
    for reg in ("benign", "harmful"):
        sel = regime == reg
        if not sel.any():
            continue
        for j, p in enumerate(ds["p_flip"].values):
            if p == 0:
                continue
            vals = [float(ds[mth].values[sel, j].mean()) for mth in methods]
            table[f"{reg} p_flip={p:g}"] = vals
            rows.append(f"{reg} p={p:g}: net {vals[0]:.3f}, LIP-trunc {vals[1]:.3f}, "
                        f"LIP {vals[2]:.3f}, clean retrain {vals[3]:.3f}")
    top = ds["angle"].sel(k=1).values[:, noisy]
    err = ds["test_error_clean"].values[:, noisy]
    ben, har = regime == "benign", regime == "harmful"
    crit = ds["critical_flip"].values
    pred = ds["critical_flip_pred"].values
    lin_err = np.nanmax(np.abs(ds["linear_angle"].mean("replicate").values[:, noisy]
                               - ds["linear_angle_pred"].values[:, noisy]))
    # the CNN angle against the label-vector angle arccos(1 - 2f) (the v -> 0
    # limit of the linear model) at the realized flip fraction
    fr = ds["flip_fraction"].values[:, noisy]
    has = fr > 0
    dev = (top - np.degrees(np.arccos(1 - 2 * fr)))[has]
    crit_txt = ", ".join(f"{s:.3g}: {c:.3f} (pred {q:.3f})"
                         for s, c, q in zip(snr, crit, pred, strict=True))
    n_txt = ("; few draws, nested flips: not the n >= 50, >= 40-draw acceptance "
             "check, which derivations/label_noise.py makes")
    prof = np.nanmean(ds["angle"].values[:, noisy], axis=(0, 1, 2))
    kk = sorted({1, 2, len(prof) // 2, len(prof)})
    k_txt = ", ".join(f"k={k}: {prof[k - 1]:.1f}" for k in kk)
    summary = (
        f"Wedin sin-theta: {violations} violations in {fin.sum()} (run, k) pairs with "
        f"a positive gap; non-vacuous (bound < 1) {100 * nonvac_k1:.1f}% at k=1, "
        f"{100 * nonvac_all:.1f}% over all k; tightness sin/bound median "
        f"{np.median(tight_k1):.2f} at k=1 (max {np.max(tight):.2f} over all k). "
        f"Top-subspace angle (k=1), mean over noisy runs: benign "
        f"{np.mean(top[ben]) if ben.any() else np.nan:.1f} deg (test error "
        f"{np.mean(err[ben]) if ben.any() else np.nan:.3f}), harmful "
        f"{np.mean(top[har]) if har.any() else np.nan:.1f} deg (test error "
        f"{np.mean(err[har]) if har.any() else np.nan:.3f}); tail energy at k=1 "
        f"{np.mean(ds['tail_energy'].sel(k=1).values[:, noisy]):.2f}, at k=2m "
        f"{np.mean(ds['tail_energy'].isel(k=-1).values[:, noisy]):.2f}. "
        f"Largest principal angle by k (mean over noisy runs): {k_txt}. "
        f"CNN top-subspace angle minus arccos(1 - 2f) at the realized flip "
        f"fraction f (the linear model's v -> 0 limit): mean {np.mean(dev):+.1f}, "
        f"rms {np.sqrt(np.mean(dev ** 2)):.1f} deg over {dev.size} runs. "
        f"p_flip where the angle exceeds {level:g} deg, by SNR: {crit_txt}. "
        f"Linear min-norm angle on the same inputs vs label_noise_angle: worst "
        f"{lin_err:.1f} deg (mean of {ds.sizes['replicate']} seeds{n_txt}). "
        f"Kou boundary SNR* = {snr_star:.3f}. "
        f"LIP (k={k_lip}) clean test error: " + "; ".join(rows))
    return {"summary": summary, "wedin_violations": violations,
            "wedin_nonvacuous_k1": nonvac_k1, "wedin_nonvacuous_all": nonvac_all,
            "wedin_tightness_median_k1": float(np.median(tight_k1)),
            "snr_star": float(snr_star), "level": level,
            "lip_table": repr({k: [round(x, 4) for x in v] for k, v in table.items()})}


def _edges(x, log=False):
    """Cell edges around sorted centres (geometric midpoints when ``log``)."""
    x = np.log(x) if log else np.asarray(x, dtype=float)
    if x.size == 1:
        e = np.array([x[0] - 0.5, x[0] + 0.5])
    else:
        mid = (x[1:] + x[:-1]) / 2
        e = np.concatenate([[2 * x[0] - mid[0]], mid, [2 * x[-1] - mid[-1]]])
    return np.exp(e) if log else e


def plot(ds):
    """Heatmap of the top-subspace angle, angle/tail energy vs p_flip, LIP."""
    import json

    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    params = json.loads(ds.attrs["params"])
    snr, pf = ds["snr"].values, ds["p_flip"].values
    fig = Figure(figsize=(11.0, 8.0), layout="constrained")
    (a0, a1), (a2, a3) = fig.subplots(2, 2)
    top = ds["angle"].sel(k=1).mean("replicate").values
    im = a0.pcolormesh(_edges(snr, log=True), _edges(pf), top.T, cmap="viridis",
                       vmin=0, vmax=90)
    fig.colorbar(im, ax=a0, label="top-subspace angle (k=1), deg, seed mean")
    a0.axvline(ds.attrs["snr_star"], color="w", ls="--",
               label="Kou et al. boundary SNR*")
    a0.plot(snr, ds["critical_flip"].values, "o", color="orange",
            label=f"measured p_flip at {ds.attrs['level']:g} deg")
    a0.plot(snr, ds["critical_flip_pred"].values, "-", color="r",
            label="linear-model prediction")
    a0.set_xscale("log")
    a0.xaxis.set_minor_formatter(NullFormatter())
    a0.set_xticks(snr[::2], [f"{x:.2g}" for x in snr[::2]])
    a0.set_xlabel("SNR")
    a0.set_ylabel("p_flip")
    a0.legend(fontsize=7, loc="upper right")
    a0.set_title("CNN: clean vs noisy top right singular subspace", fontsize=9)

    pick = np.unique(np.linspace(0, len(snr) - 1, min(3, len(snr))).astype(int))
    colors = ["C0", "C1", "C2"]
    for c, i in zip(colors, pick, strict=False):
        fx = ds["flip_fraction"].values[i].ravel()
        a1.plot(fx, ds["angle"].sel(k=1).values[i].ravel(), "o", color=c, ms=4,
                label=f"CNN k=1, SNR {snr[i]:.3g}")
        a1.plot(fx, ds["linear_angle"].values[i].ravel(), "x", color=c, ms=4)
        a1.plot(pf, ds["linear_angle_pred"].values[i], "-", color=c)
        a2.plot(fx, ds["tail_energy"].sel(k=1).values[i].ravel(), "o", color=c,
                ms=4, label=f"CNN k=1, SNR {snr[i]:.3g}")
        a2.plot(fx, 1 - ds["linear_split"].values[i].ravel(), "x", color=c, ms=4)
        a2.plot(pf[1:], 1 - ds["linear_split_pred"].values[i, 1:], "-", color=c)
    fg = np.linspace(0, 0.5, 51)
    a1.plot(fg, np.degrees(np.arccos(1 - 2 * fg)), "k--", lw=1,
            label="arccos(1 - 2f) (v -> 0)")
    a1.set_xlabel("flip fraction")
    a1.set_ylabel("angle (deg)")
    a1.set_title("angle: CNN (o), linear min-norm (x), prediction (line)",
                 fontsize=9)
    a1.legend(fontsize=7)
    a2.set_xlabel("flip fraction")
    a2.set_ylabel("share of the difference outside the top direction")
    a2.set_ylim(0, 1.05)
    a2.set_title("tail energy: CNN (o), linear (x), prediction (line)", fontsize=9)
    a2.legend(fontsize=7)

    j = int(np.argmin(np.abs(pf - 0.2))) if len(pf) > 1 else 0
    for var, lab, st in (("test_error_clean", "noisy-label net", "o-"),
                         ("test_error_lip_trunc", "LIP truncate only", "s--"),
                         ("test_error_lip", "LIP (refit)", "^-"),
                         ("test_error_retrain", "clean-label retrain", "k:")):
        a3.plot(snr, ds[var].values[:, j].mean(axis=-1), st, label=lab, ms=4)
    a3.axvline(ds.attrs["snr_star"], color="gray", ls="--")
    a3.set_xscale("log")
    a3.xaxis.set_minor_formatter(NullFormatter())
    a3.set_xticks(snr[::2], [f"{x:.2g}" for x in snr[::2]])
    a3.set_xlabel("SNR")
    a3.set_ylabel("clean test error (seed mean)")
    a3.set_title(f"LIP (k={params['lip_k']}) at p_flip={pf[j]:g}", fontsize=9)
    a3.legend(fontsize=7)
    fig.suptitle(f"Label noise and singular subspaces (n={params['n']}, "
                 f"d={params['d']}, m={params['m']}, GD eta={params['eta']}, "
                 f"{params['steps']} steps, {len(ds['replicate'])} seeds)",
                 fontsize=10)
    return fig


class LabelNoiseCell:
    """Sweep cell ``label-noise``: one clean/noisy CNN pair (same init, inputs).

    Metrics: ``top_angle`` (largest principal angle of the top-``k`` right
    subspaces, degrees), ``tail_energy`` (at ``k``), ``test_error_clean``
    (noisy net), ``test_error_retrain`` (clean labels), ``test_error_lip``
    (LIP at ``k`` with ``lip_steps``), ``wedin_sin``, ``wedin_bound``.
    """

    PARAMS = {"n": (int, None), "d": (int, None), "m": (int, None),
              "snr": (float, None), "p_flip": (float, None),
              "sigma0": (float, None), "eta": (float, None), "steps": (int, None),
              "n_test": (int, None), "k": (int, None), "lip_steps": (int, None)}
    DEFAULTS = {"n": 20, "d": None, "m": 10, "snr": None, "p_flip": None,
                "sigma0": 0.01, "eta": 0.1, "steps": 300, "n_test": 500, "k": 1,
                "lip_steps": 100}
    METRICS = ("top_angle", "tail_energy", "test_error_clean", "test_error_retrain",
               "test_error_lip", "wedin_sin", "wedin_bound")

    @staticmethod
    def evaluate(params_list, seeds, backend="cpu"):
        from ..data import signal_noise_pair
        from ..models import CNN
        from ..spectral import lip, principal_angles, tail_energy, wedin

        train = get_kernel("train_many", backend)
        models, trains, tests, sds = [], [], [], []
        for p, s in zip(params_list, seeds, strict=True):
            for pf in (0.0, p["p_flip"]):
                tr, te = signal_noise_pair(p["n"], p["n_test"], p["d"],
                                           snr=p["snr"], p_flip=pf, seed=int(s))
                models.append(CNN(p["d"], p["m"]))
                trains.append(tr)
                tests.append(te)
                sds.append(int(s))
        p0 = params_list[0]
        res = train(models, trains, tests=tests,
                    eta=[p["eta"] for p in params_list for _ in (0, 1)],
                    steps=p0["steps"], sigma0=p0["sigma0"], seeds=sds,
                    record_every=p0["steps"])
        out = {k: np.empty(len(params_list)) for k in LabelNoiseCell.METRICS}
        for c, p in enumerate(params_list):
            rc, rz = res[2 * c], res[2 * c + 1]
            tr, te, model = trains[2 * c + 1], tests[2 * c + 1], models[2 * c]

            def err(W, model=model, te=te):
                return float(np.mean(np.sign(model.forward(W, te.X)) != te.y_clean))

            out["top_angle"][c] = principal_angles(rc.W, rz.W, rc.W0, p["k"])[0]
            out["tail_energy"][c] = tail_energy(rc.W, rz.W, rc.W0, p["k"])
            b = wedin(rc.W, rz.W, rc.W0, p["k"])
            out["wedin_sin"][c], out["wedin_bound"][c] = b.sin_theta, b.bound
            out["test_error_clean"][c] = err(rz.W)
            out["test_error_retrain"][c] = err(rc.W)
            out["test_error_lip"][c] = err(lip(model, rz.W, tr, p["k"], W0=rz.W0,
                                               eta=p["eta"], steps=p["lip_steps"]))
        return out

    @staticmethod
    def batch_key(p):
        return (p["m"], p["steps"], p["n"], p["n_test"], p["sigma0"])
