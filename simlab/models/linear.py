"""Linear model on two-patch data: ``f(w, x) = <w, x_0 + x_1>`` (THEORY section 8).

With squared loss the per-sample Hessian is ``x x^T`` with ``x = x_0 + x_1``
(rank one); with logistic loss it is ``sigma(z) sigma(-z) x x^T``. Both are
exact because ``f`` is linear in ``w``.
"""

import numpy as np

from .._validation import as_float_array, check_int, check_labels, check_patches
from . import kernels as K
from .two_patch import TwoPatchModel

__all__ = ["Linear", "min_norm_interpolator"]


class Linear(TwoPatchModel):
    """Linear model ``f(w, x) = <w, x_0 + x_1>`` with weights of shape ``(d,)``.

    Same methods as :class:`simlab.models.CNN` (it is the one-filter,
    one-class, identity-activation case of the same kernels).

    Parameters
    ----------
    d : int
        Patch dimension.

    Examples
    --------
    >>> import numpy as np
    >>> model = Linear(3)
    >>> X = np.array([[[1.0, 0, 0], [0, 1.0, 0]]])
    >>> model.forward(np.array([1.0, 2.0, 3.0]), X)
    array([3.])
    """

    J = 1
    m = 1
    q = 1
    act_id = K.IDENTITY

    def __init__(self, d):
        self.d = check_int(d, "d", low=1)

    @property
    def shape(self):
        """``(d,)``."""
        return (self.d,)

    def __repr__(self):
        return f"Linear(d={self.d})"

    def inputs(self, X):
        """The inputs the model sees, ``z_i = x_i^(1) + x_i^(2)``, shape ``(n, d)``.

        They are the per-sample gradients ``grad_w f(w, x_i)`` (for every ``w``)
        and the rank-one factors of the squared-loss per-sample Hessians.
        """
        X = check_patches(X, "X", d=self.d)
        return X[:, 0] + X[:, 1]


def min_norm_interpolator(Z, y):
    """The minimum-norm interpolator ``w = Z^T (Z Z^T)^{-1} y`` of ``Z w = y``.

    The limit of gradient descent on the squared loss from ``w = 0`` (THEORY 8),
    computed directly rather than by training: from a random initialization
    the null-space part of ``w`` never decays.

    Parameters
    ----------
    Z : array_like, shape (n, d)
        Inputs (:meth:`Linear.inputs`), with ``n <= d`` and full row rank.
    y : array_like, shape (n,)
        Targets (labels in ``{-1, +1}``).

    Returns
    -------
    w : ndarray, shape (d,)

    Raises
    ------
    ValueError
        If ``n > d`` or ``Z`` is rank deficient (no exact interpolator, or not a
        unique minimum-norm one through ``(Z Z^T)^{-1}``).

    Examples
    --------
    >>> w = min_norm_interpolator([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], [1.0, -1.0])
    >>> w.tolist()
    [1.0, -0.5, 0.0]
    """
    Z = as_float_array(Z, "Z", ndim=2)
    n, d = Z.shape
    y = check_labels(y, n, "y")
    if n > d:
        raise ValueError(f"Z has n={n} rows > d={d} columns: no exact interpolator")
    gram = Z @ Z.T
    s = np.linalg.svd(Z, compute_uv=False)
    if s[-1] <= max(n, d) * np.finfo(float).eps * s[0]:
        raise ValueError("Z is rank deficient: the minimum-norm interpolator through "
                         "(Z Z^T)^{-1} is not defined")
    return Z.T @ np.linalg.solve(gram, y)
