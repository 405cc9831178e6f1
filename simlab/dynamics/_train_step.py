"""Plain-Python step bodies of (S)GD training of the two-patch models.

One (S)GD step of the models of :mod:`simlab.models` in two exact forms:

* Gram form (:func:`gram_steps`): every step moves each filter inside the span
  of the training patches, so ``W_t = W_0 + C_t Xp`` and ``Z_t = Z_0 + C_t G``
  with ``G = Xp Xp^T``. A step touches only ``C`` and ``Z`` and costs
  ``O(K B n)``, independent of ``d``.
* Weight form (:func:`weight_run`): the plain update of ``W``, ``O(K B d)`` per
  step; preferable when ``n > d`` (CPU only).

Both accumulate ``C`` (for the signal/noise decomposition) and track
``||W_t - W_0||^2`` for escape detection. The functions of
:data:`DEVICE_FUNCTIONS` allocate nothing and are compiled, with the scalar
bodies of :mod:`simlab.models.bodies`, both for the CPU
(:mod:`simlab.dynamics.train`) and as CUDA device functions
(:mod:`simlab.dynamics.gpu_train`) by :func:`simlab._jit.compile_family`;
:data:`CPU_FUNCTIONS` and :data:`DRIVERS` (``prange`` over configurations) are
CPU only. Run uncompiled, the bodies call the CPU-compiled scalar kernels.
"""

import numpy as np

from ..models.kernels import f_all, f_sample, grad_coef, loss_terms, serial_abt

__all__ = ["CPU_FUNCTIONS", "DEVICE_FUNCTIONS", "DRIVERS", "FCAP", "bodies"]

#: ``|pre-activation|`` above which a run is declared divergent (far below
#: overflow, so every reported number stays finite).
FCAP = 1e100

#: Loop of the drivers; the CPU compile binds it to ``prange``.
prange = range

#: Step bodies shared by the CPU and CUDA compilations, in dependency order.
DEVICE_FUNCTIONS = ("batch_coef", "track_escape", "gram_steps")
#: CPU-only bodies (they allocate their work arrays).
CPU_FUNCTIONS = ("gram_run", "weight_run")
#: CPU drivers, ``prange`` over a stack of configurations.
DRIVERS = ("gram_run_many", "weight_run_many", "f_many")


def bodies(names):
    """The plain functions called ``names``."""
    g = globals()
    return [g[name] for name in names]


def batch_coef(Z, w, eta, y, J, m, act_id, q, loss_id, D, active):
    """Update coefficients of one step; return ``(n_active, ok)``.

    ``D[row, 2t + p] = eta * w_i * l'(f_i) * d f_i / d Z[row, 2i + p]`` for the
    ``t``-th active sample ``i = active[t]`` (``w_i != 0``). ``ok`` is False when a
    pre-activation of an active sample is non-finite or above ``FCAP``.
    """
    na = 0
    for i in range(w.shape[0]):
        if w[i] == 0.0:
            continue
        for row in range(Z.shape[0]):
            a = abs(Z[row, 2 * i])
            b = abs(Z[row, 2 * i + 1])
            if not (a <= FCAP and b <= FCAP):   # comparisons with NaN are False
                return na, False
        f = f_sample(Z, i, J, m, act_id, q)
        _, dl, _ = loss_terms(f, y[i], loss_id)
        grad_coef(Z, i, J, m, act_id, q, eta * w[i] * dl, D, 2 * na)
        active[na] = i
        na += 1
    return na, True


def gram_run(Z, C, G, Z0, wts, nsteps, eta, y, J, m, act_id, q, loss_id, track,
              t0, stop_on_escape):
    """Run ``nsteps`` (S)GD steps in Gram form; return the number completed.

    Parameters
    ----------
    Z : (K, 2n) current pre-activations (updated in place).
    C : (K, 2n) patch coefficients of ``W - W_0`` (updated in place).
    G : (2n, 2n) patch Gram matrix.
    Z0 : (K, 2n) pre-activations at ``W_0`` (for ``||W - W_0||^2``).
    wts : (S, n) per-step sample weights (signed; ``S == 1`` reuses row 0).
    track : float64[4] ``[dist2, ref2, factor, escape_step]`` (in place): the
        first step's ``dist2`` becomes ``ref2``; ``escape_step`` (``-1`` until
        then) is the first global step ``t0 + t + 1`` with
        ``dist2 >= factor * ref2``.
    """
    K, n2 = Z.shape
    n = n2 // 2
    D = np.empty((K, n2))
    active = np.empty(n, dtype=np.int64)
    u = np.empty(n2)
    return gram_steps(Z, C, G, Z0, wts, nsteps, eta, y, J, m, act_id, q, loss_id,
                       track, t0, stop_on_escape, D, active, u)


