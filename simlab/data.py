"""Signal-plus-noise data (THEORY section 8) and forget-set selection.

Every sample has two patches of dimension ``d``: patch 0 is the signal
``y_clean * mu`` and patch 1 is Gaussian noise ``xi ~ N(0, sigma_p^2 (I - mu mu^T /
||mu||^2))``, orthogonal to the signal. Observed labels are the clean labels
flipped independently with probability ``p_flip`` (label noise).

References: Cao, Chen, Belkin, Gu, "Benign overfitting in two-layer
convolutional neural networks", NeurIPS 2022; Kou, Chen, Chen, Gu, "Benign
overfitting in two-layer ReLU convolutional neural networks", ICML 2023.
"""

import numbers
from dataclasses import dataclass, replace

import numpy as np

from . import _streams
from ._validation import (
    SCALE_MAX,
    as_float_array,
    check_instance,
    check_int,
    check_labels,
    check_patches,
    check_positive,
    check_real,
    check_seed,
    check_size,
)

__all__ = [
    "SignalNoise",
    "signal_noise",
    "signal_noise_pair",
    "rescale_signal",
    "sample_linear_model",
    "select_forget",
    "check_split",
    "FORGET_RULES",
]

#: Stream keys: every consumer of a user seed draws from its own stream
#: (``default_rng([seed, key])``), so equal seeds never give correlated draws
#: (e.g. an initial filter parallel to ``mu``).
_TRAIN_STREAM = _streams.DATA_TRAIN
_TEST_STREAM = _streams.DATA_TEST
_FORGET_STREAM = _streams.FORGET_SELECTION

#: Forget-set selection rules understood by :func:`select_forget`.
FORGET_RULES = ("random", "class", "mislabeled", "memorized")


# --------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------

def _check_p_flip(p_flip):
    if isinstance(p_flip, bool | np.bool_) or not isinstance(p_flip, numbers.Real):
        raise ValueError(f"p_flip must be a real number in [0, 0.5), got {p_flip!r}")
    p_flip = float(p_flip)
    if not 0.0 <= p_flip < 0.5:
        raise ValueError(f"p_flip must lie in [0, 0.5), got {p_flip}")
    return p_flip


