"""simlab: check the linear-stability theory of SGD and unlearning by simulation.

Importing simlab compiles nothing and imports neither dask nor CUDA.
"""

from . import coherence, curvature, stability
from ._version import __version__
from .coherence import block_coherence, coherence_matrix, coherence_measure
from .stability import critical_lr, escape_time, spectral_radius

__all__ = [
    "__version__",
    "block_coherence",
    "coherence",
    "coherence_matrix",
    "coherence_measure",
    "critical_lr",
    "curvature",
    "escape_time",
    "spectral_radius",
    "stability",
]
