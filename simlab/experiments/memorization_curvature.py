"""Curvature marks memorization: per-sample curvature, curvature-basis editing,
and editing vs unlearning (THEORY 10.2, claim 8 of section 9).

The two-layer ReLU CNN is trained by full-batch GD on signal-plus-noise data with
label noise; the flipped training points are the memorized ones (fitted through
their noise patch). For every ``(SNR, p_flip, seed)``:

- the per-sample Hessian traces (:func:`simlab.memorization.curvature_scores`)
  of flipped and clean points and their mean ratio, against the reduced-dynamics
  prediction :func:`simlab.memorization.predict_trace_ratio`;
- the K-FAC curvature-basis edit (:func:`simlab.memorization.edit`, ``W - W0``
  projected) at several fractions of curvature mass kept: recitation of the
  flipped labels, clean training accuracy, clean test accuracy.

The linear model's min-norm interpolator, edited to its top-``k`` curvature
directions, is compared with :func:`simlab.memorization.predict_recitation_linear`.
Finally, in a harmful and a benign regime (Kou et al. boundary, see the
``benign-overfitting`` figure), the same forget set (the flipped points) is
removed by the edit, by descent-ascent unlearning (``alpha`` and steps swept)
and by retraining without it; and the net ascent curvature ``kappa_plus`` and
the escape step of unlearning are compared between the flipped set, the
``n_f`` highest-trace points and ``n_f`` random clean points.
"""

import time

import numpy as np
import xarray as xr

from .._blas import serial_blas
from .._provenance import provenance

NAME = "memorization-curvature"
CLAIM = ("THEORY 9.8: mislabeled (memorized) points carry larger per-sample "
         "curvature by a predicted SNR-dependent factor; a curvature-basis edit "
         "removes recitation of flipped labels")
#: Which question the figure answers (THEORY section 4).
TESTED = ("no stability verdict for the curvature ratio and the edit; "
          "finite-horizon escape (displacement K = 1e3 within the horizon) and "
          "kappa_plus > 0 for the unlearning comparison")
DESCRIPTION = ("Flipped/clean mean per-sample Hessian trace of the trained CNN vs "
               "SNR (3 label-noise rates) with the reduced-dynamics prediction; "
               "recitation, clean training and test accuracy vs fraction of K-FAC "
               "curvature mass kept; the linear model's recitation vs directions "
               "kept with its random-matrix prediction; editing vs unlearning vs "
               "retraining in a harmful and a benign regime.")

FULL = dict(n=20, d=200, m=10, eta=0.1, steps=600, sigma0=0.01, n_test=500,
            snr=[0.02, 0.05, 0.1, 0.2, 0.3, 0.4], p_flip=[0.1, 0.2, 0.3], seeds=4,
            keep=[1.0, 0.999, 0.99, 0.97, 0.9, 0.8, 0.6, 0.4],
            lin_n=20, lin_d=400, lin_snr=[0.05, 0.1, 0.3], lin_k=[1, 2, 3, 5, 7, 10],
            lin_p_flip=0.15, lin_seeds=200,
            regimes=[0.05, 0.4], cmp_p_flip=0.2, cmp_keep=[0.9, 0.6],
            alpha=[0.1, 0.3, 0.5], unlearn_steps=[50, 200], horizon=1000)
QUICK = dict(FULL, steps=300, snr=[0.05, 0.4], p_flip=[0.2], seeds=2,
             keep=[1.0, 0.9, 0.6], lin_snr=[0.05, 0.3], lin_k=[1, 5, 10],
             lin_seeds=40, cmp_keep=[0.6], alpha=[0.3], unlearn_steps=[50],
             horizon=200, n_test=200)


