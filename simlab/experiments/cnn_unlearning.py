"""CNN unlearning heatmaps: real descent-ascent runs vs the Hessian prediction.

THEORY sections 1, 3, 4, 8 and claim 5 of section 9. A two-layer ReLU CNN is
trained to interpolation, then unlearned by descent-ascent (retain descent,
forget ascent, weight ``alpha``, minibatches ``B`` / ``B_f``, learning rate
``eta``) on the real network. Three heatmaps, ``(SNR x alpha)``, ``(B x alpha)``
and ``(eta x B)``, compare per cell the verdict of the nonlinear runs with the
prediction of the exact second-moment operator ``T_u`` built from the
per-sample curvature at the trained weights ``w*``.

Why the squared loss. THEORY section 1 assumes interpolation,
``grad l_i(w*) = 0`` for every sample. With the logistic loss the trained
weights are never stationary (the mean gradient drifts the iterate, so the
displacement criterion of :func:`simlab.dynamics.unlearn.unlearn` is met by
every run, and ``l''`` decays as ascent flips margins). With the squared loss
the CNN reaches zero training loss (``~1e-30`` here, gradient ``~1e-15``), so
``w*`` is a fixed point of the descent-ascent map and the linearization of
THEORY section 3, ``delta_{t+1} = (I - eta M_t) delta_t``, is the first-order
dynamics of the real network around it (per-sample Hessians ``h_i h_i^T``
with ``l'' = 1``).

Escape (nonlinear verdict). For every cell and trajectory two copies of the
network are unlearned with the same minibatches: one from ``w*`` and a twin
from ``w* + delta_0``, with ``delta_0`` a Gaussian combination of the curvature
factors ``h_i`` (so it lies in the invariant subspace ``U = range(sum H_i)``
of THEORY section 4; a component outside ``U`` is never moved and would only
add a floor) scaled to ``||delta_0|| = eps ||w*||``. The trajectory escapes at
the first check step ``t <= T`` (``T`` = horizon) with
``||W'_t - W_t||^2 >= K ||delta_0||^2`` (``K = 10^3``), or if the twin blows up
numerically. The twin difference removes any residual drift of the base run
(none at an exact interpolating minimum). A cell's nonlinear verdict is
"escapes" when more than half of its trajectories escape (the source's
typical-behaviour criterion, THEORY section 4); the escape fraction and the
Monte-Carlo mean-square growth at the horizon are stored as well.

Predictions (:func:`simlab.predict.predict_unlearning` at ``w*``, THEORY
section 4). Two verdicts answer two questions, and both are scored:

* *typical* (the one the majority-of-runs verdict tests): ``lambda_typ``, the
  median over 64 linearized Monte-Carlo trajectories (``delta_0`` drawn from the
  same law as the twins) of the per-step growth rate of ``||delta_t||``;
  predicted escape iff ``T lambda_typ >= log(K) / 2``;
* *mean square*: the exact operator ``T_u`` iterated from the second moment of
  the actual ``delta_0`` law (:func:`simlab.stability.escape_time`); predicted
  escape iff ``E||delta_t||^2 >= K E||delta_0||^2`` for some ``t <= T``.

``rho``, ``kappa_+`` and ``log K / log rho`` (which assumes ``delta_0`` in the
top mode) are stored too. The learning rate is normalised by the sharpness at
``w*``: ``eta = c / lambda_max(H(w*))``; the forget batch is the package
default ``B_f = max(1, round(B n_f / n_r))`` (same sampling fraction).

Near and far. A cell is *far* from the typical boundary when
``|T lambda_typ| > log K`` and *near* otherwise; agreement shares of both
verdicts are reported near, far and overall, per heatmap and pooled, with the
number of far cells on each side (escaping / resisting).

The perturbation size matters and is part of the result: with the default
``eps = 1e-5`` the separation at escape is ``~2e-3 ||w*||`` and the runs follow
the linearization. At ``eps >= 1e-2`` (separation at escape ``~0.3 ||w*||``) the
instabilities driven by minibatch noise alone (small ``B``, small ``alpha``:
a sample's own curvature ``eta ||h_i||^2 / B > 2``) saturate on the real network
(growth stalls at ``~50 < K``: the oscillating ReLU units change their
activation pattern), while the ascent-driven escapes (``kappa_+`` large) do
not, so far-from-boundary agreement drops to ``~90%`` (quick grid).

In this data regime (random forget set, ``n_f << n``, ``p >> n``) every forget
sample carries a private noise direction, so ``kappa_+ > 0`` and ``rho > 1`` for
every ``alpha > 0`` (THEORY section 11: ``r(0) = alpha n / n_f``): the verdict
boundaries drawn are finite-horizon ones (typical: solid red; mean square:
dotted cyan); the ``rho = 1`` contour (dashed) is drawn where a grid crosses it.
These panels therefore test *how fast* unlearning escapes, not *whether*.

Duplicate-forget panels (``dup_eta_alpha``: ``(eta, alpha)`` at ``B =
dup_batch0``; ``dup_batch_alpha``: ``(B, alpha)`` at ``c = dup_c0``; SNR
``snr0``). The forget rows are appended copies (same ``x``, same ``y``) of
retain rows ``0..n_forget-1``, and the network is trained on the augmented set
(:func:`_duplicate_minimum`); retain and forget indices stay disjoint. Every
forget factor is then a retain factor, the ascent acts inside the retain span,
and a genuine ``rho(T_u) = 1`` frontier exists (THEORY section 10.0): below
``alpha ~ n_f / (n_r + n_f)`` the mean drift restores, and at large ``eta`` or
small ``B`` minibatch noise alone destabilises. Three frontiers are stored per
row (``<panel>_alpha_rho1``: ``rho = 1``; ``<panel>_alpha_lyap0``:
``lambda_typ = 0``; ``<panel>_alpha_typ``: ``T lambda_typ = log(K)/2``) with
the real one (``<panel>_alpha_real``), and the cells *between* the mean-square
and typical frontiers (``rho > 1`` but the typical verdict resists) are marked
(``<panel>_between``, magenta squares): there ``E||delta_t||^2`` grows through
rare batches while a typical run contracts, and the real majority resists. At
paper size (seed 0) ``rho`` crosses 1 at ``alpha ~ 0.13`` (row median),
``lambda_typ`` crosses 0 at ``~0.18`` and the real majority escapes from
``~0.19-0.22``; the typical verdict agrees with it on every far cell, the
mean-square one on ``~88%`` of them (seed 1: 100% and 92-93%). ``kappa_+``
crosses 0 at ``alpha = 0.165 ~ n_f / (n_r + n_f)`` on every row: at full
batch the three frontiers meet there; minibatch noise moves ``rho = 1`` to
smaller ``alpha`` and ``lambda_typ = 0`` to larger ``alpha``, and the real runs
follow ``lambda_typ``: far cells between the frontiers (``rho`` up to
``~1.7``) never escape.

Logistic-loss panel (``logistic_eta_alpha``: ``(eta, alpha)`` at ``B =
logistic_batch0``, SNR ``snr0``; :func:`_logistic_panel`). The CNN of the
source is trained on the logistic loss, where ``w*`` is never stationary
(``||grad L|| ~ L``): the same network is trained ``logistic_train_steps`` of
GD on the logistic loss, and the prediction is
:func:`simlab.predict.predict_unlearning` on its drift-aware path (the tangent
dynamics along the reference trajectory, ``logistic_mc_trajectories``
trajectories; ``eta = c / lambda_max(J^T J / n)``, the ``l'' = 1``
Gauss-Newton sharpness, because the logistic Hessian at ``w*`` is ``~L`` times
smaller). What the tangent shows: ``l''_f ~ e^{-margin}`` is negligible at
``w*``; ascent drives a forget margin ``m`` through zero, where ``l''`` peaks,
and along the way ``d log||delta|| / d m = -sigma(m)``, so a completed passage
amplifies ``delta`` along that sample by ``~1 + e^{m_0}`` whatever ``eta`` and
``alpha`` (more when ``eta l'' ||grad f||^2`` exceeds 2 on the way). Escape
therefore needs a trained margin ``m_0 >~ log(K)/2`` and a passage completed
within the horizon (``eta alpha`` large enough): drift triggers the
instability. Retain curvature ``~e^{-margin}`` cannot contract ``delta``
within the horizon, so far-resisting cells (``T lambda_typ < -log K``) do not
occur. Real twins at ``||delta_0|| = logistic_eps ||w*|| = 1e-5 ||w*||`` (the
squared panels' size); twins at ``logistic_eps_check = 1e-8`` (same minibatches
and directions) are scored too. Neither size is free of an effect the tangent
(an a.e. derivative) misses: along a drifting path a twin can sit on the other
side of a ReLU kink than the reference, and the separation then jumps by
``O(eta |l'| ||x||^2 / m)`` whatever ``delta`` is. At ``1e-5`` this fakes
escapes at large ``eta`` (kinks crossed a step apart); at ``1e-8`` units whose
pre-activation hovers at a kink (``|z|`` below ``1e-8 ||w*||``) make twins
jump apart transiently even at small ``eta``, so the ``1e-8`` twins escape on
40-80% of runs in cells where the tangent (and the ``1e-5`` twins) see no growth
(paper size, seed 0: near agreement 86% at ``1e-8`` against 96% at ``1e-5``;
far cells 100% at both).
"""

