"""Everything that steps a state forward in time (ARCHITECTURE.md).

* :mod:`simlab.dynamics.linearized` / :mod:`~simlab.dynamics.gpu_linearized`:
  Monte Carlo of the linearized SGD and unlearning dynamics of THEORY sections
  1-4 (public entry point: :mod:`simlab.simulate`), step bodies in
  :mod:`simlab.dynamics._step`;
* :mod:`simlab.dynamics.train` / :mod:`~simlab.dynamics.gpu_train`: (S)GD training
  of the two-patch models, step bodies in :mod:`simlab.dynamics._train_step`;
* :mod:`simlab.dynamics.unlearn`: descent-ascent unlearning of trained models;
* :mod:`simlab.dynamics.backends`: :func:`~simlab.dynamics.backends.get_kernel`,
  the one function that picks the CPU or CUDA driver.

Step bodies are compiled for each target by :func:`simlab._jit.compile_family`.
The package re-exports nothing, so that ``simlab.dynamics.linearized`` is the
module, not the function of that name. Importing it compiles nothing (Numba
compiles on the first call).
"""
