"""simlab on your own model: a PyTorch MLP on scikit-learn's digits.

What it does

1. Trains a small tanh MLP (64 -> 16 -> 10, p = 1210 parameters, float64) to an
   interpolating minimum ``w*`` of the squared loss on one-hot targets, on 20
   digits (the retain set) plus 2 rows that duplicate retain samples (the forget
   set: same x, same y; so the forget curvature lies inside the retain span and a
   genuine rho(T_u) = 1 frontier exists: with fresh forget samples every cell
   would have kappa_+ > 0, see THEORY 10.0).
2. Computes the per-sample Gauss-Newton factors ``J_i`` (10 x p, the output
   Jacobian) with ``torch.func`` (``vmap`` of ``jacrev``). At an interpolating
   minimum of the squared loss the residuals vanish, so ``H_i = J_i^T J_i`` is
   the exact per-sample Hessian: rank 10, passed to simlab as
   ``simlab.curvature.Factors`` (n, 10, p) -- never split into 10 rank-one
   "samples", which would drop the cross terms. (With cross-entropy the same
   factors weighted by the softmax curvature are only an approximation at a
   non-stationary point; simlab's drift-aware prediction,
   ``predict_unlearning(..., loss="logistic")``, is the tool there.)
3. For each (eta, alpha) cell of descent-ascent unlearning (retain batch 4,
   forget batch 1, sampling without replacement, horizon T, K = 1e3):

   * the **mean-square** verdict: exact ``rho(T_u)`` and the first-passage time of
     ``E||delta_t||^2`` through ``K E||delta_0||^2`` from the perturbation law
     (``simlab.stability.escape_time`` with ``perturbation_samples``: delta_0
     Gaussian with covariance sum_i H_i), on the rank-k factors;
   * the **typical** verdict: the median per-step growth rate lambda_typ of
     ``||delta_t||`` of the linearized dynamics (Monte Carlo, 64 trajectories, in
     the coordinates of the curvature range), escape iff T lambda_typ >= log(K)/2;
   * the **real** verdict: the majority of 6 twin unlearning runs in torch from
     ``w*`` and ``w* + delta_0`` (||delta_0|| = 1e-6 ||w*||, delta_0 from the same
     law, same minibatches for both twins), escape iff
     ``||delta_t||^2 >= K ||delta_0||^2`` within T.

   A cell is *far* when ``|T lambda_typ| > log K``. Printed: agreement of both
   verdicts with the real one on far and near cells.

Run: ``python examples/torch_mlp_unlearning.py`` (about a minute on 2 cores;
``--quick`` for a small grid). Needs ``pip install "simlab[examples]"``.
"""

import argparse
import json
import math
import sys

import numpy as np
import torch
from sklearn.datasets import load_digits

from simlab.curvature import Factors, sharpness
from simlab.stability import escape_time, spectral_radius

torch.set_default_dtype(torch.float64)
torch.set_num_threads(1)        # tiny tensors: threads cost more than they give
K = 1e3
HIDDEN, N_PER_CLASS, N_DUP = 16, 2, 2


# ------------------------------------------------------------------ the model

def unpack(w, d=64, h=HIDDEN, k=10):
    """Flat parameters (..., p) -> (W1, b1, W2, b2), batched over leading dims."""
    sizes = [h * d, h, k * h, k]
    parts = torch.split(w, sizes, dim=-1)
    lead = w.shape[:-1]
    return (parts[0].reshape(*lead, h, d), parts[1], parts[2].reshape(*lead, k, h),
            parts[3])


def forward(w, X):
    """MLP outputs: w (p,), X (n, 64) -> (n, 10)."""
    W1, b1, W2, b2 = unpack(w)
    return torch.tanh(X @ W1.T + b1) @ W2.T + b2


