"""Single-threaded BLAS for small dense linear algebra (exact theory, host-side
preparation of the Monte Carlo).

The operators of :mod:`simlab.stability` are small (``r^2 x r^2`` with
``r <= n``), where a threaded BLAS gains little and, right after a Numba
``prange`` region on a busy machine, loses badly: measured on 2 shared cores, a
400 x 400 ``eigvalsh`` took 3.3 s with OpenBLAS on 2 threads after a
``linearized`` call and 0.02 s on one thread (the Numba threading layer, omp or
workqueue, and ``OMP_WAIT_POLICY`` made no difference; ``OPENBLAS_NUM_THREADS=1``
did). :func:`serial_blas` limits BLAS to one thread for the duration of a call
through :mod:`threadpoolctl` (about 20 us per call); the controller is created
once, lazily.
"""

import functools
import os

__all__ = ["serial_blas", "blas_threads"]


@functools.cache
def _controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def serial_blas(fn):
    """Decorator: run ``fn`` with BLAS limited to one thread."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _controller().limit(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return wrapper


def blas_threads(dim):
    """Context: BLAS threads for an exact-operator problem of dimension ``dim``.

    ``config.BLAS_THREADS`` threads (``None``: every core) when ``dim >=
    config.BLAS_THREADS_MIN_DIM``, where the work is large BLAS-3 products
    (``trmm``, ``syrk``, ``eigh`` of ``dim x dim`` matrices) that split well;
    one thread below it, for the reason in the module docstring.
    """
    from . import config

    threads = 1
    if dim >= config.BLAS_THREADS_MIN_DIM:
        threads = config.BLAS_THREADS or os.cpu_count() or 1
    return _controller().limit(limits=int(threads), user_api="blas")
