"""Random-matrix predictions of the coherence of the trained two-layer ReLU CNN.

THEORY.md sections 5, 8, 9.4; the CNN analogue of :mod:`simlab.theory.rmt`;
derived in ``derivations/rmt_cnn.py``.

Exact structure (THEORY 8). At weights ``W`` the logistic-loss Hessian of
sample ``i`` is ``h_i h_i^T`` with ``h_i = sqrt(l''_i) grad_W f_i`` and
``grad_{w_{j,r}} f_i = (j/m) [a^s_{jr,i} y_i mu + a^xi_{jr,i} xi_i]``, where
``a^s``, ``a^xi`` are the ReLU activations of filter ``(j, r)`` on the signal
and noise patches. Because ``xi_i`` is orthogonal to ``mu``,

``K_ik = sqrt(l''_i l''_k) / m^2 [N^s_ik y_i y_k ||mu||^2 + N^xi_ik <xi_i, xi_k>]``

exactly, with co-activation counts ``N^s_ik = sum_jr a^s_jr,i a^s_jr,k`` and
``N^xi_ik`` likewise. A filter is active on the signal patch of exactly one
class (``a^s_{jr,i} = 1[y_i <w_jr, mu> > 0]``), so ``N^s_ik = N_{y_i}
1[y_i = y_k]``: **cross-class pairs carry no signal overlap**, which is the
difference from the linear model (THEORY 11), where ``|K_ik|`` does not depend
on the labels.

Trained-network statistics (measured by :func:`simlab.predict.cnn_summary`;
GD, ``eta = 0.1``, 200 steps, ``sigma_0 = 0.01``, ``sigma_p = 1``, ``n in {20, 40}``,
``d in {200, 1000}``, ``m in {5, 10}``, ``SNR in [0.01, 1]``): in every run
each class's own filters end aligned with ``j mu`` (``N_{+1} = N_{-1} = m``,
in both regimes, because even a weak signal gradient beats
``<w^(0), mu> ~ sigma_0 ||mu||``); a sample's noise patch is seen mainly by the
own-class filters that were active on it at initialisation (their ``rho``
grows), and the wrong-class filters switch off (``rho < 0``). Hence the
*predictive* assumptions: ``N^s = m`` within a class, ``A_i = N^xi_ii ~
Binomial(m, 1/2)``, same-class noise co-activation ``m/4``, cross-class ``0``,
and equal ``l''`` (margins equal, so ``l''`` cancels from ``sigma``).

Two regimes follow (units ``sigma_p = 1``, ``theta = SNR^2 d``, ``p = d - 1``):

- **signal learning** (``m theta >> co sqrt p``): two class blocks of constant
  off-diagonal ``m theta`` on a diagonal ``m theta + A p``;
  ``sigma -> (n theta + p) / (2 theta + p) ~ (1 + n SNR^2) / (1 + 2 SNR^2)``
  for ``A = m/2`` (tends to ``n/2``, not ``n``: the classes never align);
- **noise memorization**: off-diagonals are folded normals of scale
  ``co sqrt p``, ``sigma ~ 1 + (n/2 - 1) sqrt(2/pi) (co / A) / sqrt p``.

The function computes the expected ``S`` from these statistics (folded-normal
means, :func:`simlab.theory.rmt.folded_normal_moments`), its top eigenvalue
plus the second-order (Wigner) correction, and divides by the expected
normaliser ``max_i S_ii``.

Measured errors are stated in :func:`cnn_coherence`; ``tests/test_rmt_cnn.py``
enforces them.

Net ascent curvature and ascent rate (issue 10.4; ``derivations/rmt_cnn_ascent.py``).
:func:`cnn_kappa_plus` predicts ``kappa_+ = lambda_max(alpha H_f - (1-alpha)
H_r)`` from the *signed* mean Gram (same-class signal ``N_c theta``, no
cross-class signal, diagonal ``N theta + A_i ||xi_i||^2``) with a resummed
second-order correction for the zero-mean noise overlaps;
:func:`cnn_sharpness` is the same with weights ``1/n``; :func:`cnn_ascent_rate`
their ratio; :func:`cnn_block_coherence` the retain/forget blocks of ``S``.
Two branches, as for the linear model: the forget samples' private noise
directions (``kappa_+ ~ (alpha/n_f) A p``, independent of SNR) and a
class-symmetric signal mode that takes over at high SNR and raises
``kappa_+`` by at most ``(1-alpha) n/((1-2 alpha) n_r)``; the sharpness
grows like ``1 + n m SNR^2 d/(2 A p)``, so ``r = kappa_+/lambda_max(H)``
falls like its inverse above ``n SNR^2 ~ 1``: **the sharpness, not
``kappa_+``, carries "lower SNR => faster escape"** at ``eta =
c/lambda_max(H)``. Known gap: the noise overlaps of trained networks are not
mean-zero (measured mean +0.17 s.d. within a class and +0.33 s.d. across, at
``n = 40, d = 200, m = 10``: co-activation selects samples aligned with the
filter), which the model omits; it is the cause of the sharpness
underestimate below the crossover at ``n / sqrt(d)`` large (up to 13 %).
"""

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

