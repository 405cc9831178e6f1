"""Hessian-test heatmaps: stability frontiers over (batch size x coherence).

THEORY sections 4 and 7, claim 3 of section 9. On the coherence-dial family
(``n`` samples, dial ``s``, ``lambda_max(H) = 2`` for every ``s``) at fixed
``eta``, simulate the linearized SGD and unlearning dynamics on every
``(s, B)`` cell and compare three verdicts:

- **mean-square** (exact): ``rho(T) > 1``, from the closed form of
  :mod:`simlab.theory.dial` (itself tested against the general operator; a
  random subset of cells is re-checked here and the largest discrepancy is
  stored in ``attrs``);
- **typical, escape**: more than half of the trajectories reach
  ``K ||delta_0||^2`` within the horizon (the source's criterion);
- **typical, Lyapunov**: the median per-trajectory Lyapunov exponent is > 0.
"""

import json
import os
import time

import numpy as np
import xarray as xr

from .._provenance import provenance
from ..curvature import coherence_dial
from ..dynamics.backends import get_kernel
from ..stability import spectral_radius
from ..theory import dial_table

NAME = "hessian-test"
CLAIM = "THEORY 9.3: the exact frontier of the Hessian-test family matches simulation"
#: Which question the figure answers (THEORY section 4): mean-square
#: stability, typical behaviour, finite-horizon escape, or none.
TESTED = ("mean-square stability (exact rho(T) = 1 frontier) and typical behaviour "
          "(median Lyapunov exponent = 0; escape fraction > 1/2 of Monte-Carlo runs "
          "within the horizon), both drawn")
DESCRIPTION = ("Escape fraction of the linearized dynamics over (batch size, coherence "
               "s) for SGD and unlearning (alpha=0.1, retain=forget=dial family), "
               "with the exact mean-square frontier rho(T)=1 (solid) and the "
               "typical-behaviour frontier median Lyapunov=0 (dashed) overlaid.")

FULL = dict(n=100, eta=0.5, alpha=0.1, scheme="without", s=list(range(1, 101)),
            batch=list(range(1, 50)), trajectories=10, steps=1000,
            escape_factor=1e3)
QUICK = dict(FULL, s=[1, 2, 4, 8, 12, 17, 25, 35, 50, 70, 100],
             batch=[1, 2, 3, 5, 8, 12, 17, 24, 33, 49], trajectories=8, steps=400)


