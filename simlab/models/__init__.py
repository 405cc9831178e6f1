"""Nonlinear models of THEORY section 8: forward pass, per-sample gradients,
rank-one curvature factors and Hessian-vector products (Numba kernels).

Importing this package compiles nothing; kernels compile on first use (and are
cached on disk).
"""

from .cnn import CNN, LOSSES, TwoPatchModel
from .linear import Linear

__all__ = ["CNN", "LOSSES", "Linear", "TwoPatchModel"]
