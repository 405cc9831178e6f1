"""The exact verdict for a user's own curvature family: ``simlab check``.

:func:`check_family` takes per-sample curvature of a retain set (and optionally
a forget set) in any of the package's three representations, and returns every
exact quantity of THEORY sections 2-6 at one configuration ``(eta, B_r, B_f,
scheme, alpha)``: coherence and its blocks, ``rho(T)``, the critical learning
rate, ``kappa_+``, the closed-form bounds with their tightness, and the escape
time from a stated law of ``delta_0``. :func:`load_family` reads a family from
a ``.npy`` / ``.npz`` file (the shapes and keys are in the README and below);
``simlab check`` is the command line of the two.

File formats (one set per file):

============  ======================  =========================================
file          array                   meaning
============  ======================  =========================================
``.npz``      key ``factors``         rank-k factors ``(n, k, p)`` (or
                                      ``(n, p)``, ``k = 1``):
                                      ``H_i = sum_j g_ij g_ij^T``
``.npz``      key ``rank_one``        rank-one factors ``(n, p)``
``.npz``      key ``hessians``        dense PSD Hessians ``(n, p, p)``
``.npy``      2-D ``(n, p)``          rank-one factors
``.npy``      3-D                     needs ``kind="factors"`` ``(n, k, p)`` or
                                      ``kind="dense"`` ``(n, p, p)``: a 3-D
                                      shape alone does not say which
============  ======================  =========================================

Relation to ``simlab threshold``: two commands with disjoint inputs.
``threshold`` builds the coherence dial of THEORY section 7 from ``--n --s``
and compares the exact threshold with its closed form; ``check`` never builds a
family, it reads yours. Saved to a file, the dial gives ``check`` the same
exact numbers.
"""

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ._validation import (
    Factors,
    check_escape_factor,
    check_eta,
    check_forget_batch,
    check_hessians,
    check_int,
    check_pair,
    check_positive,
)

__all__ = ["FamilyCheck", "check_family", "load_family", "load_pair", "LAWS",
           "KINDS"]

#: Laws of ``delta_0`` for the escape time (see :func:`check_family`).
LAWS = ("range", "isotropic")
#: Representations a file may be read as (``kind`` of :func:`load_family`).
KINDS = ("rank-one", "factors", "dense")
_NPZ_KEYS = {"factors": "factors", "rank_one": "rank-one", "hessians": "dense"}


