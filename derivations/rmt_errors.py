"""Measured errors of the random-matrix predictions (THEORY 11) on the seeded grid.

Ground truth comes from simlab's exact code on data drawn with
``simlab.data.sample_linear_model`` (passed to simlab as the isometric
factors ``V sqrt(Lambda)`` of the Gram matrix ``X X^T = V Lambda V^T``, which
define the same Hessian family up to a rotation and make each call ``O(n^3)``
instead of ``O(n^2 d)``):

- sharpness: ``eigvalsh`` of the Gram matrix ``X X^T / n``;
- coherence: ``simlab.coherence.coherence_measure`` / ``block_coherence``
  (retain = first ``n - n_f`` samples, forget = last ``n_f``);
- net ascent curvature: ``simlab.stability.kappa_plus``;
- critical learning rate: ``simlab.stability.critical_lr(scheme="bernoulli")``.

Each prediction is of an expectation, so the simulation is the mean over
``seeds`` independent draws (seed ``SEED0 + s``). The grid is
``n in {50, 100, 200}``, ``d in {200, 1000, 4000}``, ``SNR in SNRS``,
``alpha in {0.1, 0.3, 0.5}``, ``n_f in {5, 10, 20}``, ``B in {1, 10, n/2}``.
``tests/test_rmt.py`` imports :func:`simulate` and :func:`relative_errors`
and holds the tolerances stated in ``simlab.theory.rmt``.

Run ``python derivations/rmt_errors.py`` to print the worst error of every
function (about 30 minutes on one core with ``OPENBLAS_NUM_THREADS=1``);
results are cached in the system temporary folder unless ``--fresh`` is given.
"""

import itertools
import sys
import tempfile
from pathlib import Path

import numpy as np

from simlab.coherence import block_coherence, coherence_measure
from simlab.data import sample_linear_model
from simlab.stability import critical_lr, kappa_plus
from simlab.theory import rmt

NS = (50, 100, 200)
DS = (200, 1000, 4000)
SNRS = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
ALPHAS = (0.1, 0.3, 0.5)
NFS = (5, 10, 20)
SEED0 = 1000

#: Seed counts per quantity (the prediction is of a mean over these draws).
SEEDS = {"sharpness": 32, "coherence": 32, "ascent": 32, "critical": 4}