# --------------------------------------------------------------------------
# the data container
# --------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class SignalNoise:
    """A two-patch data set, generated or user-supplied.

    Construct it directly from your own arrays (``SignalNoise(X=X, y=y)``) or
    draw it with :func:`signal_noise`. Inputs are validated and converted on
    construction.

    Attributes
    ----------
    X : ndarray, shape (n, 2, d)
        Patches. For generated data ``X[:, 0] = y_clean * mu`` and
        ``X[:, 1] = xi`` (noise orthogonal to ``mu``).
    y : ndarray, shape (n,)
        Observed labels in ``{-1, +1}`` (after label noise).
    y_clean : ndarray, shape (n,), optional
        Labels before flipping (``None`` when unknown).
    mu : ndarray, shape (d,), optional
        Signal vector (``None`` when unknown). Needed for the signal-learning
        coefficient ``gamma``.
    flipped : ndarray of bool, shape (n,), optional
        ``y != y_clean`` (``None`` when unknown).
    sigma_p : float, optional
        Noise scale used to generate the data (``nan`` when unknown).

    Examples
    --------
    >>> import numpy as np
    >>> data = SignalNoise(X=np.ones((3, 2, 4)), y=[1, -1, 1])
    >>> data.n, data.d
    (3, 4)
    """

    X: np.ndarray
    y: np.ndarray
    y_clean: np.ndarray | None = None
    mu: np.ndarray | None = None
    flipped: np.ndarray | None = None
    sigma_p: float = float("nan")

    def __post_init__(self):
        X = check_patches(self.X, "X")
        n, _, d = X.shape
        y = check_labels(self.y, n, "y")
        y_clean = None if self.y_clean is None else check_labels(self.y_clean, n,
                                                                 "y_clean")
        mu = None
        if self.mu is not None:
            mu = as_float_array(self.mu, "mu", ndim=1)
            if mu.shape[0] != d:
                raise ValueError(f"mu has dimension {mu.shape[0]} but X has d={d}")
        flipped = None
        if self.flipped is not None:
            flipped = np.asarray(self.flipped)
            if flipped.dtype != bool:
                # 0/1 are read as False/True; anything else is an error, not a
                # silent cast (2.5 or -1 would become True)
                f = as_float_array(flipped, "flipped")
                if not np.all((f == 0.0) | (f == 1.0)):
                    raise ValueError("flipped must hold booleans (or 0/1)")
                flipped = f.astype(bool)
            if flipped.shape != (n,):
                raise ValueError(f"flipped must have shape ({n},), got "
                                 f"{flipped.shape}")
        elif y_clean is not None:
            flipped = y != y_clean
        sigma_p = check_real(self.sigma_p, "sigma_p")
        if not np.isnan(sigma_p):
            sigma_p = check_positive(sigma_p, "sigma_p")
        for k, v in dict(X=X, y=y, y_clean=y_clean, mu=mu, flipped=flipped,
                         sigma_p=sigma_p).items():
            object.__setattr__(self, k, v)

    @property
    def n(self):
        """Number of samples."""
        return self.X.shape[0]

    @property
    def d(self):
        """Patch dimension."""
        return self.X.shape[2]

    @property
    def noise(self):
        """The noise patches ``xi_i = X[:, 1]``, shape ``(n, d)``."""
        return self.X[:, 1]

    @property
    def snr(self):
        """Signal-to-noise ratio ``||mu|| / (sigma_p sqrt(d))`` (``nan`` if unknown)."""
        if self.mu is None or not np.isfinite(self.sigma_p):
            return float("nan")
        return float(np.linalg.norm(self.mu) / (self.sigma_p * np.sqrt(self.d)))

    def subset(self, idx):
        """The samples ``idx`` as a new :class:`SignalNoise` (``mu`` is kept)."""
        idx = np.asarray(idx, dtype=np.int64)
        pick = (lambda a: None if a is None else a[idx])  # noqa: E731
        return SignalNoise(X=self.X[idx], y=self.y[idx], y_clean=pick(self.y_clean),
                           mu=self.mu, flipped=pick(self.flipped),
                           sigma_p=self.sigma_p)


# --------------------------------------------------------------------------
# generation
# --------------------------------------------------------------------------

def _signal_norm(snr, mu_norm, sigma_p, d):
    if (snr is None) == (mu_norm is None):
        raise ValueError("give exactly one of snr and mu_norm")
    if snr is not None:
        snr = check_positive(snr, "snr", allow_zero=True, high=SCALE_MAX)
        norm = snr * sigma_p * np.sqrt(d)
        if norm > SCALE_MAX:
            raise ValueError(f"snr={snr:g} gives ||mu|| = snr * sigma_p * sqrt(d) = "
                             f"{norm:.3g}, above {SCALE_MAX:g}: products of such "
                             f"entries overflow float64")
        return norm
    return check_positive(mu_norm, "mu_norm", allow_zero=True, high=SCALE_MAX)


def _draw(n, d, norm, sigma_p, p_flip, rng, u=None):
    """Draw one set; return ``(data, u)`` with ``u`` the unit signal direction.

    The order of random draws does not depend on ``norm``, so the same seed at
    two signal strengths gives the same direction, labels, flips and noise
    (common random numbers).
    """
    if u is None:
        u = rng.standard_normal(d)
        u /= np.linalg.norm(u)
    y_clean = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    flipped = rng.random(n) < p_flip
    g = rng.standard_normal((n, d))
    xi = sigma_p * (g - np.outer(g @ u, u))          # N(0, sigma_p^2 (I - u u^T))
    mu = norm * u
    X = np.empty((n, 2, d))
    X[:, 0] = y_clean[:, None] * mu
    X[:, 1] = xi
    y = np.where(flipped, -y_clean, y_clean)
    return SignalNoise(X=X, y=y, y_clean=y_clean, mu=mu, flipped=flipped,
                       sigma_p=sigma_p), u