@dataclass(frozen=True)
class FamilyCheck:
    """Everything :func:`check_family` computes (THEORY sections 2-6).

    Attributes
    ----------
    representation : str
        ``"rank-one"``, ``"rank-k"`` or ``"dense"``.
    n_retain, n_forget, p, k, dim : int
        Sample counts, parameter dimension, factors per sample (``0`` for
        dense) and ``dim = dim U`` (the invariant subspace).
    eta, batch, forget_batch, scheme, alpha, escape_factor, horizon, law
        The configuration (``forget_batch`` is ``0`` without a forget set).
    sharpness : float
        ``lambda_max(H_r)`` of the retain mean Hessian.
    sigma, sigma_r, sigma_f, lam_rr, lam_ff, s_rf : float
        Coherence of the union, of retain and of forget; ``lambda_max`` of the
        blocks ``S_rr``, ``S_ff``; top singular value of ``S_rf`` (forget
        entries ``nan`` without a forget set).
    kappa_plus : float
        ``lambda_max(alpha H_f - (1-alpha) H_r)`` on ``U`` (``-lambda_min(M)``
        in general: without forget set ``-(1-0) lambda_min(H_r)`` on ``U``).
    rho : float
        ``rho(T)`` at ``eta``: mean-square stable iff ``<= 1``.
    critical_lr : float
        ``eta*`` of the chosen scheme (``0``: every ``eta`` diverges).
    eta_over_critical : float
        ``eta / eta*``.
    mean_lower_bound : float
        ``max (1 - eta lambda(M))^2 <= rho``.
    coherence_bound, coherence_tightness : float
        The coherence bound (Bernoulli; Dexter et al. at ``alpha = 0``, the
        unlearning form otherwise) and ``eta*_bernoulli / bound`` (in
        ``[0, 1]``; ``nan`` when the bound is vacuous, ``inf``, or both are 0).
    direction_bound, direction_tightness : float
        The direction bound for the chosen scheme and ``eta* / bound``.
    escape_time : float
        First ``t <= horizon`` with ``E||delta_t||^2 >= K E||delta_0||^2`` from
        the law ``law`` (``inf``: none).
    asymptotic_escape_time : float
        ``log K / log rho`` (``inf`` when ``rho <= 1``).
    verdict : str
        ``"divergent"`` (``rho > 1``: escapes; unlearning succeeds in the
        mean-square sense) or ``"stable"``.
    """

    representation: str
    n_retain: int
    n_forget: int
    p: int
    k: int
    dim: int
    eta: float
    batch: int
    forget_batch: int
    scheme: str
    alpha: float
    escape_factor: float
    horizon: int
    law: str
    sharpness: float
    sigma: float
    sigma_r: float
    sigma_f: float
    lam_rr: float
    lam_ff: float
    s_rf: float
    kappa_plus: float
    rho: float
    critical_lr: float
    eta_over_critical: float
    mean_lower_bound: float
    coherence_bound: float
    coherence_tightness: float
    direction_bound: float
    direction_tightness: float
    escape_time: float
    asymptotic_escape_time: float
    verdict: str

    def to_dict(self):
        """Plain dict for JSON: non-finite floats as the strings ``"inf"``,
        ``"-inf"``, ``"nan"`` (strict JSON has no such numbers)."""
        out = {}
        for key, value in asdict(self).items():
            if isinstance(value, float) and not math.isfinite(value):
                value = str(value)
            out[key] = value
        return out

    def table(self):
        """Human-readable table, one quantity per line."""
        rows = [
            ("family", f"{self.representation}: n_retain={self.n_retain} "
                       f"n_forget={self.n_forget} p={self.p}"
                       + (f" k={self.k}" if self.k else "") + f" dim U={self.dim}"),
            ("configuration", f"eta={self.eta:.6g} B={self.batch}"
                              + (f" B_f={self.forget_batch}" if self.n_forget else "")
                              + f" scheme={self.scheme} alpha={self.alpha:g}"),
            ("verdict (mean-square)", f"{self.verdict} (rho(T) "
                                      f"{'>' if self.rho > 1 else '<='} 1)"),
            ("rho(T)", f"{self.rho:.10g}"),
            ("critical lr eta*", f"{self.critical_lr:.10g}"),
            ("eta / eta*", f"{self.eta_over_critical:.6g}"),
            ("mean lower bound", f"{self.mean_lower_bound:.10g}  (<= rho)"),
            ("sharpness lambda_max(H_r)", f"{self.sharpness:.10g}"),
            ("kappa_+", f"{self.kappa_plus:.10g}"),
            ("coherence sigma", f"{self.sigma:.6g}"),
        ]
        if self.n_forget:
            rows += [
                ("sigma_r / sigma_f", f"{self.sigma_r:.6g} / {self.sigma_f:.6g}"),
                ("lambda_max S_rr / S_ff", f"{self.lam_rr:.6g} / {self.lam_ff:.6g}"),
                ("s_1(S_rf)", f"{self.s_rf:.6g}")]
        rows += [
            ("coherence bound (bernoulli)",
             f"{self.coherence_bound:.10g}  tightness {self.coherence_tightness:.4g}"),
            (f"direction bound ({self.scheme})",
             f"{self.direction_bound:.10g}  tightness {self.direction_tightness:.4g}"),
            (f"escape time ({self.law} delta_0)",
             f"{self.escape_time:g}  (K={self.escape_factor:g}, "
             f"horizon {self.horizon})"),
            ("log K / log rho", f"{self.asymptotic_escape_time:.6g}"),
        ]
        width = max(len(r[0]) for r in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _ratio(eta, bound):
    """``eta / bound``; ``inf`` for ``eta > 0 = bound`` (``kappa_+ > 0``: every
    learning rate is above the threshold); ``nan`` where it says nothing: a
    vacuous bound (``inf``) or ``0 / 0`` (``kappa_+ > 0``: the bound is
    exact)."""
    if math.isinf(bound) or (eta == 0.0 and bound == 0.0):
        return math.nan
    if bound == 0.0:
        return math.inf
    return float(eta / bound)


def check_family(retain, *, batch, eta=None, eta_rel=None, forget=None,
                 forget_batch=None, scheme="without", alpha=0.0,
                 escape_factor=1e3, horizon=1000, law="range"):
    """Exact stability quantities of one family at one configuration.

    Parameters
    ----------
    retain : array_like or Factors
        Retain-set curvature: rank-one factors ``(n_r, p)``, rank-k
        :class:`simlab.curvature.Factors` ``(n_r, k, p)`` or dense
        ``(n_r, p, p)``.
    batch : int
        Retain batch size ``B_r``.
    eta, eta_rel : float
        The learning rate, or (exactly one of the two) its ratio to the
        critical learning rate ``eta*`` of the configuration.
    forget : array_like or Factors, optional
        Forget-set curvature (factors with factors, dense with dense).
    forget_batch : int, optional
        ``B_f`` (default: the retain sampling fraction).
    scheme : {"without", "with", "bernoulli"}
    alpha : float
        Mixing weight; ``0`` is plain SGD on retain.
    escape_factor : float
        ``K`` of the escape criterion.
    horizon : int
        Steps searched for the escape.
    law : {"range", "isotropic"}
        Law of ``delta_0``: ``"range"`` is an isotropic Gaussian on
        ``U = range(sum of active H_i)`` (only moved directions);
        ``"isotropic"`` is ``N(0, I_p)``, whose mass outside ``U`` never moves
        and counts on both sides of the criterion.

    Returns
    -------
    FamilyCheck

    Examples
    --------
    >>> from simlab.curvature import coherence_dial
    >>> c = check_family(coherence_dial(10, 3), batch=10, eta=0.5)
    >>> round(c.critical_lr, 12), c.verdict
    (1.0, 'stable')
    """
    from .coherence import block_coherence, coherence_matrix, coherence_measure
    from .curvature import sharpness
    from .stability import (
        build_problem,
        critical_lr,
        escape_time,
        kappa_plus,
        mean_lower_bound,
        spectral_radius,
        unlearning_bound_lr,
        unlearning_direction_bound_lr,
    )
    from .stability.radius import escape_time_from_rho

    R, F, factored = check_pair(retain, forget, rank_k=True)
    if law not in LAWS:
        raise ValueError(f"law must be one of {LAWS}, got {law!r}")
    K = check_escape_factor(escape_factor)
    horizon = check_int(horizon, "horizon", low=1)
    if (eta is None) == (eta_rel is None):
        raise ValueError("give exactly one of eta and eta_rel")
    kw = dict(scheme=scheme, forget=forget, forget_batch=forget_batch, alpha=alpha)
    prob = build_problem(retain, batch, restrict=True, **kw)
    eta_star = critical_lr(retain, batch, **kw)
    if eta is None:
        eta_rel = check_positive(eta_rel, "eta_rel")
        if not 0.0 < eta_star < math.inf:
            raise ValueError(f"eta_rel needs a finite positive critical learning "
                             f"rate, but eta* = {eta_star} here (0: every eta "
                             f"diverges; inf: none does): give eta instead")
        eta = eta_rel * eta_star
    eta = check_eta(eta)
    rho = spectral_radius(retain, eta, batch, **kw)
    bern = eta_star if scheme == "bernoulli" else critical_lr(
        retain, batch, **{**kw, "scheme": "bernoulli"})
    ukw = dict(forget=forget, alpha=alpha, forget_batch=forget_batch)
    cbound = unlearning_bound_lr(retain, batch, **ukw)
    dbound = unlearning_direction_bound_lr(retain, batch, scheme=scheme, **ukw)
    if F is not None:
        blocks = block_coherence(retain, forget)
        coh = dict(sigma=blocks.sigma, sigma_r=blocks.sigma_r, sigma_f=blocks.sigma_f,
                   lam_rr=blocks.lam_rr, lam_ff=blocks.lam_ff, s_rf=blocks.s_rf)
        fb = check_forget_batch(forget_batch, batch, R.shape[0], F.shape[0])
    else:
        sigma = coherence_measure(retain)
        lam_rr = float(np.linalg.eigvalsh(coherence_matrix(retain))[-1])
        coh = dict(sigma=sigma, sigma_r=sigma, sigma_f=math.nan, lam_rr=lam_rr,
                   lam_ff=math.nan, s_rf=math.nan)
        fb = 0
    r, p = prob.dim, R.shape[-1]
    esc = escape_time(retain, eta, batch, escape_factor=K, horizon=horizon,
                      perturbation_samples=_law_samples(prob.basis, law), **kw)
    if not factored:
        representation, k = "dense", 0
    else:
        k = 1 if R.ndim == 2 else R.shape[1]
        representation = "rank-one" if k == 1 else "rank-k"
    return FamilyCheck(
        representation=representation, n_retain=R.shape[0],
        n_forget=0 if F is None else F.shape[0], p=p, k=k, dim=r, eta=float(eta),
        batch=int(batch), forget_batch=fb, scheme=scheme, alpha=float(alpha),
        escape_factor=K, horizon=horizon, law=law,
        sharpness=sharpness(retain),
        kappa_plus=kappa_plus(retain, forget=forget, alpha=alpha), rho=rho,
        critical_lr=eta_star, eta_over_critical=_ratio(eta, eta_star),
        mean_lower_bound=mean_lower_bound(retain, eta, batch, **kw),
        coherence_bound=cbound, coherence_tightness=_ratio(bern, cbound),
        direction_bound=dbound, direction_tightness=_ratio(eta_star, dbound),
        escape_time=esc, asymptotic_escape_time=escape_time_from_rho(rho, K),
        verdict="divergent" if rho > 1.0 else "stable", **coh)


def _law_samples(Q, law):
    """Rows ``d_j`` whose second moment is the law's, up to scale (all that the
    escape time sees), from the orthonormal basis ``Q`` ``(p, r)`` of ``U``.

    ``"range"``: ``Q Q^T``. ``"isotropic"``: ``I_p``; only ``Q^T Sigma_0 Q``
    (``I_r``) and the mass outside ``U`` (``p - r``) enter the escape time, so
    the rows of ``Q^T`` plus one row outside ``U`` of squared norm ``p - r``
    stand for it without a ``p x p`` matrix.
    """
    if law == "range":
        return Q.T
    p, r = Q.shape
    if r == p:
        return Q.T
    j = int(np.argmin(np.einsum("ij,ij->i", Q, Q)))  # e_j farthest inside U
    v = -Q @ Q[j]
    v[j] += 1.0
    v *= np.sqrt((p - r) / (v @ v))
    return np.vstack([Q.T, v])


def load_family(path, *, kind=None, name="retain"):
    """Read a curvature family from a ``.npy`` or ``.npz`` file.

    Parameters
    ----------
    path : str or Path
    kind : {"rank-one", "factors", "dense"}, optional
        How to read a ``.npy``: required for a 3-D array (``(n, k, p)`` factors
        and ``(n, p, p)`` dense cannot be told apart by shape); a 2-D array is
        rank-one factors. A ``.npz`` says it by its key and ignores ``kind``.
        See the module docstring for the formats.
    name : str
        ``"retain"`` or ``"forget"``: named in error messages.

    Returns
    -------
    ndarray or Factors
        Validated (finite, real, PSD for dense, curvature in range): ready for
        :func:`check_family`.

    Raises
    ------
    ValueError
        One line naming the file: unreadable or truncated file, wrong suffix,
        missing or extra ``.npz`` keys, wrong shape, NaN/inf, not PSD, ...
    """
    path = Path(path)
    where = f"{name} file {path}"
    if kind is not None and kind not in KINDS:
        raise ValueError(f"{where}: kind must be one of {KINDS}, got {kind!r}")
    if path.suffix not in (".npy", ".npz"):
        raise ValueError(f"{where}: expected a .npy or .npz file")
    if not path.is_file():
        raise ValueError(f"{where}: no such file")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        else:
            arr = np.load(path, allow_pickle=False)
            if not isinstance(arr, np.ndarray):    # np.load sniffs: a zip archive
                arr.close()
                raise ValueError("a .npz archive under a .npy name: rename it")
    except Exception as exc:     # truncated, empty, not a zip, pickled objects, ...
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(f"{where}: cannot read ({text})") from None
    if path.suffix == ".npy":
        file_kind = kind
        if file_kind is None:
            if arr.ndim == 3:
                raise ValueError(
                    f"{where}: a 3-D .npy array {arr.shape} is ambiguous: pass "
                    f"--kind factors for rank-k factors (n, k, p) or --kind dense "
                    f"for Hessians (n, p, p), or use a .npz with key 'factors' "
                    f"or 'hessians'")
            file_kind = "rank-one"
    else:
        keys = sorted(set(arrays) & set(_NPZ_KEYS))
        extra = sorted(set(arrays) - set(_NPZ_KEYS))
        if len(keys) != 1 or extra:
            raise ValueError(f"{where}: a .npz must hold exactly one of the keys "
                             f"{sorted(_NPZ_KEYS)}, found {sorted(arrays)}")
        arr = arrays[keys[0]]
        file_kind = _NPZ_KEYS[keys[0]]       # the key says it: kind is for .npy
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{where}: expected a real numeric array, got dtype "
                         f"{arr.dtype}")
    want = {"rank-one": (2,), "factors": (2, 3), "dense": (3,)}[file_kind]
    if arr.ndim not in want:
        shape = {"rank-one": "(n, p)", "factors": "(n, k, p)",
                 "dense": "(n, p, p)"}[file_kind]
        raise ValueError(f"{where}: {file_kind} curvature must have shape {shape}, "
                         f"got {arr.shape}")
    family = Factors(arr) if file_kind == "factors" else arr
    try:
        check_hessians(family, name, rank_k=True)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return family


def load_pair(retain_path, forget_path=None, *, kind=None):
    """:func:`load_family` for a retain file and an optional forget file, checked
    together (same representation, same ``p``; errors name both files).

    Returns
    -------
    retain, forget : ndarray or Factors (``forget`` is ``None`` without a path)
    """
    retain = load_family(retain_path, kind=kind, name="retain")
    if forget_path is None:
        return retain, None
    forget = load_family(forget_path, kind=kind, name="forget")
    try:
        check_pair(retain, forget, rank_k=True)
    except ValueError as exc:
        raise ValueError(f"retain file {retain_path} and forget file {forget_path}: "
                         f"{exc}") from None
    return retain, forget
