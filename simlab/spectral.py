"""Singular subspaces of trained weights under label noise (THEORY 10.3, claim 9).

Every public function runs with single-threaded BLAS (:mod:`simlab._blas`):
the matrices are small and often follow a Numba ``prange`` training call.

Clean- and noisy-label networks trained from the same initialisation ``W0`` on
the same inputs are compared through their updates ``Delta W = W - W0``,
reshaped ``(J m, d)`` (one row per filter, ``(2m, d)`` for the CNN):

- :func:`principal_angles`: angles between the top-``k`` *right* singular
  subspaces (in input space ``R^d``) of the two updates
  (``scipy.linalg.subspace_angles``); the left subspaces are trivial at
  ``k = 2m``;
- :func:`tail_energy`: the share of ``||Delta W_noisy - Delta W_clean||_F^2``
  outside the clean top-``k`` right subspace;
- :func:`wedin`: Wedin's ``sin Theta`` theorem for that pair;
- :func:`lip`: the LIP plug-in (Si et al., arXiv 2505.16159): keep the top-``k``
  singular components of ``Delta W`` and refit within their right subspace.

For a scalar-output model (the linear model ``f = <w, x^(1) + x^(2)>``) the
singular split of a ``1 x d`` weight is trivial; :func:`weight_angle` and
:func:`curvature_tail` measure instead the angle between the clean and noisy
weight vectors and the share of ``||w||^2`` outside the top-``k`` eigenvectors
of ``Z^T Z / n`` (:func:`simlab.curvature.eigenbasis`, the one curvature
eigenbasis; ``k = 1`` is the signal spike). :func:`min_norm_angle` and
:func:`min_norm_split` are the exact Gram-matrix forms for min-norm
interpolators (``derivations/label_noise.py``); their random-matrix limits are
:func:`simlab.theory.rmt.label_noise_angle` and
:func:`simlab.theory.rmt.label_noise_split`.
"""

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from ._blas import serial_blas
from ._validation import as_float_array, check_eta, check_int, check_labels
from .curvature import eigenbasis

__all__ = [
    "filter_update",
    "right_subspace",
    "principal_angles",
    "tail_energy",
    "WedinBound",
    "wedin",
    "weight_angle",
    "curvature_tail",
    "min_norm_angle",
    "min_norm_split",
    "lip",
]


def filter_update(W, W0):
    """``Delta W = W - W0`` reshaped ``(rows, d)``: one row per filter.

    ``W`` of shape ``(J, m, d)`` (the CNN: ``(2m, d)``) or ``(d,)`` (the linear
    model: ``(1, d)``); the last axis is the input dimension.
    """
    W = as_float_array(W, "W")
    W0 = as_float_array(W0, "W0")
    if W.shape != W0.shape:
        raise ValueError(f"W0 must have the shape of W {W.shape}, got {W0.shape}")
    if W.ndim == 0:
        raise ValueError("W must have at least one axis (the input dimension)")
    return (W - W0).reshape(-1, W.shape[-1])


def _check_k(k, dW, name="k"):
    return check_int(k, name, low=1, high=min(dW.shape))


def _svd(dW):
    return np.linalg.svd(dW, full_matrices=False)


@serial_blas
def right_subspace(dW, k):
    """Orthonormal basis ``(d, k)`` of the top-``k`` right singular subspace of
    ``dW`` (shape ``(rows, d)``), largest singular value first."""
    dW = as_float_array(dW, "dW", ndim=2)
    k = _check_k(k, dW)
    return _svd(dW)[2][:k].T


