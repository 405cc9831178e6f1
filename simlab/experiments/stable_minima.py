"""Where trained networks settle, and escape from a minimum: a real rho = 1 frontier.

THEORY sections 4 and 10.0, claim 7 of section 9. At an interpolating minimum
``w*`` of the squared loss every per-sample gradient vanishes, so training from
``w* + delta_0`` follows the linearized dynamics ``delta_{t+1} = (I - eta H_t)
delta_t`` to first order, and an optimizer can only *settle* where that
linearization is stable: GD needs ``eta lambda_max(H(w*)) <= 2``, SGD typical
stability (median Lyapunov exponent ``lambda_typ <= 0``); mean-square stability
``rho(T) <= 1`` is stricter. Unlike descent-ascent unlearning (where
``kappa_+ > 0`` in every cell), plain training has a true ``rho = 1`` (and
``lambda_typ = 0``) frontier on trained networks, so both sides are tested.

Part 1, where runs settle. The two-layer ReLU CNN is trained from scratch
(squared loss) over an ``(eta, B)`` grid, all three sampling schemes (``B = n``
with ``"without"`` is GD; with ``"with"`` it is still SGD), several seeds (data,
initialisation and minibatches). A run has *settled* when its training loss
stays below ``settle_tol = 1e-12`` over the last 10 % of its steps. Every
settled minimum is placed against its own frontier with
:func:`simlab.predict.predict_stability` at the final weights: ``eta
lambda_max / 2`` (GD; a value above 1 is a violation, a bug), ``eta /
critical_lr`` (the mean-square frontier ratio, equal to ``eta lambda_max / 2``
for GD), ``rho(T)`` and ``lambda_typ`` (64 linearized trajectories over
``lyap_steps`` steps). An SGD run *violates typical stability* when
``lambda_typ > 3 SE``: for a run exactly at the frontier (``lambda_typ = 0``,
the median close to normal) that happens with probability 0.13 %, so the
false-failure rate of "no violation" over ``N`` settled runs is at most
``0.0013 N`` (far less for runs strictly inside). Runs between the two
frontiers (``rho > 1`` but ``lambda_typ <= 0``) are counted.

``rho(T)`` near 1 does not by itself mean *near the frontier*: at small
``eta`` the slowest mode of ``H`` gives ``rho ~ (1 - eta lambda_min)^2 ~ 1``.
The distance to the instability is measured by ``eta / critical_lr``.

Part 2, escape from a minimum on the real network. The CNN is trained to an
interpolating minimum ``w*`` with a small step (a sharp minimum), then training
continues from ``w*`` and from ``w* + delta_0`` with the same minibatches (twin
runs; ``delta_0`` a Gaussian combination of the curvature factors ``h_i``,
``||delta_0|| = eps ||w*||``, ``eps = 1e-6``) at ``eta' = c / lambda_max(H(w*))``
and batch ``B'``, for each scheme. A run escapes at the first check step
``t <= T`` with ``||W'_t - W_t||^2 >= K ||delta_0||^2`` (``K = 10^3``) or on a
numerical blow-up; the cell's real verdict is the majority of its runs (typical
behaviour). The twins are :func:`simlab.dynamics.unlearn.unlearn_twins` with
``alpha = 0``: that function needs a non-empty forget set, which it then
excludes from the descent, so the data set is extended by one duplicate sample
that forms the (never used: weight ``-alpha = 0``) forget set and the descent
acts on exactly the original ``n`` samples.

Prediction (:func:`simlab.predict.predict_stability` at ``w*``): the typical
verdict ``T lambda_typ >= log(K) / 2`` is scored against the real majority; the
mean-square verdict (exact operator from the ``delta_0`` law) is reported
beside it. A cell is *far* when ``|T lambda_typ| > log K``. The heatmaps draw
``rho(T) = 1`` and ``lambda_typ = 0``; cells between them (``rho > 1``,
``lambda_typ < 0``) are where the two verdicts part.
"""

import json
import warnings

import numpy as np
import xarray as xr

from .. import _streams
from .._provenance import provenance
from ..curvature import sharpness
from ..predict import NonStationaryWarning, predict_stability

NAME = "stable-minima"
CLAIM = ("THEORY 9.7 / 10.0 (typical behaviour; finite-horizon escape): trained "
         "CNNs settle only in linearly stable minima (GD: eta lambda_max <= 2; SGD: "
         "median Lyapunov <= 0), and continued training escapes an interpolating "
         "minimum where the linearization at w* says a typical run does, on both "
         "sides of a true rho = 1 frontier")