def _train_grid(params, snrs, p_flips, reps, seed):
    from ..data import signal_noise_pair
    from ..dynamics.train import train_many
    from ..models import CNN

    n, d = int(params["n"]), int(params["d"])
    model = CNN(d, int(params["m"]))
    keys, trains, tests, seeds = [], [], [], []
    for a in snrs:
        for b in p_flips:
            for k in reps:
                s = 10_000 * seed + k
                tr, te = signal_noise_pair(n, int(params["n_test"]), d, snr=a,
                                           p_flip=b, seed=s)
                if not tr.flipped.any() or tr.flipped.all():
                    # keep the flip count in [1, n-1]: redraw from the next stream
                    tr, te = signal_noise_pair(n, int(params["n_test"]), d, snr=a,
                                               p_flip=b, seed=s + 5000)
                keys.append((a, b, k))
                trains.append(tr)
                tests.append(te)
                seeds.append(s)
    res = train_many(model, trains, tests=tests, eta=params["eta"],
                     steps=int(params["steps"]), sigma0=params["sigma0"],
                     seeds=seeds, record_every=int(params["steps"]))
    return model, {key: (tr, te, r) for key, tr, te, r in zip(keys, trains, tests, res,
                                                              strict=True)}


def _linear_part(params):
    from ..data import sample_linear_model
    from ..memorization import predict_recitation_linear

    n, d = int(params["lin_n"]), int(params["lin_d"])
    snrs, ks = params["lin_snr"], [int(k) for k in params["lin_k"]]
    rng = np.random.default_rng(12345)
    sim = np.zeros((len(snrs), len(ks), 2))
    pred = np.zeros_like(sim)
    for a, snr in enumerate(snrs):
        cnt = 0
        for s in range(int(params["lin_seeds"])):
            X, yc = sample_linear_model(n, d, snr, seed=s)
            fl = rng.random(n) < params["lin_p_flip"]
            if not fl.any() or fl.all():
                continue
            cnt += 1
            y = np.where(fl, -yc, yc)
            U = np.linalg.svd(X, full_matrices=False)[0]
            for b, k in enumerate(ks):
                f = U[:, :k] @ (U[:, :k].T @ y)
                sim[a, b] += [np.mean(np.sign(f[fl]) == y[fl]),
                              np.mean(np.sign(f[~fl]) == y[~fl])]
                pr = predict_recitation_linear(n, d, snr, k, int(fl.sum()))
                pred[a, b] += [pr["recitation"], pr["clean_acc"]]
        sim[a] /= cnt
        pred[a] /= cnt
    return sim, pred


