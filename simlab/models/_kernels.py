"""Numba kernels shared by the two-patch models and their training drivers.

One parametrisation covers both models of THEORY section 8. Weights are a
``(K, d)`` array of ``K = J * m`` filters (row ``j * m + r``), ``J`` output
classes with signs ``s_0 = +1``, ``s_1 = -1``, and

    f(W, x) = (1/m) sum_j s_j sum_r sum_{p in {0, 1}} act(<w_{j,r}, x_p>).

The CNN is ``J = 2`` with ``act = max(0, z)^q``; the linear model is ``J = 1``,
``m = 1``, ``act = identity`` (so ``f = <w, x_0 + x_1>``). Patches of ``n``
samples are stored as ``Xp`` of shape ``(2n, d)`` with row ``k = 2 i + p``;
pre-activations as ``Z`` of shape ``(K, 2n)`` with ``Z[row, k] = <w_row, x_k>``.

Training drivers (called by :mod:`simlab.dynamics.train` and
:mod:`simlab.dynamics.unlearn`) come in two exact forms of the same update:

* Gram form (``_gram_run``): every (S)GD step moves each filter inside the span
  of the training patches, so ``W_t = W_0 + C_t Xp`` and ``Z_t = Z_0 + C_t G``
  with ``G = Xp Xp^T``. A step touches only ``C`` and ``Z`` and costs
  ``O(K B n)``, independent of ``d``.
* Weight form (``_weight_run``): the plain update of ``W``, ``O(K B d)`` per
  step; preferable when ``n > d``.

No kernel calls BLAS: the products are small (``K, 2n << d``) and are written as
serial loops whose innermost index is contiguous, so they vectorise without
reassociation (``fastmath`` stays off) and never wait on a BLAS thread pool.

Both also accumulate ``C`` (for the signal/noise decomposition) and track
``||W_t - W_0||^2`` for escape detection.
"""

import math

import numpy as np

from .._jit import jit, pjit, prange

LOGISTIC = 0
SQUARED = 1
IDENTITY = 0
RELU = 1

#: ``|pre-activation|`` above which a run is declared divergent (far below
#: overflow, so every reported number stays finite).
FCAP = 1e100


# --------------------------------------------------------------------------
# scalar pieces
# --------------------------------------------------------------------------

@jit
def _act(z, act_id, q):
    if act_id == IDENTITY:
        return z
    if z <= 0.0:
        return 0.0
    if q == 1:
        return z
    return z**q


@jit
def _dact(z, act_id, q):
    if act_id == IDENTITY:
        return 1.0
    if z <= 0.0:
        return 0.0
    if q == 1:
        return 1.0
    return q * z ** (q - 1)


@jit
def _d2act(z, act_id, q):
    if act_id == IDENTITY or q == 1 or z <= 0.0:
        return 0.0
    if q == 2:
        return 2.0
    return q * (q - 1) * z ** (q - 2)


@jit
def _loss_terms(f, y, loss_id):
    """``(loss, d loss / d f, d^2 loss / d f^2)`` for one sample.

    Logistic ``log(1 + exp(-y f))`` in a branch-stable form; squared
    ``(f - y)^2 / 2``.
    """
    if loss_id == SQUARED:
        r = f - y
        return 0.5 * r * r, r, 1.0
    z = y * f
    if z >= 0.0:
        e = math.exp(-z)
        loss = math.log1p(e)
        s_neg = e / (1.0 + e)      # sigma(-z)
        s_pos = 1.0 / (1.0 + e)    # sigma(z)
    else:
        e = math.exp(z)
        loss = -z + math.log1p(e)
        s_neg = 1.0 / (1.0 + e)
        s_pos = e / (1.0 + e)
    return loss, -y * s_neg, s_pos * s_neg


