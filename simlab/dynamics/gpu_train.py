"""CUDA backend of :func:`simlab.dynamics.train.train_many`: one thread per config.

The step math is the Gram-form body of :mod:`simlab.dynamics._train_step`
(``gram_steps`` and the scalar bodies of :mod:`simlab.models.bodies` it calls),
compiled as CUDA device functions by :func:`simlab._jit.compile_family`, the
same path that compiles them for the CPU. Validation, initialisation, minibatch weights
(drawn on the host from the same seeds), records and result assembly are those
of :func:`~simlab.dynamics.train.train_many`; only the per-segment stack driver
``gram_run_many`` (``prange`` over configurations) is replaced by a kernel that
runs configuration ``c`` on thread ``c``. The results therefore agree with the
CPU backend (``method="gram"``) to the last bit on the CUDA simulator, and up to
floating-point contraction (FMA) on a real GPU.

Full-batch GD and minibatch SGD (all three schemes) are supported; only the
Gram form is implemented on the device (``method="weight"`` is refused).

Nothing is compiled and no CUDA context is created at import; the kernel is
built on the first call. Without ``numba-cuda`` or a GPU (and without
``NUMBA_ENABLE_CUDASIM=1``), :func:`gpu_train_many` raises a ``RuntimeError``.
"""

import functools
import math

import numpy as np

from .. import config
from .._jit import compile_family, cuda_kernel, cuda_module
from ..models import bodies as _body
from . import _train_step as TS
from .train import _train_many

__all__ = ["gpu_train_many"]


def _kernel_body(Z, C, G, Z0, wts, nsteps, eta, y, J, m, act_id, q, loss_id, track,
                 t0, stop_on_escape, live, done, D, active, u):
    """Kernel: thread ``c`` advances configuration ``c`` (the loop body of
    ``_train_step.gram_run_many``, with per-thread work arrays)."""
    c = cuda.grid(1)  # noqa: F821 - bound by cuda_kernel
    if c < Z.shape[0] and live[c]:
        done[c] = gram_steps(Z[c], C[c], G[c], Z0[c], wts[c], nsteps,  # noqa: F821
                             eta[c], y[c], J, m, act_id, q, loss_id, track[c], t0,
                             stop_on_escape, D[c], active[c], u[c])


@functools.cache
def _build():
    """Compile the device functions and the kernel (lazily, once)."""
    dev = compile_family(_body.family() + TS.bodies(TS.DEVICE_FUNCTIONS), "cuda")
    return cuda_module(), cuda_kernel(_kernel_body, dev)


def _launcher(device_id):
    """A drop-in for ``_train_step.gram_run_many`` that runs the CUDA kernel.

    One launcher serves one :func:`gpu_train_many` call: ``G``, ``Z0``, ``eta``
    and ``y`` (fixed during a run) are copied to the device once; ``Z``, ``C``,
    the segment's weights and the tracking arrays go in and out per segment
    (the host records metrics between segments).
    """
    cuda, kernel = _build()
    const = {}   # device copies of the arrays that stay fixed during a run

    def on_device(a):
        hit = const.get(id(a))
        if hit is None or hit[0] is not a:
            hit = const[id(a)] = (a, cuda.to_device(np.ascontiguousarray(a)))
        return hit[1]

    def launch(Z, C, G, Z0, wts, nsteps, eta, y, J, m, act_id, q, loss_id, track,
               t0, stop_on_escape, live, done):
        cuda.select_device(device_id)
        n_cfg, Kf, n2 = Z.shape
        dG, dZ0, deta, dy = (on_device(a) for a in (G, Z0, eta, y))
        dZ, dC, dw, dtrack, dlive, ddone = (
            cuda.to_device(np.ascontiguousarray(a))
            for a in (Z, C, wts, track, live, done))
        dD = cuda.device_array((n_cfg, Kf, n2))          # per-thread scratch
        dact = cuda.device_array((n_cfg, n2 // 2), dtype=np.int64)
        du = cuda.device_array((n_cfg, n2))
        tpb = config.THREADS_PER_BLOCK
        kernel[math.ceil(n_cfg / tpb), tpb](
            dZ, dC, dG, dZ0, dw, nsteps, deta, dy, J, m, act_id, q, loss_id, dtrack,
            t0, bool(stop_on_escape), dlive, ddone, dD, dact, du)
        for host, dev in ((Z, dZ), (C, dC), (track, dtrack), (done, ddone)):
            dev.copy_to_host(host)

    return launch


def gpu_train_many(model, datasets, *, eta, steps, tests=None, W0=None, sigma0=0.01,
                   batch=None, scheme="without", loss="logistic", seeds=0,
                   record_every=None, sharpness_every=None, method="auto",
                   device_id=0):
    """CUDA version of :func:`simlab.dynamics.train.train_many`.

    Same signature plus ``device_id``, same return type (a list of
    :class:`~simlab.dynamics.train.TrainResult`); one CUDA thread per
    configuration. GD and SGD (every ``scheme``) are supported.

    Parameters
    ----------
    method : {"auto", "gram"}
        The device always runs the Gram form (``"auto"`` means ``"gram"`` here,
        whatever ``n`` and ``d``); compare with ``train_many(...,
        method="gram")``. ``"weight"`` raises ``ValueError``.
    device_id : int
        CUDA device to run on.
    model, datasets, eta, steps, tests, W0, sigma0, batch, scheme, loss, seeds, \
record_every, sharpness_every
        As in :func:`~simlab.dynamics.train.train_many`.

    Raises
    ------
    RuntimeError
        Without numba-cuda or a CUDA device (or the simulator).

    See Also
    --------
    simlab.dynamics.train.train_many : the CPU backend.
    """
    if method not in ("auto", "gram"):
        raise ValueError("gpu_train_many runs the Gram form only: method must be "
                         f"'auto' or 'gram', got {method!r}")
    return _train_many(model, datasets, eta=eta, steps=steps, tests=tests, W0=W0,
                       sigma0=sigma0, batch=batch, scheme=scheme, loss=loss,
                       seeds=seeds, record_every=record_every,
                       sharpness_every=sharpness_every, method="gram",
                       driver=_launcher(device_id))