import json

import numpy as np
import xarray as xr

from .. import _streams
from .._provenance import provenance
from .._validation import check_forget_batch
from ..curvature import sharpness
from ..predict import predict_unlearning

NAME = "cnn-unlearning"
CLAIM = ("THEORY 9.5 (finite-horizon escape, typical behaviour): descent-ascent "
         "unlearning of trained CNNs escapes within the horizon where the "
         "linearized dynamics at the trained weights says a typical run does; "
         "on random forget sets kappa_+ > 0 in every cell (how fast, not "
         "whether); on forget rows duplicating retain rows a genuine rho(T_u) = 1 "
         "frontier exists and real runs follow the typical (Lyapunov) frontier, "
         "not the mean-square one")
#: Which question the figure answers (THEORY section 4): mean-square
#: stability, typical behaviour, finite-horizon escape, or none.
TESTED = ("finite-horizon escape, typical behaviour: majority of real runs scored "
          "against the typical prediction; the mean-square (delta_0 law) prediction "
          "scored beside it; on the duplicate-forget panels also stability "
          "(rho(T_u) = 1 and lambda_typ = 0 frontiers vs the real one)")
DESCRIPTION = ("Escape fraction of real descent-ascent unlearning runs of a two-layer "
               "ReLU CNN trained to interpolation (squared loss) over (SNR, alpha), "
               "(B, alpha) and (eta, B) with a random forget set, and over (eta, "
               "alpha) and (B, alpha) with forget rows duplicating retain rows "
               "(genuine rho(T_u) = 1 frontier; magenta squares: cells between the "
               "mean-square and typical frontiers). Overlaid: the typical boundary "
               "T lambda_typ "
               "= log(K)/2 (red; the verdict scored against the majority of runs), "
               "the mean-square boundary from the delta_0 law (cyan dotted) and "
               "rho(T_u) = 1 (white dashed, where present); crosses mark cells where "
               "the real majority verdict and the typical prediction disagree. "
               "Logistic panel (eta, alpha): the CNN trained on the logistic loss "
               "(not stationary), real twins at 1e-5 ||w*|| scored against the "
               "drift-aware prediction (tangent along the reference trajectory).")