@jit
def _f_sample(Z, i, J, m, act_id, q):
    """``f`` of sample ``i`` from its pre-activations ``Z[:, 2i:2i+2]``."""
    out = 0.0
    for j in range(J):
        acc = 0.0
        for r in range(m):
            row = j * m + r
            acc += _act(Z[row, 2 * i], act_id, q) + _act(Z[row, 2 * i + 1], act_id, q)
        out += acc if j == 0 else -acc
    return out / m


@jit
def _f_all(Z, J, m, act_id, q):
    n = Z.shape[1] // 2
    f = np.empty(n)
    for i in range(n):
        f[i] = _f_sample(Z, i, J, m, act_id, q)
    return f


@jit
def _losses(f, y, loss_id):
    """Per-sample losses."""
    out = np.empty(f.shape[0])
    for i in range(f.shape[0]):
        out[i] = _loss_terms(f[i], y[i], loss_id)[0]
    return out


# --------------------------------------------------------------------------
# small dense products without threaded BLAS
# --------------------------------------------------------------------------

#: Products ``A B^T`` with at most this many multiply-adds use :func:`_abt`;
#: larger ones go to BLAS. Threaded BLAS on products this small is dominated by
#: thread hand-off, and stalls badly when another process holds a core.
SMALL_PRODUCT = 10_000_000


@jit
def _abt(A, B):
    """``A @ B.T`` for a short ``A`` ``(na, d)`` and ``B`` ``(nb, d)``, serially.

    The inner loop runs over the ``na`` rows of ``A`` (contiguous in ``A^T``),
    so it vectorises without reassociating any sum.
    """
    na, d = A.shape
    nb = B.shape[0]
    At = np.ascontiguousarray(A.T)
    out = np.zeros((nb, na))
    for j in range(nb):
        o = out[j]
        b = B[j]
        for k in range(d):
            bk = b[k]
            a = At[k]
            for i in range(na):
                o[i] += bk * a[i]
    return np.ascontiguousarray(out.T)


@jit
def _ab(C, X):
    """``C @ X`` with rows of ``X`` contiguous (vectorised over columns)."""
    return _add_ab(np.zeros((C.shape[0], X.shape[1])), C, X)


@jit
def _add_ab(W0, C, X):
    """``W0 + C @ X`` with ``C`` ``(K, k)`` small, rows of ``X`` contiguous."""
    out = W0.copy()
    for i in range(C.shape[0]):
        o = out[i]
        for k in range(C.shape[1]):
            c = C[i, k]
            if c != 0.0:
                x = X[k]
                for j in range(X.shape[1]):
                    o[j] += c * x[j]
    return out


def abt(A, B):
    """``A @ B.T`` (float64, C-contiguous): serial Numba when small, else BLAS."""
    A = np.ascontiguousarray(A, dtype=np.float64)
    B = np.ascontiguousarray(B, dtype=np.float64)
    if A.shape[0] * B.shape[0] * A.shape[1] <= SMALL_PRODUCT:
        return _abt(A, B)
    return A @ B.T


def add_ab(W0, C, X):
    """``W0 + C @ X``: serial Numba when small, else BLAS."""
    if C.shape[0] * C.shape[1] * X.shape[1] <= SMALL_PRODUCT:
        return _add_ab(np.ascontiguousarray(W0, dtype=np.float64),
                       np.ascontiguousarray(C, dtype=np.float64),
                       np.ascontiguousarray(X, dtype=np.float64))
    return W0 + C @ X


# --------------------------------------------------------------------------
# model kernels at fixed weights (weight space)
# --------------------------------------------------------------------------

@jit
def _preacts(W, Xp):
    """``Z = W Xp^T``, shape ``(K, 2n)``."""
    return _abt(W, Xp)


@jit
def _forward(W, Xp, J, m, act_id, q):
    return _f_all(_preacts(W, Xp), J, m, act_id, q)


@jit
def _grad_coef(Z, i, J, m, act_id, q, scale, out, col):
    """Write ``scale * d f_i / d Z[row, 2i+p]`` into ``out[row, col + p]``."""
    for j in range(J):
        s = scale / m if j == 0 else -scale / m
        for r in range(m):
            row = j * m + r
            out[row, col] = s * _dact(Z[row, 2 * i], act_id, q)
            out[row, col + 1] = s * _dact(Z[row, 2 * i + 1], act_id, q)


