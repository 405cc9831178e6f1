"""Everything that steps a state forward in time (ARCHITECTURE.md).

:mod:`simlab.dynamics.linearized` simulates the linearized SGD and unlearning
dynamics of THEORY sections 1-4 on the CPU (public entry point:
:mod:`simlab.simulate`); the step bodies shared with future backends live in
:mod:`simlab.dynamics._step`. The package re-exports nothing, so that
``simlab.dynamics.linearized`` is the module, not the function of that name.
Importing it compiles nothing (Numba compiles on the first call).
"""
