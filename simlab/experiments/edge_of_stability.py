"""Edge of stability: sharpness traces of full-batch GD (THEORY 10.1, claim 9.7).

Full-batch GD on signal-plus-noise data for the ReLU CNN, the ``max(0, z)^3``
CNN (exact Hessian, not Gauss-Newton) and the linear model (the control: no
progressive sharpening), squared and logistic loss, at learning rates
``eta = k * 2 / S_0`` straddling the initial GD threshold. The sharpness
``S_t = lambda_max(grad^2 L(W_t))`` is recorded by Lanczos on exact
Hessian-vector products (``simlab.train(..., sharpness_every=...)``) and each run
is classified (:func:`classify`):

- **divergence**: the run blew up (pre-activations non-finite) or ended with a
  loss above ten times its initial loss;
- **edge of stability**: ``eta S_t / 2`` in ``[0.9, 1.1]`` on at least half of
  the sharpness records of the second half of the run while the loss has not
  converged (final loss above ``1e-10`` times the initial loss);
- **collapse** (logistic loss): the sharpness ends below a tenth of its largest
  value (it falls towards 0 as the margins grow);
- **catapult**: some record had ``eta S_t / 2 > 1.1`` (the iterate was linearly
  unstable), and the run ended at ``eta S / 2 < 1`` without diverging;
- **progressive sharpening**: the sharpness rose to at least 1.2 ``S_0``
  without any of the above;
- **stable**: none of these.

Every CNN (``q = 1``) and linear run is checked against the data-dependent
ceiling :func:`simlab.curvature.sharpness_ceiling` (never exceeded), and the
linear model's facts (squared: constant sharpness; logistic from ``w = 0``:
``S_t <= S_0``) are measured to round-off. A regime map varies one factor at a
time (initialisation scale ``sigma0``, width ``m``, ``d/n``) around the base
setting, for both CNNs and both losses.
"""

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import xarray as xr

from .._provenance import provenance
from ..curvature import sharpness_ceiling
from ..data import signal_noise
from ..dynamics.train import train
from ..models import CNN, Linear

NAME = "edge-of-stability"
CLAIM = ("THEORY 10.1 / 9.7: where full-batch GD's sharpness goes relative to the "
         "linear-stability threshold 2/eta (edge of stability, catapult, collapse)")
TESTED = ("GD linear stability eta S_t <= 2 (for full-batch GD the mean-square and "
          "typical verdicts coincide: rho(T) = max_i (1 - eta lambda_i)^2); "
          "sharpness dynamics measured by Lanczos, no Monte-Carlo verdict")
DESCRIPTION = ("eta S_t / 2 against the step for learning rates straddling 2/S_0, "
               "for the ReLU CNN, the q=3 CNN and the linear model (control), "
               "squared and logistic loss, with the data-dependent sharpness "
               "ceiling eta S_ceil / 2 (dashed) and the band [0.9, 1.1]; bottom: "
               "regime map of the run classes over (sigma0, m, d) and eta/(2/S_0).")

#: Run classes, in the order they are tested (:func:`classify`); the integer
#: code of a class is its index.
CLASSES = ("divergence", "edge of stability", "collapse", "catapult",
           "progressive sharpening", "stable")

#: Edge band of ``eta S_t / 2`` and the share of second-half records in it.
EDGE_BAND = (0.9, 1.1)
EDGE_SHARE = 0.5
#: A run whose loss exceeds this times its initial loss is stopped as diverged.
BLOWUP = 1e10
#: Converged: final loss at most this times the initial loss.
CONVERGED_RTOL = 1e-10

MODELS = ("relu", "q3", "linear")
LOSSES = ("squared", "logistic")

FULL = dict(n=20, d=100, m=5, mu_norm=2.0, sigma_p=1.0, steps=2000,
            sharpness_every=20, eta_factors=[0.5, 0.95, 1.5, 3.0, 6.0],
            sigma0=dict(relu=0.1, q3=0.05, linear=0.0),
            regime=dict(sigma0=dict(relu=[0.01, 1.0], q3=[0.02, 0.2]),
                        m=[2, 20], d=[20, 400],
                        both=dict(relu=[(1.0, 20)], q3=[(0.2, 20)])),
            regime_eta_factors=[0.5, 0.95, 1.5, 3.0], regime_steps=1500,
            regime_sharpness_every=25)
