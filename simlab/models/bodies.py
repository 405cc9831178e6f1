"""Plain-Python scalar bodies of the two-patch models (one source, two targets).

The activation, loss terms, per-sample output and its pre-activation gradient,
written as scalar loops: :mod:`simlab.models.kernels` compiles them for the CPU
(forward, gradients, HVPs) and :mod:`simlab.dynamics.gpu_train` compiles them,
together with the training step of :mod:`simlab.dynamics._train_step`, as CUDA
device functions, both through :func:`simlab._jit.compile_family`. No Numba
here: the functions also run uncompiled in Python.

Conventions (see :mod:`simlab.models.kernels`): ``Z`` is ``(K, 2n)`` with
``Z[row, 2i + p] = <w_row, x_{i,p}>``, ``row = j m + r``.
"""

import math

LOGISTIC = 0
SQUARED = 1
IDENTITY = 0
RELU = 1

#: The bodies, in dependency order.
FUNCTIONS = ("act", "dact", "d2act", "loss_terms", "f_sample", "grad_coef")


def family():
    """The bodies of :data:`FUNCTIONS` (plain functions)."""
    g = globals()
    return [g[name] for name in FUNCTIONS]


def act(z, act_id, q):
    if act_id == IDENTITY:
        return z
    if z <= 0.0:
        return 0.0
    if q == 1:
        return z
    return z**q


def dact(z, act_id, q):
    if act_id == IDENTITY:
        return 1.0
    if z <= 0.0:
        return 0.0
    if q == 1:
        return 1.0
    return q * z ** (q - 1)


def d2act(z, act_id, q):
    if act_id == IDENTITY or q == 1 or z <= 0.0:
        return 0.0
    if q == 2:
        return 2.0
    return q * (q - 1) * z ** (q - 2)


def loss_terms(f, y, loss_id):
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


def f_sample(Z, i, J, m, act_id, q):
    """``f`` of sample ``i`` from its pre-activations ``Z[:, 2i:2i+2]``."""
    out = 0.0
    for j in range(J):
        acc = 0.0
        for r in range(m):
            row = j * m + r
            acc += act(Z[row, 2 * i], act_id, q) + act(Z[row, 2 * i + 1], act_id, q)
        out += acc if j == 0 else -acc
    return out / m


def grad_coef(Z, i, J, m, act_id, q, scale, out, col):
    """Write ``scale * d f_i / d Z[row, 2i+p]`` into ``out[row, col + p]``."""
    for j in range(J):
        s = scale / m if j == 0 else -scale / m
        for r in range(m):
            row = j * m + r
            out[row, col] = s * dact(Z[row, 2 * i], act_id, q)
            out[row, col + 1] = s * dact(Z[row, 2 * i + 1], act_id, q)
