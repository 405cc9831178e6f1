"""Provenance attached to every output: parameters, seed, versions, git revision."""

import json
import platform
import subprocess
from pathlib import Path

from ._version import __version__


def git_revision():
    """Short git revision of the simlab checkout, or ``"unknown"``.

    Looks next to the package first (editable installs), then in the working
    directory (a regular install run from a clone).
    """
    for where in (Path(__file__).parent, Path.cwd()):
        try:
            out = subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=where,
                capture_output=True, text=True, timeout=5, check=True)
            return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
    return "unknown"


def provenance(params, seed):
    """Attributes dict for an xarray Dataset (netCDF-safe: strings and numbers)."""
    import numba
    import numpy

    return {
        "params": json.dumps(params, sort_keys=True, default=str),
        "seed": int(seed),
        "simlab_version": __version__,
        "git_revision": git_revision(),
        "numpy_version": numpy.__version__,
        "numba_version": numba.__version__,
        "python_version": platform.python_version(),
    }
