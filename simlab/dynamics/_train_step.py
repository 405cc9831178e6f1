"""Plain-Python step bodies of (S)GD training of the two-patch models.

One (S)GD step of the models of :mod:`simlab.models` in two exact forms:

* Gram form (:func:`gram_steps`): every step moves each filter inside the span
  of the training patches, so ``W_t = W_0 + C_t Xp`` and ``Z_t = Z_0 + C_t G``
  with ``G = Xp Xp^T``. A step touches only ``C`` and ``Z`` and costs
  ``O(K B n)``, independent of ``d``.
* Weight form (:func:`weight_run`): the plain update of ``W``, ``O(K B d)`` per
  step; preferable when ``n > d`` (CPU only).

Both accumulate ``C`` (for the signal/noise decomposition) and track
``||W_t - W_0||^2`` for escape detection. :func:`gram_record` runs the Gram form
and records, at given steps, what the history needs (``f``, ``C`` and
``||W - W_0||^2``, all from the Gram-form state), so that a run with many
records is still one call. The functions of
:data:`DEVICE_FUNCTIONS` allocate nothing and are compiled, with the scalar
bodies of :mod:`simlab.models.bodies`, both for the CPU
(:mod:`simlab.dynamics.train`) and as CUDA device functions
(:mod:`simlab.dynamics.gpu_train`) by :func:`simlab._jit.compile_family`;
:data:`CPU_FUNCTIONS` and :data:`DRIVERS` (``prange`` over configurations) are
CPU only. Run uncompiled, the bodies call the CPU-compiled scalar kernels.
"""

import numpy as np

from ..models.kernels import f_all, f_sample, grad_coef, loss_terms, serial_abt

__all__ = ["CPU_FUNCTIONS", "DEVICE_FUNCTIONS", "DRIVERS", "FCAP", "QUAD_BUFFER",
           "bodies"]

#: ``|pre-activation|`` above which a run is declared divergent (far below
#: overflow, so every reported number stays finite).
FCAP = 1e100

#: Loop of the drivers; the CPU compile binds it to ``prange``.
prange = range

#: Step bodies shared by the CPU and CUDA compilations, in dependency order.
DEVICE_FUNCTIONS = ("batch_coef", "track_escape", "gram_steps")
#: Elements that :func:`quad_records` sums per partial sum (NumPy's iterator
#: buffer size, see there).
QUAD_BUFFER = 8192

#: CPU-only bodies (they allocate their work arrays).
CPU_FUNCTIONS = ("gram_run", "weight_run", "quad_cuts", "quad_finite", "quad_lanes",
                 "quad_four", "quad_records", "gram_record")
#: CPU drivers, ``prange`` over a stack of configurations.
DRIVERS = ("gram_run_many", "gram_record_many", "weight_run_many", "f_many")


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


def quad_records(Cs, G, nrec, out):
    """``out[r] = sum_{i,k,l} Cs[r,i,k] G[k,l] Cs[r,i,l]`` for ``r < nrec``.

    ``||W_r - W_0||^2`` in Gram form, summed in exactly the order of
    ``np.einsum("ik,kl,il->", C, G, C)`` on C-contiguous ``C`` ``(K, 2n)`` and
    ``G`` (NumPy 2.x), which is what the history's ``dist`` has always used:
    terms ``(C[i,k] G[k,l]) C[i,l]`` in ``(i, k, l)`` order, added serially into
    partial sums that the NumPy iterator's buffering cuts (see
    :func:`quad_cuts`), the partial sums added in turn. The serial chain of one
    record cannot be reordered, so records are summed side by side: many of
    them as SIMD lanes (:func:`quad_lanes`), a few four at a time
    (:func:`quad_four`). Rows ``k`` whose coefficient is zero in every record
    summed together add exact zeros to a partial sum that is never ``-0.0``,
    and are skipped when everything is finite.
    """
    if nrec >= 8:
        quad_lanes(Cs, G, nrec, out)
    else:
        quad_four(Cs, G, nrec, out)