QUICK = dict(FULL, n=10, d=30, m=3, steps=200, sharpness_every=10,
             eta_factors=[0.5, 0.95, 1.5, 3.0], regime=None)


# --------------------------------------------------------------------------
# one setting: data, model, S_0, a GD run per learning rate
# --------------------------------------------------------------------------

def make_model(kind, d, m):
    """The model called ``kind`` (``"relu"``, ``"q3"``, ``"linear"``)."""
    if kind == "relu":
        return CNN(d, m)
    if kind == "q3":
        return CNN(d, m, q=3)
    if kind == "linear":
        return Linear(d)
    raise ValueError(f"model must be one of {MODELS}, got {kind!r}")


def classify(eta, steps, sharpness, loss_trace, diverged, loss):
    """Class and summary numbers of one GD run (module docstring).

    Parameters
    ----------
    eta : float
    steps : ndarray
        Steps of the sharpness records.
    sharpness : ndarray
        ``S_t`` at those steps (first record at step 0).
    loss_trace : ndarray
        Training loss at every step ``0..steps_done``.
    diverged : bool
    loss : {"squared", "logistic"}

    Returns
    -------
    label : str
        One of :data:`CLASSES`.
    stats : dict
        ``band`` (min, 10 %, median, 90 %, max of ``eta S_t / 2`` over the
        second half), ``edge_share``, ``converged``, ``loss_spike``
        (max loss / initial loss), ``nonmonotone`` (share of loss increases
        over the second half), ``sharpening`` (``max S / S_0``).
    """
    r = eta * np.asarray(sharpness, dtype=float) / 2.0
    steps = np.asarray(steps)
    L = np.asarray(loss_trace, dtype=float)
    last = int(steps[-1])
    half = r[steps >= last / 2.0]
    band = np.quantile(half, [0.0, 0.1, 0.5, 0.9, 1.0])
    edge_share = float(np.mean((half >= EDGE_BAND[0]) & (half <= EDGE_BAND[1])))
    L0, Lend = L[0], L[-1]
    converged = bool(np.isfinite(Lend) and Lend <= CONVERGED_RTOL * L0)
    Lh = L[len(L) // 2:]
    with np.errstate(invalid="ignore"):
        nonmono = float(np.mean(np.diff(Lh) > 0)) if Lh.size > 1 else 0.0
    stats = dict(band=band, edge_share=edge_share, converged=converged,
                 loss_spike=float(np.nanmax(L) / L0), nonmonotone=nonmono,
                 sharpening=float(np.max(sharpness) / sharpness[0]))
    if diverged or not np.isfinite(Lend) or Lend > 10.0 * L0:
        label = "divergence"
    elif edge_share >= EDGE_SHARE and not converged:
        label = "edge of stability"
    elif loss == "logistic" and sharpness[-1] < 0.1 * np.max(sharpness):
        label = "collapse"
    elif np.max(r) > EDGE_BAND[1] and r[-1] < 1.0:
        label = "catapult"
    elif stats["sharpening"] >= 1.2:
        label = "progressive sharpening"
    else:
        label = "stable"
    return label, stats


def gd_sharpness_runs(kind, loss, *, n, d, m, sigma0, eta_factors, steps,
                      sharpness_every, mu_norm=2.0, sigma_p=1.0, seed=0):
    """Full-batch GD from one initialisation at ``eta = k 2 / S_0`` for every
    ``k`` in ``eta_factors`` (GD in segments, :func:`_gd_trace`).

    The linear model starts from ``w = 0`` whatever ``sigma0`` (the setting of
    the ``S_t <= S_0`` fact). Returns one dict per learning rate with the
    traces, :func:`classify`'s label and stats, the ceiling (``nan`` for
    ``q = 3``, which has none) and ``max S_t / S_ceil``.
    """
    data = signal_noise(n, d, mu_norm=mu_norm, sigma_p=sigma_p, seed=seed)
    model = make_model(kind, d, m)
    W0 = (np.zeros(model.shape) if kind == "linear"
          else model.init(sigma0, seed=seed))
    S0 = model.sharpness(W0, data.X, data.y, loss=loss)
    ceiling = (np.nan if kind == "q3"
               else sharpness_ceiling(model, data, loss=loss))
    etas = [float(k) * 2.0 / S0 for k in eta_factors]
    out = []
    for k, eta in zip(eta_factors, etas, strict=True):
        sstep, S, L, diverged = _gd_trace(model, data, W0, eta, loss, steps,
                                          sharpness_every, S0)
        label, stats = classify(eta, sstep, S, L, diverged, loss)
        out.append(dict(model=kind, loss=loss, n=n, d=d, m=m, sigma0=sigma0,
                        eta_factor=float(k), eta=eta, S0=S0, ceiling=ceiling,
                        ceiling_ratio_max=float(np.max(S) / ceiling),
                        sharpness_step=sstep, sharpness=S, loss_trace=L,
                        steps_done=int(sstep[-1]), label=label, **stats))
    return out


def _gd_trace(model, data, W0, eta, loss, steps, every, S0):
    """GD in segments of ``every`` steps (``simlab.train``), the sharpness after
    each; stops as *diverged* when ``train`` reports it or the loss exceeds
    ``BLOWUP`` times its initial value (before the Hessian overflows)."""
    W = W0
    sstep, S, L = [0], [S0], [model.loss(W0, data.X, data.y, loss=loss)]
    t, diverged = 0, False
    with np.errstate(over="ignore", invalid="ignore"):
        while t < steps:
            seg = min(every, steps - t)
            res = train(model, data, eta=eta, steps=seg, W0=W, loss=loss,
                        record_every=1)
            Lseg = res.history["train_loss"].values[1:]
            L.extend(Lseg.tolist())
            t += res.steps
            W = res.W
            if (res.diverged or not np.all(np.isfinite(Lseg))
                    or Lseg[-1] > BLOWUP * L[0]):
                diverged = True
                break
            sstep.append(t)
            S.append(model.sharpness(W, data.X, data.y, loss=loss))
    return np.array(sstep), np.array(S), np.array(L), diverged


# --------------------------------------------------------------------------
# the figure
# --------------------------------------------------------------------------

def _settings(params):
    """``(group, kind, loss, n, d, m, sigma0, eta_factors, steps, every)``."""
    base = dict(n=params["n"], d=params["d"], m=params["m"])
    rows = []
    for kind in MODELS:
        for loss in LOSSES:
            rows.append(("panel", kind, loss, base["n"], base["d"], base["m"],
                         params["sigma0"][kind], params["eta_factors"],
                         params["steps"], params["sharpness_every"]))
    reg = params.get("regime")
    if reg:
        ks = params["regime_eta_factors"]
        st, ev = params["regime_steps"], params["regime_sharpness_every"]
        for kind in ("relu", "q3"):
            for loss in LOSSES:
                s0 = params["sigma0"][kind]
                for sig in reg["sigma0"][kind]:
                    rows.append(("sigma0", kind, loss, base["n"], base["d"],
                                 base["m"], sig, ks, st, ev))
                for m in reg["m"]:
                    rows.append(("m", kind, loss, base["n"], base["d"], m, s0, ks,
                                 st, ev))
                for d in reg["d"]:
                    rows.append(("d", kind, loss, base["n"], d, base["m"], s0, ks,
                                 st, ev))
                for sig, m in reg.get("both", {}).get(kind, []):
                    rows.append(("sigma0+m", kind, loss, base["n"], base["d"], m,
                                 sig, ks, st, ev))
    return rows


def _run_setting(args):
    group, kind, loss, n, d, m, sig, ks, st, ev, mu_norm, sigma_p, seed = args
    runs = gd_sharpness_runs(kind, loss, n=n, d=d, m=m, sigma0=sig, eta_factors=ks,
                             steps=st, sharpness_every=ev, mu_norm=mu_norm,
                             sigma_p=sigma_p, seed=seed)
    for r in runs:
        r["group"] = group
    return runs


def run(quick=False, seed=0, workers=None, **overrides):
    """Compute the traces, classes and checks.

    Parameters
    ----------
    quick : bool
        Small model, short runs, no regime map (``QUICK``).
    seed : int
        Seeds data and initialisation.
    workers : int, optional
        Processes for the settings (default: 1 in quick mode, else 2 or the
        number of CPUs if fewer); every run is serial, so results do not
        depend on it.
    **overrides
        Entries of ``FULL``/``QUICK``.

    Returns
    -------
    xarray.Dataset
        Dimension ``run`` (one GD run each: setting, ``eta``, class, band of
        ``eta S_t / 2`` over the second half, ceiling ratio), the traces on
        ``record`` (sharpness) and ``step`` (loss), NaN-padded; ``attrs`` carry
        the checks (ceiling, linear-model facts) and a summary.
    """
    params = dict(QUICK if quick else FULL)
    unknown = set(overrides) - set(params)
    if unknown:
        raise ValueError(f"unknown parameters {sorted(unknown)}")
    params.update(overrides)
    jobs = [row + (params["mu_norm"], params["sigma_p"], seed)
            for row in _settings(params)]
    if workers is None:
        workers = 1 if quick else min(2, os.cpu_count() or 1)
    if workers > 1:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            parts = list(pool.map(_run_setting, jobs))
    else:
        parts = [_run_setting(job) for job in jobs]
    return _dataset([r for part in parts for r in part], params, seed)


def _pad(arrays, width):
    out = np.full((len(arrays), width), np.nan)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
    return out


def _dataset(runs, params, seed):
    R = len(runs)
    nrec = max(len(r["sharpness"]) for r in runs)
    nstep = max(len(r["loss_trace"]) for r in runs)
    scalar = {k: np.array([r[k] for r in runs])
              for k in ("group", "model", "loss", "n", "d", "m", "sigma0",
                        "eta_factor", "eta", "S0", "ceiling", "ceiling_ratio_max",
                        "steps_done", "label", "edge_share", "converged",
                        "loss_spike", "nonmonotone", "sharpening")}
    band = np.stack([r["band"] for r in runs])
    ds = xr.Dataset(
        {k: ("run", v) for k, v in scalar.items()}
        | {
            "band": (("run", "quantile"), band,
                     {"long_name": "eta S_t / 2 over the second half"}),
            "sharpness": (("run", "record"), _pad([r["sharpness"] for r in runs],
                                                  nrec)),
            "sharpness_step": (("run", "record"),
                               _pad([r["sharpness_step"] for r in runs], nrec)),
            "train_loss": (("run", "step"), _pad([r["loss_trace"] for r in runs],
                                                 nstep)),
        },
        coords={"run": np.arange(R), "quantile": [0.0, 0.1, 0.5, 0.9, 1.0]},
    )
    ds["converged"] = ds["converged"].astype(np.int8)
    ds.attrs.update(provenance(params, seed))
    ds.attrs.update(checks(ds))
    return ds


def checks(ds):
    """The measured checks of THEORY 10.1 as ``attrs`` (numbers, JSON)."""
    S = ds["sharpness"].values
    has_ceiling = np.isfinite(ds["ceiling"].values)
    ratio = S[has_ceiling] / ds["ceiling"].values[has_ceiling, None]
    lin = ds["model"].values == "linear"
    sq = ds["loss"].values == "squared"
    S0 = S[:, :1]
    rel = (S - S0) / S0
    lin_sq = float(np.nanmax(np.abs(rel[lin & sq]))) if np.any(lin & sq) else np.nan
    lin_lg = float(np.nanmax(rel[lin & ~sq])) if np.any(lin & ~sq) else np.nan
    lin_ceiling = float(np.max(np.abs(ds["S0"].values[lin] / ds["ceiling"].values[lin]
                                      - 1.0))) if np.any(lin) else np.nan
    edge = ds["label"].values == "edge of stability"
    counts = {c: int(np.sum(ds["label"].values == c)) for c in CLASSES}
    relu = ds["model"].values == "relu"
    relu_max = ds["ceiling_ratio_max"].values[relu]
    out = {
        "ceiling_max_ratio": float(np.nanmax(ratio)),
        "ceiling_relu_run_max_ratio_quantiles": json.dumps(
            np.quantile(relu_max, [0.0, 0.5, 1.0]).round(4).tolist()
            if relu.any() else []),
        "ceiling_violations": int(np.sum(ratio > 1.0 + 1e-9)),
        "ceiling_checked_states": int(np.sum(np.isfinite(ratio))),
        "linear_squared_max_rel_change": lin_sq,
        "linear_logistic_max_rel_rise": lin_lg,
        "linear_S0_vs_ceiling_rel_err": lin_ceiling,
        "class_counts": json.dumps(counts),
        "edge_runs": int(edge.sum()),
    }
    if edge.any():
        b = ds["band"].values[edge]
        out["edge_band_min_median_max"] = json.dumps(
            [float(b[:, 0].min()), float(np.median(b[:, 2])), float(b[:, 4].max())])
    per = []
    labels, band = ds["label"].values, ds["band"].values
    for kind in MODELS:
        for loss in LOSSES:
            sel = (ds["model"].values == kind) & (ds["loss"].values == loss)
            if not sel.any():
                continue
            cnt = {c: int(np.sum(labels[sel] == c)) for c in CLASSES}
            txt = f"{kind}/{loss}: " + ", ".join(f"{c} {k}" for c, k in cnt.items()
                                                 if k)
            hot = sel & (ds["eta_factor"].values > 1) & (labels != "divergence")
            if hot.any():
                txt += (f"; eta > 2/S_0 runs not diverged end at eta S/2 in "
                        f"[{band[hot, 0].min():.2f}, {band[hot, 4].max():.2f}] "
                        "(second half)")
            per.append(txt)
    out["per_model"] = " | ".join(per)
    out["summary"] = (
        f"{len(ds.run)} runs: " + ", ".join(f"{c} {k}" for c, k in counts.items())
        + f"; ceiling: {out['ceiling_violations']} violations on "
        f"{out['ceiling_checked_states']} states (ReLU runs: max S_t/S_ceil per run "
        f"min/median/max {out['ceiling_relu_run_max_ratio_quantiles']}; linear: "
        f"exact); linear squared |S_t/S_0 - 1| <= "
        f"{lin_sq:.1e}, linear logistic max S_t/S_0 - 1 = {lin_lg:.1e}"
        + (f"; edge band (min, median, max) {out['edge_band_min_median_max']}"
           if edge.any() else "; no run at the edge")
        + ". " + out["per_model"])
    return out


def plot(ds):
    """Traces of ``eta S_t / 2`` (rows: loss, columns: model) and the regime map."""
    from matplotlib.figure import Figure

    panel = ds.where(ds["group"] == "panel", drop=True)
    regime = ds["group"].values != "panel"
    fig = Figure(figsize=(13, 9.5 if regime.any() else 6.5), layout="constrained")
    rows = 3 if regime.any() else 2
    gs = fig.add_gridspec(rows, 3)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple",
              "tab:brown"]
    for i, loss in enumerate(LOSSES):
        for j, kind in enumerate(MODELS):
            ax = fig.add_subplot(gs[i, j])
            sel = np.flatnonzero((panel["model"].values == kind)
                                 & (panel["loss"].values == loss))
            ax.axhspan(*EDGE_BAND, color="0.9")
            ax.axhline(1.0, color="k", lw=0.8)
            for c, run in enumerate(sel):
                r = panel.isel(run=run)
                eta = float(r["eta"])
                x = r["sharpness_step"].values
                y = eta * r["sharpness"].values / 2.0
                col = colors[c % len(colors)]
                ok = np.isfinite(y)
                ax.plot(x[ok], y[ok], color=col, lw=1.2, marker="." if ok.sum() < 5
                        else None,
                        label=f"k={float(r['eta_factor']):g}: {r['label'].item()}")
                if r["label"].item() == "divergence" and ok.any():
                    ax.plot(x[ok][-1], y[ok][-1], "x", color=col, ms=7)
                if np.isfinite(float(r["ceiling"])):
                    ax.axhline(eta * float(r["ceiling"]) / 2.0, color=col, ls="--",
                               lw=0.8)
            ax.set_yscale("log")
            ax.set_xscale("symlog", linthresh=50)
            ax.set_xlim(0, max(1.0, float(np.nanmax(panel["sharpness_step"]))))
            ax.set_ylim(1e-3, 20)
            title = {"relu": "ReLU CNN", "q3": "q=3 CNN (exact Hessian)",
                     "linear": "linear (control)"}[kind]
            ax.set_title(f"{title}, {loss}", fontsize=9)
            ax.set_xlabel("step")
            if j == 0:
                ax.set_ylabel("eta S_t / 2")
            ax.legend(fontsize=6, loc="lower left")
    if regime.any():
        ax = fig.add_subplot(gs[2, :])
        reg = ds.isel(run=np.flatnonzero(regime | (ds["model"].values != "linear")))
        reg = reg.isel(run=np.flatnonzero(np.isin(reg["eta_factor"].values,
                                                  np.unique(ds["eta_factor"].values[
                                                      regime]))))
        keys = []
        for r in range(len(reg.run)):
            g = reg.isel(run=r)
            keys.append(f"{g['model'].item()} {g['loss'].item()[:3]} "
                        f"s0={float(g['sigma0']):g} m={int(g['m'])} d={int(g['d'])}")
        ukeys = list(dict.fromkeys(keys))
        ks = np.unique(reg["eta_factor"].values)
        grid = np.full((len(ks), len(ukeys)), np.nan)
        for r, key in enumerate(keys):
            grid[list(ks).index(float(reg["eta_factor"].values[r])),
                 ukeys.index(key)] = CLASSES.index(reg["label"].values[r])
        cmap = __import__("matplotlib").colormaps["tab10"].resampled(len(CLASSES))
        im = ax.imshow(grid, aspect="auto", cmap=cmap, vmin=-0.5,
                       vmax=len(CLASSES) - 0.5, interpolation="nearest")
        ax.set_yticks(range(len(ks)), [f"k={k:g}" for k in ks])
        ax.set_xticks(range(len(ukeys)), ukeys, rotation=70, fontsize=6)
        cb = fig.colorbar(im, ax=ax, ticks=range(len(CLASSES)))
        cb.ax.set_yticklabels(CLASSES, fontsize=7)
        ax.set_title("regime map: class of each run, eta = k 2/S_0", fontsize=9)
    fig.suptitle("Full-batch GD: eta S_t/2 (1 = linear-stability threshold; grey: "
                 "edge band [0.9, 1.1]; dashed: data-dependent ceiling eta S_ceil/2)",
                 fontsize=10)
    return fig