FULL = dict(
    n=20, n_forget=4, d=200, m=10, sigma_p=1.0, sigma0=0.1, train_eta=0.1,
    train_steps=3000, horizon=300, escape_factor=1e3, eps=1e-5, check_every=5,
    trajectories=10, mc_trajectories=64, scheme="without",
    snr=np.geomspace(0.02, 1.0, 10).round(4).tolist(),
    alpha=np.geomspace(2e-3, 0.3, 10).round(5).tolist(),
    batch=[1, 2, 3, 4, 6, 8, 10, 12, 14, 16],
    c=np.geomspace(0.02, 3.0, 10).round(4).tolist(),
    snr0=0.1, alpha0=0.01, batch0=4, c0=0.15,
    # duplicate-forget panels (forget rows = appended copies of retain rows
    # 0..n_forget-1, at SNR snr0): a genuine rho(T_u) = 1 frontier in alpha
    dup_alpha=[0.01, 0.03, 0.05, 0.07, 0.09, 0.11, 0.13, 0.15, 0.17, 0.19, 0.22,
               0.26, 0.32, 0.4],
    dup_c=np.geomspace(0.2, 1.6, 12).round(3).tolist(),
    dup_batch=[1, 2, 3, 4, 5, 6, 8, 10, 12, 14, 17, 20],
    dup_c0=0.6, dup_batch0=8,
    # logistic-loss panel (LOGISTIC): (eta scale, alpha) at a logistic-trained
    # minimum (snr0 data, not stationary), drift-aware prediction
    logistic=True, logistic_train_steps=100_000, logistic_horizon=1000,
    logistic_batch0=4, logistic_eps=1e-5, logistic_eps_check=1e-8,
    logistic_mc_trajectories=64,
    logistic_c=np.geomspace(0.3, 30.0, 10).round(3).tolist(),
    logistic_alpha=np.geomspace(0.01, 0.6, 10).round(4).tolist(),
)
QUICK = dict(
    FULL, train_steps=2000, horizon=200, trajectories=6,
    snr=[0.02, 0.06, 0.2, 0.5, 1.0],
    alpha=[3e-3, 0.01, 0.03, 0.1, 0.3],
    batch=[1, 2, 4, 8, 16],
    c=[0.02, 0.08, 0.3, 1.0, 3.0],
    dup_alpha=[0.02, 0.08, 0.14, 0.2, 0.3],
    dup_c=[0.25, 0.5, 0.9, 1.6],
    dup_batch=[2, 5, 10, 20],
    logistic_train_steps=5000, logistic_horizon=300, logistic_mc_trajectories=32,
    logistic_c=[1.0, 10.0, 30.0], logistic_alpha=[0.01, 0.1, 0.6],
)

#: heatmap name -> (row axis, column axis)
PANELS = {"snr_alpha": ("snr", "alpha"), "batch_alpha": ("batch", "alpha"),
          "eta_batch": ("c", "batch"),
          "dup_eta_alpha": ("c", "alpha"), "dup_batch_alpha": ("batch", "alpha")}
#: panels whose forget rows duplicate retain rows (grids ``dup_<axis>``, fixed
#: values ``dup_c0``, ``dup_batch0``; SNR ``snr0``)
DUP_PANELS = ("dup_eta_alpha", "dup_batch_alpha")
_LABELS = {"snr": "SNR", "alpha": "alpha (ascent weight)", "batch": "retain batch B",
           "c": "eta * lambda_max(H(w*))"}


def _grid(params, panel, axis):
    """The values of ``axis`` on ``panel`` (``dup_<axis>`` on a duplicate panel)."""
    return params[f"dup_{axis}" if panel in DUP_PANELS else axis]


def _cells(params, panel):
    """Per cell of ``panel``: (row value, column value, cell parameters)."""
    rows, cols = PANELS[panel]
    pre = "dup_" if panel in DUP_PANELS else ""
    base = dict(snr=params["snr0"], alpha=params["alpha0"],
                batch=params[pre + "batch0"], c=params[pre + "c0"])
    out = []
    for a in _grid(params, panel, rows):
        for b in _grid(params, panel, cols):
            cell = dict(base, **{rows: a, cols: b})
            out.append((a, b, cell))
    return out


def _train_minima(params, snrs, seed):
    """Interpolating squared-loss minima, one per SNR (shared draw and init)."""
    from ..data import rescale_signal, signal_noise
    from ..dynamics.train import train_many
    from ..models import CNN

    d = int(params["d"])
    model = CNN(d, int(params["m"]))
    base = signal_noise(int(params["n"]), d, snr=float(snrs[0]),
                        sigma_p=params["sigma_p"], seed=seed)
    datasets = [rescale_signal(base, s * params["sigma_p"] * np.sqrt(d)) for s in snrs]
    steps = int(params["train_steps"])
    res = train_many(model, datasets, eta=params["train_eta"], steps=steps,
                     loss="squared", sigma0=params["sigma0"], seeds=seed,
                     record_every=steps)
    return model, datasets, res


def _duplicate_minimum(model, data, params, seed):
    """Forget rows that duplicate retain rows, and the minimum trained on them.

    The data set is ``data`` with its rows ``0..n_forget-1`` appended again
    (same ``x``, same ``y``); the forget set is the appended rows, so retain and
    forget indices stay disjoint (:func:`simlab.data.check_split`) while every
    forget curvature factor equals a retain one. The ascent then acts only
    inside the retain span and ``kappa_+ > 0`` needs ``alpha / n_f`` to beat
    ``(1 - alpha) / n_r`` on the duplicated directions: a genuine
    ``rho(T_u) = 1`` frontier (THEORY section 10.0). Trained like
    :func:`_train_minima` (same initialisation seed) on the augmented set.

    Returns
    -------
    data : SignalNoise (n + n_forget rows)
    result : the training result (``.W``, ``.history``)
    forget : ndarray of int, the appended rows
    """
    from ..dynamics.train import train_many

    n, n_f = data.n, int(params["n_forget"])
    aug = data.subset(np.concatenate([np.arange(n), np.arange(n_f)]))
    steps = int(params["train_steps"])
    res = train_many(model, [aug], eta=params["train_eta"], steps=steps,
                     loss="squared", sigma0=params["sigma0"], seeds=seed,
                     record_every=steps)[0]
    return aug, res, np.arange(n, n + n_f)


def _frontier_alphas(alpha, rho, lyap, frac, horizon, escape_factor):
    """Per row of an ``(x, alpha)`` panel: the ``alpha`` where ``rho`` crosses 1,
    where ``lambda_typ`` crosses 0, where ``T lambda_typ`` crosses ``log(K)/2``
    (the typical finite-horizon boundary; all three interpolated linearly
    between columns, in ``log rho`` and ``lambda_typ``) and the smallest
    ``alpha`` from which the real majority escapes at every larger ``alpha``
    (``nan``: no crossing, last upward one if several)."""
    def crossing(f):
        out = np.full(f.shape[0], np.nan)
        for i, row in enumerate(f):
            up = np.flatnonzero((row[:-1] <= 0) & (row[1:] > 0))
            if up.size:
                j = up[-1]
                out[i] = alpha[j] + (alpha[j + 1] - alpha[j]) * (
                    -row[j] / (row[j + 1] - row[j]))
        return out

    real = np.full(frac.shape[0], np.nan)
    for i, row in enumerate(frac > 0.5):
        if row[-1]:
            j = row.size - 1
            while j > 0 and row[j - 1]:
                j -= 1
            real[i] = alpha[j]
    return (crossing(np.log(np.maximum(rho, 1e-300))), crossing(lyap),
            crossing(horizon * lyap - 0.5 * np.log(escape_factor)), real)