def _compare(params, model, runs, reps):
    """Editing vs unlearning vs retraining; kappa_plus and escape per forget set."""
    from ..dynamics.train import train_many
    from ..dynamics.unlearn import unlearn
    from ..memorization import curvature_scores, edit, edit_metrics, kfac
    from ..predict import curvature_split
    from ..stability import kappa_plus

    regimes, p_flip = params["regimes"], params["cmp_p_flip"]
    methods = ([f"edit keep={k:g}" for k in params["cmp_keep"]]
               + [f"unlearn a={a:g} T={t}" for a in params["alpha"]
                  for t in params["unlearn_steps"]] + ["retrain"])
    shape = (len(regimes), len(methods), len(reps))
    out = {v: np.full(shape, np.nan) for v in ("c_recitation", "c_clean_acc",
                                                "c_test_acc", "c_grad_evals",
                                                "c_seconds")}
    sets = ["flipped", "top trace", "random clean"]
    kap = np.full((len(regimes), len(sets), len(reps)), np.nan)
    esc = np.full_like(kap, np.nan)
    eta, n = params["eta"], int(params["n"])
    for a, snr in enumerate(regimes):
        retrain_jobs = []
        for k in reps:
            tr, te, r = runs[(snr, p_flip, k)]
            forget = np.flatnonzero(tr.flipped)
            t0 = time.perf_counter()
            basis = kfac(model, r.W, tr)
            t_basis = time.perf_counter() - t0
            j = 0
            for keep in params["cmp_keep"]:
                t0 = time.perf_counter()
                W = edit(model, r.W, tr, keep=keep, W0=r.W0, basis=basis)
                _store(out, (a, j, k), edit_metrics(model, W, tr, te), n,
                       t_basis + time.perf_counter() - t0)
                j += 1
            for alpha in params["alpha"]:
                for steps in params["unlearn_steps"]:
                    t0 = time.perf_counter()
                    u = unlearn(model, r.W, tr, forget, alpha=alpha, eta=eta,
                                steps=int(steps), record_every=int(steps))
                    _store(out, (a, j, k), edit_metrics(model, u.W, tr, te),
                           n * u.steps, time.perf_counter() - t0)
                    j += 1
            retrain_jobs.append((k, tr, te, forget))
            # forget sets: flipped, the n_f highest-trace points, n_f random clean
            sc = curvature_scores(model, r.W, tr).trace.values
            nf = forget.size
            clean = np.flatnonzero(~tr.flipped)
            rng = np.random.default_rng([k, 77])
            choices = [forget, np.argsort(-sc, kind="stable")[:nf],
                       np.sort(rng.choice(clean, size=min(nf, clean.size),
                                          replace=False))]
            for b, fset in enumerate(choices):
                Fr, Ff = curvature_split(model, r.W, tr, fset)
                kap[a, b, k] = kappa_plus(Fr, forget=Ff, alpha=0.3)
                u = unlearn(model, r.W, tr, fset, alpha=0.3, eta=eta,
                            steps=int(params["horizon"]), stop_on_escape=True,
                            record_every=10)
                esc[a, b, k] = u.escape_step if u.escaped else np.inf
        # retraining without the forget set, same initialisation
        j = len(methods) - 1
        for k, tr, te, f in retrain_jobs:
            t0 = time.perf_counter()
            sub = tr.subset(np.setdiff1d(np.arange(n), f))
            res = train_many(model, [sub], eta=eta, steps=int(params["steps"]),
                             W0=[runs[(snr, p_flip, k)][2].W0],
                             record_every=int(params["steps"]))[0]
            _store(out, (a, j, k), edit_metrics(model, res.W, tr, te),
                   sub.n * int(params["steps"]), time.perf_counter() - t0)
    return methods, sets, out, kap, esc


def _store(out, idx, met, grads, secs):
    out["c_recitation"][idx] = met["recitation"]
    out["c_clean_acc"][idx] = met["clean_acc"]
    out["c_test_acc"][idx] = met["test_acc"]
    out["c_grad_evals"][idx] = grads
    out["c_seconds"][idx] = secs


