"""The only place where Numba options are set.

``jit`` compiles a plain-Python function for the CPU with simlab's defaults
(``nopython``, ``cache`` unless ``SIMLAB_NUMBA_CACHE=0``, ``fastmath=False``);
``pjit`` does the same with ``parallel=True`` for drivers that use ``prange``.
"""

import numba

from . import config

prange = numba.prange


def _options(**extra):
    opts = {"cache": config.NUMBA_CACHE, "fastmath": False, "nogil": True}
    opts.update(extra)
    return opts


def jit(fn=None, **extra):
    """Compile ``fn`` for the CPU with simlab's Numba defaults."""
    if fn is None:
        return lambda f: numba.njit(**_options(**extra))(f)
    return numba.njit(**_options(**extra))(fn)


def pjit(fn):
    """Compile a ``prange`` driver for the CPU (``parallel=True``)."""
    return numba.njit(**_options(parallel=True))(fn)


def cuda_module():
    """``numba.cuda``, or a ``RuntimeError`` saying what is missing.

    Called lazily by the ``gpu_*`` backends, never at import.
    """
    try:
        from numba import cuda
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError("the CUDA backend needs numba-cuda: "
                           "pip install 'simlab[cuda]'") from exc
    if not cuda.is_available():
        raise RuntimeError("no CUDA device available (set NUMBA_ENABLE_CUDASIM=1 "
                           "to run the CUDA kernels on the simulator)")
    return cuda