def run(quick=False, seed=0, **overrides):
    """Train, predict and unlearn on the grids of ``PANELS``.

    Parameters
    ----------
    quick : bool
        5 x 5 grids (4 x 5 on the duplicate panels), 6 trajectories, horizon 200
        instead of ``FULL`` (10 x 10 and 12 x 14, 10 trajectories, horizon 300).
    seed : int
        Seeds the data, the initialisation, the perturbations and the minibatches.
    **overrides
        Replace entries of the parameter dict.

    Returns
    -------
    xarray.Dataset
        Per heatmap ``<panel>`` (``snr_alpha``, ``batch_alpha``, ``eta_batch``,
        ``dup_eta_alpha``, ``dup_batch_alpha``) over its two axes
        ``<panel>_row``, ``<panel>_col``:
        ``<panel>_escape_fraction``, ``<panel>_escapes`` (real verdict),
        ``<panel>_ms_growth`` (Monte-Carlo mean of the squared twin separation
        over ``||delta_0||^2``; at escape for escaped trajectories),
        ``<panel>_rho``, ``<panel>_kappa_plus``, ``<panel>_escape_time``,
        ``<panel>_predicted`` (predicted verdict), ``<panel>_near`` (near the
        boundary), ``<panel>_agree``, and ``<panel>_escape_time_start``,
        ``<panel>_predicted_start``, ``<panel>_agree_start`` (exact operator
        iterated from the law of ``delta_0``). ``attrs`` hold the agreement shares
        (``agreement_<panel>_{near,far,all}`` and ``agreement_{near,far,all}``,
        ``nan`` where a class is empty; ``agreement_start_*`` likewise for the
        start-corrected prediction), cell counts, the definitions and
        ``summary``. The duplicate-forget panels add per row
        ``<panel>_alpha_{rho1,lyap0,typ,real}`` (frontiers in ``alpha``) and
        ``<panel>_between``, with ``frontier_<panel>_alpha_*`` (row medians) and
        ``between_<panel>_{cells,real_escaping}`` in ``attrs``;
        ``dup_sharpness`` and ``dup_train_loss`` describe their minimum.
        With ``logistic`` (default) the logistic-loss panel
        ``logistic_eta_alpha`` is added (:func:`_logistic_panel`; its agreement
        keys ``agreement_[ms_|eps_check_]logistic_eta_alpha_*`` are not pooled
        with the squared-loss panels).
        Runtime on 2 shared cores: quick ~10-30 s; full ~90 s for the three
        random-forget panels, ~6 min for the two duplicate panels (under a
        load of ~13).
    """
    params = dict(QUICK if quick else FULL)
    unknown = set(overrides) - set(params)
    if unknown:
        raise ValueError(f"unknown parameters {sorted(unknown)}")
    params.update(overrides)
    from ..dynamics.unlearn import TwinRun, unlearn_twins

    forget = np.arange(int(params["n_forget"]))
    K, T = float(params["escape_factor"]), int(params["horizon"])
    scheme = params["scheme"]
    n_traj = int(params["trajectories"])

    snrs = sorted({float(s) for s in params["snr"]} | {float(params["snr0"])})
    model, datasets, trained = _train_minima(params, snrs, seed)
    minima = {s: (ds, r) for s, ds, r in zip(snrs, datasets, trained, strict=True)}
    sharp = {}
    for s, (ds, r) in minima.items():
        F = model.curvature_factors(r.W, ds.X, ds.y, "squared")
        sharp[s] = sharpness(F)
    train_loss = {s: float(r.history.train_loss.values[-1]) for s, (_, r) in
                  minima.items()}
    dup = _duplicate_minimum(model, minima[float(params["snr0"])][0], params, seed)
    dup_sharp = sharpness(model.curvature_factors(dup[1].W, dup[0].X, dup[0].y,
                                                  "squared"))

    ds_out = xr.Dataset()
    stats, stats_start = {}, {}
    for p_i, panel in enumerate(PANELS):
        cells = _cells(params, panel)
        rows, cols = PANELS[panel]
        shape = (len(_grid(params, panel, rows)), len(_grid(params, panel, cols)))
        v = {k: np.empty(shape) for k in ("frac", "ms", "rho", "kappa", "tesc",
                                          "tstart", "lyap", "lyap_se", "prob")}
        pred = np.empty(shape, dtype=bool)        # typical verdict
        pred_ms = np.empty(shape, dtype=bool)     # mean-square verdict
        far = np.empty(shape, dtype=bool)
        runs = []
        for c_i, (_, _, cell) in enumerate(cells):
            s = float(cell["snr"])
            if panel in DUP_PANELS:
                data, res, fgt, sh = *dup, dup_sharp
            else:
                (data, res), fgt, sh = minima[s], forget, sharp[s]
            alpha = float(cell["alpha"])
            B = int(cell["batch"])
            Bf = check_forget_batch(None, B, data.n - fgt.size, fgt.size)
            eta = float(cell["c"]) / sh
            idx = np.unravel_index(c_i, shape)
            pr = predict_unlearning(
                model, res.W, data, fgt, alpha=alpha, eta=eta, batch=B,
                forget_batch=Bf, scheme=scheme, loss="squared", escape_factor=K,
                horizon=T, trajectories=int(params["mc_trajectories"]), seed=seed)
            v["rho"][idx], v["kappa"][idx] = pr.rho, pr.kappa_plus
            v["tesc"][idx], v["tstart"][idx] = (pr.asymptotic_escape_time,
                                                pr.ms_escape_time)
            v["lyap"][idx], v["lyap_se"][idx] = pr.lyapunov, pr.lyapunov_se
            v["prob"][idx] = pr.escape_probability
            pred[idx], pred_ms[idx], far[idx] = pr.escapes, pr.ms_escapes, pr.far
            F = model.curvature_factors(res.W, data.X, data.y, "squared")
            for k in range(n_traj):
                rng = np.random.default_rng(
                    [seed, _streams.CNN_UNLEARNING_RUNS, p_i, c_i, k])
                delta = (rng.standard_normal(F.shape[0]) @ F).reshape(model.shape)
                delta *= params["eps"] * np.linalg.norm(res.W) / np.linalg.norm(delta)
                runs.append(TwinRun(data=data, W=res.W, delta=delta, forget_idx=fgt,
                                    alpha=alpha, eta=eta, batch=B, forget_batch=Bf,
                                    rng=rng))

        escaped, growth = unlearn_twins(
            model, runs, horizon=T, scheme=scheme, escape_factor=K,
            check_every=int(params["check_every"]))
        escaped = escaped.reshape(shape + (n_traj,))
        growth = growth.reshape(shape + (n_traj,))
        v["frac"] = escaped.mean(axis=-1)
        with np.errstate(over="ignore", invalid="ignore"):
            v["ms"] = np.mean(np.minimum(growth, 1e300), axis=-1)
        real = v["frac"] > 0.5
        near = ~far
        agree = real == pred
        agree_ms = real == pred_ms
        dims = (f"{panel}_row", f"{panel}_col")
        ds_out = ds_out.assign_coords(
            {dims[0]: np.asarray(_grid(params, panel, rows), dtype=float),
             dims[1]: np.asarray(_grid(params, panel, cols), dtype=float)})
        for key, val, attrs in [
            ("escape_fraction", v["frac"], "fraction of twin runs whose separation "
             "reached K ||delta_0||^2 within the horizon"),
            ("escapes", real.astype(np.int8), "real verdict: escape fraction > 1/2 "
             "(typical behaviour: majority of runs)"),
            ("ms_growth", v["ms"], "mean over runs of ||W'-W||^2/||delta_0||^2 at "
             "the horizon (or at escape)"),
            ("rho", v["rho"], "rho(T_u) at w* (mean-square stability)"),
            ("kappa_plus", v["kappa"], "net ascent curvature at w*"),
            ("asymptotic_escape_time", v["tesc"], "log K / log rho"),
            ("ms_escape_time", v["tstart"], "exact mean-square escape time from the "
             "law of delta_0 (inf: not within the horizon)"),
            ("ms_predicted", pred_ms.astype(np.int8), "mean-square verdict: "
             "E||delta_t||^2 >= K E||delta_0||^2 for some t <= horizon"),
            ("lyapunov", v["lyap"], "lambda_typ: median per-step growth rate of "
             "||delta_t|| in the linearized dynamics at w*"),
            ("lyapunov_se", v["lyap_se"], "standard error of lambda_typ"),
            ("escape_probability", v["prob"], "linearized Monte Carlo: fraction of "
             "trajectories reaching K ||delta_0||^2 within the horizon"),
            ("predicted", pred.astype(np.int8), "typical verdict: horizon * "
             "lambda_typ >= log(K) / 2"),
            ("near", near.astype(np.int8), "near the typical boundary: |horizon * "
             "lambda_typ| <= log K"),
            ("agree", agree.astype(np.int8), "real == typical verdict"),
            ("agree_ms", agree_ms.astype(np.int8), "real == mean-square verdict"),
        ]:
            ds_out[f"{panel}_{key}"] = (dims, val, {"long_name": attrs})
        ds_out[dims[0]].attrs["long_name"] = _LABELS[rows]
        ds_out[dims[1]].attrs["long_name"] = _LABELS[cols]
        stats[panel] = (agree, near, real)
        stats_start[panel] = (agree_ms, near, real)
        if panel in DUP_PANELS:
            ds_out = _store_frontiers(ds_out, panel, v, pred, real, dims, T, K)

    ds_out["snr"] = ("snr", np.array(snrs))
    ds_out["sharpness"] = ("snr", np.array([sharp[s] for s in snrs]),
                           {"long_name": "lambda_max(H(w*))"})
    ds_out["train_loss"] = ("snr", np.array([train_loss[s] for s in snrs]),
                            {"long_name": "final squared training loss"})
    ds_out["dup_sharpness"] = ((), dup_sharp, {"long_name": "lambda_max(H(w*)) on "
                                               "the duplicate-forget set"})
    train_loss["dup"] = float(dup[1].history.train_loss.values[-1])
    ds_out["dup_train_loss"] = ((), train_loss["dup"], {
        "long_name": "final squared training loss on the duplicate-forget set"})
    ds_out.attrs.update(provenance(params, seed))
    ds_out.attrs.update(_agreement_attrs(stats))
    ds_out.attrs.update({k.replace("agreement_", "agreement_ms_"): val
                         for k, val in _agreement_attrs(stats_start).items()
                         if k.startswith("agreement_")})
    ds_out.attrs.update(
        max_train_loss=float(max(train_loss.values())),
        panels=json.dumps(PANELS),
        definition_real=("twin runs from w* and w*+delta_0 (delta_0 in range of "
                         "the curvature factors, ||delta_0|| = eps ||w*||), same "
                         "minibatches; a run escapes if ||W'_t - W_t||^2 >= K "
                         "||delta_0||^2 at a check step t <= horizon (or blows up); "
                         "cell verdict: escape fraction > 1/2"),
        tested=("finite-horizon escape, typical behaviour: the majority verdict of "
                "real twin runs is scored against the typical prediction; the "
                "mean-square prediction is scored beside it"),
        definition_predicted=("typical: horizon * lambda_typ >= log(K)/2, "
                              "lambda_typ = median per-step growth rate of "
                              "||delta_t|| in the linearized dynamics at w* "
                              "(simlab.predict_unlearning)"),
        definition_near="|horizon * lambda_typ| <= log K (far otherwise)",
        definition_ms_predicted=("mean square: exact operator T_u iterated from "
                                 "the law of delta_0, E||delta_t||^2 >= K "
                                 "E||delta_0||^2 for some t <= horizon"),
    )
    ds_out.attrs["summary"] = _summary(ds_out.attrs)
    if params["logistic"]:
        _logistic_panel(ds_out, model, minima[float(params["snr0"])][0], params, seed)
    return ds_out