@serial_blas
def principal_angles(W_a, W_b, W0, k):
    """Principal angles (degrees, largest first) between the top-``k`` right
    singular subspaces of ``W_a - W0`` and ``W_b - W0``.

    Computed by ``scipy.linalg.subspace_angles``; the largest angle is the
    "top-subspace angle". ``k`` runs from 1 to ``min(rows, d)`` (``2m`` for the
    CNN). Subspaces are taken from full SVDs, so a singular-value tie at
    position ``k`` makes the result arbitrary within the tie.

    Examples
    --------
    >>> import numpy as np
    >>> W0 = np.zeros((2, 3))
    >>> principal_angles([[1.0, 0, 0], [0, 0.1, 0]], [[1.0, 1.0, 0], [0, 0, 0]],
    ...                  W0, 1).round(6).tolist()
    [45.0]
    """
    dA, dB = filter_update(W_a, W0), filter_update(W_b, W0)
    k = _check_k(k, dA)
    Va, Vb = right_subspace(dA, k), right_subspace(dB, k)
    return np.degrees(scipy.linalg.subspace_angles(Va, Vb))


@serial_blas
def tail_energy(W_clean, W_noisy, W0, k):
    """Share of ``||Delta W_noisy - Delta W_clean||_F^2`` outside the clean
    top-``k`` right singular subspace (``0`` when the two updates coincide).

    ``E = Delta W_noisy - Delta W_clean``; with ``V_k`` the clean top-``k`` right
    singular vectors the share is ``||E (I - V_k V_k^T)||_F^2 / ||E||_F^2``.
    """
    dC, dN = filter_update(W_clean, W0), filter_update(W_noisy, W0)
    k = _check_k(k, dC)
    E = dN - dC
    total = float(np.sum(E * E))
    if total == 0.0:
        return 0.0
    V = right_subspace(dC, k)
    inside = float(np.sum((E @ V) ** 2))
    return max(0.0, 1.0 - inside / total)


@dataclass(frozen=True)
class WedinBound:
    """Wedin's ``sin Theta`` theorem for one pair and one ``k`` (see :func:`wedin`).

    Attributes
    ----------
    sin_theta : float
        ``max(sin Theta_max(right), sin Phi_max(left))``, the measured largest
        principal-angle sines of the top-``k`` right and left subspaces.
    sin_theta_right : float
        The right (input-space) part alone.
    bound : float
        ``max(||E V~_k||_2, ||E^T U~_k||_2) / delta`` (``inf`` when
        ``delta <= 0``: the theorem says nothing).
    gap : float
        ``delta = sigma_k(Delta W_noisy) - sigma_{k+1}(Delta W_clean)``.
    """

    sin_theta: float
    sin_theta_right: float
    bound: float
    gap: float

    @property
    def holds(self):
        """``sin_theta <= bound`` up to rounding (``1e-9`` relative)."""
        return bool(self.sin_theta <= self.bound * (1 + 1e-9) + 1e-12)

    @property
    def non_vacuous(self):
        """The bound says something: ``bound < 1``."""
        return bool(self.bound < 1.0)

    @property
    def tightness(self):
        """``sin_theta / bound`` (``0`` when the bound is infinite)."""
        return float(self.sin_theta / self.bound) if np.isfinite(self.bound) else 0.0


@serial_blas
def wedin(W_clean, W_noisy, W0, k):
    """Wedin's ``sin Theta`` theorem (Wedin 1972; Stewart & Sun, Thm V.4.4).

    ``A = Delta W_clean``, ``A~ = Delta W_noisy = A + E``, SVDs
    ``A = U_1 S_1 V_1^T + U_2 S_2 V_2^T`` (``U_1, V_1``: top ``k``) and likewise
    for ``A~``. With residuals ``R = A V~_1 - U~_1 S~_1 = -E V~_1`` and
    ``S = A^T U~_1 - V~_1 S~_1 = -E^T U~_1`` and the gap between the *kept*
    singular values of ``A~`` and the *discarded* ones of ``A``,
    ``delta = sigma_k(A~) - sigma_{k+1}(A) > 0``:

    ``max(||sin Phi||_2, ||sin Theta||_2) <= max(||R||_2, ||S||_2) / delta``,

    ``Theta`` between ``V_1`` and ``V~_1`` (right), ``Phi`` between ``U_1`` and
    ``U~_1`` (left). ``sigma_{k+1}(A) = 0`` when ``k`` is the number of rows.

    Returns
    -------
    WedinBound
    """
    A, At = filter_update(W_clean, W0), filter_update(W_noisy, W0)
    k = _check_k(k, A)
    U, s, Vt = _svd(A)
    Ut, st, Vtt = _svd(At)
    E = At - A
    s_next = s[k] if k < s.size else 0.0
    gap = float(st[k - 1] - s_next)
    res = max(np.linalg.norm(E @ Vtt[:k].T, 2), np.linalg.norm(E.T @ Ut[:, :k], 2))
    bound = float(res / gap) if gap > 0 else float("inf")
    sin_r = float(np.sin(scipy.linalg.subspace_angles(Vt[:k].T, Vtt[:k].T)[0]))
    sin_l = float(np.sin(scipy.linalg.subspace_angles(U[:, :k], Ut[:, :k])[0]))
    return WedinBound(sin_theta=max(sin_r, sin_l), sin_theta_right=sin_r,
                      bound=bound, gap=gap)


