"""Numba kernels of the two-patch models: forward, gradients, HVPs (CPU).

One parametrisation covers both models of THEORY section 8. Weights are a
``(K, d)`` array of ``K = J * m`` filters (row ``j * m + r``), ``J`` output
classes with signs ``s_0 = +1``, ``s_1 = -1``, and

    f(W, x) = (1/m) sum_j s_j sum_r sum_{p in {0, 1}} act(<w_{j,r}, x_p>).

The CNN is ``J = 2`` with ``act = max(0, z)^q``; the linear model is ``J = 1``,
``m = 1``, ``act = identity`` (so ``f = <w, x_0 + x_1>``). Patches of ``n``
samples are stored as ``Xp`` of shape ``(2n, d)`` with row ``k = 2 i + p``;
pre-activations as ``Z`` of shape ``(K, 2n)`` with ``Z[row, k] = <w_row, x_k>``.

The scalar pieces (activation, loss terms, ``f_i`` and its gradient) are plain
bodies in :mod:`simlab.models.bodies`, compiled here for the CPU; the training
step bodies that use them live in :mod:`simlab.dynamics._train_step`.

No kernel calls BLAS: the products are small (``K, 2n << d``) and are written as
serial loops whose innermost index is contiguous, so they vectorise without
reassociation (``fastmath`` stays off) and never wait on a BLAS thread pool.

"""

import numpy as np

from .._jit import compile_family, jit
from . import bodies as _body
from .bodies import IDENTITY, LOGISTIC, RELU, SQUARED  # noqa: F401 - re-exported

# --------------------------------------------------------------------------
# scalar pieces: plain bodies in _body.py, compiled here for the CPU
# --------------------------------------------------------------------------

_cpu = compile_family(_body.family(), "cpu")
act = _cpu.act
dact = _cpu.dact
d2act = _cpu.d2act
loss_terms = _cpu.loss_terms
f_sample = _cpu.f_sample
grad_coef = _cpu.grad_coef


@jit
def f_all(Z, J, m, act_id, q):
    n = Z.shape[1] // 2
    f = np.empty(n)
    for i in range(n):
        f[i] = f_sample(Z, i, J, m, act_id, q)
    return f


@jit
def losses(f, y, loss_id):
    """Per-sample losses."""
    out = np.empty(f.shape[0])
    for i in range(f.shape[0]):
        out[i] = loss_terms(f[i], y[i], loss_id)[0]
    return out


# --------------------------------------------------------------------------
# small dense products without threaded BLAS
# --------------------------------------------------------------------------

#: Products ``A B^T`` with at most this many multiply-adds use :func:`_abt`;
#: larger ones go to BLAS. Threaded BLAS on products this small is dominated by
#: thread hand-off, and stalls badly when another process holds a core.
SMALL_PRODUCT = 10_000_000


@jit
def serial_abt(A, B):
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
        return serial_abt(A, B)
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
    return serial_abt(W, Xp)


@jit
def _forward(W, Xp, J, m, act_id, q):
    return f_all(_preacts(W, Xp), J, m, act_id, q)


@jit
def _per_sample_grads(W, Xp, J, m, act_id, q, scale):
    """``scale[i] * grad_W f_i`` for every sample, shape ``(n, K, d)``."""
    K, d = W.shape
    n = Xp.shape[0] // 2
    Z = _preacts(W, Xp)
    out = np.zeros((n, K, d))
    a = np.empty((K, 2))
    for i in range(n):
        grad_coef(Z, i, J, m, act_id, q, scale[i], a, 0)
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
        f = f_sample(Z, i, J, m, act_id, q)
        loss, dl, _ = loss_terms(f, y[i], loss_id)
        total += loss
        grad_coef(Z, i, J, m, act_id, q, dl / n, D, 2 * i)
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
    U = serial_abt(V, Xp)                          # <v_row, x_k>
    A = np.zeros((K, 2 * n))                 # output = A Xp
    g = np.empty((K, 2))
    for i in range(n):
        f = f_sample(Z, i, J, m, act_id, q)
        _, dl, d2l = loss_terms(f, y[i], loss_id)
        grad_coef(Z, i, J, m, act_id, q, 1.0, g, 0)
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
                        A[row, k] += s * d2act(Z[row, k], act_id, q) * U[row, k]
    return _ab(A, Xp)