@serial_blas
def run(quick=False, seed=0, **overrides):
    """Compute the figure data (``QUICK``: a few seconds; ``FULL``: minutes).

    Returns
    -------
    xarray.Dataset
        ``trace_ratio``, ``trace_ratio_pred`` over ``(snr, p_flip, replicate)``;
        ``trace`` and ``flipped`` over ``(snr, p_flip, replicate, sample)``;
        ``recitation``, ``clean_acc``, ``test_acc`` over ``(..., keep)``;
        ``lin_*`` over ``(lin_snr, lin_k)``; ``c_*`` (edit, unlearning,
        retraining) over ``(regime, approach, replicate)``; ``kappa_plus``,
        ``escape_step`` over ``(regime, forget_set, replicate)``.
    """
    from ..memorization import (
        curvature_scores,
        edit,
        edit_metrics,
        kfac,
        predict_trace_ratio,
    )

    params = dict(QUICK if quick else FULL)
    unknown = set(overrides) - set(params)
    if unknown:
        raise ValueError(f"unknown parameters {sorted(unknown)}")
    params.update(overrides)
    t_start = time.perf_counter()
    snrs = sorted(set(params["snr"]) | set(params["regimes"]))
    p_flips = sorted(set(params["p_flip"]) | {params["cmp_p_flip"]})
    reps = list(range(int(params["seeds"])))
    keeps = [float(k) for k in params["keep"]]
    n, d = int(params["n"]), int(params["d"])
    model, runs = _train_grid(params, snrs, p_flips, reps, seed)
    S, P, R = len(snrs), len(p_flips), len(reps)
    ratio, ratio_pred = np.zeros((S, P, R)), np.zeros((S, P, R))
    trace = np.zeros((S, P, R, n))
    flipped = np.zeros((S, P, R, n), dtype=bool)
    met = {v: np.zeros((S, P, R, len(keeps))) for v in ("recitation", "clean_acc",
                                                        "test_acc")}
    for a, snr in enumerate(snrs):
        for b, pf in enumerate(p_flips):
            for k in reps:
                tr, te, r = runs[(snr, pf, k)]
                t = curvature_scores(model, r.W, tr).trace.values
                fl = tr.flipped
                trace[a, b, k], flipped[a, b, k] = t, fl
                ratio[a, b, k] = t[fl].mean() / t[~fl].mean()
                ratio_pred[a, b, k] = predict_trace_ratio(
                    n, d, snr, int(fl.sum()), m=int(params["m"]), eta=params["eta"],
                    steps=int(params["steps"]))
                basis = kfac(model, r.W, tr)
                for c, keep in enumerate(keeps):
                    mm = edit_metrics(model, edit(model, r.W, tr, keep=keep,
                                                  W0=r.W0, basis=basis), tr, te)
                    for v in met:
                        met[v][a, b, k, c] = mm[v]
    lin_sim, lin_pred = _linear_part(params)
    methods, sets, cmp, kap, esc = _compare(params, model, runs, reps)
    dims = ("snr", "p_flip", "replicate")
    ds = xr.Dataset(
        {
            "trace_ratio": (dims, ratio, {"long_name": "flipped/clean mean trace"}),
            "trace_ratio_pred": (dims, ratio_pred),
            "trace": (dims + ("sample",), trace),
            "flipped": (dims + ("sample",), flipped),
            **{v: (dims + ("keep",), met[v]) for v in met},
            "lin_recitation": (("lin_snr", "lin_k"), lin_sim[..., 0]),
            "lin_recitation_pred": (("lin_snr", "lin_k"), lin_pred[..., 0]),
            "lin_clean_acc": (("lin_snr", "lin_k"), lin_sim[..., 1]),
            "lin_clean_acc_pred": (("lin_snr", "lin_k"), lin_pred[..., 1]),
            **{v: (("regime", "approach", "replicate"), cmp[v]) for v in cmp},
            "kappa_plus": (("regime", "forget_set", "replicate"), kap),
            "escape_step": (("regime", "forget_set", "replicate"), esc),
        },
        coords={"snr": np.array(snrs), "p_flip": np.array(p_flips),
                "replicate": np.array(reps), "sample": np.arange(n),
                "keep": np.array(keeps), "lin_snr": np.array(params["lin_snr"]),
                "lin_k": np.array(params["lin_k"]),
                "regime": np.array(params["regimes"]), "approach": methods,
                "forget_set": sets},
    )
    main = ds.sel(snr=params["snr"], p_flip=params["p_flip"])
    rel = (main.trace_ratio_pred.mean("replicate") / main.trace_ratio.mean("replicate")
           - 1.0)
    ds.attrs.update(provenance(params, seed))
    ds.attrs.update(
        ratio_worst_rel_error=float(np.abs(rel).max()),
        lin_worst_abs_error=float(np.abs(ds.lin_recitation
                                         - ds.lin_recitation_pred).max()),
        seconds=time.perf_counter() - t_start)
    ds.attrs["summary"] = _summary(ds)
    return ds


