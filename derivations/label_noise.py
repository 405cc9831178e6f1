"""Clean- vs noisy-label min-norm interpolators of the linear model (THEORY 10.3).

Derivation
----------
Linear model ``f = <w, z>``, ``z_i = x_i^(1) + x_i^(2) = c_i mu + xi_i`` (``c``:
clean labels, which the signal patch carries), squared loss, ``sigma_p = 1``.
Observed labels ``y = c * s`` with ``s_i = -1`` independently with probability
``p_flip``. Min-norm interpolators ``w_a = Z^T K^{-1} a`` with ``K = Z Z^T``.

1. **Exact Gram identity.** ``<w_a, w_b> = a^T K^{-1} Z Z^T K^{-1} b =
   a^T K^{-1} b``, so ``cos angle(w_c, w_y) = c^T K^{-1} y / sqrt(c^T K^{-1} c
   y^T K^{-1} y)``: an ``n x n`` computation (``simlab.spectral.min_norm_angle``;
   :func:`gram_identity_error` checks it against the interpolators computed
   directly, to 1e-10). Because ``xi_i`` is orthogonal to ``mu``,
   ``K = theta c c^T + A`` exactly, ``A = Xi Xi^T`` (Wishart, ``p = d - 1``
   degrees of freedom), ``theta = ||mu||^2 = SNR^2 d``.

2. **Sherman-Morrison** (:func:`sherman_morrison_forms`, symbolic): with
   ``Q(a, b) = a^T A^{-1} b``, ``a^T K^{-1} b = Q(a,b) - theta Q(a,c) Q(c,b) /
   (1 + theta Q(c,c))``.

3. **Deterministic equivalent.** ``A`` is orthogonally invariant and ``a, b``
   (labels) are independent of it, so ``Q(a, b) = m a.b`` up to fluctuations of
   relative order ``p^{-1/2}``, with the inverse-Wishart mean
   ``m = 1/(p - n - 1)``. With flip fraction ``f``: ``c.c = y.y = n``,
   ``c.y = n (1 - 2f)``. Substituting (:func:`angle_limit`, symbolic):

   ``cos angle = (1 - 2 f) / sqrt(1 + 4 f (1 - f) v)``, ``v = theta n m``
   ``-> n SNR^2`` for ``d >> n``.

   Limits: ``v -> 0`` (memorization) gives ``arccos(1 - 2f)``, the angle of
   the label vectors themselves; ``v -> oo`` (signal) gives 90 degrees for any
   ``f > 0``: the clean interpolator is the signal direction (norm ``~
   1/sqrt(theta)``) and the noisy one is dominated by the noise it needs to fit
   the flipped points. The expectation over flips is the exact binomial sum
   over ``f = k/n`` (``simlab.theory.rmt.label_noise_angle``).

4. **Top curvature direction vs bulk.** The eigenvectors of ``Z^T Z`` are
   ``v_j = Z^T u_j / sqrt(lambda_j)`` (``K u_j = lambda_j u_j``) and
   ``<v_j, Z^T K^{-1} e> = u_j^T e / sqrt(lambda_j)``, so the share of
   ``||w_y - w_c||^2`` on ``v_1`` is ``(u_1^T e)^2 / lambda_1 / e^T K^{-1} e``
   with ``e = y - c`` (``-2 c_i`` on flipped points): ``c.e = -2 n f``,
   ``|e|^2 = 4 n f``. Step 3 gives ``e^T K^{-1} e = 4 n f m (1 - v f/(1+v))``.
   Above the BBP threshold ``(theta - 1)^2 > gamma = p/n`` the top Gram
   eigenvector is ``u_1 = sqrt(o) c/sqrt(n) + sqrt(1-o) r`` (``r`` uniform
   on ``c^perp``) with the rectangular spiked-model overlap
   ``o = (1 - gamma/(theta-1)^2) / (1 + 1/(theta-1))`` and
   ``lambda_1 = n theta (1 + gamma/(theta-1))``; below it ``o = 0`` and
   ``lambda_1`` is the bulk edge. Hence
   ``E (u_1^T e)^2 = 4 n f [o f + (1-o)(1-f)/(n-1)]`` and, for ``d >> n``
   above threshold, the top share is ``f / (1 + v (1 - f))``
   (:func:`split_limit`): at most ``f``, so the label-noise difference lives
   in the bulk (the minor components), and the clean interpolator's own share
   on ``v_1`` tends to 1.

Run ``python derivations/label_noise.py`` to print the symbolic results and
measure the predictions against simulation (:func:`measure`, about a minute).
"""

import numpy as np
import sympy as sp

f, v, theta, m, n = sp.symbols("f v theta m n", positive=True)


