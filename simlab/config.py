"""Package-wide defaults.

Values are read at call time, so tests and users can patch them
(``monkeypatch.setattr(simlab.config, "DENSE_MAX_DIM", 4)``). Call :func:`_reset`
to restore the defaults.
"""

import os

#: Restricted dimension ``r`` up to which the operator is built as a dense
#: ``r**2 x r**2`` matrix; above it, matrix-free Lanczos is used.
DENSE_MAX_DIM = 24

#: Relative eigenvalue cut-off (times the largest eigenvalue) that defines the
#: invariant subspace ``U = range(sum_i H_i)`` of THEORY section 4.
RANGE_RTOL = 1e-10

#: Relative tolerance of the symmetry and PSD checks on dense Hessians.
PSD_RTOL = 1e-8

#: Relative tolerance requested from ARPACK in the matrix-free eigensolvers.
ARPACK_TOL = 1e-12

#: Lanczos basis size for ARPACK. Small is faster here: the Perron root is
#: usually well separated and ARPACK's own work grows with ncv (measured:
#: ncv=8 is 4x faster than 24 at n=200, p=1e4).
ARPACK_NCV = 8

#: Relative tolerance used to decide that the mean curvature ``M`` is singular.
SINGULAR_RTOL = 1e-10

#: BLAS threads of the large BLAS-3 products of the exact operators
#: (``simlab.stability``: Gram matrix, ``eigh`` of ``M``, the ``trmm``/``syrk``
#: of each operator application) on problems of dimension ``r >=
#: BLAS_THREADS_MIN_DIM``; ``None``: every core. Everything else runs on one
#: thread (see ``simlab._blas``). Threaded BLAS loses badly when other busy
#: processes share the cores: set 1 there.
BLAS_THREADS = None
BLAS_THREADS_MIN_DIM = 512

#: CUDA launch configuration.
THREADS_PER_BLOCK = 128

#: ``SIMLAB_NUMBA_CACHE=0`` turns Numba's on-disk cache off.
NUMBA_CACHE = os.environ.get("SIMLAB_NUMBA_CACHE", "1") != "0"

_DEFAULTS = {
    k: v for k, v in dict(globals()).items() if k.isupper() and not k.startswith("_")
}


def _reset():
    """Restore every default defined above."""
    globals().update(_DEFAULTS)