TESTED = ("typical behaviour: settled runs against eta lambda_max/2 (GD) and the "
          "median Lyapunov exponent (SGD); finite-horizon escape: majority of real "
          "twin runs from w* scored against the typical prediction, the mean-square "
          "rho(T) verdict reported beside it")
DESCRIPTION = ("Top: every settled training run of a ReLU CNN (squared loss, loss < "
               "1e-12 over the last 10% of steps) placed against its own frontier: "
               "eta lambda_max/2 for GD, eta/critical_lr and (rho(T), lambda_typ) for "
               "SGD, over (eta, B, scheme, seed). Bottom: escape fraction of real twin "
               "runs continued from an interpolating minimum w* over (eta', B'), one "
               "panel per scheme, with rho(T) = 1 (white dashed) and lambda_typ = 0 "
               "(red) overlaid; squares mark cells between the two frontiers, "
               "crosses cells where the real majority and the typical prediction "
               "disagree.")

#: Stream key of this figure's twin perturbations and minibatches.
ESCAPE_RUNS = _streams.STABLE_MINIMA_ESCAPE
SCHEMES = ("without", "with", "bernoulli")

FULL = dict(
    n=16, d=80, m=5, snr=0.2, p_flip=0.1, sigma0=0.1,
    # part 1: where runs settle
    settle_eta=np.geomspace(0.2, 3.0, 8).round(4).tolist(),
    settle_batch=[2, 4, 8, 16], settle_schemes=list(SCHEMES), settle_seeds=6,
    settle_steps=3000, settle_tol=1e-12, lyap_steps=1000, mc_trajectories=64,
    # part 2: escape from a minimum
    min_eta=0.1, min_steps=4000, horizon=200, escape_factor=1e3, eps=1e-6,
    twins=6, check_every=5, escape_schemes=list(SCHEMES),
    escape_c=np.geomspace(0.3, 4.0, 12).round(4).tolist(),
    escape_batch=[1, 2, 3, 4, 6, 8, 12, 16],
)
QUICK = dict(
    FULL, settle_eta=[0.3, 0.8, 2.0], settle_batch=[2, 16],
    settle_schemes=["without", "with"], settle_seeds=2, settle_steps=2000,
    lyap_steps=300, mc_trajectories=32, min_steps=3000, horizon=100,
    escape_schemes=["without"], escape_c=[0.3, 0.8, 1.5, 2.5, 4.0],
    escape_batch=[1, 2, 4, 8, 16],
)


# ---------------------------------------------------------------------------
# part 1: train from scratch, place settled minima against their frontier
# ---------------------------------------------------------------------------