def gram_steps(Z, C, G, Z0, wts, nsteps, eta, y, J, m, act_id, q, loss_id, track,
                t0, stop_on_escape, D, active, u):
    """Body of :func:`gram_run` on caller-owned work arrays (no allocation).

    ``D`` ``(K, 2n)``, ``active`` (int64, ``n``) and ``u`` (``2n``) are scratch.
    This is the per-configuration step body shared by the CPU drivers and the
    CUDA kernel of :mod:`simlab.dynamics.gpu_train` (which compiles the same
    Python functions, listed in :data:`GRAM_STEP_FUNCTIONS`, as device
    functions): plain scalar loops, no NumPy calls.
    """
    K, n2 = Z.shape
    S = wts.shape[0]
    for t in range(nsteps):
        w = wts[t] if S > 1 else wts[0]
        na, ok = batch_coef(Z, w, eta, y, J, m, act_id, q, loss_id, D, active)
        if not ok:
            return t
        cross = 0.0
        sq = 0.0
        for row in range(K):
            for col in range(n2):
                u[col] = 0.0
            for a in range(na):
                i = active[a]
                for p in range(2):
                    dv = D[row, 2 * a + p]
                    if dv != 0.0:
                        k = 2 * i + p
                        C[row, k] -= dv
                        cross -= dv * (Z[row, k] - Z0[row, k])
                        Gk = G[k]
                        for col in range(n2):
                            u[col] += dv * Gk[col]
            for a in range(na):
                i = active[a]
                sq += D[row, 2 * a] * u[2 * i] + D[row, 2 * a + 1] * u[2 * i + 1]
            for col in range(n2):
                Z[row, col] -= u[col]
        track[0] += 2.0 * cross + sq
        track_escape(track, t0 + t + 1)
        if stop_on_escape and track[3] >= 0:
            return t + 1
    return nsteps


def track_escape(track, step):
    if track[1] <= 0.0:
        track[1] = track[0]
    if track[3] < 0 and track[1] > 0.0 and track[0] >= track[2] * track[1]:
        track[3] = step


def weight_run(W, C, Xp, W0, wts, nsteps, eta, y, J, m, act_id, q, loss_id, track,
                t0, stop_on_escape):
    """Run ``nsteps`` (S)GD steps on the weights ``W (K, d)``; same contract as
    :func:`gram_run` (``C`` is accumulated for the decomposition)."""
    K, d = W.shape
    n = y.shape[0]
    active = np.empty(n, dtype=np.int64)
    S = wts.shape[0]
    for t in range(nsteps):
        w = wts[t] if S > 1 else wts[0]
        na = 0
        for i in range(n):
            if w[i] != 0.0:
                active[na] = i
                na += 1
        Xb = np.empty((2 * na, d))
        for a in range(na):
            Xb[2 * a] = Xp[2 * active[a]]
            Xb[2 * a + 1] = Xp[2 * active[a] + 1]
        Zb = serial_abt(W, Xb)
        # batch_coef expects Z indexed by sample: use a compact weight vector
        wb = np.empty(na)
        yb = np.empty(na)
        for a in range(na):
            wb[a] = w[active[a]]
            yb[a] = y[active[a]]
        D = np.empty((K, 2 * na))
        idx = np.empty(na, dtype=np.int64)
        nb, ok = batch_coef(Zb, wb, eta, yb, J, m, act_id, q, loss_id, D, idx)
        if not ok:
            return t
        for row in range(K):
            Wr = W[row]
            for a in range(2 * na):
                dv = D[row, a]
                if dv != 0.0:
                    x = Xb[a]
                    for k in range(d):
                        Wr[k] -= dv * x[k]
        for row in range(K):
            for a in range(na):
                C[row, 2 * active[a]] -= D[row, 2 * a]
                C[row, 2 * active[a] + 1] -= D[row, 2 * a + 1]
        dist2 = 0.0
        for row in range(K):
            for k in range(d):
                e = W[row, k] - W0[row, k]
                dist2 += e * e
        track[0] = dist2
        track_escape(track, t0 + t + 1)
        if stop_on_escape and track[3] >= 0:
            return t + 1
    return nsteps


def gram_run_many(Z, C, G, Z0, wts, nsteps, eta, y, J, m, act_id, q, loss_id, track,
                   t0, stop_on_escape, live, done):
    """:func:`gram_run` for a stack of configurations, ``prange`` over them.

    ``live[c]`` selects the configurations to advance; ``done[c]`` receives the
    number of steps completed.
    """
    for c in prange(Z.shape[0]):
        if live[c]:
            done[c] = gram_run(Z[c], C[c], G[c], Z0[c], wts[c], nsteps, eta[c], y[c],
                                J, m, act_id, q, loss_id, track[c], t0,
                                stop_on_escape)


def weight_run_many(W, C, Xp, W0, wts, nsteps, eta, y, J, m, act_id, q, loss_id,
                     track, t0, stop_on_escape, live, done):
    """:func:`weight_run` for a stack of configurations, ``prange`` over them."""
    for c in prange(W.shape[0]):
        if live[c]:
            done[c] = weight_run(W[c], C[c], Xp[c], W0[c], wts[c], nsteps, eta[c],
                                  y[c], J, m, act_id, q, loss_id, track[c], t0,
                                  stop_on_escape)


def f_many(Z, J, m, act_id, q):
    """``f`` for a stack ``(n_cfg, K, 2n)`` of pre-activations."""
    out = np.empty((Z.shape[0], Z.shape[2] // 2))
    for c in prange(Z.shape[0]):
        out[c] = f_all(Z[c], J, m, act_id, q)
    return out
