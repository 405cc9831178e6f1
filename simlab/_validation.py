"""Checks at the public boundary.

Every public function validates its inputs here, so that bad input raises a
``ValueError`` that names the offending argument instead of producing a wrong
number deep inside a kernel.
"""

import numbers

import numpy as np

from . import config

SCHEMES = ("bernoulli", "with", "without")


def as_float_array(x, name, *, ndim=None):
    """Return ``x`` as a C-contiguous float64 array with only finite entries."""
    try:
        arr = np.ascontiguousarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a real numeric array ({exc})") from None
    if ndim is not None and arr.ndim not in np.atleast_1d(ndim):
        raise ValueError(f"{name} must have ndim in {ndim}, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def check_hessians(hessians, name="hessians"):
    """Validate a per-sample Hessian family.

    Parameters
    ----------
    hessians : array_like, shape (n, p, p) or (n, p)
        Dense PSD Hessians, or rank-one factors ``g_i`` with ``H_i = g_i g_i^T``.
    name : str
        Argument name used in error messages.

    Returns
    -------
    arr : ndarray of float64
    rank_one : bool
        True for the ``(n, p)`` factor representation.
    """
    arr = as_float_array(hessians, name, ndim=(2, 3))
    n = arr.shape[0]
    if n < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name} must hold at least one sample of dimension >= 1, "
                         f"got shape {arr.shape}")
    if arr.ndim == 2:
        return arr, True
    p = arr.shape[1]
    if arr.shape[2] != p:
        raise ValueError(f"{name} must have shape (n, p, p) for dense Hessians, "
                         f"got {arr.shape}")
    scale = max(np.abs(arr).max(), np.finfo(float).tiny)
    asym = np.abs(arr - arr.transpose(0, 2, 1)).max()
    if asym > config.PSD_RTOL * scale:
        raise ValueError(f"{name} must be symmetric (max |H - H^T| = {asym:.3g})")
    arr = 0.5 * (arr + arr.transpose(0, 2, 1))
    lam_min = np.linalg.eigvalsh(arr).min(axis=1)
    bad = np.flatnonzero(lam_min < -config.PSD_RTOL * scale)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{name} must be positive semi-definite: sample {i} has "
                         f"eigenvalue {lam_min[i]:.3g}")
    return arr, False


def check_pair(retain, forget):
    """Validate retain/forget families: same representation and dimension."""
    r, r1 = check_hessians(retain, "retain")
    if forget is None:
        return r, None, r1
    f, f1 = check_hessians(forget, "forget")
    if r1 != f1:
        raise ValueError("forget must use the same representation as retain "
                         "(both dense (n, p, p) or both rank-one (n, p))")
    if f.shape[1:] != r.shape[1:]:
        raise ValueError(f"forget has dimension {f.shape[1:]} but retain has "
                         f"{r.shape[1:]}")
    return r, f, r1


def check_linearized(retain, batch, scheme, forget, forget_batch, alpha):
    """Validate the arguments shared by the exact operator and the simulator.

    Returns ``(retain, forget, rank_one, batch, forget_batch, scheme, alpha)``;
    ``forget_batch`` defaults to ``batch`` and is ``None`` without a forget set.
    """
    retain, forget, rank_one = check_pair(retain, forget)
    scheme = check_scheme(scheme)
    alpha = check_alpha(alpha)
    batch = check_batch(batch, retain.shape[0], "batch")
    if forget is None:
        if alpha != 0.0:
            raise ValueError(f"alpha={alpha} > 0 needs a forget set (forget is None)")
        forget_batch = None
    else:
        forget_batch = check_batch(batch if forget_batch is None else forget_batch,
                                   forget.shape[0], "forget_batch")
    return retain, forget, rank_one, batch, forget_batch, scheme, alpha