def quad_cuts(K, n2):
    """Where ``np.einsum("ik,kl,il->", C, G, C)`` cuts its serial partial sums.

    Returns ``(planes, rows, piece)``: a partial sum starts at every ``planes``
    ``(k, l)`` planes when ``planes > 0``, else at every ``rows`` rows ``k`` of a
    plane, and also every ``piece`` terms of a row. This is the choice of the
    NumPy 2.x iterator (``npyiter_find_buffering_setup``) for these strides and
    a :data:`QUAD_BUFFER`-element buffer: whole planes per buffer when that
    costs less than rows, rows when a plane does not fit, single rows (cut
    into buffer-sized pieces) when even three rows cost more than a buffer.
    """
    planes = 0
    rows = 1
    if 3 * n2 <= QUAD_BUFFER and not (n2 < 3 and K == 1):
        if n2 < 3 or (n2 * n2 <= QUAD_BUFFER and (K == 1 or 4 * n2 * n2
                                                  <= 3 * QUAD_BUFFER)):
            planes = max(1, QUAD_BUFFER // (n2 * n2))
        else:
            rows = min(n2, QUAD_BUFFER // n2)
    return planes, rows, min(n2, QUAD_BUFFER)


def quad_finite(Cs, G, nrec):
    """Whether the first ``nrec`` records of ``Cs`` and ``G`` are all finite."""
    for r in range(nrec):
        for i in range(Cs.shape[1]):
            for k in range(Cs.shape[2]):
                v = Cs[r, i, k]
                if not (v - v == 0.0):
                    return False
    for k in range(G.shape[0]):
        for col in range(G.shape[1]):
            v = G[k, col]
            if not (v - v == 0.0):
                return False
    return True


def quad_lanes(Cs, G, nrec, out):
    """:func:`quad_records` with the records as SIMD lanes (many records)."""
    K, n2 = Cs.shape[1], Cs.shape[2]
    planes, rows, piece = quad_cuts(K, n2)
    skip = quad_finite(Cs, G, nrec)
    T = np.empty((K, n2, nrec))          # records last: contiguous lanes
    for r in range(nrec):
        for i in range(K):
            for k in range(n2):
                T[i, k, r] = Cs[r, i, k]
    acc = np.zeros(nrec)
    o = np.zeros(nrec)
    for i in range(K):
        Ti = T[i]
        for k in range(n2):
            c = Ti[k]
            zero = skip
            if skip:
                for r in range(nrec):
                    if c[r] != 0.0:
                        zero = False
                        break
            Gk = G[k]
            for lo in range(0, n2, piece):
                if lo > 0 or ((k == 0 and i % planes == 0) if planes > 0
                              else (k % rows == 0)):
                    if i > 0 or k > 0 or lo > 0:
                        for r in range(nrec):
                            o[r] = acc[r] + o[r]
                    for r in range(nrec):
                        acc[r] = 0.0
                if zero:
                    continue
                hi = min(lo + piece, n2)
                col = lo
                while col + 4 <= hi:
                    g0 = Gk[col]
                    g1 = Gk[col + 1]
                    g2 = Gk[col + 2]
                    g3 = Gk[col + 3]
                    x0 = Ti[col]
                    x1 = Ti[col + 1]
                    x2 = Ti[col + 2]
                    x3 = Ti[col + 3]
                    for r in range(nrec):
                        cr = c[r]
                        a = acc[r]
                        a += cr * g0 * x0[r]
                        a += cr * g1 * x1[r]
                        a += cr * g2 * x2[r]
                        a += cr * g3 * x3[r]
                        acc[r] = a
                    col += 4
                while col < hi:
                    g0 = Gk[col]
                    x0 = Ti[col]
                    for r in range(nrec):
                        acc[r] += c[r] * g0 * x0[r]
                    col += 1
    for r in range(nrec):
        out[r] = acc[r] + o[r]


def quad_four(Cs, G, nrec, out):
    """:func:`quad_records` four records at a time (a few records)."""
    K, n2 = Cs.shape[1], Cs.shape[2]
    planes, rows, piece = quad_cuts(K, n2)
    skip = quad_finite(Cs, G, nrec)
    for r0 in range(0, nrec, 4):
        A0 = Cs[r0]
        A1 = Cs[min(r0 + 1, nrec - 1)]
        A2 = Cs[min(r0 + 2, nrec - 1)]
        A3 = Cs[min(r0 + 3, nrec - 1)]
        o0 = 0.0
        o1 = 0.0
        o2 = 0.0
        o3 = 0.0
        a0 = 0.0
        a1 = 0.0
        a2 = 0.0
        a3 = 0.0
        for i in range(K):
            R0 = A0[i]
            R1 = A1[i]
            R2 = A2[i]
            R3 = A3[i]
            for k in range(n2):
                Gk = G[k]
                c0 = R0[k]
                c1 = R1[k]
                c2 = R2[k]
                c3 = R3[k]
                zero = skip and c0 == 0.0 and c1 == 0.0 and c2 == 0.0 and c3 == 0.0
                for lo in range(0, n2, piece):
                    if lo > 0 or ((k == 0 and i % planes == 0) if planes > 0
                                  else (k % rows == 0)):
                        if i > 0 or k > 0 or lo > 0:
                            o0 = a0 + o0
                            o1 = a1 + o1
                            o2 = a2 + o2
                            o3 = a3 + o3
                        a0 = 0.0
                        a1 = 0.0
                        a2 = 0.0
                        a3 = 0.0
                    if zero:
                        continue
                    for col in range(lo, min(lo + piece, n2)):
                        g = Gk[col]
                        a0 += c0 * g * R0[col]
                        a1 += c1 * g * R1[col]
                        a2 += c2 * g * R2[col]
                        a3 += c3 * g * R3[col]
        out[r0] = a0 + o0
        if r0 + 1 < nrec:
            out[r0 + 1] = a1 + o1
        if r0 + 2 < nrec:
            out[r0 + 2] = a2 + o2
        if r0 + 3 < nrec:
            out[r0 + 3] = a3 + o3


def gram_record(Z, C, G, Z0, wts, nsteps, eta, y, J, m, act_id, q, loss_id, track,
                t0, rec_at, F, Cs, D2):
    """:func:`gram_run` (never stopping on escape) that also records on the way.

    After local step ``rec_at[r]`` (sorted, in ``[1, nsteps]``) it stores the
    training outputs ``F[r] = f`` ``(n,)``, the coefficients ``Cs[r] = C`` and
    ``D2[r] = ||W - W_0||^2`` (:func:`quad_records`). Returns the number of steps
    completed; the records made are those with ``rec_at[r] <= done``.
    """
    K, n2 = Z.shape
    n = n2 // 2
    D = np.empty((K, n2))
    active = np.empty(n, dtype=np.int64)
    u = np.empty(n2)
    S = wts.shape[0]
    t = 0
    nrec = 0
    for r in range(rec_at.shape[0]):
        s = rec_at[r]
        k = gram_steps(Z, C, G, Z0, wts[t:] if S > 1 else wts, s - t, eta, y, J, m,
                       act_id, q, loss_id, track, t0 + t, False, D, active, u)
        if k < s - t:
            t += k
            break
        t = s
        for i in range(n):
            F[r, i] = f_sample(Z, i, J, m, act_id, q)
        for row in range(K):
            for col in range(n2):
                Cs[r, row, col] = C[row, col]
        nrec += 1
    if nrec == rec_at.shape[0] and t < nsteps:
        t += gram_steps(Z, C, G, Z0, wts[t:] if S > 1 else wts, nsteps - t, eta, y,
                        J, m, act_id, q, loss_id, track, t0 + t, False, D, active, u)
    if nrec > 0:
        quad_records(Cs, G, nrec, D2)
    return t


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


def gram_record_many(Z, C, G, Z0, wts, nsteps, eta, y, J, m, act_id, q, loss_id,
                     track, t0, rec_at, F, Cs, D2, live, done):
    """:func:`gram_record` for a stack of configurations, ``prange`` over them
    (``F``, ``Cs``, ``D2`` carry a leading configuration axis)."""
    for c in prange(Z.shape[0]):
        if live[c]:
            done[c] = gram_record(Z[c], C[c], G[c], Z0[c], wts[c], nsteps, eta[c],
                                  y[c], J, m, act_id, q, loss_id, track[c], t0,
                                  rec_at, F[c], Cs[c], D2[c])


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