def _store_frontiers(ds_out, panel, v, pred, real, dims, horizon, escape_factor):
    """Duplicate-forget panel extras: per row the three frontiers in ``alpha``
    (``rho = 1``, ``lambda_typ = 0``, real majority) and the cells between the
    mean-square and typical frontiers (``rho > 1``, typical verdict: resists)."""
    alpha = ds_out[dims[1]].values
    a_rho, a_lyap, a_typ, a_real = _frontier_alphas(
        alpha, v["rho"], v["lyap"], v["frac"], horizon, escape_factor)
    for key, val, text in [
        ("alpha_rho1", a_rho, "alpha where rho(T_u) crosses 1 (mean-square frontier)"),
        ("alpha_lyap0", a_lyap, "alpha where lambda_typ crosses 0 (typical frontier)"),
        ("alpha_typ", a_typ, "alpha where horizon * lambda_typ crosses log(K)/2 "
         "(typical finite-horizon boundary)"),
        ("alpha_real", a_real, "smallest alpha from which the real majority escapes "
         "at every larger alpha of the row")]:
        ds_out[f"{panel}_{key}"] = (dims[:1], val, {"long_name": text})
    between = (v["rho"] > 1.0) & ~pred
    ds_out[f"{panel}_between"] = (dims, between.astype(np.int8), {
        "long_name": "between the frontiers: rho(T_u) > 1 (mean square unstable) "
                     "but the typical verdict resists"})
    ds_out.attrs[f"between_{panel}_cells"] = int(between.sum())
    ds_out.attrs[f"between_{panel}_real_escaping"] = int((between & real).sum())
    for key, val in (("rho1", a_rho), ("lyap0", a_lyap), ("typ", a_typ),
                     ("real", a_real)):
        ds_out.attrs[f"frontier_{panel}_alpha_{key}"] = (
            float(np.nanmedian(val)) if np.isfinite(val).any() else float("nan"))
    return ds_out


