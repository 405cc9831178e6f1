"""Checks at the public boundary.

Every public function validates its inputs here, so that bad input raises a
``ValueError`` that names the offending argument instead of producing a wrong
number deep inside a kernel.
"""

import numbers
import os

import numpy as np

from . import config

SCHEMES = ("bernoulli", "with", "without")

# --------------------------------------------------------------------------
# magnitude limits
# --------------------------------------------------------------------------
# float64 overflows beyond ~1.8e308, so any quantity that gets squared must
# stay well below 1e154. The limits below leave room for the sums and products
# around the squares; inputs outside them are refused with an error that names
# the argument, instead of ending in inf, NaN or a numpy/LAPACK exception.

#: Largest per-sample curvature ``lambda_max(H_i)`` accepted in a Hessian
#: family (the second-moment operator squares it).
CURVATURE_MAX = 1e100
#: Smallest non-zero per-sample curvature scale accepted: below it ``H_i`` (or
#: ``g_i g_i^T`` for rank-one factors) underflows towards zero.
CURVATURE_MIN = 1e-100
#: Largest dimensionless step size ``eta * lambda`` accepted (one step of the
#: linearized dynamics can grow ``|delta|`` by about this factor).
STEP_MAX = 1e50
#: Largest learning rate accepted (``eta**2`` must stay finite).
ETA_MAX = 1e150
#: Largest scale parameter (``||mu||``, ``sigma_p``, ``snr``) accepted.
SCALE_MAX = 1e50
#: Largest magnitude of a data entry (patches ``X``).
DATA_MAX = 1e60
_INT64_MAX = np.iinfo(np.int64).max


class SizeError(ValueError, MemoryError):
    """An argument asks for more memory than this machine has.

    Raised before allocating; a ``ValueError`` (bad argument) and a
    ``MemoryError`` at once, so either ``except`` clause catches it.
    """


