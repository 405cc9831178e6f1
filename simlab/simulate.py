"""Public entry point of the Monte-Carlo simulators.

``simlab.simulate.linearized`` runs the linearized SGD / unlearning dynamics of
THEORY sections 1-4 (implementation in :mod:`simlab.dynamics.linearized`);
``linearized_grid`` runs many configurations in one compiled call.
"""

from .dynamics.linearized import LinearizedResult, linearized, linearized_grid

__all__ = ["LinearizedResult", "linearized", "linearized_grid"]