def _summary(ds):
    """The manifest's measured numbers, from the data alone."""
    r = ds.trace_ratio.mean("replicate")
    rp = ds.trace_ratio_pred.mean("replicate")
    lines = [
        f"flipped/clean mean trace ratio (seed means over SNR {ds.snr.values[0]:g}-"
        f"{ds.snr.values[-1]:g}, p_flip {ds.p_flip.values.min():g}-"
        f"{ds.p_flip.values.max():g}): measured {float(r.min()):.2f}-"
        f"{float(r.max()):.2f}, predicted {float(rp.min()):.2f}-{float(rp.max()):.2f}; "
        f"worst /pred/sim - 1/ at the figure's main p_flip "
        f"{ds.attrs['ratio_worst_rel_error']:.3f}",
        f"linear min-norm recitation after keeping the top-k curvature directions: "
        f"worst /RMT - sim/ {ds.attrs['lin_worst_abs_error']:.3f}"]
    mean = {v: ds[v].mean("replicate") for v in ("c_recitation", "c_clean_acc",
                                                  "c_test_acc", "c_grad_evals")}
    for reg in ds.regime.values:
        cells = []
        for a in ds.approach.values:
            m = {v: float(mean[v].sel(regime=reg, approach=a)) for v in mean}
            cells.append(f"{a}: {m['c_recitation']:.2f}/{m['c_clean_acc']:.2f}/"
                         f"{m['c_test_acc']:.2f} ({m['c_grad_evals']:.0f})")
        lines.append(f"SNR {reg:g}, recitation/clean train acc/test acc (gradient "
                     "evaluations): " + "; ".join(cells))
        kp = ds.kappa_plus.sel(regime=reg).mean("replicate")
        es = ds.escape_step.sel(regime=reg).mean("replicate")
        lines.append(f"SNR {reg:g}, kappa_+ / escape step (alpha = 0.3) by forget "
                     "set: " + "; ".join(f"{f}: {float(kp.sel(forget_set=f)):.3f} / "
                                         f"{float(es.sel(forget_set=f)):.1f}"
                                         for f in ds.forget_set.values))
    return "\n".join(lines)