from .._validation import check_int, check_positive
from .rmt import folded_normal_moments

__all__ = [
    "CNNCoherenceStats",
    "predictive_stats",
    "cnn_coherence",
    "cnn_coherence_limits",
    "cnn_block_coherence",
    "cnn_sharpness",
    "cnn_kappa_plus",
    "cnn_ascent_rate",
    "ERRORS",
    "ASCENT_ERRORS",
]

#: Worst measured ``|pred / sim - 1|`` on the grid of :func:`cnn_coherence`
#: (``derivations/rmt_cnn.py --errors``), by form and ``d``.
ERRORS = {("semi", 200): 0.066, ("semi", 1000): 0.030,
          ("pred", 200): 0.304, ("pred", 1000): 0.290}

#: Worst measured ``|pred / sim - 1|`` (seed means) of :func:`cnn_kappa_plus`,
#: :func:`cnn_sharpness` and :func:`cnn_ascent_rate` by (loss, form, quantity,
#: SNR range); ``"above"``: ``n SNR^2 >= 1`` (above the crossover), ``"all"``:
#: SNR 0.01-1. ``derivations/rmt_cnn_ascent.py --errors --squared``: logistic
#: protocol of :func:`cnn_coherence` on ``n in {20, 40}, d in {200, 1000},
#: m in {5, 10}``, squared (cnn-unlearning protocol: ``sigma_0 = 0.1``, 3000
#: steps) on ``n = 20, d in {200, 1000}, m = 10``; 7 SNRs, 3 seeds, forget sets
#: of ``n/5``, ``alpha in {0.1, 0.3}``. The predictive form of the logistic
#: ``kappa_+`` and sharpness is not listed: it has no model of ``l''`` (it uses
#: ``l'' = 1``, while trained margins make ``l''`` small), so only the ratio
#: ``r``, where ``l''`` nearly cancels, is predicted there. Per ``(n, d, m)``,
#: semi-empirical ``r`` above the crossover: 3.9 / 5.4 / 2.6 / 2.4 % at
#: ``n = 20`` (``(200,5), (200,10), (1000,5), (1000,10)``), 8.3 / 11.8 / 2.9 /
#: 2.2 % at ``n = 40``; squared 2.8 % (``d = 200``), 2.0 % (``d = 1000``). On
#: the cnn-coherence figure's seeds (4-seed means) the semi-empirical ``r``
#: stays within 3.5 % above the crossover (7.4 % over all SNR) and the
#: predictive ``r`` reaches 53 % (squared, ``n = 20, d = 200, m = 10``).
ASCENT_ERRORS = {
    ("logistic", "semi", "kappa", "above"): 0.030,
    ("logistic", "semi", "kappa", "all"): 0.030,
    ("logistic", "semi", "sharpness", "above"): 0.092,
    ("logistic", "semi", "sharpness", "all"): 0.093,
    ("logistic", "semi", "rate", "above"): 0.118,
    ("logistic", "semi", "rate", "all"): 0.118,
    ("logistic", "pred", "rate", "above"): 0.418,
    ("logistic", "pred", "rate", "all"): 0.418,
    ("squared", "semi", "kappa", "above"): 0.018,
    ("squared", "semi", "kappa", "all"): 0.018,
    ("squared", "semi", "sharpness", "above"): 0.024,
    ("squared", "semi", "sharpness", "all"): 0.046,
    ("squared", "semi", "rate", "above"): 0.028,
    ("squared", "semi", "rate", "all"): 0.050,
    ("squared", "pred", "kappa", "above"): 0.557,
    ("squared", "pred", "kappa", "all"): 0.557,
    ("squared", "pred", "sharpness", "above"): 0.300,
    ("squared", "pred", "sharpness", "all"): 0.413,
    ("squared", "pred", "rate", "above"): 0.493,
    ("squared", "pred", "rate", "all"): 0.493,
}


@dataclass(frozen=True)
class CNNCoherenceStats:
    """Summary statistics of a (trained) CNN that fix its predicted coherence.

    Attributes
    ----------
    y : ndarray (n,)
        Labels.
    lpp : ndarray (n,)
        ``l''(y_i f_i)`` (logistic); all equal in the predictive form.
    A : ndarray (n,)
        Noise activation counts ``A_i = #{(j, r): <w_jr, xi_i> > 0}``.
    xi_sq : ndarray (n,)
        ``||xi_i||^2 / sigma_p^2``; ``nan`` entries mean "use the chi^2 law".
    n_signal : tuple of float
        ``(N_{+1}, N_{-1})``: filters active on ``+mu`` / on ``-mu``.
    co_same, co_cross : float
        Mean noise co-activation count ``N^xi_ik`` over same-class and
        cross-class pairs.
    """

    y: np.ndarray
    lpp: np.ndarray
    A: np.ndarray
    xi_sq: np.ndarray
    n_signal: tuple
    co_same: float
    co_cross: float


