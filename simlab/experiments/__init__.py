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
}


def get(name):
    """Import and return the experiment module registered as ``name``."""
    if name not in REGISTRY:
        raise ValueError(f"unknown experiment {name!r}; known: {sorted(REGISTRY)}")
    return importlib.import_module(REGISTRY[name])


def available():
    """Names whose modules import (a module under construction is skipped)."""
    out = []
    for name in REGISTRY:
        try:
            get(name)
        except ImportError:
            continue
        out.append(name)
    return out
