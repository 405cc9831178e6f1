"""Spec-driven parameter sweeps with a resumable Zarr store.

The only code that talks to Dask is :func:`run_sweep` (with a client passed in).
"""

from .cells import CELL_EXPERIMENTS, get_cell_experiment
from .run import open_store, run_sweep
from .spec import Spec, SpecError, load_spec, parse_spec

__all__ = ["CELL_EXPERIMENTS", "Spec", "SpecError", "get_cell_experiment",
           "load_spec", "open_store", "parse_spec", "run_sweep"]