@functools.lru_cache(maxsize=256)
def _binom_quantiles(N, m):
    """``N`` classical locations of ``Binomial(m, 1/2)`` (mid-quantiles)."""
    import scipy.stats  # lazily: 0.35 s of every CLI start otherwise

    u = (np.arange(N) + 0.5) / N
    return scipy.stats.binom.ppf(u, m, 0.5).astype(float)


def predictive_stats(n, d, m):
    """The statistics assumed by the fully predictive form (module docstring).

    Balanced classes, ``N^s = m``, ``A_i`` at the mid-quantiles of
    ``Binomial(m, 1/2)`` within each class, ``co_same = m/4``,
    ``co_cross = 0``, equal ``l''``, ``xi_sq = nan`` (chi^2 law).

    Examples
    --------
    >>> st = predictive_stats(4, 100, 10)
    >>> st.y.tolist(), st.co_same
    ([1.0, 1.0, -1.0, -1.0], 2.5)
    """
    n = check_int(n, "n", low=2)
    d = check_int(d, "d", low=2)
    m = check_int(m, "m", low=1)
    n_p = (n + 1) // 2
    y = np.concatenate([np.ones(n_p), -np.ones(n - n_p)])
    A = np.concatenate([_binom_quantiles(n_p, m), _binom_quantiles(n - n_p, m)])
    return CNNCoherenceStats(y=y, lpp=np.ones(n), A=A, xi_sq=np.full(n, np.nan),
                             n_signal=(float(m), float(m)), co_same=m / 4.0,
                             co_cross=0.0)


def _mean_var(stats, p, theta):
    """Expected ``S`` (units ``sigma_p^2``, ``1/m^2`` dropped) and the entry
    variances ``V`` (diagonal: chi^2 fluctuation when ``xi_sq`` is unknown)."""
    y, A = stats.y, np.asarray(stats.A, dtype=float)
    c = np.sqrt(np.asarray(stats.lpp, dtype=float))
    Ns = np.where(y > 0, stats.n_signal[0], stats.n_signal[1])
    nu = np.where(np.isfinite(stats.xi_sq), stats.xi_sq, float(p))
    unknown = ~np.isfinite(stats.xi_sq)
    same = y[:, None] == y[None, :]
    M = np.zeros((y.size, y.size))
    V = np.zeros_like(M)
    for cls, N_c in ((1.0, stats.n_signal[0]), (-1.0, stats.n_signal[1])):
        blk = np.outer(y == cls, y == cls)
        co = stats.co_same
        if co > 0:
            mu_, var_ = folded_normal_moments(p, N_c * theta / co)
            M[blk], V[blk] = co * mu_, co * co * var_
        else:
            M[blk] = N_c * theta
    if stats.co_cross > 0:
        mu_, var_ = folded_normal_moments(p, 0.0)
        M[~same] = stats.co_cross * mu_
        V[~same] = stats.co_cross**2 * var_
    diag = Ns * theta + A * nu
    M[np.diag_indices_from(M)] = diag
    V[np.diag_indices_from(V)] = np.where(unknown, 2.0 * p * A**2, 0.0)
    cc = np.outer(c, c)
    return cc * M, cc * cc * V


def _lam_top(M, V):
    """``E lambda_max(M + W)``, ``W`` symmetric with entry variances ``V``:
    ``lambda_1(M) + E ||W v||^2 / (lambda_1 - lambda_bar)`` with ``v`` the
    top eigenvector and ``lambda_bar`` the mean of the other eigenvalues."""
    w, U = np.linalg.eigh(M)
    v = U[:, -1]
    n = M.shape[0]
    if n == 1:
        return float(w[-1])
    lam_bar = (np.trace(M) - w[-1]) / (n - 1)
    gap = w[-1] - lam_bar
    corr = float(np.sum(V @ (v * v))) / gap if gap > 0 else 0.0
    return float(w[-1] + corr)


def _expected_max_diag(stats, p, theta):
    """``E max_i S_ii``; exact for known ``xi_sq``, else by quadrature of
    ``1 - prod_i F_i(x)`` with ``S_ii = lpp_i (N theta + A_i chi^2_p)``."""
    y, A = stats.y, np.asarray(stats.A, dtype=float)
    lpp = np.asarray(stats.lpp, dtype=float)
    Ns = np.where(y > 0, stats.n_signal[0], stats.n_signal[1])
    known = np.isfinite(stats.xi_sq)
    base = lpp * Ns * theta
    if np.all(known):
        return float(np.max(base + lpp * A * stats.xi_sq))
    scale = lpp * A
    hi = float(np.max(base + scale * (p + 12.0 * np.sqrt(2.0 * p) + 40.0)))
    lo = float(np.min(base + scale * max(p - 12.0 * np.sqrt(2.0 * p), 0.0)))
    lo = max(lo, 0.0)
    import scipy.stats

    x = np.linspace(lo, hi, 4001)
    logF = np.zeros_like(x)
    for b, s, kn, xs in zip(base, scale, known, stats.xi_sq, strict=True):
        if kn:
            logF += np.where(x >= b + s * xs, 0.0, -np.inf)
        elif s > 0:
            logF += scipy.stats.chi2.logcdf((x - b) / s, p)
        else:
            logF += np.where(x >= b, 0.0, -np.inf)
    tail = -np.expm1(logF)
    return float(lo + np.trapezoid(tail, x))