def settle_runs(model, datasets, etas, seeds, *, batch, scheme, steps, sigma0,
                settle_tol=1e-12, lyap_steps=1000, trajectories=64,
                train_many=None):
    """Train from scratch and place every settled minimum against its frontier.

    Parameters
    ----------
    model : simlab.models.CNN or simlab.models.Linear
    datasets : sequence of SignalNoise
        One training set per run (all with the same ``n``).
    etas, seeds : sequence
        Learning rate and seed (initialisation, minibatches) per run.
    batch : int
        Minibatch size; ``n`` (with ``"without"`` or ``"bernoulli"``) is GD.
    scheme : {"without", "with", "bernoulli"}
    steps : int
    sigma0 : float
        Initialisation scale.
    settle_tol : float
        Settled: squared training loss below it over the last 10 % of steps.
    lyap_steps, trajectories : int
        Monte Carlo behind ``lyapunov`` (asymptotic verdict, no horizon).
    train_many : callable, optional
        The training driver (default :func:`simlab.dynamics.train.train_many`;
        the sweep cell passes its backend's).

    Returns
    -------
    dict of ndarray
        Per run: ``settled``, ``train_loss`` (final), ``gd`` (the run is GD),
        ``sharpness`` (``lambda_max(H(w*))``), ``edge`` (``eta lambda_max /
        2``), ``rho``, ``critical_lr``, ``frontier`` (``eta / critical_lr``),
        ``lyapunov``, ``lyapunov_se``, ``stationary``; the stability fields are
        ``nan`` for runs that did not settle.
    """
    if train_many is None:
        from ..dynamics.train import train_many
    n = datasets[0].n
    gd = batch == n and scheme != "with"
    res = train_many(model, list(datasets), eta=list(etas), steps=steps,
                     loss="squared", sigma0=sigma0, seeds=[int(s) for s in seeds],
                     batch=None if gd else batch, scheme=scheme,
                     record_every=max(1, steps // 100))
    keys = ("settled", "train_loss", "gd", "sharpness", "edge", "rho", "critical_lr",
            "frontier", "lyapunov", "lyapunov_se", "stationary")
    out = {k: np.full(len(res), np.nan) for k in keys}
    out["gd"][:] = gd
    for i, (r, data, eta, s) in enumerate(zip(res, datasets, etas, seeds,
                                              strict=True)):
        h = r.history
        loss = h.train_loss.values
        last = loss[h.step.values >= 0.9 * steps]
        # a run that blew up stops early: its records end before the last 10 %
        settled = bool(h.step.values[-1] == steps and last.size
                       and np.all(np.isfinite(last)) and np.all(last < settle_tol))
        out["settled"][i] = settled
        out["train_loss"][i] = loss[-1]
        if not settled:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonStationaryWarning)
            pr = predict_stability(model, r.W, data, eta=float(eta), batch=batch,
                                   scheme=scheme, steps=lyap_steps,
                                   trajectories=trajectories, seed=int(s))
        out["sharpness"][i] = pr.sharpness
        out["edge"][i] = eta * pr.sharpness / 2.0
        out["rho"][i] = pr.rho
        out["critical_lr"][i] = pr.critical_lr
        out["frontier"][i] = eta / pr.critical_lr
        out["lyapunov"][i] = pr.lyapunov
        out["lyapunov_se"][i] = pr.lyapunov_se
        out["stationary"][i] = pr.stationary
    return out


def _signal_noise_sets(params, seeds):
    from ..data import signal_noise

    return [signal_noise(int(params["n"]), int(params["d"]), snr=params["snr"],
                         p_flip=params["p_flip"], seed=int(s)) for s in seeds]


def _settle(params, seed):
    from ..models import CNN

    model = CNN(int(params["d"]), int(params["m"]))
    n = int(params["n"])
    seeds = [seed + k for k in range(int(params["settle_seeds"]))]
    datasets = dict(zip(seeds, _signal_noise_sets(params, seeds), strict=True))
    groups = []
    for B in params["settle_batch"]:
        for scheme in params["settle_schemes"]:
            if B == n and scheme == "bernoulli" and "without" in params[
                    "settle_schemes"]:
                continue                  # GD once (without == bernoulli at B = n)
            groups.append((int(B), scheme))
    cols = {k: [] for k in ("eta", "batch", "scheme", "seed")}
    metrics = {}
    for B, scheme in groups:
        runs = [(float(e), s) for e in params["settle_eta"] for s in seeds]
        out = settle_runs(model, [datasets[s] for _, s in runs], [e for e, _ in runs],
                          [s for _, s in runs], batch=B, scheme=scheme,
                          steps=int(params["settle_steps"]), sigma0=params["sigma0"],
                          settle_tol=params["settle_tol"],
                          lyap_steps=int(params["lyap_steps"]),
                          trajectories=int(params["mc_trajectories"]))
        cols["eta"] += [e for e, _ in runs]
        cols["batch"] += [B] * len(runs)
        cols["scheme"] += [scheme] * len(runs)
        cols["seed"] += [s for _, s in runs]
        for k, v in out.items():
            metrics.setdefault(k, []).append(v)
    metrics = {k: np.concatenate(v) for k, v in metrics.items()}
    return cols, metrics


# ---------------------------------------------------------------------------
# part 2: escape from a minimum (twin runs of the real network)
# ---------------------------------------------------------------------------

def _escape(params, seed):
    from ..data import SignalNoise
    from ..dynamics.train import train
    from ..dynamics.unlearn import TwinRun, unlearn_twins
    from ..models import CNN

    model = CNN(int(params["d"]), int(params["m"]))
    data = _signal_noise_sets(params, [seed])[0]
    n = data.n
    steps = int(params["min_steps"])
    res = train(model, data, eta=params["min_eta"], steps=steps, loss="squared",
                sigma0=params["sigma0"], seed=seed, record_every=steps)
    W = res.W
    F = model.curvature_factors(W, data.X, data.y, "squared")
    S = sharpness(F)
    # alpha = 0 twins: the duplicate of sample 0 is the (weight-zero) forget set
    padded = SignalNoise(X=np.concatenate([data.X, data.X[:1]]),
                         y=np.concatenate([data.y, data.y[:1]]))
    forget = np.array([n])
    K, T = float(params["escape_factor"]), int(params["horizon"])
    cs, Bs = params["escape_c"], params["escape_batch"]
    shape = (len(params["escape_schemes"]), len(cs), len(Bs))
    keys = ("rho", "critical_lr", "lyapunov", "lyapunov_se", "escape_probability",
            "predicted", "ms_predicted", "far", "ms_escape_time", "escape_fraction",
            "ms_growth")
    v = {k: np.full(shape, np.nan) for k in keys}
    n_tw = int(params["twins"])
    norm_w = np.linalg.norm(W)
    for s_i, scheme in enumerate(params["escape_schemes"]):
        runs = []
        for c_i, c in enumerate(cs):
            for b_i, B in enumerate(Bs):
                eta = float(c) / S
                pr = predict_stability(model, W, data, eta=eta, batch=int(B),
                                       scheme=scheme, horizon=T, escape_factor=K,
                                       trajectories=int(params["mc_trajectories"]),
                                       seed=seed)
                idx = (s_i, c_i, b_i)
                for k in ("rho", "critical_lr", "lyapunov", "lyapunov_se",
                          "escape_probability", "ms_escape_time"):
                    v[k][idx] = getattr(pr, k)
                v["predicted"][idx] = pr.escapes
                v["ms_predicted"][idx] = pr.ms_escapes
                v["far"][idx] = pr.far
                for k in range(n_tw):
                    rng = np.random.default_rng([seed, ESCAPE_RUNS, s_i, c_i, b_i, k])
                    delta = (rng.standard_normal(n) @ F).reshape(model.shape)
                    delta *= params["eps"] * norm_w / np.linalg.norm(delta)
                    runs.append(TwinRun(data=padded, W=W, delta=delta,
                                        forget_idx=forget, alpha=0.0, eta=eta,
                                        batch=int(B), forget_batch=1, rng=rng))
        escaped, growth = unlearn_twins(model, runs, horizon=T, scheme=scheme,
                                        escape_factor=K,
                                        check_every=int(params["check_every"]))
        escaped = escaped.reshape(shape[1:] + (n_tw,))
        growth = growth.reshape(shape[1:] + (n_tw,))
        v["escape_fraction"][s_i] = escaped.mean(axis=-1)
        with np.errstate(over="ignore", invalid="ignore"):
            v["ms_growth"][s_i] = np.mean(np.minimum(growth, 1e300), axis=-1)
    info = dict(min_sharpness=float(S), min_train_loss=float(
        res.history.train_loss.values[-1]), min_norm=float(norm_w))
    return v, info


# ---------------------------------------------------------------------------
# the figure
# ---------------------------------------------------------------------------

def _share(mask, agree):
    return float(agree[mask].mean()) if mask.any() else float("nan")


def _bands(values, keys):
    """``{key: (min, median, max)}`` of ``values`` grouped by ``keys``."""
    out = {}
    for k in np.unique(keys):
        x = values[keys == k]
        x = x[np.isfinite(x)]
        if x.size:
            out[float(k)] = (float(x.min()), float(np.median(x)), float(x.max()))
    return out


def run(quick=False, seed=0, **overrides):
    """Settle-grid and escape-from-minimum data.

    Parameters
    ----------
    quick : bool
        Small grids (well under 30 s) instead of ``FULL``.
    seed : int
        Seeds the data, initialisations, minibatches and perturbations (settle
        runs use seeds ``seed .. seed + settle_seeds - 1``).
    **overrides
        Replace entries of the parameter dict.

    Returns
    -------
    xarray.Dataset
        Part 1 over dimension ``run``: ``eta``, ``batch``, ``scheme``,
        ``seed``, ``settled``, ``train_loss``, ``gd``, ``sharpness``, ``edge``
        (``eta lambda_max / 2``), ``rho``, ``critical_lr``, ``frontier``
        (``eta / critical_lr``), ``lyapunov``, ``lyapunov_se``,
        ``stationary``, ``violation`` (GD: ``edge > 1``; SGD: ``lyapunov > 3
        SE``) and ``between`` (``rho > 1``, ``lyapunov <= 0``). Part 2 over
        ``(escape_scheme, c, escape_batch)``: ``escape_fraction``, ``escapes``
        (real majority), ``predicted`` (typical), ``ms_predicted``, ``far``,
        ``agree``, ``agree_ms``, ``between``, ``rho``, ``critical_lr``,
        ``lyapunov``, ``lyapunov_se``, ``escape_probability``,
        ``ms_escape_time``, ``ms_growth``. ``attrs``: counts, agreement shares,
        closeness bands (JSON) and ``summary``.
    """
    params = dict(QUICK if quick else FULL)
    unknown = set(overrides) - set(params)
    if unknown:
        raise ValueError(f"unknown parameters {sorted(unknown)}")
    params.update(overrides)

    cols, met = _settle(params, seed)
    ds = xr.Dataset(coords={"run": np.arange(len(cols["eta"]))})
    ds["eta"] = ("run", np.array(cols["eta"]))
    ds["batch"] = ("run", np.array(cols["batch"], dtype=np.int64))
    ds["scheme"] = ("run", np.array(cols["scheme"], dtype="U9"))
    ds["seed"] = ("run", np.array(cols["seed"], dtype=np.int64))
    settled = met["settled"] == 1
    gd = met["gd"] == 1
    for k, v in met.items():
        ds[k] = ("run", v.astype(np.int8) if k in ("settled", "gd") else v)
    with np.errstate(invalid="ignore"):
        viol = np.where(gd, met["edge"] > 1.0,
                        met["lyapunov"] > 3.0 * met["lyapunov_se"]) & settled
        between = settled & ~gd & (met["rho"] > 1.0) & (met["lyapunov"] <= 0.0)
    ds["violation"] = ("run", viol.astype(np.int8), {
        "long_name": "GD: eta lambda_max/2 > 1; SGD: median Lyapunov > 3 SE"})
    ds["between"] = ("run", between.astype(np.int8), {
        "long_name": "settled SGD run with rho(T) > 1 and lambda_typ <= 0"})
    for k, ln in [("edge", "eta lambda_max(H(w*)) / 2"),
                  ("frontier", "eta / critical_lr (mean-square frontier ratio)"),
                  ("rho", "rho(T) at w* (mean-square)"),
                  ("lyapunov", "lambda_typ: median Lyapunov exponent at w*")]:
        ds[k].attrs["long_name"] = ln

    v, info = _escape(params, seed)
    dims = ("escape_scheme", "c", "escape_batch")
    ds = ds.assign_coords(escape_scheme=np.array(params["escape_schemes"], dtype="U9"),
                          c=np.asarray(params["escape_c"], dtype=float),
                          escape_batch=np.asarray(params["escape_batch"],
                                                  dtype=np.int64))
    ds["c"].attrs["long_name"] = "eta' lambda_max(H(w*))"
    ds["escape_batch"].attrs["long_name"] = "batch B'"
    real = v["escape_fraction"] > 0.5
    pred, pred_ms, far = (v[k] == 1 for k in ("predicted", "ms_predicted", "far"))
    e_between = (v["rho"] > 1.0) & (v["lyapunov"] < 0.0)
    agree, agree_ms = real == pred, real == pred_ms
    for k in ("rho", "critical_lr", "lyapunov", "lyapunov_se", "escape_probability",
              "ms_escape_time", "escape_fraction", "ms_growth"):
        ds[k if k not in ds else f"escape_{k}"] = (dims, v[k])
    for k, arr in [("escapes", real), ("predicted", pred), ("ms_predicted", pred_ms),
                   ("far", far), ("agree", agree), ("agree_ms", agree_ms),
                   ("escape_between", e_between)]:
        ds[k] = (dims, arr.astype(np.int8))

    sgd = settled & ~gd
    a = dict(
        settled_runs=int(settled.sum()), runs=int(settled.size),
        settled_gd=int((settled & gd).sum()), settled_sgd=int(sgd.sum()),
        violations_gd=int((viol & gd).sum()), violations_sgd=int((viol & ~gd).sum()),
        between_runs=int(between.sum()),
        share_between=float(between.sum() / max(1, sgd.sum())),
        max_edge_gd=float(np.nanmax(np.where(settled & gd, met["edge"], np.nan),
                                     initial=np.nan)) if (settled & gd).any()
        else float("nan"),
        max_frontier_sgd=float(np.max(met["frontier"][sgd])) if sgd.any()
        else float("nan"),
        max_z_sgd=float(np.max(met["lyapunov"][sgd] / met["lyapunov_se"][sgd]))
        if sgd.any() else float("nan"),
        false_failure_bound=float(0.00135 * sgd.sum()),
        bands_edge_gd_by_eta=json.dumps(_bands(met["edge"][settled & gd],
                                               np.array(cols["eta"])[settled & gd])),
        bands_frontier_sgd_by_eta=json.dumps(_bands(
            met["frontier"][sgd], np.array(cols["eta"])[sgd])),
        bands_frontier_sgd_by_batch=json.dumps(_bands(
            met["frontier"][sgd], np.array(cols["batch"])[sgd])),
        bands_rho_sgd_by_batch=json.dumps(_bands(
            met["rho"][sgd], np.array(cols["batch"])[sgd])),
        agreement_far=_share(far, agree), agreement_near=_share(~far, agree),
        agreement_all=float(agree.mean()),
        agreement_ms_far=_share(far, agree_ms),
        agreement_ms_near=_share(~far, agree_ms),
        agreement_ms_all=float(agree_ms.mean()),
        cells=int(real.size), cells_far=int(far.sum()), cells_near=int((~far).sum()),
        cells_far_escaping=int((far & real).sum()),
        cells_far_resisting=int((far & ~real).sum()),
        cells_between=int(e_between.sum()),
        cells_between_escaping=int((e_between & real).sum()),
        **info,
    )
    ds.attrs.update(provenance(params, seed))
    ds.attrs.update(a)
    ds.attrs.update(
        tested=TESTED,
        definition_settled=("squared training loss < settle_tol over the last 10% of "
                            "steps"),
        definition_violation=("GD: eta lambda_max(H(w*)) / 2 > 1; SGD: lambda_typ > 3 "
                              "SE (64+ linearized trajectories, no horizon)"),
        definition_real=("twin runs from w* and w* + delta_0 (||delta_0|| = eps "
                         "||w*||, in the curvature range), same minibatches; escape "
                         "at ||W'_t - W_t||^2 >= K ||delta_0||^2 within the horizon; "
                         "cell verdict: majority of runs"),
        definition_predicted="typical: horizon * lambda_typ >= log(K) / 2",
        definition_far="|horizon * lambda_typ| > log K",
    )
    ds.attrs["summary"] = _summary(ds.attrs)
    return ds


def _fmt_bands(js):
    b = json.loads(js)
    return ", ".join(f"{float(k):.3g}: {lo:.2f}-{hi:.2f} (med {med:.2f})"
                     for k, (lo, med, hi) in b.items())


def _summary(a):
    return (
        f"{a['settled_runs']} of {a['runs']} runs settled ({a['settled_gd']} GD, "
        f"{a['settled_sgd']} SGD); violations: GD {a['violations_gd']} (max eta "
        f"lambda_max/2 = {a['max_edge_gd']:.3f}), SGD typical {a['violations_sgd']} "
        f"(max lambda_typ/SE = {a['max_z_sgd']:.2f}; false-failure bound "
        f"{a['false_failure_bound']:.2f} expected at the frontier); between the "
        f"frontiers (rho > 1, lambda_typ <= 0): {a['between_runs']} settled SGD runs "
        f"({a['share_between']:.1%}); GD eta lambda_max/2 by eta: "
        f"{_fmt_bands(a['bands_edge_gd_by_eta'])}; SGD eta/critical_lr by B: "
        f"{_fmt_bands(a['bands_frontier_sgd_by_batch'])}. Escape from w*: typical far "
        f"{a['agreement_far']:.1%} ({a['cells_far']} cells: "
        f"{a['cells_far_escaping']} escaping, {a['cells_far_resisting']} resisting), "
        f"near {a['agreement_near']:.1%} ({a['cells_near']} cells); mean-square far "
        f"{a['agreement_ms_far']:.1%}, near {a['agreement_ms_near']:.1%}; "
        f"{a['cells_between']} cells between the frontiers "
        f"({a['cells_between_escaping']} escaping)")


def plot(ds):
    """Settled minima vs their frontiers (top); escape heatmaps (bottom)."""
    from matplotlib.figure import Figure

    params = json.loads(ds.attrs["params"])
    schemes = [str(s) for s in ds.escape_scheme.values]
    ncol = max(3, len(schemes))
    fig = Figure(figsize=(5 * ncol, 9), layout="constrained")
    axes = fig.subplots(2, ncol, squeeze=False)
    st = ds.settled.values == 1
    gd = ds.gd.values == 1
    eta = ds.eta.values
    # (a) GD
    ax = axes[0, 0]
    m = st & gd
    ax.scatter(eta[m], ds.edge.values[m], c="k", s=18)
    ax.axhline(1.0, color="r", lw=1.5, label="eta lambda_max = 2")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter("{x:.3g}")
    ax.xaxis.set_minor_formatter("")
    ax.set_xlabel("eta")
    ax.set_ylabel("eta lambda_max(H(w*)) / 2")
    ax.set_title(f"GD: {int(m.sum())} settled runs, "
                 f"{ds.attrs['violations_gd']} violations", fontsize=9)
    ax.legend(fontsize=7)
    # (b) SGD frontier ratio
    ax = axes[0, 1]
    sgd = st & ~gd
    marks = {"without": "o", "with": "^", "bernoulli": "s"}
    batches = np.unique(ds.batch.values[sgd]) if sgd.any() else []
    cmap = {b: f"C{i}" for i, b in enumerate(batches)}
    for sc, mk in marks.items():
        for b in batches:
            sel = sgd & (ds.scheme.values == sc) & (ds.batch.values == b)
            if sel.any():
                ax.scatter(eta[sel], ds.frontier.values[sel], marker=mk, s=16,
                           color=cmap[b], label=f"B={b}, {sc}")
    ax.axhline(1.0, color="r", lw=1.5)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter("{x:.3g}")
    ax.xaxis.set_minor_formatter("")
    ax.set_xlabel("eta")
    ax.set_ylabel("eta / critical_lr (mean-square frontier)")
    ax.set_title(f"SGD: {int(sgd.sum())} settled runs; {ds.attrs['between_runs']} "
                 "beyond the mean-square frontier", fontsize=9)
    ax.legend(fontsize=5, ncol=3, loc="upper left")
    # (c) SGD rho vs lambda_typ
    ax = axes[0, 2]
    if sgd.any():
        ax.scatter(ds.rho.values[sgd], ds.lyapunov.values[sgd],
                   c=[cmap[b] for b in ds.batch.values[sgd]], s=14)
    ax.axvline(1.0, color="gray", ls="--", lw=1.2, label="rho = 1")
    ax.axhline(0.0, color="r", lw=1.2, label="lambda_typ = 0")
    ax.axvspan(1.0, max(1.05, float(np.nanmax(ds.rho.values[sgd], initial=1.0))),
               color="orange", alpha=0.15, label="between the frontiers")
    ax.set_xlabel("rho(T) at w*")
    ax.set_ylabel("lambda_typ (median Lyapunov exponent)")
    ax.set_title(f"SGD typical violations: {ds.attrs['violations_sgd']} "
                 f"(lambda_typ > 3 SE)", fontsize=9)
    ax.legend(fontsize=7)
    for ax in axes[0, 3:]:
        ax.set_visible(False)
    # bottom: escape heatmaps
    T, K = params["horizon"], params["escape_factor"]
    xv, yv = ds.escape_batch.values, ds.c.values
    x, y = np.arange(xv.size), np.arange(yv.size)
    im = None
    for s_i, sc in enumerate(schemes):
        ax = axes[1, s_i]
        sel = dict(escape_scheme=s_i)
        im = ax.pcolormesh(x, y, ds.escape_fraction.isel(sel).values,
                           shading="nearest", vmin=0, vmax=1, cmap="viridis")
        lam = ds.escape_lyapunov.isel(sel).values
        if np.nanmin(lam) < 0.0 < np.nanmax(lam):
            ax.contour(x, y, lam, levels=[0.0], colors="r", linewidths=2.0)
        lr = np.log(np.maximum(ds.escape_rho.isel(sel).values, 1e-300))
        if np.nanmin(lr) < 0.0 < np.nanmax(lr):
            ax.contour(x, y, lr, levels=[0.0], colors="w", linestyles="--",
                       linewidths=1.5)
        yy, xx = np.meshgrid(y, x, indexing="ij")
        bt = ds.escape_between.isel(sel).values == 1
        ax.plot(xx[bt], yy[bt], "s", mfc="none", mec="orange", ms=11, mew=1.5,
                label="rho > 1, lambda_typ < 0")
        dis = ds.agree.isel(sel).values == 0
        ax.plot(xx[dis], yy[dis], "x", color="m", ms=9, mew=2,
                label="real != typical")
        ax.set_xticks(x, [str(b) for b in xv], fontsize=7)
        ax.set_yticks(y, [f"{c:.3g}" for c in yv], fontsize=7)
        ax.set_xlabel("batch B'")
        ax.set_ylabel("eta' lambda_max(H(w*))")
        a, f = ds.agree.isel(sel).values == 1, ds.far.isel(sel).values == 1
        ams = ds.agree_ms.isel(sel).values == 1
        ax.set_title(f"escape from w*, scheme {sc}\ntypical: far {_share(f, a):.0%} "
                     f"({int(f.sum())} cells), near {_share(~f, a):.0%} "
                     f"({int((~f).sum())})\nmean-square: far {_share(f, ams):.0%}, "
                     f"near {_share(~f, ams):.0%}", fontsize=9)
        if s_i == 0:
            ax.legend(loc="upper right", fontsize=7)
    for ax in axes[1, len(schemes):]:
        ax.set_visible(False)
    fig.colorbar(im, ax=axes[1, :len(schemes)], label="escape fraction (real runs)")
    fig.suptitle(f"Stable minima (ReLU CNN, squared loss, n={params['n']}, "
                 f"d={params['d']}, m={params['m']}): settled runs vs their frontiers; "
                 f"escape from w* (T={T}, K={K:g}, {params['twins']} twin runs per "
                 "cell; red: lambda_typ = 0, white dashed: rho(T) = 1)", fontsize=10)
    return fig


# ---------------------------------------------------------------------------
# sweep cell experiment "stable-minimum"
# ---------------------------------------------------------------------------

class StableMinimum:
    """Train the ReLU CNN to a minimum, then its linear stability at ``w*``.

    One cell = one training run from scratch (squared loss; data, init and
    minibatches from the cell seed) at ``(eta, batch, scheme)``; ``batch = n``
    with ``"without"`` or ``"bernoulli"`` is GD. Metrics of
    :func:`settle_runs`: ``settled`` (loss below ``settle_tol`` over the last
    10 % of steps), ``train_loss``, and at settled minima ``sharpness``,
    ``edge`` (``eta lambda_max / 2``), ``rho``, ``critical_lr``, ``frontier``
    (``eta / critical_lr``), ``lyapunov``, ``lyapunov_se`` (``nan`` if not
    settled). Cells sharing the architecture, batch, scheme and step count
    train in one ``train_many`` call of the backend.
    """

    PARAMS = {"n": (int, None), "d": (int, None), "m": (int, None),
              "snr": (float, None), "p_flip": (float, None),
              "sigma0": (float, None), "eta": (float, None), "batch": (int, None),
              "scheme": (str, SCHEMES), "steps": (int, None),
              "lyap_steps": (int, None), "trajectories": (int, None),
              "settle_tol": (float, None)}
    DEFAULTS = {"n": 16, "d": 80, "m": 5, "snr": 0.2, "p_flip": 0.1, "sigma0": 0.1,
                "eta": None, "batch": 16, "scheme": "without", "steps": 3000,
                "lyap_steps": 1000, "trajectories": 64, "settle_tol": 1e-12}
    METRICS = ("settled", "train_loss", "sharpness", "edge", "rho", "critical_lr",
               "frontier", "lyapunov", "lyapunov_se")

    @staticmethod
    def evaluate(params_list, seeds, backend="cpu"):
        from ..dynamics.backends import get_kernel
        from ..models import CNN

        p0 = params_list[0]
        datasets = [_signal_noise_sets(p, [s])[0] for p, s in zip(params_list, seeds,
                                                                   strict=True)]
        out = settle_runs(CNN(int(p0["d"]), int(p0["m"])), datasets,
                          [p["eta"] for p in params_list], [int(s) for s in seeds],
                          batch=int(p0["batch"]), scheme=p0["scheme"],
                          steps=int(p0["steps"]), sigma0=p0["sigma0"],
                          settle_tol=p0["settle_tol"], lyap_steps=int(p0["lyap_steps"]),
                          trajectories=int(p0["trajectories"]),
                          train_many=get_kernel("train_many", backend))
        return {k: out[k] for k in StableMinimum.METRICS}

    @staticmethod
    def batch_key(p):
        """Cells with equal keys train in one call."""
        return (p["n"], p["d"], p["m"], p["batch"], p["scheme"], p["steps"],
                p["sigma0"], p["lyap_steps"], p["trajectories"], p["settle_tol"])