@jit
def _per_sample_grads(W, Xp, J, m, act_id, q, scale):
    """``scale[i] * grad_W f_i`` for every sample, shape ``(n, K, d)``."""
    K, d = W.shape
    n = Xp.shape[0] // 2
    Z = _preacts(W, Xp)
    out = np.zeros((n, K, d))
    a = np.empty((K, 2))
    for i in range(n):
        _grad_coef(Z, i, J, m, act_id, q, scale[i], a, 0)
        x0 = Xp[2 * i]
        x1 = Xp[2 * i + 1]
        for row in range(K):
            a0 = a[row, 0]
            a1 = a[row, 1]
            if a0 != 0.0 or a1 != 0.0:
                for k in range(d):
                    out[i, row, k] = a0 * x0[k] + a1 * x1[k]
    return out


@jit
def _loss_grad(W, Xp, y, J, m, act_id, q, loss_id):
    """Mean loss and its gradient ``(K, d)``."""
    n = y.shape[0]
    Z = _preacts(W, Xp)
    D = np.empty((W.shape[0], 2 * n))
    total = 0.0
    for i in range(n):
        f = _f_sample(Z, i, J, m, act_id, q)
        loss, dl, _ = _loss_terms(f, y[i], loss_id)
        total += loss
        _grad_coef(Z, i, J, m, act_id, q, dl / n, D, 2 * i)
    return total / n, _ab(D, Xp)


@jit
def _hvp(W, Xp, y, V, J, m, act_id, q, loss_id):
    """Hessian of the mean loss times ``V`` (both ``(K, d)``), exact.

    ``H v = (1/n) sum_i [l''_i (g_i . v) g_i + l'_i (d^2 f_i) v]``; the second
    term is ``(s_j / m) sum_p act''(z) <x_p, v_jr> x_p`` per filter and vanishes
    for ReLU and the identity.
    """
    n = y.shape[0]
    K = W.shape[0]
    Z = _preacts(W, Xp)
    U = _abt(V, Xp)                          # <v_row, x_k>
    A = np.zeros((K, 2 * n))                 # output = A Xp
    g = np.empty((K, 2))
    for i in range(n):
        f = _f_sample(Z, i, J, m, act_id, q)
        _, dl, d2l = _loss_terms(f, y[i], loss_id)
        _grad_coef(Z, i, J, m, act_id, q, 1.0, g, 0)
        gv = 0.0
        for row in range(K):
            gv += g[row, 0] * U[row, 2 * i] + g[row, 1] * U[row, 2 * i + 1]
        c1 = d2l * gv / n
        for row in range(K):
            A[row, 2 * i] += c1 * g[row, 0]
            A[row, 2 * i + 1] += c1 * g[row, 1]
        if act_id != IDENTITY and q > 1:
            for j in range(J):
                s = dl / (n * m) if j == 0 else -dl / (n * m)
                for r in range(m):
                    row = j * m + r
                    for p in range(2):
                        k = 2 * i + p
                        A[row, k] += s * _d2act(Z[row, k], act_id, q) * U[row, k]
    return _ab(A, Xp)


# --------------------------------------------------------------------------
# training drivers
# --------------------------------------------------------------------------