def _sigma_from_stats(stats, d, snr):
    p, theta = d - 1, snr**2 * d
    M, V = _mean_var(stats, p, theta)
    # sigma >= 1 holds exactly for rank-one families; the mean-field ratio can
    # dip below it where the normaliser's extreme-value fluctuation is not
    # matched by lambda_max (low SNR, predictive form)
    return max(_lam_top(M, V) / _expected_max_diag(stats, p, theta), 1.0)


def cnn_coherence(n, d, snr, m, *, stats=None, loss="logistic"):
    """Predicted coherence ``sigma`` of a trained two-layer ReLU CNN.

    Parameters
    ----------
    n : int
        Number of samples.
    d : int
        Patch dimension (noise dimension ``p = d - 1``).
    snr : float
        ``||mu|| / (sigma_p sqrt(d))``; ``sigma`` does not depend on
        ``sigma_p``.
    m : int
        Filters per class.
    stats : CNNCoherenceStats, optional
        Measured statistics of the trained network (:func:`simlab.predict.cnn_summary`):
        the *semi-empirical* form. ``None`` uses :func:`predictive_stats`:
        the *fully predictive* form.
    loss : {"logistic", "squared"}
        Curvature of which loss: ``"squared"`` sets ``l'' = 1`` (the
        measured ``stats.lpp`` are logistic). Squared loss was measured only
        on the cnn-coherence figure (4 seeds; ``sigma_0 = 0.1``, 3000 steps):
        semi-empirical 8.4 % (``n = 20, d = 200, m = 10``) and 5.9 %
        (``40, 1000, 10``), predictive 25 % and 39 %.

    Returns
    -------
    float
        Predicted ``sigma = lambda_max(S) / max_i lambda_max(H_i)`` (THEORY 5)
        for the logistic-loss curvature factors
        (:meth:`simlab.models.CNN.curvature_factors`).

    Notes
    -----
    Module docstring and ``derivations/rmt_cnn.py``. ``S`` is replaced by its
    mean (folded-normal off-diagonals of scale ``co sqrt p`` around the
    same-class signal overlap ``N_c theta``; no signal overlap across
    classes), ``lambda_max`` gets the second-order correction
    ``E ||W v||^2 / (lambda_1 - lambda_bar)``, and the normaliser is
    ``E max_i S_ii`` (exact for measured ``||xi_i||``; chi^2 quadrature
    otherwise).

    Measured error against ``simlab.coherence.coherence_measure`` of the
    curvature factors of trained CNNs (GD, ``eta = 0.1``, 200 steps,
    ``sigma_0 = 0.01``; ``n in {20, 40}``, ``d in {200, 1000}``,
    ``m in {5, 10}``, seven SNR from 0.01 to 1; mean of 3 seeds per cell,
    worst over three disjoint seed sets, ``derivations/rmt_cnn.py
    --errors``), worst ``|pred / sim - 1|`` (:data:`ERRORS`):

    - *semi-empirical* (``stats`` from :func:`simlab.predict.cnn_summary`): 6.6 % at
      ``d = 200`` (worst at ``n = 40, m = 10``, low SNR, where the noise
      co-activations are least homogeneous across pairs) and 3.0 % at
      ``d = 1000`` (under 0.5 % for ``SNR >= 0.46``). Quantitative
      in both regimes and through the transition. Tests hold 8.3 % / 3.8 %.
      These are 3-seed means; single networks scatter more (one 2-seed mean
      in the figure reached 7.5 % at ``d = 200``).
    - *fully predictive* (``stats=None``): 30 % at ``d = 200`` and 19 % at
      ``d = 1000`` on the three seed sets, 29 % at ``d = 1000`` on the
      ``cnn-coherence`` figure's seeds (4-seed means; ``n = 20, m = 10``,
      ``SNR = 1``, where the seed-to-seed scatter of ``sigma`` is large).
      Only *qualitatively* right: it has the right regimes
      (``sigma ~ 1`` for ``SNR^2 << 1/sqrt d``, ``sigma`` rising to
      ``~ n/2`` by ``SNR = 1``; the simulated values are 5.6-6.1 for
      ``n = 20`` and 8.8-9.9 for ``n = 40``, against ``~ n`` for the linear
      model) but misses the low-SNR excess ``sigma - 1`` (0.01-0.36 measured;
      predicted ``~ 0``: it is clipped at the exact bound 1), because the
      trained noise activations are not the assumed ``Binomial(m, 1/2)`` /
      ``m/4`` (measured ``A_i / m ~ 0.55-0.9``, same-class co-activation
      ``~ 0.1-0.2 m``) and margins are unequal (``std y f ~ 0.3-0.5``, so
      ``l''`` varies by ``e^{+-0.5}``). It errs both ways near the
      transition (``SNR ~ 0.2-0.5``) and at ``SNR = 1`` (+25 % at
      ``n = 40, d = 200, m = 10``). Tests hold 38 % / 36.3 %, plus the
      qualitative statements (monotone in SNR, the two limits).

    Regime of validity: the errors above are for GD with the protocol
    above. Spot checks of the semi-empirical form on two cells
    (``(20, 1000, 5)``, ``(40, 200, 10)``): 1000 steps, 1.8 % worst; a
    shorter, slower run (``eta = 0.02``, 200 steps) 2.2 % at ``d = 1000`` but
    9.7 % at ``n = 40, d = 200, m = 10`` (low SNR), i.e. it degrades when
    ``n / sqrt(d)`` is large and training is short (noise co-activations
    vary from pair to pair and the mean ``co_same`` no longer summarises
    them). The predictive form's assumptions are tied to training that
    reaches zero training error from small initialisation. ``p_flip > 0``
    (mislabeled samples, whose signal activation follows the clean class)
    was not measured.

    Examples
    --------
    >>> s_lo = cnn_coherence(20, 1000, 0.01, 10)
    >>> s_hi = cnn_coherence(20, 1000, 1.0, 10)
    >>> 1.0 <= s_lo < 1.2 < s_hi <= 20
    True
    """
    n = check_int(n, "n", low=2)
    d = check_int(d, "d", low=2)
    m = check_int(m, "m", low=1)
    snr = check_positive(snr, "snr", allow_zero=True)
    if loss not in ("logistic", "squared"):
        raise ValueError(f"loss must be 'logistic' or 'squared', not {loss!r}")
    if stats is None:
        stats = predictive_stats(n, d, m)
    elif stats.y.size != n:
        raise ValueError(f"stats describe {stats.y.size} samples, not n={n}")
    if loss == "squared":
        stats = dataclasses.replace(stats, lpp=np.ones(n))
    return float(_sigma_from_stats(stats, d, snr))