def plot(ds):
    """Four panels: trace ratio vs SNR, edit curves, linear prediction, comparison."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(12, 9))
    a = ax[0, 0]
    for pf in ds.p_flip.values:
        r = ds.trace_ratio.sel(p_flip=pf)
        line = a.errorbar(ds.snr, r.mean("replicate"), r.std("replicate"), fmt="o",
                          label=f"CNN p_flip={pf:g}")
        a.plot(ds.snr, ds.trace_ratio_pred.sel(p_flip=pf).mean("replicate"), "-",
               color=line[0].get_color())
    a.axhline(1.0, color="k", lw=0.5)
    a.set(xlabel="SNR", ylabel="mean tr H_i: flipped / clean",
          title=f"per-sample curvature (line: prediction; worst rel. error "
                f"{ds.attrs['ratio_worst_rel_error']:.2f})")
    a.legend(fontsize=8)
    a = ax[0, 1]
    pf = float(ds.p_flip.values[len(ds.p_flip) // 2])
    for snr, ls in zip(ds.regime.values, ("--", "-"), strict=True):
        sub = ds.sel(snr=snr, p_flip=pf).mean("replicate")
        for v, col in (("recitation", "C3"), ("clean_acc", "C0"), ("test_acc", "C2")):
            a.plot(sub.keep, sub[v], ls, color=col, marker=".",
                   label=f"{v} SNR={snr:g}")
    a.invert_xaxis()
    a.set(xlabel="fraction of K-FAC curvature mass kept", ylabel="share",
          title=f"CNN curvature-basis edit (p_flip={pf:g})")
    a.legend(fontsize=7)
    a = ax[1, 0]
    for i, snr in enumerate(ds.lin_snr.values):
        a.plot(ds.lin_k, ds.lin_recitation.sel(lin_snr=snr), "o", color=f"C{i}",
               label=f"simulated SNR={snr:g}")
        a.plot(ds.lin_k, ds.lin_recitation_pred.sel(lin_snr=snr), "-", color=f"C{i}")
    a.set(xlabel="top-k curvature directions kept", ylabel="recitation",
          title=f"linear min-norm interpolator (line: RMT prediction; worst "
                f"|error| {ds.attrs['lin_worst_abs_error']:.3f})")
    a.legend(fontsize=8)
    a = ax[1, 1]
    x = np.arange(ds.sizes["approach"])
    w = 0.4
    for i, reg in enumerate(ds.regime.values):
        sub = ds.sel(regime=reg).mean("replicate")
        a.bar(x + (i - 0.5) * w, sub.c_recitation, w, label=f"recitation SNR={reg:g}",
              color=f"C{3 + i}")
        a.plot(x + (i - 0.5) * w, sub.c_test_acc, "k^" if i else "kv",
               label=f"test acc SNR={reg:g}")
    a.set_xticks(x, ds.approach.values, rotation=60, ha="right", fontsize=7)
    a.set(ylabel="share", title="forgetting the flipped points")
    a.legend(fontsize=7)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------
# sweep cell experiment
# --------------------------------------------------------------------------

class MemorizationCell:
    """One (SNR, p_flip, fraction kept) cell: train the CNN, measure the
    flipped/clean trace ratio (and its prediction), edit, measure recitation,
    clean training accuracy and clean test accuracy. Cells sharing
    ``(n, d, m, eta, steps, sigma0, n_test)`` train in one ``train_many`` call
    (each cell from its own seed, so ``keep`` cells are independent draws)."""

    PARAMS = {"snr": (float, None), "p_flip": (float, None), "keep": (float, None),
              "n": (int, None), "d": (int, None), "m": (int, None),
              "eta": (float, None), "steps": (int, None), "sigma0": (float, None),
              "n_test": (int, None)}
    DEFAULTS = {"snr": None, "p_flip": 0.2, "keep": 0.9, "n": 20, "d": 200, "m": 10,
                "eta": 0.1, "steps": 600, "sigma0": 0.01, "n_test": 500}
    METRICS = ("trace_ratio", "trace_ratio_pred", "recitation", "clean_acc",
               "test_acc")

    @staticmethod
    def evaluate(params_list, seeds, backend="cpu"):
        from ..data import signal_noise_pair
        from ..dynamics.backends import get_kernel
        from ..memorization import (
            curvature_scores,
            edit,
            edit_metrics,
            predict_trace_ratio,
        )
        from ..models import CNN

        p0 = params_list[0]
        model = CNN(p0["d"], p0["m"])
        uniq = {}
        for p, s in zip(params_list, seeds, strict=True):
            uniq.setdefault((p["snr"], p["p_flip"], int(s)), None)
        data = {}
        for key in uniq:
            data[key] = signal_noise_pair(p0["n"], p0["n_test"], p0["d"], snr=key[0],
                                          p_flip=key[1], seed=key[2])
        res = get_kernel("train_many", backend)(
            model, [data[k][0] for k in uniq], tests=[data[k][1] for k in uniq],
            eta=p0["eta"], steps=p0["steps"], sigma0=p0["sigma0"],
            seeds=[k[2] for k in uniq], record_every=p0["steps"])
        trained = dict(zip(uniq, res, strict=True))
        out = {m: np.full(len(params_list), np.nan) for m in MemorizationCell.METRICS}
        for c, (p, s) in enumerate(zip(params_list, seeds, strict=True)):
            key = (p["snr"], p["p_flip"], int(s))
            tr, te = data[key]
            r = trained[key]
            fl = tr.flipped
            if fl.any() and not fl.all():
                t = curvature_scores(model, r.W, tr).trace.values
                out["trace_ratio"][c] = t[fl].mean() / t[~fl].mean()
                out["trace_ratio_pred"][c] = predict_trace_ratio(
                    p["n"], p["d"], p["snr"], int(fl.sum()), m=p["m"], eta=p["eta"],
                    steps=p["steps"])
                mm = edit_metrics(model, edit(model, r.W, tr, keep=p["keep"],
                                              W0=r.W0), tr, te)
                for v in ("recitation", "clean_acc", "test_acc"):
                    out[v][c] = mm[v]
        return out

    @staticmethod
    def batch_key(p):
        return (p["n"], p["d"], p["m"], p["eta"], p["steps"], p["sigma0"],
                p["n_test"])
