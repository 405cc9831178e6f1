"""Net ascent curvature and normalized ascent rate of the trained ReLU CNN
(THEORY 4, 8, 9.4; issue 10 item 4). Implemented in :mod:`simlab.theory.rmt_cnn`
(``cnn_kappa_plus``, ``cnn_sharpness``, ``cnn_ascent_rate``,
``cnn_block_coherence``).

Derivation
----------
1. **Gram form.** With factors ``h_i`` (rows of ``G``) and weights ``w_i =
   alpha/n_f`` (forget), ``-(1-alpha)/n_r`` (retain), the nonzero eigenvalues of
   ``alpha H_f - (1-alpha) H_r = G^T diag(w) G`` are those of ``diag(w) K``
   (``K = G G^T``), similar to the symmetric ``K^{1/2} diag(w) K^{1/2}``.
   ``lambda_max(H) = lambda_max(K) / n``.
2. **Mean Gram** (``derivations/rmt_cnn.py`` step 1; units ``sigma_p^2 / m^2``,
   ``l''`` factors ``c_i c_k``): ``E K_ik = c_i c_k N_c theta`` within a class
   (the noise overlap ``<xi_i, xi_k>`` has mean 0), ``0`` across classes,
   ``K_ii = c_i^2 (N theta + A_i ||xi_i||^2)``. The noise overlaps
   ``N^xi_ik <xi_i, xi_k>`` are a zero-mean symmetric fluctuation of variance
   ``co^2 p``: small against the diagonal ``A p`` (effective dimension
   ``p A^2/co^2 ~ 20 p`` for trained networks), so perturbation theory
   replaces the linear model's Marchenko-Pastur edge.
3. **Pencil perturbation** (:func:`pencil_perturbation`). For ``diag(w)(K + E)``,
   with eigenpairs ``(lambda_j, r_j)`` of ``diag(w) K`` normalised by
   ``r_j^T K r_j = 1`` (left eigenvectors ``K r_j``):
   ``d lambda = lambda r^T E r``,
   ``d^2 lambda = lambda sum_{j != 0} lambda_j (r^T E r_j)^2 / (lambda - lambda_j)``.
   Averaged over ``E`` the first order vanishes; the second order is what
   :func:`simlab.theory.rmt_cnn._signed_top` adds.
4. **Two branches** (:func:`two_class_branches`; equal ``A``, ``l''``,
   ``||xi||^2 = p``, no noise overlap, ``N_c = m``). Within one class, with
   ``f`` forget and ``r`` retain samples, ``diag(w) K`` has (i) the private
   forget directions (forget vectors summing to 0) with eigenvalue
   ``a A p`` (``a = alpha/n_f``): the *memorization* branch, independent of
   SNR; (ii) the class-symmetric pair, a 2x2 problem whose positive root
   ``lambda_o`` is the *signal* branch. ``lambda_o(theta = 0) = a A p`` and,
   for ``alpha < 1/2``,
   ``lambda_o -> A p alpha (1-alpha) (f + r) /
   (n_f n_r ((1-alpha) r/n_r - alpha f/n_f))``,
   i.e. ``a A p (1-alpha) n / ((1-2 alpha) n_r)`` for a class-balanced split:
   ``kappa_+ = max(a A p, lambda_o)`` *rises* with SNR by at most that factor
   (2.2 at ``n = 20, n_f = 4, alpha = 0.3``). Meanwhile
   ``lambda_max(K) = A p + (n/2) m theta``, so
   ``r = kappa_+ / lambda_max(H)`` falls like ``1 / (1 + n m theta / (2 A p))``,
   ``~ 1/(1 + n SNR^2)`` for ``A = m/2``: **the sharpness, not kappa_+,
   carries "lower SNR => faster escape"**, through ``eta = c / lambda_max(H)``.
   Crossover ``n m SNR^2 d / (2 A p) = 1`` (``u = n SNR^2 ~ 1``).

Run ``python derivations/rmt_cnn_ascent.py`` for the closed forms and checks,
``--errors`` to re-measure :data:`simlab.theory.rmt_cnn.ASCENT_ERRORS` (a few
minutes on one core), ``--squared`` for the cnn-unlearning protocol (squared
loss, ``sigma_0 = 0.1``, 3000 steps).
"""