def cnn_coherence_limits(n, d, snr):
    """Closed-form limits of the predictive form (``A = m/2``, mean normaliser).

    Returns
    -------
    high, low : float
        ``(1 + n SNR^2) / (1 + 2 SNR^2)`` (signal learning; ``-> n/2``) and
        ``1 + (n/2 - 1) sqrt(2/pi) / (2 sqrt(d - 1))`` (memorization).

    Examples
    --------
    >>> hi, lo = cnn_coherence_limits(20, 1000, 1.0)
    >>> round(hi, 4)
    7.0
    """
    n = check_int(n, "n", low=2)
    d = check_int(d, "d", low=2)
    snr = check_positive(snr, "snr", allow_zero=True)
    s2 = snr**2
    high = (1 + n * s2) / (1 + 2 * s2)
    low = 1 + (n / 2 - 1) * np.sqrt(2 / np.pi) / (2 * np.sqrt(d - 1))
    return float(high), float(low)


# --------------------------------------------------------------------------
# retain/forget blocks, sharpness and net ascent curvature (issue 10 item 4)
# --------------------------------------------------------------------------

def _check_stats(stats, n, d, m):
    if stats is None:
        return predictive_stats(n, d, m)
    if stats.y.size != n:
        raise ValueError(f"stats describe {stats.y.size} samples, not n={n}")
    return stats


def _forget_mask(n, stats, n_forget, forget_idx, predictive):
    """Boolean forget mask. ``forget_idx`` wins; otherwise (predictive form)
    ``n_forget`` samples spread evenly over both classes and over each
    class's activation quantiles (a representative random forget set)."""
    mask = np.zeros(n, dtype=bool)
    if forget_idx is not None:
        idx = np.asarray(forget_idx)
        if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError("forget_idx must be a non-empty 1-d array of int")
        if np.unique(idx).size != idx.size or idx.min() < 0 or idx.max() >= n:
            raise ValueError(f"forget_idx must hold distinct indices in [0, {n})")
        mask[idx] = True
    else:
        if n_forget is None:
            raise ValueError("give n_forget (or forget_idx)")
        n_f = check_int(n_forget, "n_forget", low=1, high=n - 1)
        if not predictive:
            raise ValueError("measured stats need forget_idx (which samples are "
                             "forgotten)")
        y = stats.y
        pos, neg = np.flatnonzero(y > 0), np.flatnonzero(y <= 0)
        k_pos = int(round(n_f * pos.size / n))
        k_pos = min(max(k_pos, n_f - neg.size), pos.size)
        for cls, k in ((pos, k_pos), (neg, n_f - k_pos)):
            if k > 0:
                sel = np.floor((np.arange(k) + 0.5) * cls.size / k).astype(int)
                mask[cls[sel]] = True
    if mask.all():
        raise ValueError("the forget set must leave at least one retain sample")
    return mask