@jit
def _batch_coef(Z, w, lr, y, J, m, act_id, q, loss_id, D, active):
    """Update coefficients of one step; return ``(n_active, ok)``.

    ``D[row, 2t + p] = lr * w_i * l'(f_i) * d f_i / d Z[row, 2i + p]`` for the
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
        f = _f_sample(Z, i, J, m, act_id, q)
        _, dl, _ = _loss_terms(f, y[i], loss_id)
        _grad_coef(Z, i, J, m, act_id, q, lr * w[i] * dl, D, 2 * na)
        active[na] = i
        na += 1
    return na, True


@jit
def _gram_run(Z, C, G, Z0, wts, nsteps, lr, y, J, m, act_id, q, loss_id, track,
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
    return _gram_steps(Z, C, G, Z0, wts, nsteps, lr, y, J, m, act_id, q, loss_id,
                       track, t0, stop_on_escape, D, active, u)


@jit
def _gram_steps(Z, C, G, Z0, wts, nsteps, lr, y, J, m, act_id, q, loss_id, track,
                t0, stop_on_escape, D, active, u):
    """Body of :func:`_gram_run` on caller-owned work arrays (no allocation).

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
        na, ok = _batch_coef(Z, w, lr, y, J, m, act_id, q, loss_id, D, active)
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
        _track_escape(track, t0 + t + 1)
        if stop_on_escape and track[3] >= 0:
            return t + 1
    return nsteps


@jit
def _track_escape(track, step):
    if track[1] <= 0.0:
        track[1] = track[0]
    if track[3] < 0 and track[1] > 0.0 and track[0] >= track[2] * track[1]:
        track[3] = step


#: The Gram-form step functions, in dependency order: each is a ``@jit``
#: dispatcher whose ``py_func`` is compiled again as a CUDA device function by
#: :mod:`simlab.dynamics.gpu_train` (one body, two backends).
GRAM_STEP_FUNCTIONS = ("_act", "_dact", "_loss_terms", "_f_sample", "_grad_coef",
                       "_batch_coef", "_track_escape", "_gram_steps")


@jit
def _weight_run(W, C, Xp, W0, wts, nsteps, lr, y, J, m, act_id, q, loss_id, track,
                t0, stop_on_escape):
    """Run ``nsteps`` (S)GD steps on the weights ``W (K, d)``; same contract as
    :func:`_gram_run` (``C`` is accumulated for the decomposition)."""
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
        Zb = _abt(W, Xb)
        # _batch_coef expects Z indexed by sample: use a compact weight vector
        wb = np.empty(na)
        yb = np.empty(na)
        for a in range(na):
            wb[a] = w[active[a]]
            yb[a] = y[active[a]]
        D = np.empty((K, 2 * na))
        idx = np.empty(na, dtype=np.int64)
        nb, ok = _batch_coef(Zb, wb, lr, yb, J, m, act_id, q, loss_id, D, idx)
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
        _track_escape(track, t0 + t + 1)
        if stop_on_escape and track[3] >= 0:
            return t + 1
    return nsteps


@pjit
def _gram_run_many(Z, C, G, Z0, wts, nsteps, lr, y, J, m, act_id, q, loss_id, track,
                   t0, stop_on_escape, live, done):
    """:func:`_gram_run` for a stack of configurations, ``prange`` over them.

    ``live[c]`` selects the configurations to advance; ``done[c]`` receives the
    number of steps completed.
    """
    for c in prange(Z.shape[0]):
        if live[c]:
            done[c] = _gram_run(Z[c], C[c], G[c], Z0[c], wts[c], nsteps, lr[c], y[c],
                                J, m, act_id, q, loss_id, track[c], t0,
                                stop_on_escape)


@pjit
def _weight_run_many(W, C, Xp, W0, wts, nsteps, lr, y, J, m, act_id, q, loss_id,
                     track, t0, stop_on_escape, live, done):
    """:func:`_weight_run` for a stack of configurations, ``prange`` over them."""
    for c in prange(W.shape[0]):
        if live[c]:
            done[c] = _weight_run(W[c], C[c], Xp[c], W0[c], wts[c], nsteps, lr[c],
                                  y[c], J, m, act_id, q, loss_id, track[c], t0,
                                  stop_on_escape)


@pjit
def _f_many(Z, J, m, act_id, q):
    """``f`` for a stack ``(n_cfg, K, 2n)`` of pre-activations."""
    out = np.empty((Z.shape[0], Z.shape[2] // 2))
    for c in prange(Z.shape[0]):
        out[c] = _f_all(Z[c], J, m, act_id, q)
    return out