def _share(mask, agree):
    return float(agree[mask].mean()) if mask.any() else float("nan")


def _agreement_attrs(stats):
    out = {}
    cat = [np.concatenate([x[k].ravel() for x in stats.values()]) for k in range(3)]
    for panel, (agree, near, real) in list(stats.items()) + [("", tuple(cat))]:
        key = f"agreement_{panel}_" if panel else "agreement_"
        ckey = f"cells_{panel}_" if panel else "cells_"
        out[key + "near"] = _share(near, agree)
        out[key + "far"] = _share(~near, agree)
        out[key + "all"] = float(agree.mean())
        out[ckey + "near"] = int(near.sum())
        out[ckey + "far"] = int((~near).sum())
        out[ckey + "far_escaping"] = int((~near & real).sum())
        out[ckey + "far_resisting"] = int((~near & ~real).sum())
    return out


def _summary(a):
    parts = []
    for panel in list(PANELS) + [""]:
        k = f"agreement_{panel}_" if panel else "agreement_"
        m = f"agreement_ms_{panel}_" if panel else "agreement_ms_"
        c = f"cells_{panel}_" if panel else "cells_"
        name = panel or "all heatmaps"
        parts.append(f"{name}: typical far {a[k + 'far']:.0%} ({a[c + 'far']} cells: "
                     f"{a[c + 'far_escaping']} escaping, {a[c + 'far_resisting']} "
                     f"resisting), near {a[k + 'near']:.0%} ({a[c + 'near']} cells); "
                     f"mean-square far {a[m + 'far']:.0%}, near {a[m + 'near']:.0%}")
    for panel in DUP_PANELS:
        if f"between_{panel}_cells" in a:
            parts.append(
                f"{panel} frontiers in alpha (row medians): rho = 1 at "
                f"{a[f'frontier_{panel}_alpha_rho1']:.3g}, lambda_typ = 0 at "
                f"{a[f'frontier_{panel}_alpha_lyap0']:.3g}, T lambda_typ = "
                f"log(K)/2 at {a[f'frontier_{panel}_alpha_typ']:.3g}, real "
                "majority from "
                f"{a[f'frontier_{panel}_alpha_real']:.3g}; "
                f"{a[f'between_{panel}_cells']} cells between the frontiers, "
                f"{a[f'between_{panel}_real_escaping']} escaping for real")
    return ("real majority verdict vs the typical prediction (horizon * lambda_typ "
            ">= log(K)/2) and the mean-square one (delta_0 law), "
            + "; ".join(parts)
            + f"; max training loss {a['max_train_loss']:.1e}")


# ---------------------------------------------------------------------------
# logistic-loss panel: drift-aware prediction (THEORY 10.0, logistic paragraph)
# ---------------------------------------------------------------------------

#: The logistic-loss heatmap: (eta scale, alpha) at a logistic-trained minimum.
LOGISTIC = "logistic_eta_alpha"


def _logistic_minimum(model, data, params, seed):
    """The CNN trained on the logistic loss (same data set and initialisation
    seed as the squared-loss minimum at ``snr0``), ``logistic_train_steps`` of
    full-batch GD: never stationary, ``||grad L|| ~ L``."""
    from ..dynamics.train import train

    return train(model, data, eta=params["train_eta"],
                 steps=int(params["logistic_train_steps"]), loss="logistic",
                 sigma0=params["sigma0"], seed=seed,
                 record_every=int(params["logistic_train_steps"]))