def _memory_bytes():
    """Physical memory of this machine in bytes (1 TiB if unknown)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):   # pragma: no cover
        return 2**40


def _fmt_bytes(b):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if b < 1024 or unit == "PiB":
            return f"{b:.3g} {unit}"
        b /= 1024.0


def check_size(shape, what, *, itemsize=8):
    """Refuse an allocation of ``shape`` larger than the machine's memory.

    Parameters
    ----------
    shape : tuple of int
        Shape of the array about to be allocated (or an element count).
    what : str
        What asks for it, e.g. ``"coherence_dial(n=1000000, s=1)"``; named in
        the message.
    itemsize : int
        Bytes per element.

    Raises
    ------
    SizeError
        A ``ValueError`` and ``MemoryError`` naming ``what``, the shape and the
        size, raised before anything is allocated.
    """
    shape = tuple(int(k) for k in np.atleast_1d(shape))
    nbytes = float(itemsize)
    for k in shape:
        nbytes *= k
    limit = _memory_bytes()
    if nbytes > limit:
        raise SizeError(f"{what} needs an array of shape {shape} "
                        f"({_fmt_bytes(nbytes)}), more than this machine's memory "
                        f"({_fmt_bytes(limit)})")


def as_float_array(x, name, *, ndim=None):
    """Return ``x`` as a C-contiguous float64 array with only finite entries.

    Complex input is refused (never truncated to its real part).
    """
    if np.iscomplexobj(x):
        raise ValueError(f"{name} must be real, got a complex array")
    try:
        arr = np.ascontiguousarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a real numeric array ({exc})") from None
    if ndim is not None and arr.ndim not in np.atleast_1d(ndim):
        raise ValueError(f"{name} must have ndim in {ndim}, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def sample_curvature(hessians, rank_one):
    """Upper bound on ``lambda_max(H_i)`` for each sample of a validated family.

    ``|g_i|^2`` for rank-one factors and ``lambda_max(G_i G_i^T)`` for rank-k
    factors ``(n, k, p)`` (exact), the largest absolute row sum of
    ``H_i`` for dense Hessians (at most ``p`` times ``lambda_max``). Computed
    without overflow or underflow in the intermediate steps; the result itself
    is ``inf`` (``0``) where it is beyond the float64 range.

    Returns
    -------
    ndarray, shape (n,)
    """
    with np.errstate(over="ignore", under="ignore"):
        if not rank_one:
            return np.abs(hessians).sum(axis=2).max(axis=1)
        n = hessians.shape[0]
        a = np.abs(hessians).reshape(n, -1).max(axis=1)
        safe = np.where(a > 0, a, 1.0)
        if hessians.ndim == 2:
            u = hessians / safe[:, None]
            return a * a * np.einsum("ij,ij->i", u, u)
        u = hessians / safe[:, None, None]
        return a * a * np.linalg.eigvalsh(u @ u.transpose(0, 2, 1))[:, -1]


def _check_curvature(arr, rank_one, name):
    """Refuse families whose curvature scale over- or underflows float64."""
    with np.errstate(over="ignore", under="ignore", divide="ignore"):
        if rank_one:
            a = max(arr.max(), -arr.min())
            if a == 0.0:
                return
            u = arr.reshape(arr.shape[0], -1)
            if not 1e-100 < a < 1e100:      # squares of the entries may not fit
                u = u / a
            else:
                a = 1.0
            log_c = 2.0 * np.log10(a) + np.log10(np.einsum("ij,ij->i", u, u).max())
        else:
            c = sample_curvature(arr, False).max()
            if c == 0.0:
                return
            log_c = np.log10(c)
    if log_c > np.log10(CURVATURE_MAX):
        raise ValueError(
            f"{name} has a per-sample curvature of about 1e{log_c:.0f}, above "
            f"{CURVATURE_MAX:g}: squares of it overflow float64. Rescale {name} "
            f"(stability depends on eta * H only)")
    if log_c < np.log10(CURVATURE_MIN):
        raise ValueError(
            f"{name} has a largest per-sample curvature of about 1e{log_c:.0f}, "
            f"below {CURVATURE_MIN:g}: it underflows float64. Rescale {name} "
            f"(stability depends on eta * H only)")


def check_step(eta, curvature, name="eta"):
    """Refuse ``eta * curvature > STEP_MAX``.

    ``curvature`` bounds the curvature one step can apply (e.g. the largest
    ``lambda_max(H_i)``); beyond ``STEP_MAX`` one step grows ``|delta|`` by a
    factor whose square overflows float64.
    """
    with np.errstate(over="ignore"):
        step = float(eta) * float(curvature)
    if not step <= STEP_MAX:
        raise ValueError(
            f"{name}={eta:g} is too large for these Hessians: eta * lambda = "
            f"{step:.3g} exceeds {STEP_MAX:g}, so one step can grow |delta| "
            f"beyond what float64 can hold (the dynamics depends on eta * H "
            f"only: rescale)")


class Factors:
    """Per-sample curvature given by rank-k factors: ``H_i = sum_j g_ij g_ij^T``.

    The one way to pass rank-k factors: a plain 3-D array always means dense
    Hessians ``(n, p, p)`` and a plain 2-D array rank-one factors ``(n, p)``,
    so the rank-k form ``(n, k, p)`` is marked by this wrapper (never guessed
    from the shape). ``k`` is the number of outputs of the model for a
    Gauss-Newton Hessian ``H_i = J_i^T J_i`` (``J_i`` the ``k x p`` output
    Jacobian of sample ``i``, weighted by the loss curvature).

    Every operator, coherence and bound function of the package accepts it
    where it accepts a family; the Gram reduction then works in ``n k``
    coordinates (the outputs of one sample are never split into separate
    rank-one samples, which would drop the cross terms of ``H_i X H_i``).

    Parameters
    ----------
    G : array_like, shape (n, k, p) or (n, p)
        Factors ``g_ij`` (row ``j`` of ``G[i]``); ``(n, p)`` is ``k = 1``.
        Validated where the family is used (finite, real, non-empty).

    Examples
    --------
    >>> import numpy as np
    >>> from simlab.curvature import Factors, to_dense
    >>> G = np.array([[[1.0, 0.0], [0.0, 2.0]]])        # n=1, k=2, p=2
    >>> to_dense(Factors(G))[0]
    array([[1., 0.],
           [0., 4.]])
    """

    __slots__ = ("G",)

    def __init__(self, G):
        if isinstance(G, Factors):
            G = G.G
        self.G = G

    @property
    def shape(self):
        """``(n, k, p)`` (``k = 1`` for a 2-D array)."""
        shape = np.shape(self.G)
        return (shape[0], 1, shape[1]) if len(shape) == 2 else tuple(shape)

    def __repr__(self):
        return f"Factors(shape={self.shape})"


Factors.__module__ = "simlab.curvature"


def _check_factors(G, name):
    """Validate rank-k factors: finite float64 ``(n, k, p)``."""
    arr = as_float_array(G, f"{name} (Factors)", ndim=(2, 3))
    if arr.ndim == 2:
        arr = arr[:, None, :]
    if min(arr.shape) < 1:
        raise ValueError(f"{name} (Factors) must have shape (n, k, p) with n, k, "
                         f"p >= 1, got {arr.shape}")
    _check_curvature(arr, True, name)
    return np.ascontiguousarray(arr)


def check_hessians(hessians, name="hessians", *, rank_k=False):
    """Validate a per-sample Hessian family.

    Parameters
    ----------
    hessians : array_like, shape (n, p, p) or (n, p), or Factors
        Dense PSD Hessians, rank-one factors ``g_i`` with ``H_i = g_i g_i^T``,
        or :class:`Factors` ``(n, k, p)`` with ``H_i = sum_j g_ij g_ij^T``.
    name : str
        Argument name used in error messages.
    rank_k : bool
        Whether the caller handles rank-k factor arrays ``(n, k, p)``. If not,
        :class:`Factors` with ``k > 1`` are expanded to dense ``(n, p, p)``
        (refused with :class:`SizeError` when that does not fit in memory).

    Returns
    -------
    arr : ndarray of float64
        ``(n, p)`` rank-one factors (also for ``Factors`` with ``k = 1``),
        ``(n, k, p)`` rank-k factors (only with ``rank_k=True``) or dense
        ``(n, p, p)``.
    rank_one : bool
        True for the factor representations (2-D or, with ``rank_k``, 3-D):
        a validated 3-D array is rank-k factors iff this is True.
    """
    if isinstance(hessians, Factors):
        G = _check_factors(hessians.G, name)
        n, k, p = G.shape
        if k == 1:
            return np.ascontiguousarray(G[:, 0, :]), True
        if rank_k:
            return G, True
        check_size((n, p, p), f"{name}: dense form of {n} rank-{k} factors of "
                              f"dimension p={p}")
        return np.einsum("iaj,iak->ijk", G, G), False
    arr = as_float_array(hessians, name, ndim=(2, 3))
    n = arr.shape[0]
    if n < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name} must hold at least one sample of dimension >= 1, "
                         f"got shape {arr.shape}")
    if arr.ndim == 2:
        _check_curvature(arr, True, name)
        return arr, True
    p = arr.shape[1]
    if arr.shape[2] != p:
        raise ValueError(f"{name} must have shape (n, p, p) for dense Hessians, "
                         f"got {arr.shape} (rank-k factors (n, k, p) are passed "
                         f"as simlab.curvature.Factors(G))")
    _check_curvature(arr, False, name)
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


def _as_rank_k(H, k):
    """Factors ``(n, p)`` or ``(n, k', p)`` as ``(n, k, p)``, zero-padded (a zero
    factor adds nothing to ``H_i``)."""
    if H.ndim == 2:
        H = H[:, None, :]
    if H.shape[1] == k:
        return H
    out = np.zeros((H.shape[0], k, H.shape[2]))
    out[:, :H.shape[1]] = H
    return out


def check_pair(retain, forget, *, rank_k=False):
    """Validate retain/forget families: same representation and dimension.

    With ``rank_k``, rank-one and rank-k factors mix: both are returned as
    ``(n, k, p)`` with the larger ``k`` (zero-padded).
    """
    r, r1 = check_hessians(retain, "retain", rank_k=rank_k)
    if forget is None:
        return r, None, r1
    f, f1 = check_hessians(forget, "forget", rank_k=rank_k)
    if r1 != f1:
        raise ValueError("forget must use the same representation as retain "
                         "(both dense (n, p, p) or both factors: rank-one (n, p) "
                         "or simlab.curvature.Factors (n, k, p))")
    if f.shape[-1] != r.shape[-1]:
        raise ValueError(f"forget has dimension p={f.shape[-1]} but retain has "
                         f"p={r.shape[-1]}")
    if r1 and (r.ndim == 3 or f.ndim == 3):
        k = max(r.shape[1] if r.ndim == 3 else 1, f.shape[1] if f.ndim == 3 else 1)
        r, f = _as_rank_k(r, k), _as_rank_k(f, k)
    return r, f, r1


def check_linearized(retain, batch, scheme, forget, forget_batch, alpha, *,
                     rank_k=False):
    """Validate the arguments shared by the exact operator and the simulator.

    Returns ``(retain, forget, rank_one, batch, forget_batch, scheme, alpha)``;
    ``forget_batch`` defaults as in :func:`check_forget_batch` and is ``None``
    without a forget set. ``rank_k`` as in :func:`check_pair`.
    """
    retain, forget, rank_one = check_pair(retain, forget, rank_k=rank_k)
    batch, forget_batch, scheme, alpha = check_run_config(
        retain.shape[0], None if forget is None else forget.shape[0], batch, scheme,
        forget_batch, alpha)
    return retain, forget, rank_one, batch, forget_batch, scheme, alpha


def check_run_config(n_retain, n_forget, batch, scheme, forget_batch, alpha):
    """Validate ``(batch, forget_batch, scheme, alpha)`` for set sizes ``n_retain``
    and ``n_forget`` (``None``: no forget set); returns them in that order, with
    ``forget_batch`` defaulted (:func:`check_forget_batch`) or ``None``."""
    scheme = check_scheme(scheme)
    alpha = check_alpha(alpha)
    batch = check_batch(batch, n_retain, "batch")
    if n_forget is None:
        if alpha != 0.0:
            raise ValueError(f"alpha={alpha} > 0 needs a forget set (forget is None)")
        if forget_batch is not None:    # unused, but never garbage
            check_int(forget_batch, "forget_batch", low=1)
        return batch, None, scheme, alpha
    return (batch, check_forget_batch(forget_batch, batch, n_retain, n_forget),
            scheme, alpha)


def _is_bool(value):
    return isinstance(value, bool | np.bool_)


def _int(value, name):
    """``value`` as a Python int: integers and integral reals, never bools."""
    if _is_bool(value):
        raise ValueError(f"{name} must be an integer, got the bool {value!r}")
    if not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and float(value).is_integer():
            return int(value)
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


def check_int(value, name, *, low=None, high=None):
    """Return ``value`` as int, checking ``low <= value <= high``.

    Bools (``True``, ``np.True_``) are refused, not read as 1; values outside
    the int64 range are refused (the compiled kernels count in int64).
    """
    value = _int(value, name)
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    if abs(value) > _INT64_MAX:
        raise ValueError(f"{name} must fit in a 64-bit integer, got {value}")
    return value


def check_batch(batch, n, name="batch"):
    """Batch size in ``[1, n]``."""
    return check_int(batch, name, low=1, high=n)


def check_forget_batch(forget_batch, batch, n_retain, n_forget):
    """Forget batch size in ``[1, n_forget]``; ``None`` gives the default.

    The one default rule of the package: the forget set is sampled at the same
    fraction as the retain set, ``B_f = max(1, min(n_f, round(B n_f / n_r)))``
    (the whole forget set when the retain batch is the whole retain set, and
    ``B`` when ``n_f = n_r``).
    """
    if forget_batch is None:
        forget_batch = max(1, min(n_forget, round(batch * n_forget / n_retain)))
    return check_batch(forget_batch, n_forget, "forget_batch")


def check_real(value, name):
    """A real scalar (not a bool, not complex) as float; NaN and inf pass."""
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    return float(value)


def check_positive(value, name, *, allow_zero=False, allow_inf=False, high=None,
                   low=None):
    """A real number ``> 0`` (or ``>= 0``), optionally ``<= high``.

    ``low`` (if given) is a smallest accepted non-zero magnitude (zero itself
    is governed by ``allow_zero``).
    """
    value = check_real(value, name)
    if np.isnan(value) or (np.isinf(value) and not allow_inf):
        raise ValueError(f"{name} must be finite, got {value}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high:g} (larger values overflow "
                         f"float64 arithmetic), got {value:g}")
    if low is not None and 0 < value < low:
        zero = "0 or " if allow_zero else ""
        raise ValueError(f"{name} must be {zero}>= {low:g} (smaller values "
                         f"underflow float64 arithmetic), got {value:g}")
    return value


def check_escape_factor(value, name="escape_factor"):
    """Escape factor ``K > 1`` (``inf`` allowed: never escape)."""
    K = check_positive(value, name, allow_inf=True)
    if not K > 1.0:
        raise ValueError(f"{name} must be > 1, got {K}")
    return K


def check_eta(eta, name="eta"):
    """Learning rate: finite, ``> 0`` and at most ``ETA_MAX``."""
    return check_positive(eta, name, high=ETA_MAX)


def check_alpha(alpha, name="alpha"):
    """Mixing weight in ``[0, 1]``."""
    if _is_bool(alpha) or not isinstance(alpha, numbers.Real):
        raise ValueError(f"{name} must be a real number in [0, 1], got {alpha!r}")
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {alpha}")
    return alpha


def check_scheme(scheme, name="scheme"):
    """One of ``"bernoulli"``, ``"with"``, ``"without"``.

    Call it whatever the batch size: a bad scheme is an error even where it
    would not change the result (full batch).
    """
    if not isinstance(scheme, str) or scheme not in SCHEMES:
        raise ValueError(f"{name} must be one of {SCHEMES}, got {scheme!r}")
    return scheme


def check_seed(seed, name="seed"):
    """A non-negative integer seed (explicit seeds only: ``None`` is refused)."""
    if seed is None:
        raise ValueError(f"{name} must be an explicit non-negative integer")
    seed = _int(seed, name)
    if seed < 0:
        raise ValueError(f"{name} must be >= 0, got {seed}")
    return seed


def check_instance(value, cls, name):
    """``value`` itself if it is an instance of ``cls``; else a clear error."""
    if not isinstance(value, cls):
        raise ValueError(f"{name} must be a {cls.__name__}, got "
                         f"{type(value).__name__}" + ("" if value is None else
                                                      f" {value!r:.60}"))
    return value


def check_patches(X, name="X", d=None):
    """``X`` as a finite C-contiguous float64 array of shape ``(n, 2, d)``.

    Entries larger than ``DATA_MAX`` in magnitude are refused (the models'
    Gram and activation arithmetic would overflow).
    """
    arr = as_float_array(X, name, ndim=3)
    if arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (n, 2, d) (two patches), "
                         f"got {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[2] < 1:
        raise ValueError(f"{name} must hold at least one sample of dimension >= 1, "
                         f"got shape {arr.shape}")
    if d is not None and arr.shape[2] != d:
        raise ValueError(f"{name} has patch dimension d={arr.shape[2]} but the "
                         f"model expects d={d}")
    top = np.abs(arr).max()
    if top > DATA_MAX:
        raise ValueError(f"{name} has an entry of magnitude {top:.3g}, above "
                         f"{DATA_MAX:g}: products of such entries overflow float64")
    return arr


def check_labels(y, n, name="y"):
    """Labels in ``{-1, +1}`` as float64 of shape ``(n,)``."""
    arr = as_float_array(y, name, ndim=1)
    if arr.shape[0] != n:
        raise ValueError(f"{name} must have length n={n}, got {arr.shape[0]}")
    if not np.all((arr == 1.0) | (arr == -1.0)):
        bad = arr[(arr != 1.0) & (arr != -1.0)][0]
        raise ValueError(f"{name} must contain only labels -1 and +1, found {bad!r}")
    return arr


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