def _signed_mean_var(stats, p, theta, loss):
    """Mean and entry variances of the *signed* Gram ``K = G G^T`` of the
    curvature factors (units ``sigma_p^2``, ``1/m^2`` dropped): same-class
    off-diagonal mean ``N_c theta`` (the noise overlap ``<xi_i, xi_k>`` has
    mean 0), cross-class mean 0; variances ``co^2 p`` off the diagonal and the
    chi^2 fluctuation ``2 p A_i^2`` on it when ``||xi_i||`` is unknown."""
    y, A = stats.y, np.asarray(stats.A, dtype=float)
    lpp = np.ones(y.size) if loss == "squared" else np.asarray(stats.lpp, dtype=float)
    c = np.sqrt(lpp)
    Ns = np.where(y > 0, stats.n_signal[0], stats.n_signal[1])
    nu = np.where(np.isfinite(stats.xi_sq), stats.xi_sq, float(p))
    unknown = ~np.isfinite(stats.xi_sq)
    same = y[:, None] == y[None, :]
    M = np.where(same, Ns[:, None] * theta, 0.0)
    V = np.where(same, stats.co_same**2 * p, stats.co_cross**2 * p)
    M[np.diag_indices_from(M)] = Ns * theta + A * nu
    V[np.diag_indices_from(V)] = np.where(unknown, 2.0 * p * A**2, 0.0)
    cc = np.outer(c, c)
    return cc * M, cc * cc * V


def _signed_top(K, V, w):
    """Top eigenvalue of ``diag(w) (K + E)`` to second order in the symmetric
    zero-mean fluctuation ``E`` (entry variances ``V``), and the share of the
    top eigenvector on its largest entry.

    ``diag(w) K`` is similar to ``K^{1/2} diag(w) K^{1/2}``; with its
    eigenpairs ``(lambda_j, r_j)`` normalised by ``r_j^T K r_j = 1`` (the left
    eigenvectors are ``K r_j``) first-order perturbation theory gives
    ``d lambda = lambda r^T E r`` (mean 0) and second order
    ``lambda sum_{j != 0} lambda_j (r^T E r_j)^2 / (lambda - lambda_j)``
    (``derivations/rmt_cnn_ascent.py``, ``pencil_perturbation``), each term
    resummed as a two-level problem so that near-degenerate forget levels
    (equal diagonals) give a finite shift."""
    ev, U = np.linalg.eigh(K)
    ev = np.maximum(ev, 0.0)
    half = (U * np.sqrt(ev)) @ U.T
    B = half @ (w[:, None] * half)
    lam, Vb = np.linalg.eigh((B + B.T) / 2)
    lam0, v0 = lam[-1], Vb[:, -1]
    inv = np.where(ev > ev[-1] * 1e-13, 1.0 / np.sqrt(np.where(ev > 0, ev, 1.0)), 0.0)
    Kmh = (U * inv) @ U.T
    R = Kmh @ Vb                                # r_j, K-normalised
    r0 = R[:, -1]
    # E (r0^T E r_j)^2 for symmetric E with independent entries (variance V)
    # = sum_{i<k} V_ik (r0_i r_jk + r0_k r_ji)^2 + sum_i V_ii r0_i^2 r_ji^2
    Voff = V - np.diag(np.diag(V))
    t1 = np.einsum("ik,i,k,ij,kj->j", Voff, r0, r0, R, R)  # V r0_i r0_k r_ji r_jk
    t2 = np.einsum("ik,i,kj->j", Voff, r0**2, R**2)         # V r0_i^2 r_jk^2
    t3 = np.einsum("i,i,ij->j", np.diag(V), r0**2, R**2)
    e2 = t1 + t2 + t3           # = sum_{i<k} 2 (..) counted once per ordered pair
    # each level j shifts the top one by lambda lambda_j e2_j / (lambda - lambda_j)
    # to second order; near a degeneracy that diverges, so each term is
    # resummed as the exact two-level shift sqrt(D^2/4 + g) - D/2 (D the gap,
    # g = lambda lambda_j e2_j), which equals g / D for g << D^2
    gaps = lam0 - lam[:-1]
    g = lam0 * lam[:-1] * e2[:-1]
    corr = np.sum(np.sqrt(np.maximum(gaps**2 / 4 + g, 0.0)) - gaps / 2)
    share = float(np.max(v0**2))
    return float(lam0 + corr), share


def _check_common(n, d, snr, m, sigma_p, loss):
    n = check_int(n, "n", low=2)
    d = check_int(d, "d", low=2)
    m = check_int(m, "m", low=1)
    snr = check_positive(snr, "snr", allow_zero=True)
    sigma_p = check_positive(sigma_p, "sigma_p")
    if loss not in ("logistic", "squared"):
        raise ValueError(f"loss must be 'logistic' or 'squared', not {loss!r}")
    return n, d, snr, m, sigma_p


