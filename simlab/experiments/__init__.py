"""The figure catalogue: one module per figure/claim.

Each experiment module defines

- ``NAME`` (the CLI name), ``CLAIM`` (THEORY section 9 claim it supports) and
  ``DESCRIPTION`` (what the figure shows);
- ``run(quick=False, seed=0) -> xarray.Dataset``: computes the data;
- ``plot(ds) -> matplotlib.figure.Figure``: draws it from the data alone.

Modules are imported lazily so that ``simlab list`` is instant.
"""

import importlib

#: CLI name -> module path.
REGISTRY = {
    "hessian-test": "simlab.experiments.hessian_test",
    "coherence-bound": "simlab.experiments.coherence_bound",
    "rmt-coherence": "simlab.experiments.rmt_coherence",
    "cnn-coherence": "simlab.experiments.cnn_coherence",
    "benign-overfitting": "simlab.experiments.benign_overfitting",
    "cnn-unlearning": "simlab.experiments.cnn_unlearning",
    "memorization-curvature": "simlab.experiments.memorization_curvature",
    "stable-minima": "simlab.experiments.stable_minima",
    "edge-of-stability": "simlab.experiments.edge_of_stability",
    "label-noise-subspace": "simlab.experiments.label_noise_subspace",
}


def get(name):
    """Import and return the experiment module registered as ``name``."""
    if name not in REGISTRY:
        raise ValueError(f"unknown experiment {name!r}; known: {sorted(REGISTRY)}")
    return importlib.import_module(REGISTRY[name])


def available():
    """Every registered name, after checking that each module imports.

    Raises
    ------
    ImportError
        Naming every figure whose module fails to import, with the reason; a
        broken figure is never skipped silently.
    """
    failed = {}
    for name in REGISTRY:
        try:
            get(name)
        except ImportError as exc:
            failed[name] = exc
    if failed:
        reasons = "; ".join(f"{name} ({exc})" for name, exc in failed.items())
        raise ImportError(f"figure modules failed to import: {reasons}") from next(
            iter(failed.values()))
    return list(REGISTRY)