def _logistic_panel(ds_out, model, data, params, seed):
    """Add the logistic-loss panel ``LOGISTIC`` to ``ds_out`` (in place).

    Real runs: twin pairs from the logistic-trained ``W`` and ``W + delta_0``
    (``||delta_0|| = logistic_eps ||W||``), same minibatches, scored like the
    squared-loss panels. Prediction: :func:`simlab.predict.predict_unlearning`
    on its drift-aware path (``W`` is not stationary): the tangent dynamics
    along ``logistic_mc_trajectories`` reference runs, typical verdict
    ``T lambda_typ >= log(K)/2``, mean-square verdict from the Monte-Carlo
    ``E||delta_t||^2``. The learning rate is ``eta = c / lambda_max(J^T J / n)``
    (the Gauss-Newton sharpness with ``l'' = 1``; the logistic Hessian at ``W``
    is ``~L`` times smaller and would make ``c`` meaningless). A second set of
    twins at ``logistic_eps_check`` (``1e-8``; same minibatches and
    directions) is scored too: along a drifting path ReLU kinks make twins jump
    apart at any size (module docstring; ``predict_unlearning``).
    """
    import warnings

    from ..dynamics.unlearn import TwinRun, unlearn_twins
    from ..predict import NonStationaryWarning

    panel = LOGISTIC
    res = _logistic_minimum(model, data, params, seed)
    W = res.W
    n_f = int(params["n_forget"])
    forget = np.arange(n_f)
    n_r = data.n - n_f
    K, T = float(params["escape_factor"]), int(params["logistic_horizon"])
    B = int(params["logistic_batch0"])
    Bf = check_forget_batch(None, B, n_r, n_f)
    sharp_gn = sharpness(model.curvature_factors(W, data.X, data.y, "squared"))
    F = model.curvature_factors(W, data.X, data.y, "logistic")
    margins = data.y * model.forward(W, data.X)
    rows, cols = params["logistic_c"], params["logistic_alpha"]
    shape = (len(rows), len(cols))
    n_traj = int(params["trajectories"])
    v = {k: np.empty(shape) for k in ("rho", "kappa", "tesc", "tstart", "lyap",
                                      "lyap_se", "prob")}
    pred, pred_ms, far = (np.empty(shape, dtype=bool) for _ in range(3))
    runs = {e: [] for e in ("eps", "eps_check")}
    grad_norm = np.nan
    for c_i, (c, alpha) in enumerate((c, a) for c in rows for a in cols):
        idx = np.unravel_index(c_i, shape)
        eta = float(c) / sharp_gn
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonStationaryWarning)
            pr = predict_unlearning(
                model, W, data, forget, alpha=float(alpha), eta=eta, batch=B,
                forget_batch=Bf, scheme=params["scheme"], loss="logistic",
                escape_factor=K, horizon=T,
                trajectories=int(params["logistic_mc_trajectories"]), seed=seed)
        if not pr.drift:
            raise RuntimeError("the logistic minimum came out stationary")
        grad_norm = pr.grad_norm
        v["rho"][idx], v["kappa"][idx] = pr.rho, pr.kappa_plus
        v["tesc"][idx], v["tstart"][idx] = (pr.asymptotic_escape_time,
                                            pr.ms_escape_time)
        v["lyap"][idx], v["lyap_se"][idx] = pr.lyapunov, pr.lyapunov_se
        v["prob"][idx] = pr.escape_probability
        pred[idx], pred_ms[idx], far[idx] = pr.escapes, pr.ms_escapes, pr.far
        for key in runs:
            eps = float(params[f"logistic_{key}"])
            for k in range(n_traj):
                rng = np.random.default_rng(
                    [seed, _streams.CNN_UNLEARNING_RUNS, len(PANELS), c_i, k])
                delta = (rng.standard_normal(data.n) @ F).reshape(model.shape)
                delta *= eps * np.linalg.norm(W) / np.linalg.norm(delta)
                runs[key].append(TwinRun(
                    data=data, W=W, delta=delta, forget_idx=forget,
                    alpha=float(alpha), eta=eta, batch=B, forget_batch=Bf, rng=rng))
    frac, ms = {}, {}
    for key, rs in runs.items():
        escaped, growth = unlearn_twins(
            model, rs, horizon=T, scheme=params["scheme"], escape_factor=K,
            check_every=int(params["check_every"]), loss="logistic")
        frac[key] = escaped.reshape(shape + (n_traj,)).mean(axis=-1)
        with np.errstate(over="ignore", invalid="ignore"):
            ms[key] = np.mean(np.minimum(growth.reshape(shape + (n_traj,)), 1e300),
                              axis=-1)
    real = frac["eps"] > 0.5
    real_check = frac["eps_check"] > 0.5
    near = ~far
    agree, agree_ms = real == pred, real == pred_ms
    dims = (f"{panel}_row", f"{panel}_col")
    ds_out.coords[dims[0]] = (dims[0], np.asarray(rows, dtype=float),
                              {"long_name": "eta * lambda_max(J^T J / n) at w*"})
    ds_out.coords[dims[1]] = (dims[1], np.asarray(cols, dtype=float),
                              {"long_name": _LABELS["alpha"]})
    for key, val, text in [
        ("escape_fraction", frac["eps"], "fraction of twin runs (||delta_0|| = "
         "logistic_eps ||w*||) whose separation reached K ||delta_0||^2 within "
         "the horizon"),
        ("escapes", real.astype(np.int8), "real verdict: escape fraction > 1/2"),
        ("ms_growth", ms["eps"], "mean over runs of ||W'-W||^2/||delta_0||^2 at "
         "the horizon (or at escape)"),
        ("escape_fraction_eps_check", frac["eps_check"], "escape fraction of twins "
         "at ||delta_0|| = logistic_eps_check ||w*|| (same minibatches)"),
        ("agree_eps_check", (real_check == pred).astype(np.int8),
         "real (logistic_eps_check twins) == typical verdict"),
        ("rho", v["rho"], "rho(T_u) of the Hessians at w* (start of the path)"),
        ("kappa_plus", v["kappa"], "net ascent curvature at w*"),
        ("asymptotic_escape_time", v["tesc"], "log K / log rho at w*"),
        ("ms_escape_time", v["tstart"], "Monte-Carlo mean-square escape time "
         "along the reference trajectories (inf: not within the horizon)"),
        ("ms_predicted", pred_ms.astype(np.int8), "mean-square verdict (drift-"
         "aware Monte Carlo)"),
        ("lyapunov", v["lyap"], "lambda_typ: median per-step growth rate of "
         "||delta_t|| in the tangent dynamics along the reference trajectory"),
        ("lyapunov_se", v["lyap_se"], "standard error of lambda_typ"),
        ("escape_probability", v["prob"], "tangent Monte Carlo: fraction of "
         "trajectories reaching K ||delta_0||^2 within the horizon"),
        ("predicted", pred.astype(np.int8), "typical verdict: horizon * "
         "lambda_typ >= log(K) / 2"),
        ("near", near.astype(np.int8), "near the typical boundary: |horizon * "
         "lambda_typ| <= log K"),
        ("agree", agree.astype(np.int8), "real == typical verdict"),
        ("agree_ms", agree_ms.astype(np.int8), "real == mean-square verdict"),
    ]:
        ds_out[f"{panel}_{key}"] = (dims, val, {"long_name": text})
    for key, val, text in [
        ("sharpness_gn", sharp_gn, "lambda_max(J^T J / n) at the logistic w*"),
        ("train_loss", float(res.history.train_loss.values[-1]),
         "final logistic training loss"),
        ("grad_norm", grad_norm, "||grad L(w*)|| (logistic)"),
        ("margin_forget", float(np.median(margins[forget])),
         "median margin y f of the forget samples at w*")]:
        ds_out[f"{panel}_{key}"] = ((), val, {"long_name": text})
    a = {}
    for name, ag, rl in (("", agree, real), ("ms_", agree_ms, real),
                         ("eps_check_", real_check == pred, real_check)):
        for k, val in _agreement_attrs({panel: (ag, near, rl)}).items():
            if panel in k and (name == "" or k.startswith("agreement_")):
                a[k.replace("agreement_", f"agreement_{name}")] = val
    ds_out.attrs.update(a)
    ds_out.attrs["summary"] += (
        f"; {panel} (logistic loss, drift-aware prediction along the reference "
        f"trajectory, train loss {float(res.history.train_loss.values[-1]):.1e}, "
        f"forget margins ~{float(np.median(margins[forget])):.1f}): typical far "
        f"{a[f'agreement_{panel}_far']:.0%} ({a[f'cells_{panel}_far']} cells: "
        f"{a[f'cells_{panel}_far_escaping']} escaping, "
        f"{a[f'cells_{panel}_far_resisting']} resisting), near "
        f"{a[f'agreement_{panel}_near']:.0%} ({a[f'cells_{panel}_near']} cells); "
        f"mean-square far {a[f'agreement_ms_{panel}_far']:.0%}, near "
        f"{a[f'agreement_ms_{panel}_near']:.0%}; twins at "
        f"{params['logistic_eps_check']:g} ||w*||: typical far "
        f"{a[f'agreement_eps_check_{panel}_far']:.0%}, near "
        f"{a[f'agreement_eps_check_{panel}_near']:.0%}")
    return ds_out


