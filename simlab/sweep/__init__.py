"""Spec-driven parameter sweeps with a resumable, crash-safe Zarr store.

:func:`parse_spec`/:func:`load_spec` validate a TOML spec (every error names
the field and line), :func:`estimate` counts and times its cells without
running them, :func:`run_sweep` runs or resumes it into a store that one
writer at a time may hold (:class:`StoreLockedError` for a second one), and
:func:`simlab.sweep.plot.plot_store` draws it.
"""

from .cells import CELL_EXPERIMENTS, get_cell_experiment
from .run import (
    StoreError,
    StoreLockedError,
    SweepEstimate,
    check_batch_size,
    estimate,
    open_store,
    run_sweep,
)
from .spec import Spec, SpecError, load_spec, parse_spec
from .user import CellError, cell

__all__ = ["CELL_EXPERIMENTS", "CellError", "Spec", "SpecError", "StoreError",
           "StoreLockedError", "SweepEstimate", "cell", "check_batch_size", "estimate",
           "get_cell_experiment", "load_spec", "open_store", "parse_spec",
           "run_sweep"]