def _common_checks(n, d, sigma_p, p_flip, seed):
    n = check_int(n, "n", low=1)
    d = check_int(d, "d", low=2)
    sigma_p = check_positive(sigma_p, "sigma_p", high=SCALE_MAX)
    p_flip = _check_p_flip(p_flip)
    seed = check_seed(seed)
    return n, d, sigma_p, p_flip, seed


def signal_noise(n, d, *, snr=None, mu_norm=None, sigma_p=1.0, p_flip=0.0, seed=0):
    """Draw ``n`` signal-plus-noise samples (THEORY section 8).

    Parameters
    ----------
    n : int
        Number of samples, ``>= 1``.
    d : int
        Patch dimension, ``>= 2``.
    snr : float, optional
        ``||mu|| / (sigma_p sqrt(d))``. Give exactly one of ``snr``, ``mu_norm``.
    mu_norm : float, optional
        ``||mu||``.
    sigma_p : float
        Noise scale ``> 0``.
    p_flip : float
        Label-flip probability in ``[0, 0.5)``.
    seed : int
        Seed of the generator. The direction of ``mu`` is drawn from it too.

    Returns
    -------
    SignalNoise

    See Also
    --------
    signal_noise_pair : train and test sets sharing ``mu``.
    rescale_signal : the same draw at another signal strength.

    Notes
    -----
    The draws do not depend on the signal strength, so calls that differ only in
    ``snr``/``mu_norm`` share labels, flips and noise.

    Examples
    --------
    >>> data = signal_noise(5, 10, snr=0.5, p_flip=0.2, seed=1)
    >>> data.X.shape, round(data.snr, 12)
    ((5, 2, 10), 0.5)
    """
    n, d, sigma_p, p_flip, seed = _common_checks(n, d, sigma_p, p_flip, seed)
    norm = _signal_norm(snr, mu_norm, sigma_p, d)
    check_size((n, 2, d), f"signal_noise(n={n}, d={d})")
    rng = np.random.default_rng([seed, _TRAIN_STREAM])
    return _draw(n, d, norm, sigma_p, p_flip, rng)[0]


def signal_noise_pair(n, n_test, d, *, snr=None, mu_norm=None, sigma_p=1.0,
                      p_flip=0.0, seed=0):
    """Train and held-out test sets from the same distribution (same ``mu``).

    The training set equals ``signal_noise(n, d, ..., seed=seed)``; the test set
    uses an independent stream derived from ``seed`` and the same ``mu``. Test
    labels carry the same label noise; ``test.y_clean`` holds the clean ones.

    Returns
    -------
    train, test : SignalNoise
    """
    n, d, sigma_p, p_flip, seed = _common_checks(n, d, sigma_p, p_flip, seed)
    n_test = check_int(n_test, "n_test", low=1)
    norm = _signal_norm(snr, mu_norm, sigma_p, d)
    check_size((n + n_test, 2, d),
               f"signal_noise_pair(n={n}, n_test={n_test}, d={d})")
    train, u = _draw(n, d, norm, sigma_p, p_flip,
                     np.random.default_rng([seed, _TRAIN_STREAM]))
    test, _ = _draw(n_test, d, norm, sigma_p, p_flip,
                    np.random.default_rng([seed, _TEST_STREAM]), u=u)
    return train, test


