"""CUDA backend of the linearized Monte Carlo: one thread per trajectory.

The step math is :mod:`simlab.dynamics._step`, compiled as CUDA device
functions by :func:`simlab._jit.compile_family` (the CPU backend compiles the
same functions for the CPU). Host-side preparation, validation, seeds and result
assembly are those of :mod:`simlab.dynamics.linearized`, so with the same seeds
the two backends consume identical random streams; the results agree to the
last bits on the CUDA simulator and up to floating-point contraction (FMA) on a
real GPU.

Nothing is compiled and no CUDA context is created at import; the kernel is
built on the first call. Without ``numba-cuda`` or a GPU (and without
``NUMBA_ENABLE_CUDASIM=1``), the ``gpu_*`` functions raise a ``RuntimeError``.
"""

import functools
import math

from .. import config
from .._jit import compile_family, cuda_kernel, cuda_module
from . import _step
from .linearized import _grid

__all__ = ["gpu_linearized", "gpu_linearized_grid"]


def _kernel_body(G, Gc, H, cell_i, cell_f, pair_cell, steps, record_every, log_K,
                 stop_on_escape, states, perm_r, perm_f, idx, acc, delta, rec,
                 escape_step, steps_run, log_final):
    """Kernel: thread ``k`` runs pair ``k`` (``_step.simulate_pair``)."""
    k = cuda.grid(1)  # noqa: F821 - bound by _build
    if k < pair_cell.shape[0]:
        simulate_pair(k, G, Gc, H, cell_i, cell_f, pair_cell, steps,  # noqa: F821
                      record_every, log_K, stop_on_escape, states, perm_r, perm_f,
                      idx, acc, delta, rec, escape_step, steps_run, log_final)


@functools.cache
def _build():
    """Compile the device functions and the kernel (lazily, once)."""
    return cuda_module(), cuda_kernel(_kernel_body,
                                      compile_family(_step.family(), "cuda"))


def _launcher(device_id):
    cuda, kernel = _build()

    def launch(G, Gc, H, cell_i, cell_f, pair_cell, order, steps, every, log_K,
               stop_on_escape, states, perm_r, perm_f, idx, acc, delta, rec,
               escape_step, steps_run, log_final):
        del order  # one thread per pair: no load balancing needed
        cuda.select_device(device_id)
        outs = (states, delta, rec, escape_step, steps_run, log_final)
        d = {id(a): cuda.to_device(a) for a in
             (G, Gc, H, cell_i, cell_f, pair_cell, states, perm_r, perm_f, idx, acc,
              delta, rec, escape_step, steps_run, log_final)}
        n = pair_cell.shape[0]
        tpb = config.THREADS_PER_BLOCK
        kernel[math.ceil(n / tpb), tpb](
            d[id(G)], d[id(Gc)], d[id(H)], d[id(cell_i)], d[id(cell_f)],
            d[id(pair_cell)],
            steps, every, log_K, stop_on_escape, d[id(states)], d[id(perm_r)],
            d[id(perm_f)], d[id(idx)], d[id(acc)], d[id(delta)], d[id(rec)],
            d[id(escape_step)], d[id(steps_run)], d[id(log_final)])
        for a in outs:
            d[id(a)].copy_to_host(a)

    return launch


def gpu_linearized_grid(configs, *, steps=1000, trajectories=16, escape_factor=1e3,
                        seed=0, record_every=1, stop_on_escape=False, device_id=0):
    """CUDA version of :func:`simlab.dynamics.linearized.linearized_grid`.

    Same signature plus ``device_id``, same return type; one CUDA thread per
    (configuration, trajectory) pair.

    See Also
    --------
    simlab.dynamics.linearized.linearized_grid : the CPU backend.
    gpu_linearized : one configuration.
    """
    return _grid(configs, steps, trajectories, escape_factor, seed, record_every,
                 stop_on_escape, driver=_launcher(device_id))


def gpu_linearized(retain, eta, batch, *, scheme="without", forget=None,
                   forget_batch=None, alpha=0.0, steps=1000, trajectories=16,
                   escape_factor=1e3, seed=0, record_every=1, stop_on_escape=False,
                   device_id=0):
    """CUDA version of :func:`simlab.simulate.linearized` (same signature plus
    ``device_id``, same result)."""
    cfg = dict(retain=retain, eta=eta, batch=batch, scheme=scheme, forget=forget,
               forget_batch=forget_batch, alpha=alpha, seed=seed)
    return gpu_linearized_grid([cfg], steps=steps, trajectories=trajectories,
                               escape_factor=escape_factor, seed=seed,
                               record_every=record_every,
                               stop_on_escape=stop_on_escape,
                               device_id=device_id)[0]