import sys

import numpy as np
import sympy as sp

eps, lam = sp.symbols("epsilon lambda")
a, b, A, p, m, theta, f, r = sp.symbols("a b A p m theta f r", positive=True)
alpha, n_f, n_r = sp.symbols("alpha n_f n_r", positive=True)

#: grid of the error measurement (as derivations/rmt_cnn.py), forget sets of
#: size n/5, two ascent weights
GRID = dict(n=(20, 40), d=(200, 1000), m=(5, 10),
            snr=(0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0), seeds=3, alphas=(0.1, 0.3))
TRAIN = {"logistic": dict(eta=0.1, steps=200, sigma0=0.01, loss="logistic"),
         "squared": dict(eta=0.1, steps=3000, sigma0=0.1, loss="squared",
                         record_every=3000)}
SEED0 = 1000
#: the squared-loss protocol (cnn-unlearning's) is measured on fewer configs
SQUARED_GRID = dict(n=(20,), d=(200, 1000), m=(10,))


def pencil_perturbation():
    """Exact implicit derivatives of the top eigenvalue of ``W (K + eps E)``
    on a 3x3 rational example against step 3; returns the two residuals."""
    K = sp.Matrix([[9, 1, 2], [1, 5, 1], [2, 1, 4]])
    E = sp.Matrix([[1, 2, -1], [2, -1, 3], [-1, 3, 2]])
    W = sp.diag(sp.Rational(3, 4), sp.Rational(-1, 3), sp.Rational(1, 5))
    P = (W * (K + eps * E) - lam * sp.eye(3)).det()
    roots = sp.Poly(P.subs(eps, 0), lam).nroots(n=40)
    l0 = max(sp.re(x) for x in roots)
    d1 = -sp.diff(P, eps) / sp.diff(P, lam)
    d1v = d1.subs({eps: 0, lam: l0})
    # second derivative by implicit differentiation
    Pl, Pe = sp.diff(P, lam), sp.diff(P, eps)
    d2 = -(sp.diff(P, eps, 2) + 2 * sp.diff(P, eps, lam) * d1
           + sp.diff(P, lam, 2) * d1**2) / Pl
    d2v = d2.subs({eps: 0, lam: l0})
    del Pe
    # the formula, numerically from K-normalised eigenvectors
    Kn = np.array(K, dtype=float)
    En = np.array(E, dtype=float)
    wn = np.diag(np.array(W, dtype=float))
    ev, U = np.linalg.eigh(Kn)
    half = (U * np.sqrt(ev)) @ U.T
    lj, V = np.linalg.eigh(half @ (wn[:, None] * half))
    R = np.linalg.solve(half, V)
    r0 = R[:, -1]
    first = lj[-1] * r0 @ En @ r0
    second = 2 * lj[-1] * sum(lj[j] * (r0 @ En @ R[:, j]) ** 2 / (lj[-1] - lj[j])
                              for j in range(2))        # d^2/d eps^2 = 2 x coeff
    return abs(float(d1v) - first), abs(float(d2v) - second)


def two_class_branches():
    """Step 4: the class-symmetric 2x2 block, its positive root and limits.

    Returns ``(lambda_o, limit_0, limit_inf)``."""
    # basis (1_f, 1_r) of one class; K = A p I + m theta 1 1^T on the class
    Mx = sp.Matrix([[a * (A * p + m * theta * f), a * m * theta * r],
                    [-b * m * theta * f, -b * (A * p + m * theta * r)]])
    T, D = Mx.trace(), Mx.det()
    lam_o = T / 2 + sp.sqrt(T**2 / 4 - D)
    # at theta = 0 the discriminant is (a + b)^2 A^2 p^2
    lim0 = sp.simplify((T / 2 + (a + b) * A * p / 2).subs(theta, 0))
    assert sp.simplify((T**2 / 4 - D).subs(theta, 0) - ((a + b) * A * p / 2) ** 2) == 0
    # theta -> oo (b r > a f, i.e. alpha < 1/2 for a balanced split)
    big = sp.limit(lam_o.subs({a: alpha / n_f, b: (1 - alpha) / n_r,
                               f: n_f / 2, r: n_r / 2}).subs(alpha, sp.Rational(3, 10)),
                   theta, sp.oo)
    return sp.simplify(lam_o), lim0, sp.simplify(big)