def rescale_signal(data, mu_norm):
    """The same samples with the signal rescaled to ``||mu|| = mu_norm``.

    Only patch 0 changes (``y_clean * mu``); labels, flips and noise are kept.
    Needs ``data.mu`` and ``data.y_clean``.
    """
    check_instance(data, SignalNoise, "data")
    if data.mu is None or data.y_clean is None:
        raise ValueError("data must carry mu and y_clean to rescale its signal")
    old = float(np.linalg.norm(data.mu))
    if old == 0.0:
        raise ValueError("data.mu is zero: its direction is undefined")
    mu_norm = check_positive(mu_norm, "mu_norm", allow_zero=True, high=SCALE_MAX)
    mu = data.mu * (mu_norm / old)
    X = data.X.copy()
    X[:, 0] = data.y_clean[:, None] * mu
    return replace(data, X=X, mu=mu)


# --------------------------------------------------------------------------
# forget sets
# --------------------------------------------------------------------------

def check_split(retain, forget, n):
    """Validate a retain/forget split of ``n`` samples.

    Parameters
    ----------
    retain : array_like of int or None
        Retain indices; ``None`` means every sample not in ``forget``.
    forget : array_like of int
        Forget indices (non-empty, distinct, in ``[0, n)``).
    n : int

    Returns
    -------
    retain, forget : ndarray of int64 (sorted)
    """
    def as_idx(a, name):
        arr = np.asarray(a)
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"{name} must be a 1-d array of integer indices")
        arr = arr.astype(np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= n):
            raise ValueError(f"{name} indices must lie in [0, {n}), got range "
                             f"[{arr.min()}, {arr.max()}]")
        if np.unique(arr).size != arr.size:
            raise ValueError(f"{name} contains repeated indices")
        return np.sort(arr)

    forget = as_idx(forget, "forget")
    if forget.size == 0:
        raise ValueError("forget must contain at least one index")
    if retain is None:
        retain = np.setdiff1d(np.arange(n), forget)
    else:
        retain = as_idx(retain, "retain")
        overlap = np.intersect1d(retain, forget)
        if overlap.size:
            raise ValueError(f"retain overlaps forget at indices {overlap[:5]}")
    if retain.size == 0:
        raise ValueError("retain must contain at least one index")
    return retain, forget


def select_forget(data, n_forget=None, *, rule="random", label=1, scores=None,
                  seed=0):
    """Choose a forget set; return ``(retain, forget)`` index arrays.

    Parameters
    ----------
    data : SignalNoise
    n_forget : int, optional
        Size of the forget set. Required for ``"random"`` and ``"memorized"``;
        for ``"class"`` and ``"mislabeled"`` ``None`` takes every eligible
        sample, otherwise a random subset of that size.
    rule : {"random", "class", "mislabeled", "memorized"}
        ``"class"``: samples whose observed label is ``label``.
        ``"mislabeled"``: the flipped samples (needs ``data.flipped``).
        ``"memorized"``: the ``n_forget`` samples with the largest
        memorization score ``scores`` (the "most memorized" points). Two
        sources: the noise-memorization coefficients
        (:attr:`simlab.dynamics.train.TrainResult.memorization`) and the
        per-sample curvature scores of
        :func:`simlab.memorization.curvature_scores` (``trace``, ``rayleigh``,
        ``self_influence``; THEORY 10.2). The rule takes the scores from the
        caller rather than computing one itself because it sees only the
        data, not the model and weights a curvature score needs; the
        curvature criterion is ``scores=curvature_scores(model, W,
        data).trace.values``.
    label : {1, -1}
        Class for ``rule="class"``.
    scores : array_like, shape (n,), optional
        Memorization scores for ``rule="memorized"``.
    seed : int

    Returns
    -------
    retain, forget : ndarray of int64 (sorted, disjoint, covering all samples)

    Examples
    --------
    >>> data = signal_noise(10, 20, snr=1.0, seed=0)
    >>> retain, forget = select_forget(data, 3, seed=0)
    >>> len(retain), len(forget)
    (7, 3)
    """
    check_instance(data, SignalNoise, "data")
    if rule not in FORGET_RULES:
        raise ValueError(f"rule must be one of {FORGET_RULES}, got {rule!r}")
    n = data.n
    rng = np.random.default_rng([check_seed(seed), _FORGET_STREAM])
    if n_forget is not None:
        n_forget = check_int(n_forget, "n_forget", low=1, high=n - 1)
    if rule == "random":
        if n_forget is None:
            raise ValueError("n_forget is required for rule='random'")
        forget = rng.choice(n, size=n_forget, replace=False)
    elif rule == "memorized":
        if n_forget is None:
            raise ValueError("n_forget is required for rule='memorized'")
        if scores is None:
            raise ValueError("scores (per-sample memorization) are required for "
                             "rule='memorized'")
        s = as_float_array(scores, "scores", ndim=1)
        if s.shape[0] != n:
            raise ValueError(f"scores must have length n={n}, got {s.shape[0]}")
        forget = np.argsort(-s, kind="stable")[:n_forget]
    else:
        if rule == "class":
            if isinstance(label, bool | np.bool_) or label not in (1, -1):
                raise ValueError(f"label must be 1 or -1, got {label!r}")
            pool = np.flatnonzero(data.y == label)
        else:
            if data.flipped is None:
                raise ValueError("data carries no flip mask: rule='mislabeled' "
                                 "needs data.flipped or data.y_clean")
            pool = np.flatnonzero(data.flipped)
        if pool.size == 0:
            raise ValueError(f"rule={rule!r} selects no samples")
        if n_forget is None:
            forget = pool
        elif n_forget > pool.size:
            raise ValueError(f"n_forget={n_forget} exceeds the {pool.size} samples "
                             f"eligible under rule={rule!r}")
        else:
            forget = rng.choice(pool, size=n_forget, replace=False)
    return check_split(None, forget, n)


