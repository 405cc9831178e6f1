"""Public entry point of the Monte-Carlo simulators.

``simlab.simulate.linearized`` runs the linearized SGD / unlearning dynamics of
THEORY sections 1-4 (implementation in :mod:`simlab.dynamics.linearized`);
``linearized_grid`` runs many configurations in one compiled call. The
``gpu_*`` variants run the same step bodies as CUDA kernels (one thread per
trajectory); importing them compiles nothing and needs no GPU.
:func:`get_kernel` picks a variant by backend name.
"""

from .dynamics.backends import BACKENDS, get_kernel
from .dynamics.gpu_linearized import gpu_linearized, gpu_linearized_grid
from .dynamics.linearized import LinearizedResult, linearized, linearized_grid

__all__ = ["BACKENDS", "LinearizedResult", "get_kernel", "gpu_linearized",
           "gpu_linearized_grid", "linearized", "linearized_grid"]
