"""Two-layer ReLU CNN on two-patch data (THEORY section 8).

``f(W, x) = F_{+1}(x) - F_{-1}(x)``, ``F_j(x) = (1/m) sum_r sum_p act(<w_{j,r}, x_p>)``
with ``act(z) = max(0, z)^q`` and the second layer fixed. Weights have shape
``(2, m, d)``: ``W[0]`` are the filters of class ``+1``, ``W[1]`` those of class
``-1``. Flattened parameter vectors use the C order of ``W``. The numerical work
is :class:`simlab.models.two_patch.TwoPatchModel`'s.
"""

from .._validation import check_int
from . import kernels as K
from .two_patch import TwoPatchModel

__all__ = ["CNN"]


class CNN(TwoPatchModel):
    """Two-layer CNN with fixed second layer (THEORY section 8).

    Parameters
    ----------
    d : int
        Patch dimension.
    m : int
        Filters per class.
    activation : {"relu"}
        ``max(0, z)^q``.
    q : int
        Power of the ReLU, ``>= 1``; ``q > 1`` is the polynomial ReLU of Cao et
        al. (2022).

    Examples
    --------
    >>> import numpy as np
    >>> from simlab.data import signal_noise
    >>> data = signal_noise(4, 8, snr=1.0, seed=0)
    >>> model = CNN(8, 3)
    >>> W = model.init(0.1, seed=0)
    >>> model.forward(W, data.X).shape, model.curvature_factors(W, data.X,
    ...                                                         data.y).shape
    ((4,), (4, 48))
    """

    J = 2

    def __init__(self, d, m, *, activation="relu", q=1):
        self.d = check_int(d, "d", low=1)
        self.m = check_int(m, "m", low=1)
        if activation != "relu":
            raise ValueError(f"activation must be 'relu', got {activation!r}")
        self.activation = activation
        self.q = check_int(q, "q", low=1)
        self.act_id = K.RELU

    @property
    def shape(self):
        """``(2, m, d)``."""
        return (2, self.m, self.d)

    def __repr__(self):
        return f"CNN(d={self.d}, m={self.m}, activation='relu', q={self.q})"