def sample_linear_model(n, d, snr, *, seed, sigma_p=1.0):
    """The linear model's inputs ``x_i = y_i mu + xi_i`` in canonical coordinates.

    The law of :func:`signal_noise` as the linear model sees it
    (``f = <w, x^(1) + x^(2)>``), rotated so that ``mu`` lies along the first
    axis: the random-matrix predictions of :mod:`simlab.theory.rmt` are
    rotation invariant, and these are the inputs they are checked against.

    Parameters
    ----------
    n : int
        Number of samples.
    d : int
        Ambient dimension, ``>= 2`` (the noise lives in ``p = d - 1``).
    snr : float
        ``||mu|| / (sigma_p sqrt(d))``, ``>= 0``.
    seed : int
        Explicit seed for ``np.random.default_rng``.
    sigma_p : float
        Noise scale.

    Returns
    -------
    X : ndarray, shape (n, d)
        Rows ``x_i = y_i mu + xi_i``; they are the rank-one factors of the
        per-sample Hessians ``H_i = x_i x_i^T`` (squared loss).
    y : ndarray, shape (n,)
        Labels in ``{-1, +1}``.

    Notes
    -----
    ``mu`` points along the first axis and ``xi_i`` fills the other ``d - 1``
    coordinates, which is ``N(0, sigma_p^2 (I - mu mu^T / ||mu||^2))``
    (THEORY 8); every quantity in this module is rotation invariant.

    Examples
    --------
    >>> X, y = sample_linear_model(4, 10, 0.5, seed=0)
    >>> X.shape, sorted(set(y.tolist()))
    ((4, 10), [-1.0, 1.0])
    """
    n, d, sigma_p, _, seed = _common_checks(n, d, sigma_p, 0.0, seed)
    norm = _signal_norm(snr, None, sigma_p, d)
    check_size((n, d), f"sample_linear_model(n={n}, d={d})")
    rng = np.random.default_rng(seed)
    y = rng.choice(np.array([-1.0, 1.0]), size=n)
    X = np.empty((n, d))
    X[:, 0] = y * norm
    X[:, 1:] = sigma_p * rng.standard_normal((n, d - 1))
    return X, y