def check_int(value, name, *, low=None, high=None):
    """Return ``value`` as int, checking ``low <= value <= high``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and float(value).is_integer():
            value = int(value)
        else:
            raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


def check_batch(batch, n, name="batch"):
    """Batch size in ``[1, n]``."""
    return check_int(batch, name, low=1, high=n)


def check_positive(value, name, *, allow_zero=False, allow_inf=False):
    """A real number ``> 0`` (or ``>= 0``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if np.isnan(value) or (np.isinf(value) and not allow_inf):
        raise ValueError(f"{name} must be finite, got {value}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def check_escape_factor(value, name="escape_factor"):
    """Escape factor ``K > 1`` (``inf`` allowed: never escape)."""
    K = check_positive(value, name, allow_inf=True)
    if not K > 1.0:
        raise ValueError(f"{name} must be > 1, got {K}")
    return K


def check_eta(eta, name="eta"):
    """Learning rate: finite and ``> 0``."""
    return check_positive(eta, name)


def check_alpha(alpha, name="alpha"):
    """Mixing weight in ``[0, 1]``."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise ValueError(f"{name} must be a real number in [0, 1], got {alpha!r}")
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {alpha}")
    return alpha


def check_scheme(scheme, name="scheme"):
    """One of ``"bernoulli"``, ``"with"``, ``"without"``."""
    if scheme not in SCHEMES:
        raise ValueError(f"{name} must be one of {SCHEMES}, got {scheme!r}")
    return scheme


def check_seed(seed, name="seed"):
    """A non-negative integer seed (explicit seeds only: ``None`` is refused)."""
    if seed is None:
        raise ValueError(f"{name} must be an explicit non-negative integer")
    return check_int(seed, name, low=0)


def check_perturbation_law(cov, samples, p, *, required=False):
    """Validate the law of ``delta_0`` given by its second moment.

    Parameters
    ----------
    cov : array_like, shape (p, p), or None
        ``perturbation_cov``: ``E[delta_0 delta_0^T]``, real, finite, symmetric
        PSD (to ``config.PSD_RTOL`` relative to its largest entry), not zero.
    samples : array_like, shape (k, p), or None
        ``perturbation_samples``: rows ``d_j`` with second moment
        ``(1/k) sum_j d_j d_j^T``; real, finite, not all zero.
    p : int
        Parameter dimension.
    required : bool
        Refuse ``cov = samples = None``.

    Returns
    -------
    kind : {"cov", "samples"} or None
    arr : ndarray or None
        ``cov`` symmetrized, or ``samples``, as float64.
    """
    if cov is not None and samples is not None:
        raise ValueError("give perturbation_cov or perturbation_samples, not both")
    if cov is None and samples is None:
        if required:
            raise ValueError("a perturbation law is needed: pass perturbation_cov "
                             "(p, p) or perturbation_samples (k, p)")
        return None, None
    name = "perturbation_cov" if cov is not None else "perturbation_samples"
    x = cov if cov is not None else samples
    if np.iscomplexobj(x):
        raise ValueError(f"{name} must be real, got a complex array")
    arr = as_float_array(x, name, ndim=2)
    if cov is not None:
        if arr.shape != (p, p):
            raise ValueError(f"{name} must have shape {(p, p)} (the parameter "
                             f"dimension of the Hessians), got {arr.shape}")
        scale = np.abs(arr).max()
        asym = np.abs(arr - arr.T).max()
        if asym > config.PSD_RTOL * scale:
            raise ValueError(f"{name} must be symmetric (max |S - S^T| = {asym:.3g})")
        arr = 0.5 * (arr + arr.T)
        lam_min = np.linalg.eigvalsh(arr)[0]
        if lam_min < -config.PSD_RTOL * scale:
            raise ValueError(f"{name} must be positive semi-definite: eigenvalue "
                             f"{lam_min:.3g}")
        if np.trace(arr) <= 0.0:
            raise ValueError(f"{name} is zero: E||delta_0||^2 must be > 0")
        return "cov", arr
    if arr.shape[0] < 1 or arr.shape[1] != p:
        raise ValueError(f"{name} must have shape (k, {p}) with k >= 1 (rows are "
                         f"perturbations in parameter space), got {arr.shape}")
    if not np.any(arr):
        raise ValueError(f"{name} is zero: E||delta_0||^2 must be > 0")
    return "samples", arr