def limit_ratio(n_, nf_, alpha_):
    """``lambda_o(oo) / (a A p) = (1-alpha) n / ((1-2 alpha) n_r)`` (balanced)."""
    return (1 - alpha_) * n_ / ((1 - 2 * alpha_) * (n_ - nf_))


def branches_check():
    """The closed form of step 4 against :func:`cnn_kappa_plus` on equal
    statistics without noise overlap (where it is exact): worst relative gap."""
    import dataclasses

    from simlab.theory import rmt_cnn
    lam_o = sp.lambdify((a, b, A, p, m, theta, f, r), two_class_branches()[0])
    worst = 0.0
    for n_, d_, m_, nf_, al in [(20, 200, 10, 4, 0.3), (40, 1000, 5, 8, 0.1),
                                (20, 1000, 5, 4, 0.45)]:
        Aval = m_ / 2
        st = dataclasses.replace(rmt_cnn.predictive_stats(n_, d_, m_), co_same=0.0,
                                 A=np.full(n_, Aval), xi_sq=np.full(n_, d_ - 1.0))
        fidx = np.flatnonzero(rmt_cnn._forget_mask(n_, st, nf_, None, True))
        for s in (0.0, 0.1, 0.3, 1.0, 3.0):
            th = s**2 * d_
            comp = rmt_cnn.cnn_kappa_plus(n_, d_, s, m_, alpha=al, forget_idx=fidx,
                                          stats=st, loss="squared") * m_**2
            ref = max(al / nf_ * Aval * (d_ - 1),
                      float(lam_o(al / nf_, (1 - al) / (n_ - nf_), Aval, d_ - 1, m_, th,
                                  nf_ / 2, (n_ - nf_) / 2)))
            worst = max(worst, abs(comp / ref - 1))
            sh = rmt_cnn.cnn_sharpness(n_, d_, s, m_, stats=st, loss="squared")
            ref_sh = (Aval * (d_ - 1) + n_ / 2 * m_ * th) / n_ / m_**2
            worst = max(worst, abs(sh / ref_sh - 1))
    return worst


# --------------------------------------------------------------------------
# error measurement against trained CNNs
# --------------------------------------------------------------------------

