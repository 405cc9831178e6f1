"""The one place that chooses a backend.

Every driver that exists in several backends is registered here under one
*kind* name; callers (``simlab.simulate``, experiments, sweep cells, the CLI)
ask :func:`get_kernel` and never branch on the backend themselves. The variants
of a kind share a signature and a result type; the CUDA ones add
``device_id=0``. Importing this module compiles nothing and creates no CUDA
context (the ``gpu_*`` drivers build their kernels on first call).

Dask is not a kernel backend: a sweep on Dask submits batches of ``"cpu"`` work
(:mod:`simlab.sweep.run`).
"""

from .gpu_linearized import gpu_linearized, gpu_linearized_grid
from .gpu_train import gpu_train_many
from .linearized import linearized, linearized_grid
from .train import train_many

__all__ = ["BACKENDS", "KINDS", "get_kernel"]

#: Kernel backends, in the order the CLI lists them.
BACKENDS = ("cpu", "cuda")

#: kind -> {backend: driver}.
KINDS = {
    "linearized": {"cpu": linearized, "cuda": gpu_linearized},
    "linearized_grid": {"cpu": linearized_grid, "cuda": gpu_linearized_grid},
    "train_many": {"cpu": train_many, "cuda": gpu_train_many},
}


def get_kernel(kind, backend="cpu"):
    """The ``backend`` driver of ``kind``.

    Parameters
    ----------
    kind : {"linearized", "linearized_grid", "train_many"}
        What to run: the linearized Monte Carlo (one configuration or a grid) or
        batched training of the two-patch models.
    backend : {"cpu", "cuda"}

    Examples
    --------
    >>> get_kernel("linearized_grid", "cpu").__name__
    'linearized_grid'
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return KINDS[kind][backend]