def sherman_morrison_forms():
    """``(c^T K^-1 y, c^T K^-1 c, y^T K^-1 y)`` with ``Q(a,b) = m a.b`` (step 3)."""
    Qcc, Qcy, Qyy = m * n, m * n * (1 - 2 * f), m * n

    def kinv(Qab, Qac, Qcb):
        return Qab - theta * Qac * Qcb / (1 + theta * Qcc)

    return kinv(Qcy, Qcy, Qcc), kinv(Qcc, Qcc, Qcc), kinv(Qyy, Qcy, Qcy)


def angle_limit():
    """``cos angle`` in terms of ``f`` and ``v = theta n m`` (step 3)."""
    cy, cc, yy = sherman_morrison_forms()
    cos = sp.simplify(cy / sp.sqrt(cc * yy))
    return sp.simplify(cos.subs(theta, v / (n * m)))


def split_limit():
    """Top-direction share of ``||w_y - w_c||^2`` for ``d >> n`` above the spike
    threshold (``o -> 1``, ``lambda_1 -> p + theta n``, ``m -> 1/p``)."""
    p = sp.symbols("p", positive=True)
    top = 4 * n * f**2 / (p + theta * n)
    total = 4 * n * f / p * (1 - v * f / (1 + v))
    return sp.simplify((top / total).subs(theta, v * p / n))


def gram_identity_error(seeds=5):
    """Largest |angle(Gram form) - angle(direct interpolators)| in degrees."""
    from simlab.data import signal_noise
    from simlab.models import Linear, min_norm_interpolator
    from simlab.spectral import min_norm_angle, weight_angle

    worst = 0.0
    for s in range(seeds):
        data = signal_noise(40, 400, snr=0.05 * (s + 1), p_flip=0.2, seed=s)
        Z = Linear(400).inputs(data.X)
        direct = weight_angle(min_norm_interpolator(Z, data.y_clean),
                              min_norm_interpolator(Z, data.y))
        worst = max(worst, abs(min_norm_angle(Z, data.y_clean, data.y) - direct))
    return worst


def simulate(n, d, snr, p_flip, draws, seed=0):
    """Mean angle and top-direction share over ``draws`` seeded draws (exact Gram
    forms on ``simlab.data.signal_noise`` inputs); the share averages over
    draws with at least one flip. Returns ``(angle, angle_se, share)``."""
    from simlab.data import signal_noise
    from simlab.models import Linear
    from simlab.spectral import min_norm_angle, min_norm_split

    ang, share = [], []
    for r in range(draws):
        data = signal_noise(n, d, snr=snr, p_flip=p_flip, seed=1_000_003 * seed + r)
        Z = Linear(d).inputs(data.X)
        ang.append(min_norm_angle(Z, data.y_clean, data.y))
        if data.flipped.any():
            share.append(min_norm_split(Z, data.y_clean, data.y))
    ang = np.array(ang)
    return (float(ang.mean()), float(ang.std(ddof=1) / np.sqrt(draws)),
            float(np.mean(share)) if share else float("nan"))


GRID = dict(n=(50, 100), ratio=(10, 40), snr=(0.01, 0.03, 0.1, 0.3, 1.0),
            p_flip=(0.05, 0.1, 0.2, 0.3, 0.4))


def measure(draws=200, grid=GRID):
    """Worst |prediction - simulation| of the angle (degrees) and of the split."""
    from simlab.theory.rmt import label_noise_angle, label_noise_split

    rows = []
    for n_ in grid["n"]:
        for ratio in grid["ratio"]:
            d = ratio * n_
            for snr in grid["snr"]:
                for p in grid["p_flip"]:
                    a, se, sh = simulate(n_, d, snr, p, draws)
                    rows.append((n_, d, snr, p, a, label_noise_angle(n_, d, snr, p),
                                 se, sh, label_noise_split(n_, d, snr, p)))
    rows = np.array(rows)
    return rows, float(np.max(np.abs(rows[:, 4] - rows[:, 5]))), float(
        np.max(np.abs(rows[:, 7] - rows[:, 8]))), float(rows[:, 6].max())


if __name__ == "__main__":
    print("cos angle =", angle_limit())
    print("limits: v->0:", sp.limit(angle_limit(), v, 0), "; v->oo:",
          sp.limit(angle_limit(), v, sp.oo))
    print("top-direction share of ||w_y - w_c||^2 (d >> n, above threshold):",
          split_limit())
    print(f"Gram identity vs direct interpolators: {gram_identity_error():.2e} deg")
    rows, wa, ws, se = measure()
    print(f"worst |angle pred - sim| = {wa:.2f} deg (max sim SE {se:.2f}); "
          f"worst |split pred - sim| = {ws:.3f}")
    for r in rows:
        n_, d, snr, p, a, pa, se_, sh, ps = r
        print(f"n={n_:.0f} d={d:.0f} snr={snr:.2f} p={p:.2f} sim {a:.2f} pred {pa:.2f} "
              f"(se {se_:.2f})  split sim {sh:.3f} pred {ps:.3f}")
