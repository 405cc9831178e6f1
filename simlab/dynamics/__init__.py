"""Everything that steps a state forward in time (ARCHITECTURE.md).

:mod:`simlab.dynamics.linearized` simulates the linearized SGD and unlearning
dynamics of THEORY sections 1-4 on the CPU; the step bodies shared with future
backends live in :mod:`simlab.dynamics._step`. Importing this package compiles
nothing (Numba compiles on the first call).
"""

from .linearized import LinearizedResult, linearized, linearized_grid

__all__ = ["LinearizedResult", "linearized", "linearized_grid"]