def cnn_sharpness(n, d, snr, m, *, stats=None, loss="logistic", sigma_p=1.0):
    """Predicted sharpness ``lambda_max(H)`` of the trained CNN, ``H`` the mean
    of the per-sample curvature ``h_i h_i^T``.

    ``lambda_max(K) / n`` with ``K`` the signed Gram of the factors: its mean
    (two class blocks of value ``N_c theta`` on the diagonal ``N theta + A_i
    ||xi_i||^2``, times ``sqrt(l''_i l''_k) sigma_p^2 / m^2``) plus the
    resummed second-order correction of :func:`cnn_kappa_plus` (all weights
    ``1/n``). ``loss="squared"``
    sets ``l'' = 1``. Errors: :data:`ASCENT_ERRORS`.

    Examples
    --------
    >>> lo = cnn_sharpness(20, 1000, 0.01, 10, loss="squared")
    >>> hi = cnn_sharpness(20, 1000, 1.0, 10, loss="squared")
    >>> hi > 5 * lo
    True
    """
    n, d, snr, m, sigma_p = _check_common(n, d, snr, m, sigma_p, loss)
    stats = _check_stats(stats, n, d, m)
    K, V = _signed_mean_var(stats, d - 1, snr**2 * d, loss)
    return float(sigma_p**2 / m**2 * _signed_top(K, V, np.full(n, 1.0 / n))[0])


def cnn_kappa_plus(n, d, snr, m, *, alpha, n_forget=None, forget_idx=None, stats=None,
                   loss="logistic", sigma_p=1.0, return_branch=False):
    """Predicted net ascent curvature ``kappa_+ = lambda_max(alpha H_f - (1 - alpha)
    H_r)`` of the trained CNN (``H_r``, ``H_f``: mean curvature of the retain and
    forget sets).

    Parameters
    ----------
    n, d, snr, m : as in :func:`cnn_coherence`.
    alpha : float
        Ascent weight in ``(0, 1]``.
    n_forget : int, optional
        Forget-set size (predictive form: a class-balanced forget set spread
        over the activation quantiles).
    forget_idx : array_like of int, optional
        Which samples of ``stats`` are forgotten (needed with measured stats).
    stats : CNNCoherenceStats, optional
        ``None``: :func:`predictive_stats`; measured: semi-empirical form.
    loss : {"logistic", "squared"}
        Curvature of which loss (``l'' = 1`` for squared).
    sigma_p : float
    return_branch : bool
        Also return ``"noise"`` (top eigenvector carried by one forget sample's
        private noise direction: the memorization branch) or ``"signal"``
        (spread over a class: the signal outlier).

    Notes
    -----
    The nonzero eigenvalues of ``sum_i w_i h_i h_i^T`` (``w_i = alpha/n_f`` on
    forget, ``-(1-alpha)/n_r`` on retain) are those of ``diag(w) K``. ``K`` is
    its mean (signal exactly: one rank-one block per class, since a trained
    filter sees the signal of its own class only) plus a zero-mean noise
    overlap ``N^xi_ik <xi_i, xi_k>``, treated to second order
    (:func:`_signed_top`). The two branches of the linear model (THEORY 11:
    noise edge, signal outlier) are both contained in the mean matrix; in
    the CNN the noise part is nearly diagonal (effective dimension
    ``p A^2 / co^2``, ~20 p) so no Marchenko-Pastur edge is needed. In the
    memorization limit ``kappa_+ -> (alpha / n_f) max_{i in f} l''_i A_i
    ||xi_i||^2 sigma_p^2 / m^2`` (the forget sample's private direction); the
    signal enters the forget mode only at second order, so ``kappa_+`` at
    fixed ``alpha < 1/2`` barely depends on SNR while ``lambda_max(H)`` grows
    like ``1 + (n m / 2 A) SNR^2 d / p``. Errors: :data:`ASCENT_ERRORS`.

    Examples
    --------
    >>> k = cnn_kappa_plus(20, 1000, 0.01, 10, alpha=0.3, n_forget=4, loss="squared")
    >>> round(k / (0.3 / 4 * 999 * 6 / 100), 2)  # (alpha/n_f) A_top p / m^2, A_top 6
    1.0
    """
    n, d, snr, m, sigma_p = _check_common(n, d, snr, m, sigma_p, loss)
    alpha = check_positive(alpha, "alpha", high=1.0)
    if alpha == 0:
        raise ValueError("alpha must be > 0: at alpha = 0 there is no ascent")
    predictive = stats is None
    stats = _check_stats(stats, n, d, m)
    f = _forget_mask(n, stats, n_forget, forget_idx, predictive)
    n_f = int(f.sum())
    w = np.where(f, alpha / n_f, -(1 - alpha) / (n - n_f))
    K, V = _signed_mean_var(stats, d - 1, snr**2 * d, loss)
    lam, share = _signed_top(K, V, w)
    out = float(sigma_p**2 / m**2 * lam)
    if return_branch:
        return out, ("noise" if share > 0.5 else "signal")
    return out


