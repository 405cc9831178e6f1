"""Tightness of the SGD coherence bound on random Hessian families.

THEORY section 5 and claim 2 of section 9: Dexter et al. show that linearized
Bernoulli SGD diverges when ``eta lambda_max(H) >= sigma (n/B - 1)^{-1/2}``.
Over random small PSD families (rank-one and full rank) we compute the exact
critical learning rate ``eta*`` (generalized eigenproblem) and report the ratio
``eta* / eta_bound``: a ratio above 1 would be a violation of the bound.
"""

import numpy as np
import xarray as xr

from .._provenance import provenance
from ..stability import coherence_bound_lr, critical_lr

NAME = "coherence-bound"
CLAIM = "THEORY 9.2: the SGD coherence bound is never violated; tightness ratios"
#: Which question the figure answers (THEORY section 4): mean-square
#: stability, typical behaviour, finite-horizon escape, or none.
TESTED = ("mean-square stability only: the exact critical learning rate (rho(T) = "
          "1) against the Bernoulli coherence bound; no simulation")
DESCRIPTION = ("Histogram of eta*/eta_bound (exact critical eta over the Dexter et "
               "al. coherence bound) for random rank-one and full-rank PSD "
               "families, Bernoulli sampling.")

FULL = dict(families=400, n_max=12, p_max=6)
QUICK = dict(families=120, n_max=10, p_max=5)


def _family(rng, n_max, p_max):
    n = int(rng.integers(2, n_max + 1))
    p = int(rng.integers(1, p_max + 1))
    rank_one = bool(rng.integers(2))
    scales = np.exp(rng.uniform(-1.5, 1.5, n))
    if rank_one:
        H = rng.standard_normal((n, p)) * scales[:, None]
    else:
        k = int(rng.integers(1, p + 1))
        A = rng.standard_normal((n, p, k))
        H = A @ A.transpose(0, 2, 1) * scales[:, None, None] / k
    return H, rank_one, int(rng.integers(1, n))


def run(quick=False, seed=0, **overrides):
    """Sample families, return ratios, ranks and sizes as a Dataset."""
    params = dict(QUICK if quick else FULL)
    params.update(overrides)
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(params["families"]):
        H, rank_one, B = _family(rng, params["n_max"], params["p_max"])
        bound = coherence_bound_lr(H, B)
        eta = critical_lr(H, B, scheme="bernoulli")
        rows.append((eta / bound, rank_one, H.shape[0], B))
    ratio, rank_one, n, B = map(np.array, zip(*rows))
    ds = xr.Dataset(
        {"ratio": ("family", ratio, {"long_name": "eta* / eta_bound"}),
         "rank_one": ("family", rank_one.astype(np.int8)),
         "n": ("family", n), "batch": ("family", B)},
        coords={"family": np.arange(len(ratio))})
    ds.attrs.update(provenance(params, seed))
    viol = int(np.sum(ratio > 1 + 1e-9))
    ds.attrs["violations"] = viol
    ds.attrs["summary"] = (
        f"{len(ratio)} families, {viol} violations; eta*/eta_bound min "
        f"{ratio.min():.3f}, median {np.median(ratio):.3f}, max {ratio.max():.3f} "
        f"(rank-one median {np.median(ratio[rank_one]):.3f}, full-rank median "
        f"{np.median(ratio[~rank_one]):.3f})")
    return ds


def plot(ds):
    """Histogram of tightness ratios, split by rank."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.subplots()
    bins = np.linspace(0, 1.05, 43)
    r1 = ds["rank_one"].values.astype(bool)
    ax.hist(ds["ratio"].values[r1], bins=bins, alpha=0.7, label="rank-one")
    ax.hist(ds["ratio"].values[~r1], bins=bins, alpha=0.7, label="full rank")
    ax.axvline(1.0, color="k", lw=1)
    ax.set_xlabel("eta* / coherence bound  (> 1 would violate the bound)")
    ax.set_ylabel("families")
    ax.set_title(f"Coherence bound tightness ({ds.attrs['violations']} violations)",
                 fontsize=10)
    ax.legend()
    return fig