def run(quick=False, seed=0, simulate=None, backend="cpu", **overrides):
    """Compute the heatmap data.

    Parameters
    ----------
    quick : bool
        Reduced grid and horizon (``QUICK``) instead of paper size (``FULL``).
    seed : int
    simulate : callable, optional
        A grid simulator with the signature of
        :func:`simlab.dynamics.linearized.linearized_grid`; overrides
        ``backend``.
    backend : {"cpu", "cuda"}
        Which simulator to use when ``simulate`` is not given.
    **overrides
        Replace entries of the parameter dict (``n``, ``eta``, ``alpha``,
        ``scheme``, ``s``, ``batch``, ``trajectories``, ``steps``,
        ``escape_factor``).

    Returns
    -------
    xarray.Dataset
        Dimensions ``mode`` (``sgd``, ``unlearn``), ``s``, ``batch``.
    """
    t_wall, t_cpu, load0 = time.perf_counter(), time.process_time(), _load()
    params = dict(QUICK if quick else FULL)
    unknown = set(overrides) - set(params)
    if unknown:
        raise ValueError(f"unknown parameters {sorted(unknown)}")
    params.update(overrides)
    simulate = get_kernel("linearized_grid", backend) if simulate is None else simulate
    n, eta, alpha = params["n"], params["eta"], params["alpha"]
    scheme = params["scheme"]
    s_vals = [int(s) for s in params["s"]]
    b_vals = [int(b) for b in params["batch"]]
    modes = {"sgd": 0.0, "unlearn": alpha}
    configs = []
    for a in modes.values():
        for s in s_vals:
            H = coherence_dial(n, s)
            for B in b_vals:
                cfg = dict(retain=H, eta=eta, batch=B, scheme=scheme)
                if a:
                    cfg.update(forget=H, forget_batch=B, alpha=a)
                configs.append(cfg)
    results = simulate(configs, steps=params["steps"],
                       trajectories=params["trajectories"],
                       escape_factor=params["escape_factor"], seed=seed,
                       stop_on_escape=False,
                       record_every=max(1, params["steps"] // 50))
    # Results come in the order of ``configs`` (mode, s, batch), so the grid
    # is a reshape; per-cell summaries and the closed forms are vectorized.
    shape = (len(modes), len(s_vals), len(b_vals))
    frac = np.mean(np.stack([res.escaped for res in results]), axis=1).reshape(shape)
    lyap = np.median(np.stack([res.lyapunov for res in results]),
                     axis=1).reshape(shape)
    ms = np.array([res.ms_growth for res in results]).reshape(shape)
    rho = np.empty(shape)
    eta_c = np.empty(shape)
    for i, a in enumerate(modes.values()):
        for j, s in enumerate(s_vals):
            rho[i, j], eta_c[i, j] = dial_table(n, s, eta, b_vals, scheme=scheme,
                                                 alpha=a)
    check = _operator_spot_check(n, eta, scheme, modes, s_vals, b_vals, rho, seed)
    coords = {"mode": list(modes), "s": s_vals, "batch": b_vals}
    dims = ("mode", "s", "batch")
    ds = xr.Dataset(
        {
            "escape_fraction": (dims, frac, {"long_name": "fraction of trajectories "
                                             "reaching K ||delta_0||^2"}),
            "lyapunov_median": (dims, lyap, {"long_name": "median Lyapunov exponent "
                                             "(per step)"}),
            "ms_growth_mc": (dims, ms, {"long_name": "Monte-Carlo growth factor of "
                                        "E||delta||^2 per step"}),
            "rho": (dims, rho, {"long_name": "exact spectral radius rho(T)"}),
            "critical_lr": (dims, eta_c, {"long_name": "exact critical eta"}),
        },
        coords=coords,
    )
    ms_div = rho > 1
    esc_div = frac > 0.5
    lyap_div = lyap > 0
    ds.attrs.update(provenance(params, seed))
    stats = {
        mode: {
            "cells": int(ms_div[i].size),
            "ms_vs_escape_disagree": int(np.sum(ms_div[i] != esc_div[i])),
            "ms_vs_lyapunov_disagree": int(np.sum(ms_div[i] != lyap_div[i])),
            "escape_vs_lyapunov_disagree": int(np.sum(esc_div[i] != lyap_div[i])),
            "ms_divergent_not_typical": int(np.sum(ms_div[i] & ~lyap_div[i])),
        }
        for i, mode in enumerate(modes)
    }
    ds.attrs["frontier_stats"] = json.dumps(stats)
    ds.attrs["operator_check_max_rel_err"] = check
    seconds = time.perf_counter() - t_wall
    cpu_seconds = time.process_time() - t_cpu
    ds.attrs.update(seconds=seconds, cpu_seconds=cpu_seconds,
                    load_average=f"{load0:.1f}-{_load():.1f} on {os.cpu_count()} CPUs")
    ds.attrs["summary"] = "; ".join(
        f"{m}: {v['ms_vs_lyapunov_disagree']}/{v['cells']} cells where mean-square "
        f"and typical (Lyapunov) verdicts differ, {v['ms_vs_escape_disagree']} where "
        f"mean-square and escape-fraction>1/2 differ" for m, v in stats.items()) + (
        f"; run(): {seconds:.1f} s wall, {cpu_seconds:.1f} s CPU (load "
        f"{ds.attrs['load_average']})")
    return ds


def _load():
    """One-minute load average (NaN where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:  # pragma: no cover - platform without getloadavg
        return float("nan")


def _operator_spot_check(n, eta, scheme, modes, s_vals, b_vals, rho, seed, k=6):
    """Largest gap, relative to ``max(rho, 1)``, between the closed form and the
    general operator on ``k`` random cells per mode (guards the drawn frontier)."""
    rng = np.random.default_rng(seed)
    worst = 0.0
    for i, a in enumerate(modes.values()):
        for _ in range(k):
            j, m = rng.integers(len(s_vals)), rng.integers(len(b_vals))
            H = coherence_dial(n, s_vals[j])
            kw = dict(scheme=scheme)
            if a:
                kw.update(forget=H, forget_batch=b_vals[m], alpha=a)
            ref = spectral_radius(H, eta, b_vals[m], **kw)
            worst = max(worst, abs(ref - rho[i, j, m]) / max(ref, 1.0))
    return float(worst)


def plot(ds):
    """Two heatmaps (SGD, unlearning) with both frontiers overlaid.

    The constrained layout is computed once here and then fixed, so saving
    the figure in several formats does not lay it out again (each layout pass
    costs about 0.3 s); call ``fig.set_layout_engine("constrained")`` before
    adding artists that need room. Log axes carry a few plain-number ticks
    (tick objects dominate the drawing time of log axes).
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    fig = Figure(figsize=(10, 4.2), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    B = ds["batch"].values
    s = ds["s"].values
    params = json.loads(ds.attrs["params"])
    for ax, mode in zip(axes, ds["mode"].values):
        sub = ds.sel(mode=mode)
        im = ax.pcolormesh(B, s, sub["escape_fraction"].values, shading="nearest",
                           vmin=0, vmax=1, cmap="viridis", rasterized=True)
        ax.contour(B, s, sub["rho"].values, levels=[1.0], colors="k",
                   linewidths=1.8)
        ax.contour(B, s, sub["lyapunov_median"].values, levels=[0.0],
                   colors="w", linestyles="--", linewidths=1.4)
        title = "SGD" if mode == "sgd" else f"unlearning, alpha={params['alpha']}"
        ax.set_title(f"{title} (eta={params['eta']}, {params['scheme']})")
        ax.set_xlabel("batch size B")
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis, vals in ((ax.xaxis, B), (ax.yaxis, s)):
            axis.set_major_locator(FixedLocator(_log_ticks(vals)))
            axis.set_major_formatter(ScalarFormatter())
            axis.set_minor_locator(NullLocator())
    axes[0].set_ylabel("coherence s")
    fig.colorbar(im, ax=axes, label="escape fraction (simulated)")
    fig.suptitle("Hessian test: black = exact mean-square frontier rho(T)=1, "
                 "white dashed = typical frontier (median Lyapunov = 0)",
                 fontsize=9)
    fig.get_layout_engine().execute(fig)
    fig.set_layout_engine("none")
    return fig


def _log_ticks(values):
    """Ticks 1, 2, 5, 10, 20, ... inside the range of ``values``, and the
    largest value unless a tick lies within a factor 1.3 of it."""
    lo, hi = float(np.min(values)), float(np.max(values))
    ticks = [m * 10.0**e for e in range(-3, 7) for m in (1, 2, 5)
             if lo <= m * 10.0**e <= hi]
    if not ticks or ticks[-1] * 1.3 < hi:
        ticks.append(hi)
    return ticks