def forward_many(w, X):
    """Batched: w (M, p), X (M, B, 64) -> (M, B, 10)."""
    W1, b1, W2, b2 = unpack(w)
    hid = torch.tanh(torch.einsum("mbd,mhd->mbh", X, W1) + b1[:, None, :])
    return torch.einsum("mbh,mkh->mbk", hid, W2) + b2[:, None, :]


def data():
    """20 retain digits (2 per class), inputs scaled to [0, 1], one-hot targets;
    forget = duplicates of retain rows 0 and 10."""
    X, y = load_digits(return_X_y=True)
    idx = np.concatenate([np.flatnonzero(y == c)[:N_PER_CLASS] for c in range(10)])
    Xr = torch.tensor(X[idx] / 16.0)
    Yr = torch.nn.functional.one_hot(torch.tensor(y[idx]), 10).double()
    dup = torch.arange(N_DUP) * (len(idx) // N_DUP)
    return Xr, Yr, Xr[dup].clone(), Yr[dup].clone()


def train_to_minimum(X, Y, seed=0, iters=60):
    """Squared loss 0.5 mean ||f - y||^2 to an interpolating minimum, by
    Levenberg-Marquardt steps on the stacked output Jacobian (quadratic
    convergence at interpolation: residuals reach rounding level)."""
    g = torch.Generator().manual_seed(seed)
    p = HIDDEN * 64 + HIDDEN + 10 * HIDDEN + 10
    w = torch.randn(p, generator=g) * 0.3
    damping = 1e-3
    for _ in range(iters):
        r = (forward(w, X) - Y).reshape(-1)
        J = jacobians(w, X).reshape(r.numel(), p)
        step = J.T @ torch.linalg.solve(J @ J.T + damping * torch.eye(r.numel()), r)
        w_new = w - step
        if ((forward(w_new, X) - Y) ** 2).sum() < (r ** 2).sum():
            w, damping = w_new, max(damping / 10, 1e-12)
        else:
            damping *= 10
        loss = float(0.5 * ((forward(w, X) - Y) ** 2).sum(1).mean())
        if loss < 1e-28:
            break
    return w, loss


def jacobians(w, X):
    """Per-sample output Jacobians J_i (n, 10, p) with torch.func."""
    jac = torch.func.vmap(torch.func.jacrev(lambda w_, x: forward(w_, x[None])[0]),
                          in_dims=(None, 0))
    return jac(w, X)


# ------------------------------------------------------------- the predictions

def typical_growth(Jr, Jf, eta, alpha, br, bf, steps, trajectories, seed):
    """Median and standard error of the per-step growth rate of ||delta_t|| in the
    linearized descent-ascent dynamics (rank-k per-sample Hessians, batches
    without replacement), delta_0 Gaussian with covariance sum_i H_i."""
    rng = np.random.default_rng(seed)
    n_r, k, r = Jr.shape
    n_f = Jf.shape[0]
    allJ = np.concatenate([Jr, Jf]).reshape(-1, r)
    delta = rng.standard_normal((trajectories, allJ.shape[0])) @ allJ
    logn = np.zeros(trajectories)
    norm0 = np.linalg.norm(delta, axis=1)
    delta /= norm0[:, None]
    for _ in range(steps):
        bi = np.argsort(rng.random((trajectories, n_r)), axis=1)[:, :br]
        bj = np.argsort(rng.random((trajectories, n_f)), axis=1)[:, :bf]
        Gr, Gf = Jr[bi], Jf[bj]                      # (traj, B, k, r)
        step = ((1 - alpha) / br) * np.einsum("tbkr,tbk->tr", Gr,
                                                np.einsum("tbkr,tr->tbk", Gr, delta))
        if alpha > 0:
            step -= (alpha / bf) * np.einsum("tbkr,tbk->tr", Gf,
                                             np.einsum("tbkr,tr->tbk", Gf, delta))
        delta = delta - eta * step
        nrm = np.linalg.norm(delta, axis=1)
        logn += np.log(nrm)
        delta /= nrm[:, None]
    rates = logn / steps
    med = float(np.median(rates))
    # standard error of the median (normal approximation: 1.2533 sd / sqrt(N))
    return med, float(1.2533 * rates.std(ddof=1) / math.sqrt(trajectories))


def range_coordinates(J):
    """Orthonormal basis (p, r) of the span of every row of J (..., k, p)."""
    rows = J.reshape(-1, J.shape[-1])
    _, s, Vt = np.linalg.svd(rows, full_matrices=False)
    V = Vt[s > 1e-10 * s[0]].T
    return V


# ----------------------------------------------------------------- real runs

def real_escape(w_star, Xr, Yr, Xf, Yf, cells, runs, br, bf, steps, seed, S):
    """Escape fraction of real twin unlearning runs, all cells and runs at once.

    Rows of the batch: (cell, run, twin). Both twins of a run share minibatches;
    the second starts at w* + delta_0 with delta_0 = z S scaled to 1e-6 ||w*||."""
    g = torch.Generator().manual_seed(seed)
    C, M = len(cells), len(cells) * runs
    eta = torch.tensor([c[0] for c in cells]).repeat_interleave(runs)
    alpha = torch.tensor([c[1] for c in cells]).repeat_interleave(runs)
    z = torch.randn(M, S.shape[0], generator=g) @ S
    delta0 = z * (1e-6 * w_star.norm() / z.norm(dim=1, keepdim=True))
    w = torch.stack([w_star.expand(M, -1), w_star + delta0], 1).reshape(2 * M, -1)
    d0 = (delta0 ** 2).sum(1)
    escaped = torch.zeros(M, dtype=torch.bool)
    n_r, n_f = Xr.shape[0], Xf.shape[0]
    eta2, alpha2 = eta.repeat_interleave(2), alpha.repeat_interleave(2)
    for _ in range(steps):
        bi = torch.argsort(torch.rand(M, n_r, generator=g), 1)[:, :br]
        bj = torch.argsort(torch.rand(M, n_f, generator=g), 1)[:, :bf]
        bi, bj = bi.repeat_interleave(2, 0), bj.repeat_interleave(2, 0)
        w = w.detach().requires_grad_(True)
        lr_ = 0.5 * ((forward_many(w, Xr[bi]) - Yr[bi]) ** 2).sum((1, 2)) / br
        lf_ = 0.5 * ((forward_many(w, Xf[bj]) - Yf[bj]) ** 2).sum((1, 2)) / bf
        loss = ((1 - alpha2) * lr_ - alpha2 * lf_).sum()
        (grad,) = torch.autograd.grad(loss, w)
        with torch.no_grad():
            w = w - eta2[:, None] * grad
            pair = w.reshape(M, 2, -1)
            d = ((pair[:, 1] - pair[:, 0]) ** 2).sum(1)
            escaped |= ~(d < K * d0)            # NaN/inf (divergence) escapes too
    return escaped.reshape(C, runs).double().mean(1).numpy()


# ---------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small grid")
    ap.add_argument("--json", help="write the per-cell results here")
    args = ap.parse_args(argv)

    Xr, Yr, Xf, Yf = data()
    X, Y = torch.cat([Xr, Xf]), torch.cat([Yr, Yf])
    w_star, loss = train_to_minimum(X, Y)
    print(f"trained: p = {w_star.numel()}, squared loss {loss:.2e} on "
          f"{X.shape[0]} rows ({Xr.shape[0]} retain + {Xf.shape[0]} duplicates)")
    if loss > 1e-20:
        print("warning: not at an interpolating minimum; Gauss-Newton factors are "
              "then an approximation", file=sys.stderr)

    Jr, Jf = (jacobians(w_star, A).numpy() for A in (Xr, Xf))
    retain, forget = Factors(Jr), Factors(Jf)
    lam = sharpness(retain)                              # lambda_max of mean H_r
    V = range_coordinates(np.concatenate([Jr, Jf]))
    Jr_u, Jf_u = Jr @ V, Jf @ V
    S = np.concatenate([Jr, Jf]).reshape(-1, Jr.shape[-1])     # law of delta_0
    br, bf = 4, 1
    T = 200 if args.quick else 300
    etas = (np.array([0.6, 1.2, 1.8]) if args.quick else
            np.array([0.3, 0.6, 0.9, 1.2, 1.5, 1.8])) / lam
    alphas = (np.array([0.0, 0.3, 0.6]) if args.quick else
              np.array([0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.6]))
    runs = 6
    print(f"lambda_max(H_r) = {lam:.3f}, range dimension {V.shape[1]}, "
          f"grid {len(etas)} eta x {len(alphas)} alpha, horizon {T}, {runs} runs")

    cells = [(float(e), float(a)) for e in etas for a in alphas]
    rows = []
    for i, (eta, alpha) in enumerate(cells):
        kw = dict(forget=forget, alpha=alpha, forget_batch=bf) if alpha > 0 else {}
        rho = spectral_radius(retain, eta, br, **kw)
        t_ms = escape_time(retain, eta, br, perturbation_samples=S, horizon=T, **kw)
        lam_typ, se = typical_growth(Jr_u, Jf_u, eta, alpha, br, bf, T, 64, 100 + i)
        rows.append({"eta": eta, "alpha": alpha, "rho": rho, "ms_escape_time": t_ms,
                     "lambda_typ": lam_typ, "lambda_se": se})
    frac = real_escape(w_star, Xr, Yr, Xf, Yf, cells, runs, br, bf, T, 7,
                       torch.tensor(S))
    logK = math.log(K)
    for row, f in zip(rows, frac):
        row["real_escape_fraction"] = float(f)
        row["real"] = bool(f > 0.5)
        row["typical"] = bool(T * row["lambda_typ"] >= logK / 2)
        row["mean_square"] = bool(row["ms_escape_time"] <= T)
        row["far"] = bool(abs(T * row["lambda_typ"]) > logK)

    def share(key, far):
        sel = [r for r in rows if r["far"] == far]
        if not sel:
            return "no cells"
        ok = sum(r[key] == r["real"] for r in sel)
        return f"{100 * ok / len(sel):.0f}% of {len(sel)}"

    print(f"{'eta*lam':>8} {'alpha':>6} {'rho':>7} {'T*lam_typ':>10} {'t_ms':>6} "
          f"{'real':>5} typ ms far")
    for r in rows:
        print(f"{r['eta'] * lam:8.2f} {r['alpha']:6.2f} {r['rho']:7.4f} "
              f"{T * r['lambda_typ']:10.2f} {r['ms_escape_time']:6.0f} "
              f"{r['real_escape_fraction']:5.2f} {int(r['typical']):3d} "
              f"{int(r['mean_square']):2d} {int(r['far']):3d}")
    n_far = sum(r["far"] for r in rows)
    sides = (sum(r["far"] and r["real"] for r in rows),
             sum(r["far"] and not r["real"] for r in rows))
    summary = {"far_cells": n_far, "far_escaping": sides[0], "far_resisting": sides[1],
               "typical_far": share("typical", True),
               "typical_near": share("typical", False),
               "mean_square_far": share("mean_square", True),
               "mean_square_near": share("mean_square", False)}
    print("agreement with the real majority verdict: typical far "
          f"{summary['typical_far']}, near {summary['typical_near']}; mean-square far "
          f"{summary['mean_square_far']}, near {summary['mean_square_near']} "
          f"(far cells: {sides[0]} escaping, {sides[1]} resisting)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"summary": summary, "cells": rows, "horizon": T,
                       "escape_factor": K, "runs": runs}, fh, indent=1)
    return summary


if __name__ == "__main__":
    main()
