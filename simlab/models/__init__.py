"""Nonlinear models of THEORY section 8: forward pass, per-sample gradients,
rank-one curvature factors and Hessian-vector products (Numba kernels).

Importing this package compiles nothing; kernels compile on first use (and are
cached on disk).
"""

from .cnn import CNN
from .linear import Linear, min_norm_interpolator
from .two_patch import LOSSES, TwoPatchModel

__all__ = ["CNN", "LOSSES", "Linear", "TwoPatchModel", "min_norm_interpolator"]