def plot(ds):
    """One heatmap per panel: real escape fraction, predicted boundaries."""
    from matplotlib.figure import Figure

    params = json.loads(ds.attrs["params"])
    K, T = params["escape_factor"], params["horizon"]
    panels = [p for p in (*PANELS, LOGISTIC) if f"{p}_escape_fraction" in ds]
    n_rows = -(-len(panels) // 3)
    fig = Figure(figsize=(15, 4.6 * n_rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(n_rows, 3)).ravel()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fixed = {"snr_alpha": f"B={params['batch0']}, c={params['c0']}",
             "batch_alpha": f"SNR={params['snr0']}, c={params['c0']}",
             "eta_batch": f"SNR={params['snr0']}, alpha={params['alpha0']}",
             "dup_eta_alpha": f"duplicate forget, SNR={params.get('snr0')}, "
                              f"B={params.get('dup_batch0')}",
             "dup_batch_alpha": f"duplicate forget, SNR={params.get('snr0')}, "
                                f"c={params.get('dup_c0')}",
             LOGISTIC: f"LOGISTIC loss, drift-aware, T={params.get('logistic_horizon')}"
                       f", B={params.get('logistic_batch0')}"}
    im = None
    for ax, panel in zip(axes, panels, strict=False):
        r, c = f"{panel}_row", f"{panel}_col"
        xv, yv = ds[c].values, ds[r].values
        # cells on an index grid (the axes are log-spaced), labelled by value
        x, y = np.arange(xv.size), np.arange(yv.size)
        im = ax.pcolormesh(x, y, ds[f"{panel}_escape_fraction"].values,
                           shading="nearest", vmin=0, vmax=1, cmap="viridis")
        tl = ((params["logistic_horizon"] if panel == LOGISTIC else T)
              * ds[f"{panel}_lyapunov"].values)
        if np.nanmin(tl) < 0.5 * np.log(K) < np.nanmax(tl):
            ax.contour(x, y, tl, levels=[0.5 * np.log(K)], colors="r",
                       linewidths=2.0)
        logrho = np.log(np.maximum(ds[f"{panel}_rho"].values, 1e-300))
        if np.nanmin(logrho) < 0.0 < np.nanmax(logrho):
            ax.contour(x, y, logrho, levels=[0.0], colors="w", linestyles="--",
                       linewidths=1.5)
        ps = ds[f"{panel}_ms_predicted"].values.astype(float)
        if 0.0 < ps.mean() < 1.0:
            ax.contour(x, y, ps, levels=[0.5], colors="c", linestyles=":",
                       linewidths=1.8)
        dis = ds[f"{panel}_agree"].values == 0
        yy, xx = np.meshgrid(y, x, indexing="ij")
        if f"{panel}_between" in ds:
            btw = ds[f"{panel}_between"].values == 1
            ax.plot(xx[btw], yy[btw], "s", mfc="none", mec="m", ms=11, mew=1.2,
                    label="between frontiers (rho > 1, typical: resists)")
        ax.plot(xx[dis], yy[dis], "x", color="orange", ms=9, mew=2,
                label="real != typical prediction")
        near = ds[f"{panel}_near"].values == 1
        ax.plot(xx[near], yy[near], "o", mfc="none", mec="w", ms=5, mew=0.8,
                label="near boundary")
        if f"{panel}_between" in ds:
            ax.legend(loc="lower right", fontsize=6)
        ax.set_xticks(x, [f"{v:.3g}" for v in xv], rotation=45, fontsize=7)
        ax.set_yticks(y, [f"{v:.3g}" for v in yv], fontsize=7)
        ax.set_xlabel(ds[c].attrs.get("long_name", c))
        ax.set_ylabel(ds[r].attrs.get("long_name", r))
        a = ds.attrs
        ax.set_title(f"{panel} ({fixed.get(panel, '')})\ntypical: far "
                     f"{a[f'agreement_{panel}_far']:.0%}, near "
                     f"{a[f'agreement_{panel}_near']:.0%}; mean-square: far "
                     f"{a[f'agreement_ms_{panel}_far']:.0%}, near "
                     f"{a[f'agreement_ms_{panel}_near']:.0%}", fontsize=9)
    axes[0].legend(loc="lower left", fontsize=7)
    fig.colorbar(im, ax=axes[:len(panels)], label="escape fraction (real CNN runs)")
    fig.suptitle(f"CNN unlearning (squared loss, n={params['n']}, n_f="
                 f"{params['n_forget']}, d={params['d']}, m={params['m']}; T={T}, "
                 f"K={K:g}): finite-horizon escape, majority of runs\nred = typical "
                 "boundary T lambda_typ = log(K)/2, cyan dotted = mean-square boundary "
                 "(E||delta||^2 from the delta_0 law reaches K within T), white "
                 "dashed = rho(T_u) = 1", fontsize=9)
    return fig