# --------------------------------------------------------------------------
# scalar-output (linear) model
# --------------------------------------------------------------------------

def weight_angle(w_a, w_b):
    """Angle in degrees, in ``[0, 180]``, between two weight vectors.

    ``arccos(<w_a, w_b> / (||w_a|| ||w_b||))``; the sign matters here (a weight
    and its negative predict opposite labels), so this is not a subspace angle.
    """
    a = as_float_array(w_a, "w_a").ravel()
    b = as_float_array(w_b, "w_b").ravel()
    if a.shape != b.shape:
        raise ValueError(f"w_b must have the size of w_a ({a.size}), got {b.size}")
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0.0 or nb == 0.0:
        raise ValueError("w_a and w_b must be nonzero: the angle is undefined")
    return float(np.degrees(np.arccos(np.clip(a @ b / (na * nb), -1.0, 1.0))))


@serial_blas
def curvature_tail(w, Z, k):
    """Share of ``||w||^2`` outside the top-``k`` eigenvectors of ``Z^T Z / n``.

    ``Z`` holds the linear model's inputs (:meth:`simlab.models.Linear.inputs`),
    the rank-one factors of its squared-loss Hessians; the eigenvectors are
    :func:`simlab.curvature.eigenbasis`'s. ``k = 1`` is the signal spike (when
    it separates from the bulk).
    """
    w = as_float_array(w, "w", ndim=1)
    Z = as_float_array(Z, "Z", ndim=2)
    if Z.shape[1] != w.size:
        raise ValueError(f"Z must have {w.size} columns (the size of w), got "
                         f"{Z.shape[1]}")
    _, vecs = eigenbasis(Z)
    k = check_int(k, "k", low=1, high=vecs.shape[1])
    total = float(w @ w)
    if total == 0.0:
        return 0.0
    return max(0.0, 1.0 - float(np.sum((vecs[:, :k].T @ w) ** 2)) / total)


def _gram_parts(Z, y_a, y_b):
    """Validated ``(Z, K = Z Z^T, y_a, y_b)``; ``K`` must be invertible."""
    Z = as_float_array(Z, "Z", ndim=2)
    n, d = Z.shape
    y_a = check_labels(y_a, n, "y_a")
    y_b = check_labels(y_b, n, "y_b")
    if n > d:
        raise ValueError(f"Z has n={n} rows > d={d} columns: no exact interpolator")
    K = Z @ Z.T
    lam = np.linalg.eigvalsh(K)
    if lam[0] <= max(n, d) * np.finfo(float).eps * lam[-1]:
        raise ValueError("Z is rank deficient: the minimum-norm interpolator is "
                         "not defined")
    return Z, K, y_a, y_b


@serial_blas
def min_norm_angle(Z, y_a, y_b):
    """Angle (degrees) between the min-norm interpolators of ``(Z, y_a)`` and
    ``(Z, y_b)``, from the Gram matrix ``K = Z Z^T`` alone.

    ``<w_a, w_b> = y_a^T K^{-1} y_b`` (``w = Z^T K^{-1} y``), so
    ``cos = y_a^T K^{-1} y_b / sqrt(y_a^T K^{-1} y_a  y_b^T K^{-1} y_b)``
    (``derivations/label_noise.py``).
    """
    _, K, a, b = _gram_parts(Z, y_a, y_b)
    sa, sb = np.linalg.solve(K, np.column_stack([a, b])).T
    cos = (a @ sb) / np.sqrt((a @ sa) * (b @ sb))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