def batches(n):
    """Batch sizes of the grid for ``n`` samples."""
    return (1, 10, n // 2)


def simulate(n, d, snr, seeds, *, what=("sharpness", "coherence", "ascent",
                                        "critical"), alphas=ALPHAS, nfs=NFS,
             batch_sizes=None):
    """Seed-averaged exact quantities for one ``(n, d, snr)`` cell.

    Returns
    -------
    dict
        ``"sharpness"``, ``"lam_S"``, ``"sigma"`` -> float; ``("block", n_f)``
        -> dict of BlockCoherence fields; ``("kappa", n_f, alpha)`` and
        ``("rate", n_f, alpha)`` -> float; ``("critical", B)`` -> float. Each
        value is the mean over ``seeds`` draws; ``"sem"`` maps the same keys
        to the standard error of that mean (relative).
    """
    acc = {}

    def add(key, value):
        acc.setdefault(key, []).append(value)

    bs = batches(n) if batch_sizes is None else batch_sizes
    for s in range(seeds):
        X, _ = sample_linear_model(n, d, snr, seed=SEED0 + s)
        gram = X @ X.T
        ev, V = np.linalg.eigh(gram)
        lam = ev[-1] / n
        # Isometric copy of the factors in coordinates of span{x_i}: the same
        # Gram matrix, so every quantity below is unchanged, at O(n^3) cost.
        X = V * np.sqrt(np.maximum(ev, 0.0))
        if "sharpness" in what:
            add("sharpness", lam)
        if "coherence" in what:
            add("lam_S", np.linalg.eigvalsh(np.abs(gram))[-1])
            add("sigma", coherence_measure(X))
            for n_f in nfs:
                bc = block_coherence(X[:n - n_f], X[n - n_f:])
                for f in ("lam_rr", "lam_ff", "s_rf", "sigma", "sigma_r", "sigma_f"):
                    add(("block", n_f, f), getattr(bc, f))
        if "ascent" in what:
            for n_f, alpha in itertools.product(nfs, alphas):
                k = kappa_plus(X[:n - n_f], forget=X[n - n_f:], alpha=alpha)
                add(("kappa", n_f, alpha), k)
                add(("rate", n_f, alpha), k / lam)
        if "critical" in what:
            for B in bs:
                add(("critical", B), critical_lr(X, B, scheme="bernoulli"))
    out = {k: float(np.mean(v)) for k, v in acc.items()}
    out["sem"] = {k: float(np.std(v, ddof=1) / np.sqrt(len(v)) / abs(np.mean(v)))
                  if len(v) > 1 else np.nan for k, v in acc.items()}
    return out


def predict(n, d, snr, key):
    """The ``simlab.theory.rmt`` prediction matching a :func:`simulate` key."""
    if key == "sharpness":
        return rmt.sharpness(n, d, snr)
    if key == "lam_S":
        return rmt.coherence_top(n, d, snr)
    if key == "sigma":
        return rmt.coherence_measure(n, d, snr)
    kind = key[0]
    if kind == "block":
        _, n_f, field = key
        return getattr(rmt.block_coherence(n - n_f, n_f, d, snr), field)
    if kind == "kappa":
        return rmt.kappa_plus(n, key[1], d, snr, key[2])
    if kind == "rate":
        return rmt.ascent_rate(n, key[1], d, snr, key[2])
    if kind == "critical":
        return rmt.critical_lr(n, d, snr, key[1])
    raise KeyError(key)


def relative_errors(n, d, snr, sim):
    """``predict / simulate - 1`` for every key of a :func:`simulate` result."""
    return {k: predict(n, d, snr, k) / v - 1.0 for k, v in sim.items() if k != "sem"}


def group(key):
    """Name of the function (and field) a key belongs to."""
    if isinstance(key, str):
        return key
    return f"block.{key[2]}" if key[0] == "block" else key[0]


def measure(fresh=False, cache=None):
    """Run the whole grid; return rows ``(n, d, snr, key, rel_error, sem)``."""
    if cache is None:
        cache = Path(tempfile.gettempdir()) / "simlab_rmt_errors.npz"
    rows = []
    if cache.exists() and not fresh:
        data = np.load(cache, allow_pickle=True)
        return list(data["rows"])
    for n, d, snr in itertools.product(NS, DS, SNRS):
        sims = {}
        for what, seeds in SEEDS.items():
            sims[what] = simulate(n, d, snr, seeds, what=(what,))
        for sim in sims.values():
            for k, e in relative_errors(n, d, snr, sim).items():
                rows.append((n, d, snr, k, e, sim["sem"][k]))
        print(f"n={n} d={d} snr={snr}", file=sys.stderr, flush=True)
    np.savez(cache, rows=np.array(rows, dtype=object))
    return rows


def summary(rows):
    """Worst |error| per function, split ``d = 200`` / ``d >= 1000``."""
    out = {}
    for n, d, snr, k, e, sem in rows:
        g = group(k)
        band = "d=200" if d == 200 else "d>=1000"
        cur = out.setdefault(g, {}).get(band, (0.0, None))
        if abs(e) > cur[0]:
            out[g][band] = (abs(e), (n, d, snr, k, sem))
    return out


if __name__ == "__main__":
    rows = measure(fresh="--fresh" in sys.argv)
    for g, bands in sorted(summary(rows).items()):
        txt = "  ".join(f"{b}: {v[0] * 100:5.2f}% at {v[1]}"
                        for b, v in sorted(bands.items()))
        print(f"{g:16s} {txt}")
