"""Public entry point of the Monte-Carlo simulators.

``simlab.simulate.linearized`` runs the linearized SGD / unlearning dynamics of
THEORY sections 1-4 (implementation in :mod:`simlab.dynamics.linearized`);
``linearized_grid`` runs many configurations in one compiled call. The
``gpu_*`` variants run the same step bodies as CUDA kernels (one thread per
trajectory); importing them compiles nothing and needs no GPU.
"""

from .dynamics.gpu_linearized import gpu_linearized, gpu_linearized_grid
from .dynamics.linearized import LinearizedResult, linearized, linearized_grid

__all__ = ["LinearizedResult", "gpu_linearized", "gpu_linearized_grid",
           "grid_simulator", "linearized", "linearized_grid"]

#: Backend name -> grid simulator (same signature and results).
_GRID = {"cpu": linearized_grid, "cuda": gpu_linearized_grid}


def grid_simulator(backend="cpu"):
    """The grid simulator of ``backend`` (``"cpu"`` or ``"cuda"``).

    Experiments take the simulator as an argument instead of copying a kernel;
    this is the lookup they use.
    """
    if backend not in _GRID:
        raise ValueError(f"backend must be one of {sorted(_GRID)}, got {backend!r}")
    return _GRID[backend]
