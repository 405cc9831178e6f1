"""Linear model on two-patch data: ``f(w, x) = <w, x_0 + x_1>`` (THEORY section 8).

With squared loss the per-sample Hessian is ``x x^T`` with ``x = x_0 + x_1``
(rank one); with logistic loss it is ``sigma(z) sigma(-z) x x^T``. Both are
exact because ``f`` is linear in ``w``.
"""

from .._validation import check_int
from . import kernels as K
from .two_patch import TwoPatchModel

__all__ = ["Linear"]


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