@serial_blas
def min_norm_split(Z, y_a, y_b, k=1):
    """Share of ``||w_b - w_a||^2`` along the top-``k`` curvature directions
    (``nan`` if ``y_a = y_b``); the rest lies in the bulk.

    ``w_a, w_b`` are the min-norm interpolators of ``(Z, y_a)``, ``(Z, y_b)``;
    the directions are the top eigenvectors of ``Z^T Z / n`` from
    :func:`simlab.curvature.eigenbasis`, i.e. ``1 - curvature_tail(w_b - w_a,
    Z, k)``. In Gram form (``derivations/label_noise.py``), with ``K u_j =
    lambda_j u_j`` (``K = Z Z^T``) and ``e = y_b - y_a``, the share is
    ``sum_{j <= k} (u_j^T e)^2 / lambda_j / e^T K^{-1} e``.
    """
    Z, K, a, b = _gram_parts(Z, y_a, y_b)
    e = b - a
    if not e.any():
        return float("nan")
    return 1.0 - curvature_tail(Z.T @ np.linalg.solve(K, e), Z, k)


# --------------------------------------------------------------------------
# LIP plug-in
# --------------------------------------------------------------------------

@serial_blas
def lip(model, W, data, k, *, loss="logistic", W0=None, eta=0.1, steps=100):
    """LIP plug-in (in the spirit of Si et al., arXiv 2505.16159).

    1. Keep: ``Delta W = W - W0`` (rows = filters) is truncated to its top-``k``
       singular components, ``W_k = W0 + U_k S_k V_k^T``.
    2. Refit: starting from ``W_k``, full-batch gradient descent on the
       training loss of ``data`` (its observed labels) with every step
       projected onto the top-``k`` right subspace,
       ``W <- W - eta * grad L(W) V_k V_k^T``. What is refit is therefore the
       ``(rows x k)`` coefficient matrix of the update inside ``span(V_k)``
       (both the kept singular values and how the filters mix the ``k``
       directions); ``W0`` and ``V_k`` stay fixed and the discarded components
       (the orthogonal complement of ``span(V_k)``) stay removed.

    With ``k`` small (``k <= 2m << n``) the refit has ``2m k`` free parameters and
    cannot re-memorize the flipped labels through their noise patches.
    ``steps = 0`` returns the plain truncation ``W_k``. The signature follows
    the memorization study's ``edit(model, W, data, *, keep, loss, W0)``
    (:func:`simlab.memorization.edit`), with the rank ``k`` in place of the
    curvature-mass fraction ``keep``.

    Parameters
    ----------
    model : CNN or Linear
    W : ndarray of ``model.shape``
        Trained weights.
    data : SignalNoise
        The training set (observed labels are used).
    k : int
        Number of kept components, ``1 <= k <= min(rows, d)``.
    loss : {"logistic", "squared"}
        Loss of the refit.
    W0 : ndarray of ``model.shape``, optional
        The initialisation that ``W`` was trained from; ``None`` truncates
        ``W`` itself (``W0 = 0``).
    eta : float
        Step size of the refit.
    steps : int
        Refit steps, ``>= 0``.

    Returns
    -------
    ndarray of ``model.shape``
    """
    Wk = model.kernel_weights(W)
    W0k = np.zeros_like(Wk) if W0 is None else model.kernel_weights(W0, "W0")
    dW = Wk - W0k
    k = _check_k(k, dW)
    eta = check_eta(eta)
    steps = check_int(steps, "steps", low=0)
    U, s, Vt = _svd(dW)
    V = Vt[:k].T
    Wn = W0k + (U[:, :k] * s[:k]) @ Vt[:k]
    shape = model.shape
    for _ in range(steps):
        _, g = model.loss_grad(Wn.reshape(shape), data.X, data.y, loss)
        Wn = Wn - eta * (g.reshape(Wn.shape) @ V) @ V.T
    return Wn.reshape(shape)
