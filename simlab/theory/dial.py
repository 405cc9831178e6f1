"""Closed-form stability of the coherence-dial family (THEORY section 7).

Derived in ``derivations/dial_thresholds.py``. Every ``H_i`` of the family is
``kappa e_k e_k^T`` with ``kappa = 2n/s`` on a coordinate axis, so for a
diagonal ``X`` every term of ``T(X)`` is diagonal and the axes decouple. With
the retain and forget lists both equal to the family (the source's Hessian
test), ``M = m H`` with ``m = 1 - 2 alpha``, and with ``a``, ``b`` the
effective sampling coefficients ``(1-alpha)^2 a_r + alpha^2 a_f`` (likewise
``b``) of :func:`simlab.stability.scheme_coefficients`:

- shared axis (``s`` samples, ``lambda = 2m``):
  ``rho_0 = (1 - 2 m eta)^2 + 4 eta^2 (a n^2 / s - b)``,
  crossing 1 at ``eta_0 = m / (m^2 + a n^2 / s - b)``;
- each private axis (``n - s`` of them, ``lambda = 2m/s``):
  ``rho_1 = (1 - 2 m eta / s)^2 + 4 eta^2 (a n^2 - b) / s^2``,
  crossing 1 at ``eta_1 = m s / (m^2 + a n^2 - b)``.

``T`` is a positive map, so its Perron eigenmatrix is PSD and is reached by
power iteration from ``I``, which stays diagonal: ``rho(T) = max(rho_0, rho_1)``
(``rho_1`` only when ``s < n``) and ``eta* = min(eta_0, eta_1)``, or 0 when
``m <= 0``.
"""


import numpy as np

from .._validation import (
    check_alpha,
    check_batch,
    check_eta,
    check_forget_batch,
    check_int,
    check_scheme,
    check_step,
)
from ..stability.operator import scheme_coefficients

__all__ = ["dial_critical_lr", "dial_spectral_radius", "dial_table"]


def _coefficients(n, s, batch, scheme, alpha, forget_batch):
    n = check_int(n, "n", low=1)
    s = check_int(s, "s", low=1, high=n)
    batch = check_batch(batch, n)
    forget_batch = check_forget_batch(forget_batch, batch, n, n)   # = batch here
    scheme = check_scheme(scheme)
    alpha = check_alpha(alpha)
    a_r, b_r = scheme_coefficients(n, batch, scheme)
    a_f, b_f = scheme_coefficients(n, forget_batch, scheme)
    a = (1 - alpha) ** 2 * a_r + alpha**2 * a_f
    b = (1 - alpha) ** 2 * b_r + alpha**2 * b_f
    return n, s, 1.0 - 2.0 * alpha, a, b


def dial_spectral_radius(n, s, eta, batch, *, scheme="without", alpha=0.0,
                         forget_batch=None):
    """Exact ``rho(T)`` for the coherence-dial family, in closed form.

    Parameters
    ----------
    n, s : int
        Family size and coherence dial (``simlab.curvature.coherence_dial``).
    eta : float
    batch : int
        Retain batch size.
    scheme : {"bernoulli", "with", "without"}
    alpha : float
        Mixing weight; retain and forget are both the whole family (the
        source's Hessian test), ``alpha = 0`` is SGD.
    forget_batch : int, optional
        Forget batch size (default ``batch``: the forget set is the whole
        family, sampled at the retain set's fraction).

    Returns
    -------
    float

    See Also
    --------
    simlab.stability.spectral_radius : the general operator this matches.

    Examples
    --------
    >>> round(dial_spectral_radius(10, 3, 0.5, 10, scheme="without"), 12)  # GD
    0.444444444444
    """
    eta = check_eta(eta)
    n, s, m, a, b = _coefficients(n, s, batch, scheme, alpha, forget_batch)
    check_step(eta, 2.0 * n / s)          # every sample's curvature is 2n/s
    return float(_rho(n, s, m, a, b, eta))


def _rho(n, s, m, a, b, eta):
    """``rho(T)`` from the coefficients (elementwise in ``a``, ``b``)."""
    rho = (1 - 2 * m * eta) ** 2 + 4 * eta**2 * (a * n**2 / s - b)
    if s < n:
        rho = np.maximum(rho, (1 - 2 * m * eta / s) ** 2
                         + 4 * eta**2 * (a * n**2 - b) / s**2)
    return rho


def _critical(n, s, m, a, b):
    """``min(eta_0, eta_1)`` from the coefficients (elementwise in ``a``, ``b``);
    ``0.0`` when ``m <= 0``."""
    if m <= 0:
        return 0.0
    eta_c = m / (m**2 + a * n**2 / s - b)
    if s < n:
        eta_c = np.minimum(eta_c, m * s / (m**2 + a * n**2 - b))
    return eta_c


def dial_critical_lr(n, s, batch, *, scheme="without", alpha=0.0,
                     forget_batch=None):
    """Exact critical learning rate of the coherence-dial family.

    Returns ``min(eta_0, eta_1)`` of the module docstring, ``0.0`` when
    ``alpha >= 1/2`` (the mean update is not restoring) and ``inf`` when
    nothing diverges.

    Examples
    --------
    >>> dial_critical_lr(10, 3, 1, scheme="bernoulli")   # Bernoulli SGD, B = 1
    0.25
    """
    n, s, m, a, b = _coefficients(n, s, batch, scheme, alpha, forget_batch)
    return float(_critical(n, s, m, a, b))


def dial_table(n, s, eta, batches, *, scheme="without", alpha=0.0):
    """:func:`dial_spectral_radius` and :func:`dial_critical_lr` of one ``s``
    over many batch sizes at once (forget batch = batch).

    The same expressions (one implementation) evaluated elementwise in
    float64, so every entry equals the scalar function's value bit for bit
    (tested); for heatmaps over the batch
    size, such as the Hessian-test figure, which needs the two numbers on
    thousands of cells.

    Parameters
    ----------
    n, s, eta, scheme, alpha
        As in :func:`dial_spectral_radius`.
    batches : sequence of int
        Batch sizes, each in ``[1, n]``.

    Returns
    -------
    rho, critical_lr : ndarray, shape (len(batches),)
        ``rho(T)`` at ``eta`` and the critical learning rate, per batch size.

    Examples
    --------
    >>> rho, eta_c = dial_table(10, 3, 0.5, [1, 10])
    >>> bool(eta_c[-1] == dial_critical_lr(10, 3, 10))
    True
    """
    eta = check_eta(eta)
    n = check_int(n, "n", low=1)
    s = check_int(s, "s", low=1, high=n)
    batch = np.array([check_batch(b, n) for b in batches], dtype=np.int64)
    scheme = check_scheme(scheme)
    alpha = check_alpha(alpha)
    a_r, b_r = scheme_coefficients(n, batch, scheme)
    a = (1 - alpha) ** 2 * a_r + alpha**2 * a_r
    b = (1 - alpha) ** 2 * b_r + alpha**2 * b_r
    m = 1.0 - 2.0 * alpha
    check_step(eta, 2.0 * n / s)
    rho, eta_c = _rho(n, s, m, a, b, eta), _critical(n, s, m, a, b)
    # n = 1 gives scalar coefficients: broadcast to one entry per batch.
    return (np.broadcast_to(rho, batch.shape).astype(float),
            np.broadcast_to(eta_c, batch.shape).astype(float))