def cnn_ascent_rate(n, d, snr, m, *, alpha, n_forget=None, forget_idx=None, stats=None,
                    loss="logistic"):
    """Predicted normalized ascent rate ``r = kappa_+ / lambda_max(H)`` of the
    trained CNN (:func:`cnn_kappa_plus` over :func:`cnn_sharpness`).

    At ``eta = c / lambda_max(H)`` the forget mode grows by at least
    ``(1 + c r)^2`` per step (THEORY 4): ``r``, not ``kappa_+``, is what makes
    low-SNR networks escape faster. Errors: :data:`ASCENT_ERRORS`.

    Examples
    --------
    >>> r = [cnn_ascent_rate(20, 1000, s, 10, alpha=0.3, n_forget=4, loss="squared")
    ...      for s in (0.01, 0.3, 1.0)]
    >>> r[0] > r[1] > r[2]
    True
    """
    kw = dict(stats=stats, loss=loss)
    k = cnn_kappa_plus(n, d, snr, m, alpha=alpha, n_forget=n_forget,
                       forget_idx=forget_idx, **kw)
    return k / cnn_sharpness(n, d, snr, m, **kw)


def cnn_block_coherence(n, d, snr, m, *, n_forget=None, forget_idx=None, stats=None):
    """Retain/forget blocks of the coherence matrix ``S = |K|`` of the trained CNN.

    Returns
    -------
    simlab.theory.rmt.BlockCoherencePrediction
        ``lam_rr``, ``lam_ff`` (top eigenvalues of ``S_rr``, ``S_ff``,
        absolute, ``sigma_p = 1``), ``s_rf`` (top singular value of ``S_rf``),
        and the coherence measures ``sigma``, ``sigma_r``, ``sigma_f`` (as
        :func:`simlab.coherence.block_coherence`).

    Notes
    -----
    The mean-field ``S`` of :func:`cnn_coherence` restricted to each block;
    ``s_rf^2 ~ s_1(S_rf)^2 + sum_ik V_ik (u_i^2 + v_k^2)`` with ``u, v`` the
    top singular vectors of the mean cross block.

    Measured error of the semi-empirical form (logistic protocol of
    :func:`cnn_coherence`, ``(n, d, m)`` in ``(20, 1000, 5), (40, 200, 10),
    (20, 200, 10), (40, 1000, 10)``, SNR 0.01-1, seed means of 3, forget sets
    of ``n/5``): ``lam_ff``, ``sigma_f`` 1.6 %; ``lam_rr``, ``sigma_r`` 5.5 %;
    ``sigma`` 6.6 %; ``s_rf`` 18 % (``d = 200``, low SNR, where the folded-normal
    cross block is not summarised by ``co_same``/``co_cross``; 10 % above
    ``n SNR^2 = 1``; 4.8 % at ``d = 1000``). The predictive form errs by up to
    24 % (``sigma_r``) and 30 % (``sigma_f``), as :func:`cnn_coherence`.
    """
    from .rmt import BlockCoherencePrediction

    n = check_int(n, "n", low=2)
    d = check_int(d, "d", low=2)
    m = check_int(m, "m", low=1)
    snr = check_positive(snr, "snr", allow_zero=True)
    predictive = stats is None
    stats = _check_stats(stats, n, d, m)
    f = _forget_mask(n, stats, n_forget, forget_idx, predictive)
    p, theta = d - 1, snr**2 * d
    M, V = _mean_var(stats, p, theta)
    r = ~f

    def sub(mask):
        idx = np.flatnonzero(mask)
        return dataclasses.replace(
            stats, y=stats.y[idx], lpp=np.asarray(stats.lpp)[idx],
            A=np.asarray(stats.A)[idx], xi_sq=np.asarray(stats.xi_sq)[idx])

    def sig(mask):
        st = sub(mask)
        if mask.sum() == 1:
            return 1.0
        lam = _lam_top(M[np.ix_(mask, mask)], V[np.ix_(mask, mask)])
        return max(lam / _expected_max_diag(st, p, theta), 1.0)

    Mrf, Vrf = M[np.ix_(r, f)], V[np.ix_(r, f)]
    U, s, Wt = np.linalg.svd(Mrf)
    s_rf = np.sqrt(s[0] ** 2 + U[:, 0] ** 2 @ Vrf.sum(axis=1)
                   + Vrf.sum(axis=0) @ Wt[0] ** 2)
    scale = 1.0 / m**2
    return BlockCoherencePrediction(
        lam_rr=scale * _lam_top(M[np.ix_(r, r)], V[np.ix_(r, r)]),
        lam_ff=scale * _lam_top(M[np.ix_(f, f)], V[np.ix_(f, f)]),
        s_rf=float(scale * s_rf), sigma=sig(np.ones(n, dtype=bool)),
        sigma_r=sig(r), sigma_f=sig(f))