def simulate_cell(nn, dd, mm, snrs, seeds, alphas, *, loss="logistic", seed0=SEED0):
    """Train CNNs on every ``(snr, seed)``; per ``(alpha, snr, seed)`` the exact
    ``kappa_+`` (:func:`simlab.stability.kappa_plus` of
    :func:`simlab.predict.curvature_split`), sharpness
    (:func:`simlab.curvature.sharpness`) and the semi-empirical and
    predictive forms. Forget sets: ``n/5`` samples drawn with
    ``default_rng(seed)``. Returns a dict of arrays ``(alpha, snr, seed)``."""
    from simlab.curvature import sharpness
    from simlab.data import signal_noise
    from simlab.dynamics.train import train_many
    from simlab.models import CNN
    from simlab.predict import cnn_summary, curvature_split
    from simlab.stability import kappa_plus
    from simlab.theory import rmt_cnn
    model = CNN(dd, mm)
    nf = nn // 5
    cfg = [(sv, k) for sv in snrs for k in range(seeds)]
    data = [signal_noise(nn, dd, snr=sv, seed=seed0 + k) for sv, k in cfg]
    res = train_many(model, data, seeds=[seed0 + k for _, k in cfg], **TRAIN[loss])
    shape = (len(alphas), len(snrs), seeds)
    out = {k: np.empty(shape) for k in ("kappa", "kappa_semi", "kappa_pred", "sharp",
                                        "sharp_semi", "sharp_pred")}
    for c, (dat, rr) in enumerate(zip(data, res, strict=True)):
        sv, k = cfg[c]
        i, j = snrs.index(sv), k
        fidx = np.sort(np.random.default_rng(seed0 + k).choice(nn, nf, replace=False))
        Fr, Ff = curvature_split(model, rr.W, dat, fidx, loss=loss)
        st = cnn_summary(model, rr.W, dat)
        sh = sharpness(np.concatenate([Fr, Ff]))
        sh_semi = rmt_cnn.cnn_sharpness(nn, dd, sv, mm, stats=st, loss=loss)
        sh_pred = rmt_cnn.cnn_sharpness(nn, dd, sv, mm, loss=loss)
        for q, al in enumerate(alphas):
            out["kappa"][q, i, j] = kappa_plus(Fr, forget=Ff, alpha=al)
            out["kappa_semi"][q, i, j] = rmt_cnn.cnn_kappa_plus(
                nn, dd, sv, mm, alpha=al, forget_idx=fidx, stats=st, loss=loss)
            out["kappa_pred"][q, i, j] = rmt_cnn.cnn_kappa_plus(
                nn, dd, sv, mm, alpha=al, n_forget=nf, loss=loss)
            out["sharp"][q, i, j] = sh
            out["sharp_semi"][q, i, j] = sh_semi
            out["sharp_pred"][q, i, j] = sh_pred
    return out


def cell_errors(out, snrs, nn):
    """Worst ``|pred/sim - 1|`` of the seed means, per form and quantity, over
    all SNRs and over ``u = n SNR^2 >= 1`` (above the crossover)."""
    above = nn * np.asarray(snrs) ** 2 >= 1.0
    errs = {}
    for form in ("semi", "pred"):
        for q, num, den in (("kappa", "kappa", None), ("sharpness", "sharp", None),
                            ("rate", "kappa", "sharp")):
            sim = out[num].mean(-1) if den is None else (out[num] / out[den]).mean(-1)
            pr = (out[f"{num}_{form}"].mean(-1) if den is None
                  else (out[f"{num}_{form}"] / out[f"{den}_{form}"]).mean(-1))
            e = np.abs(pr / sim - 1)
            errs[(form, q, "all")] = float(e.max())
            errs[(form, q, "above")] = float(e[:, above].max())
    return errs


def measure_errors(loss="logistic", grid=None, seed0=SEED0):
    g = dict(GRID, **(grid or {}))
    rows = {}
    for nn in g["n"]:
        for dd in g["d"]:
            for mm in g["m"]:
                out = simulate_cell(nn, dd, mm, list(g["snr"]), g["seeds"],
                                    list(g["alphas"]), loss=loss, seed0=seed0)
                rows[(nn, dd, mm)] = cell_errors(out, g["snr"], nn)
    return rows


def main(argv):
    lam_o, lim0, big = two_class_branches()
    print("signal branch lambda_o =", lam_o)
    print("theta -> 0:", lim0, "  theta -> oo (alpha = 3/10, balanced):", big)
    print("ratio at n=20, n_f=4, alpha=0.3:", limit_ratio(20, 4, 0.3))
    print("checks (pencil d1, d2; branches):", pencil_perturbation(), branches_check())
    for loss in [x for x in ("logistic", "squared") if x == "logistic"
                 and "--errors" in argv or x == "squared" and "--squared" in argv]:
        grid = None if loss == "logistic" else SQUARED_GRID
        rows = measure_errors(loss, grid)
        for cfg, e in rows.items():
            print(loss, cfg, " ".join(f"{k[0]}-{k[1]}-{k[2]}={v:.3f}"
                                      for k, v in sorted(e.items())))


if __name__ == "__main__":
    main(sys.argv[1:])