# --------------------------------------------------------------------------
# sweep cell
# --------------------------------------------------------------------------

class GDSharpness:
    """One full-batch GD run with sharpness tracking (THEORY 10.1).

    ``eta = eta_factor * 2 / S_0``. Metrics: ``S0``, ``eta``, the final
    sharpness, the band of ``eta S_t / 2`` over the second half (min, median,
    max), the share of it in ``[0.9, 1.1]``, the class as its index in
    :data:`CLASSES`, ``max S_t / S_ceil`` (``nan`` for ``q = 3``) and the final
    loss. CPU only (Lanczos on host Hessian-vector products).
    """

    PARAMS = {"model": (str, MODELS), "loss": (str, LOSSES), "n": (int, None),
              "d": (int, None), "m": (int, None), "mu_norm": (float, None),
              "sigma_p": (float, None), "sigma0": (float, None),
              "eta_factor": (float, None), "steps": (int, None),
              "sharpness_every": (int, None)}
    DEFAULTS = {"model": "relu", "loss": "squared", "n": 20, "d": 100, "m": 5,
                "mu_norm": 2.0, "sigma_p": 1.0, "sigma0": 0.1, "eta_factor": None,
                "steps": 1000, "sharpness_every": 10}
    METRICS = ("S0", "eta", "final_sharpness", "band_min", "band_median",
               "band_max", "edge_share", "classification", "ceiling_ratio_max",
               "final_loss")

    @staticmethod
    def evaluate(params_list, seeds, backend="cpu"):
        if backend not in ("cpu",):
            raise ValueError(f"backend: gd-sharpness runs on 'cpu' only (Lanczos on "
                             f"host Hessian-vector products), got {backend!r}")
        out = {k: [] for k in GDSharpness.METRICS}
        for p, s in zip(params_list, seeds, strict=True):
            (r,) = gd_sharpness_runs(
                p["model"], p["loss"], n=p["n"], d=p["d"], m=p["m"],
                sigma0=p["sigma0"], eta_factors=[p["eta_factor"]], steps=p["steps"],
                sharpness_every=p["sharpness_every"], mu_norm=p["mu_norm"],
                sigma_p=p["sigma_p"], seed=int(s))
            vals = dict(S0=r["S0"], eta=r["eta"], final_sharpness=r["sharpness"][-1],
                        band_min=r["band"][0], band_median=r["band"][2],
                        band_max=r["band"][4], edge_share=r["edge_share"],
                        classification=CLASSES.index(r["label"]),
                        ceiling_ratio_max=r["ceiling_ratio_max"],
                        final_loss=r["loss_trace"][-1])
            for k, v in vals.items():
                out[k].append(float(v))
        return {k: np.array(v) for k, v in out.items()}
