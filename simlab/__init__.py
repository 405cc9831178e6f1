"""simlab: check the linear-stability theory of SGD and unlearning by simulation.

Importing simlab compiles nothing and imports neither dask nor CUDA.
"""

from . import coherence, curvature, data, models, predict, stability, theory
from ._version import __version__
from .coherence import block_coherence, coherence_matrix, coherence_measure
from .data import SignalNoise, select_forget, signal_noise, signal_noise_pair
from .dynamics.train import train, train_many
from .dynamics.unlearn import unlearn
from .models import CNN, Linear
from .predict import predict_stability, predict_unlearning
from .stability import critical_lr, escape_time, spectral_radius

__all__ = [
    "CNN",
    "Linear",
    "SignalNoise",
    "__version__",
    "block_coherence",
    "coherence",
    "coherence_matrix",
    "coherence_measure",
    "critical_lr",
    "curvature",
    "data",
    "escape_time",
    "models",
    "predict",
    "predict_stability",
    "predict_unlearning",
    "select_forget",
    "signal_noise",
    "signal_noise_pair",
    "spectral_radius",
    "stability",
    "theory",
    "train",
    "train_many",
    "unlearn",
]
